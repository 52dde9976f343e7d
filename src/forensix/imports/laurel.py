"""LAUREL's JSON lines into store rows: the same audit events, already assembled.

LAUREL (threathunters-io/laurel) writes one JSON object per audit event: ``ID``
("SEC.MSEC:SERIAL"), ``SYSCALL`` (numbers decoded, ``ARGV`` = a0..a3 as hex strings, the
syscall's name in ``SYSCALL``), ``EXECVE.ARGV``, ``PROCTITLE.ARGV``, ``CWD``, ``PATH``
(a list), ``SOCKADDR`` (decoded, or hex) and the user-space records. Each becomes the
``AuditEvent`` the auditd parser builds, so both give the same rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from forensix.imports.audit_event import USER_CATEGORIES, AuditEvent, Sockaddr, parse_sockaddr, rows
from forensix.imports.auditd import syscall_name
from forensix.imports.rows import BadLine, Nodes, Processes, Row, json_object

__all__ = ["LaurelParser"]

_HEXSTR = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_ID = re.compile(r"^(\d{1,12})\.(\d{1,3}):(\d{1,20})$")


def _num(v: Any) -> Any:
    """LAUREL writes some numbers as "0x..." strings (arch, a0..a3)."""
    if isinstance(v, str) and v.startswith("0x"):
        try:
            return int(v, 16)
        except ValueError:
            return v
    return v


def _dev(v: Any) -> int | None:
    if not isinstance(v, str) or ":" not in v:
        return None
    major, _, minor = v.partition(":")
    try:
        return (int(major, 16) << 20) | int(minor, 16)
    except ValueError:
        return None


def _mode(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.removeprefix("0o"), 8)
        except ValueError:
            return None
    return None


def _sockaddr(v: Any) -> Sockaddr | None:
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, dict) and "saddr" in v:
        v = v["saddr"]
    if isinstance(v, str):
        # LAUREL writes the raw sockaddr with non-printable bytes percent-encoded
        try:
            raw = bytes.fromhex(v) if _HEXSTR.match(v) else unquote_to_bytes(v)
            return parse_sockaddr(raw)
        except ValueError:
            raise BadLine("SOCKADDR saddr cannot be read as a sockaddr") from None
    if not isinstance(v, dict):
        return None
    fam = str(v.get("saddr_fam") or v.get("family") or "")
    if fam in ("inet", "inet6"):
        ip = v.get("laddr") or v.get("addr")
        port = v.get("lport") or v.get("port")
        return Sockaddr(fam, str(ip) if ip is not None else None, int(port) if isinstance(port, int) else None)
    if fam in ("local", "unix"):
        return Sockaddr("unix", path=v.get("path"))
    return Sockaddr("other")


def _strlist(v: Any) -> list[str] | None:
    if isinstance(v, list):
        return [x if isinstance(x, str) else json.dumps(x) for x in v]
    return None


class LaurelParser:
    module = "laurel"
    idle = True  # one line, one whole event

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.nodes = Nodes(procs)

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        obj = json_object(line)
        m = _ID.match(str(obj.get("ID", "")))
        if m is None:
            raise BadLine("no LAUREL event ID (\"SEC.MSEC:SERIAL\")")
        ts = int(m.group(1)) * 10**9 + int(m.group(2).ljust(3, "0")) * 10**6
        ev = AuditEvent(ts, int(m.group(3)), obj.get("NODE") if isinstance(obj.get("NODE"), str) else None)
        sc = obj.get("SYSCALL")
        if isinstance(sc, dict):
            f = {k: _num(v) for k, v in sc.items() if k != "ARGV"}
            argv = sc.get("ARGV")
            if isinstance(argv, list):
                for i, a in enumerate(argv[:4]):
                    f[f"a{i}"] = _num(a)
            nr = f.get("syscall")
            f["syscall"] = (sc["SYSCALL"] if isinstance(sc.get("SYSCALL"), str)
                            else syscall_name(f.get("arch"), nr) if isinstance(nr, int) else str(nr))
            ev.syscall = f
        ex = obj.get("EXECVE")
        if isinstance(ex, dict):
            ev.argv = _strlist(ex.get("ARGV"))
        pt = obj.get("PROCTITLE")
        if isinstance(pt, dict):
            ev.proctitle = _strlist(pt.get("ARGV"))
        cwd = obj.get("CWD")
        if isinstance(cwd, dict) and isinstance(cwd.get("cwd"), str):
            ev.cwd = cwd["cwd"]
        paths = obj.get("PATH")
        if isinstance(paths, list):
            ev.paths = [{**p, "dev": _dev(p.get("dev")), "mode": _mode(p.get("mode"))}
                        for p in paths if isinstance(p, dict)]
        if "SOCKADDR" in obj:
            ev.sockaddr = _sockaddr(obj["SOCKADDR"])
        for typ in USER_CATEGORIES:
            v = obj.get(typ)
            for rec in (v if isinstance(v, list) else [v]):
                if isinstance(rec, dict):
                    ev.others.append((typ, rec))
        if ev.syscall is None and not ev.others:
            return
        yield from rows(ev, self.nodes.of(ev.node), self.module)

    def finish(self) -> Iterator[Row]:
        yield from self.nodes.finish()
