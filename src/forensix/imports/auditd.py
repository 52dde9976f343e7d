"""auditd's raw log (``audit.log``, RAW or ENRICHED format) into store rows.

A line is one record: ``[node=N ]type=T msg=audit(SEC.MSEC:SERIAL): k=v ...``, with an
ENRICHED tail after a 0x1d byte. The records of one event share the serial and end with
an ``EOE`` record; user-space messages (pam, sshd, useradd) stand alone. Records of
different events may interleave, so events are assembled by serial and completed at EOE,
or when they have waited too long (``_MAX_PENDING`` events, ``_MAX_AGE_NS`` of log time).

Strings the kernel does not trust (names, argv, proctitle, comm, exe, cwd) are written
quoted, or as hex when they hold a space, a quote or a control byte; a value that is
neither is a bad line. EXECVE's argv may be split into ``aN[i]`` chunks over several records.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from forensix.imports.audit_event import USER_CATEGORIES, AuditEvent, parse_sockaddr, rows
from forensix.imports.rows import BadLine, Nodes, Processes, Row

__all__ = ["AuditdParser", "parse_record"]

_HEAD = re.compile(rb"^(?:node=(\S+) )?type=(\S+) msg=audit\((\d{1,12})\.(\d{1,3}):(\d{1,20})\):? ?")
_FIELD = re.compile(r"""([A-Za-z_][\w\-\[\]]*)=("[^"]*"|'[^']*'|\{[^}]*\}|\S*)""")
_HEX = re.compile(r"^[0-9A-Fa-f]*$")
_MAX_PENDING = 256
_MAX_AGE_NS = 5 * 10**9
_MAX_ARGC = 1 << 17  # ARG_MAX / 2 pointers: more is not an argv
_MAX_RECORDS = 4096  # records of one event (an execve of 128 Ki arguments needs ~400)
# Fields whose value is an untrusted string: quoted or hex, else the line is refused.
_STRINGS = frozenset({"name", "exe", "comm", "cwd", "proctitle", "path", "dir", "data"})
# The same encoding where a field of that name may also be a plain word or number
# (CONFIG_CHANGE's old=1, a key of "(null)"): decoded when it can be, else kept as written.
_LENIENT = frozenset({"key", "cmd", "acct", "hostname", "terminal", "old", "new", "grantors", "unit"})
# Numbers written in hex without 0x.
_HEXNUMS = frozenset({"a0", "a1", "a2", "a3", "arch", "inode_gen"})
_DECNUMS = frozenset({"pid", "ppid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid",
                      "auid", "ses", "exit", "items", "argc", "item", "inode", "ouid", "ogid", "old-auid",
                      "old-ses", "syscall", "sig"})
_KERNEL_TYPES = frozenset({"SYSCALL", "EXECVE", "PROCTITLE", "CWD", "PATH", "SOCKADDR", "EOE", "BPRM_FCAPS",
                           "CAPSET", "FD_PAIR", "MMAP", "NETFILTER_CFG", "OBJ_PID", "SECCOMP", "KERN_MODULE",
                           "IPC", "MQ_OPEN", "TIME_ADJNTPVAL", "TIME_INJOFFSET", "BPF", "URINGOP", "AVC",
                           "SOCKETCALL", "MAC_STATUS", "ANOM_PROMISCUOUS", "ANOM_ABEND", "CONFIG_CHANGE",
                           "LOGIN", "NETFILTER_PKT", "FANOTIFY", "OPENAT2", "DM_CTRL", "DM_EVENT"})


def decode_string(value: str) -> str | None:
    """An untrusted auditd string: quoted, hex, or (null)."""
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value[1:-1]
    if value in ("(null)", "?", "(none)"):
        return None if value == "(null)" else value
    if len(value) % 2 or not _HEX.match(value):
        raise BadLine(f"{value[:40]!r} is neither quoted nor hex")
    return bytes.fromhex(value).decode("utf-8", errors="backslashreplace")


def _number(key: str, value: str) -> int | str:
    try:
        if key in _HEXNUMS:
            return int(value, 16)
        if key in _DECNUMS:
            return int(value, 10)
    except ValueError:
        return value
    return value


def parse_fields(body: str, raw: bool = False) -> dict[str, Any]:
    """``k=v`` fields, decoded (``raw``: as written, for EXECVE whose aN are strings)."""
    out: dict[str, Any] = {}
    for m in _FIELD.finditer(body):
        key, value = m.group(1), m.group(2)
        if raw:
            out[key] = value
        elif value.startswith("'") and value.endswith("'") and len(value) >= 2:
            out.update(parse_fields(value[1:-1]))  # a user message's msg='op=... res=...'
        elif key in _STRINGS:
            out[key] = decode_string(value)
        elif key in _LENIENT:
            try:
                out[key] = decode_string(value)
            except BadLine:
                out[key] = value
        elif value.startswith('"') and value.endswith('"') and len(value) >= 2:
            out[key] = value[1:-1]
        else:
            out[key] = _number(key, value)
    return out


def parse_record(line: bytes) -> tuple[str | None, str, int, int, dict[str, Any], dict[str, str]]:
    """(node, type, ts ns, serial, fields, enriched fields) of one record line."""
    m = _HEAD.match(line)
    if m is None:
        raise BadLine("not an audit record (no type=... msg=audit(TIME:SERIAL))")
    node = m.group(1).decode(errors="replace") if m.group(1) else None
    typ = m.group(2).decode(errors="replace")
    ts = int(m.group(3)) * 10**9 + int(m.group(4).ljust(3, b"0")) * 10**6
    serial = int(m.group(5))
    try:
        rest = line[m.end():].decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadLine(f"not UTF-8 at byte {m.end() + e.start} (auditd writes untrusted bytes as hex)") from None
    body, _, enriched = rest.partition("\x1d")
    fields = parse_fields(body, raw=typ == "EXECVE")
    extra = {k: v.strip('"') for k, v in _FIELD.findall(enriched)} if enriched else {}
    return node, typ, ts, serial, fields, extra


_NAMES = ("UID", "EUID", "SUID", "FSUID", "AUID")


class _Pending:
    __slots__ = ("argc", "args", "ev", "line", "records")

    def __init__(self, ev: AuditEvent, line: int) -> None:
        self.ev = ev
        self.args: dict[int, Any] = {}
        self.argc: int | None = None
        self.records = 0
        self.line = line


class AuditdParser:
    """Lines of an audit log into rows; events assembled across interleaved records."""

    module = "auditd"

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.nodes = Nodes(procs)
        self._pending: OrderedDict[tuple[str | None, int], _Pending] = OrderedDict()
        self._latest = 0
        self.unknown_types: dict[str, int] = {}

    @property
    def idle(self) -> bool:
        """No event is half-assembled: every line so far is in the rows already given."""
        return not self._pending

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        node, typ, ts, serial, fields, extra = parse_record(line)
        key = (node, serial)
        p = self._pending.get(key)
        if p is None:
            if typ == "EOE":
                return  # the end of an event already completed (by age): nothing left
            if typ in USER_CATEGORIES and typ not in _KERNEL_TYPES:
                ev = AuditEvent(ts, serial, node, types=[typ], others=[(typ, fields)])
                yield from rows(ev, self.nodes.of(node), self.module)
                yield from self._expire(ts)
                return
            p = _Pending(AuditEvent(ts, serial, node), number)
            self._pending[key] = p
        p.records += 1
        if p.records > _MAX_RECORDS:
            raise BadLine(f"event {serial} has more than {_MAX_RECORDS} records")
        if typ == "EOE":
            del self._pending[key]
            yield from self._complete(p)
        else:
            self._add(p, typ, fields, extra)
        yield from self._expire(ts)

    def _expire(self, ts: int) -> Iterator[Row]:
        self._latest = ts  # the log's own clock: a later file may be older (rotated logs)
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if len(self._pending) <= _MAX_PENDING and self._latest - p.ev.ts < _MAX_AGE_NS:
                break
            del self._pending[key]
            yield from self._complete(p)

    def finish(self) -> Iterator[Row]:
        while self._pending:
            _, p = self._pending.popitem(last=False)
            yield from self._complete(p)
        yield from self.nodes.finish()

    def _complete(self, p: _Pending) -> Iterator[Row]:
        ev = p.ev
        if p.argc is not None or p.args:
            n = p.argc if p.argc is not None else max(p.args) + 1
            ev.argv = [_arg(p.args.get(i)) for i in range(n)]
        yield from rows(ev, self.nodes.of(ev.node), self.module)

    def _add(self, p: _Pending, typ: str, f: dict[str, Any], extra: dict[str, str]) -> None:
        ev = p.ev
        ev.types.append(typ)
        if typ == "SYSCALL":
            for key in _NAMES:  # the host's names of its uids (log_format=ENRICHED): analysis.users
                if key in extra:
                    f[key] = extra[key]
            if "SYSCALL" in extra:
                f["syscall"] = extra["SYSCALL"]
            elif isinstance(f.get("syscall"), int):
                f["syscall"] = syscall_name(f.get("arch"), f["syscall"])
            ev.syscall = f
        elif typ == "EXECVE":
            self._execve(p, f)
        elif typ == "PROCTITLE":
            t = f.get("proctitle")
            ev.proctitle = [a for a in t.split("\0")] if isinstance(t, str) else None
        elif typ == "CWD":
            ev.cwd = f.get("cwd") if isinstance(f.get("cwd"), str) else None
        elif typ == "PATH":
            if "dev" in f and isinstance(f["dev"], str):
                f["dev"] = _dev(f["dev"])
            if "nametype" not in f and "objtype" in f:  # auditd before 2.6 called it objtype
                f["nametype"] = f["objtype"]
            if isinstance(f.get("mode"), str):
                f["mode"] = _octal(f["mode"])
            ev.paths.append(f)
        elif typ == "SOCKADDR":
            raw = f.get("saddr")
            if isinstance(raw, str):
                if len(raw) % 2 or not _HEX.match(raw):
                    raise BadLine("SOCKADDR saddr is not hex")
                try:
                    ev.sockaddr = parse_sockaddr(bytes.fromhex(raw))
                except ValueError as e:
                    raise BadLine(f"SOCKADDR: {e}") from None
        elif typ in USER_CATEGORIES:
            ev.others.append((typ, f))
        elif typ not in _KERNEL_TYPES:
            self.unknown_types[typ] = self.unknown_types.get(typ, 0) + 1

    def _execve(self, p: _Pending, f: dict[str, Any]) -> None:
        argc = f.get("argc")
        if argc is not None:
            try:
                argc = int(argc)
            except ValueError:
                raise BadLine(f"EXECVE argc={argc!r} is not a number") from None
            if not 0 <= argc <= _MAX_ARGC:
                raise BadLine(f"EXECVE argc={argc!r} is not a count of arguments")
            p.argc = argc
        for key, value in f.items():
            m = re.fullmatch(r"a(\d+)(?:\[(\d+)\]|(_len))?", key)
            if m is None:
                continue
            i = int(m.group(1))
            if i >= _MAX_ARGC:
                raise BadLine(f"EXECVE argument {i} is past any argv")
            if m.group(3):  # aN_len: the argument comes in chunks
                continue
            text = decode_string(str(value))
            if m.group(2) is not None:
                chunks = p.args.setdefault(i, [])
                if not isinstance(chunks, list):
                    raise BadLine(f"EXECVE a{i} given whole and in chunks")
                chunks.append(text or "")
            else:
                p.args[i] = text


def _arg(v: Any) -> str:
    if isinstance(v, list):
        return "".join(v)
    return v if isinstance(v, str) else ""


def _dev(text: str) -> int | None:
    """auditd's major:minor (hex) as the kernel's dev_t (major << 20 | minor), as recorded."""
    major, _, minor = text.partition(":")
    try:
        return (int(major, 16) << 20) | int(minor, 16)
    except ValueError:
        return None


def _octal(text: str) -> int | None:
    try:
        return int(text.removeprefix("0o"), 8)
    except ValueError:
        return None


_SYSCALL_NAMES: dict[int, str] | None = None


def syscall_name(arch: Any, nr: int) -> str:
    """A syscall's name in a RAW-format log (x86_64 only: the table this build has)."""
    global _SYSCALL_NAMES
    if arch != 0xC000003E:
        return str(nr)
    if _SYSCALL_NAMES is None:
        import json
        from importlib import resources

        try:
            abi = json.loads(resources.files("forensix.sensor").joinpath("_bpf/abi.json").read_text())
            _SYSCALL_NAMES = {int(v): k for k, v in abi.get("syscalls", {}).items()}
        except (OSError, ValueError):
            _SYSCALL_NAMES = {}
    return _SYSCALL_NAMES.get(nr, str(nr))
