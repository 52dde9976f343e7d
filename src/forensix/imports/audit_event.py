"""One audit event (the records of one serial) as store rows: shared by auditd and LAUREL.

Both formats carry the same kernel records; the parsers only differ in how they spell them.
Each fills an ``AuditEvent`` (decoded values, no hex left) and ``rows`` turns it into the
recorder's columns: the syscall's action and object from the sensor's own table
(``sensor.syscalls.SYSCALLS``), the executable and argv of an exec, the address of a
connect or accept, and the ``processes`` rows that give every process its entity id.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field
from typing import Any

from forensix.imports.rows import Processes, Row
from forensix.sensor.syscalls import O_CREAT, O_TRUNC, O_WRONLY, SYSCALLS

__all__ = ["AUDIT_UNSET", "AuditEvent", "Sockaddr", "parse_sockaddr", "rows"]

AUDIT_UNSET = 4294967295
_AT_FDCWD = 0xFFFFFF9C
_CLONE_THREAD = 0x10000
_EINPROGRESS = -115
_FORKS = ("clone", "clone3", "fork", "vfork")
_EXITS = ("exit", "exit_group")
_EXECS = ("execve", "execveat")
_FILE_TYPES = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink", 0o010000: "fifo",
               0o140000: "socket", 0o020000: "char", 0o060000: "block"}
# Record types of user-space messages (pam, sshd, login, useradd, auditd itself): where the
# process identity is pid/uid/auid/ses and the rest is text. ECS category by type.
USER_CATEGORIES: dict[str, str] = {
    "USER_AUTH": "authentication", "USER_ACCT": "authentication", "USER_LOGIN": "authentication",
    "USER_LOGOUT": "authentication", "USER_ERR": "authentication", "USER_CHAUTHTOK": "iam",
    "LOGIN": "session", "USER_START": "session", "USER_END": "session", "CRED_ACQ": "session",
    "CRED_DISP": "session", "CRED_REFR": "session", "USER_CMD": "process", "USER_ROLE_CHANGE": "iam",
    "ADD_USER": "iam", "DEL_USER": "iam", "ADD_GROUP": "iam", "DEL_GROUP": "iam", "USER_MGMT": "iam",
    "GRP_MGMT": "iam", "ACCT_LOCK": "iam", "ACCT_UNLOCK": "iam",
    "DAEMON_START": "configuration", "DAEMON_END": "configuration", "DAEMON_ABORT": "configuration",
    "DAEMON_CONFIG": "configuration", "DAEMON_ROTATE": "configuration", "CONFIG_CHANGE": "configuration",
    "SERVICE_START": "configuration", "SERVICE_STOP": "configuration", "SYSTEM_BOOT": "host",
    "SYSTEM_SHUTDOWN": "host", "SYSTEM_RUNLEVEL": "host", "USER_AVC": "configuration",
    "ANOM_PROMISCUOUS": "host", "ANOM_ABEND": "process", "ANOM_LOGIN_FAILURES": "authentication",
}
# The message fields worth keeping in an event's text, in this order.
_TEXT_FIELDS = ("op", "acct", "id", "exe", "hostname", "addr", "terminal", "cmd", "res", "list", "key")


@dataclass(frozen=True)
class Sockaddr:
    family: str  # inet | inet6 | unix | other
    ip: str | None = None
    port: int | None = None
    path: str | None = None


@dataclass
class AuditEvent:
    ts: int  # UTC ns
    serial: int
    node: str | None = None
    syscall: dict[str, Any] | None = None  # SYSCALL fields, numbers as int, strings decoded
    argv: list[str] | None = None
    proctitle: list[str] | None = None
    cwd: str | None = None
    paths: list[dict[str, Any]] = field(default_factory=list)
    sockaddr: Sockaddr | None = None
    others: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (type, fields)
    types: list[str] = field(default_factory=list)


def parse_sockaddr(raw: bytes) -> Sockaddr:
    """A struct sockaddr as the kernel copied it (auditd's SOCKADDR saddr)."""
    if len(raw) < 2:
        raise ValueError("sockaddr shorter than its family")
    fam = int.from_bytes(raw[:2], "little")
    if fam == 2 and len(raw) >= 8:
        return Sockaddr("inet", str(ipaddress.IPv4Address(raw[4:8])), int.from_bytes(raw[2:4], "big"))
    if fam == 10 and len(raw) >= 24:
        return Sockaddr("inet6", str(ipaddress.IPv6Address(raw[8:24])), int.from_bytes(raw[2:4], "big"))
    if fam == 1:
        body = raw[2:]
        if body[:1] == b"\0":  # abstract socket
            return Sockaddr("unix", path="@" + body[1:].split(b"\0")[0].decode(errors="backslashreplace"))
        return Sockaddr("unix", path=body.split(b"\0")[0].decode(errors="backslashreplace"))
    return Sockaddr("other")


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) else None


def _u32(v: Any) -> int | None:
    i = _int(v)
    return i & 0xFFFFFFFF if i is not None else None


def _file_type(mode: Any) -> str | None:
    i = _int(mode)
    return _FILE_TYPES.get(i & 0o170000) if i is not None else None


def _absolute(name: str | None, cwd: str | None, dirfd: int | None) -> tuple[str | None, str]:
    """(the path made absolute, how): auditd logs the name the process passed."""
    if name is None:
        return None, "none"
    if name.startswith("/"):
        return posixpath.normpath(name), "audit"
    if cwd and (dirfd is None or dirfd == _AT_FDCWD):
        return posixpath.normpath(posixpath.join(cwd, name)), "directory"
    return None, "none"


def _pick(paths: list[dict[str, Any]], *nametypes: str) -> dict[str, Any] | None:
    for nt in nametypes:
        for p in paths:
            if p.get("nametype") == nt:
                return p
    return None


def _file_cols(p: dict[str, Any] | None, cwd: str | None, dirfd: int | None, prefix: str = "file") -> dict[str, Any]:
    if p is None:
        return {}
    path, how = _absolute(p.get("name"), cwd, dirfd)
    if prefix == "file":
        return {"file_path": path, "file_path_raw": p.get("name"), "file_path_resolution": how,
                "file_inode": _int(p.get("inode")), "file_device": _int(p.get("dev")),
                "file_type": _file_type(p.get("mode"))}
    return {"file_target_path": path, "file_target_path_raw": p.get("name"), "file_target_inode": _int(p.get("inode"))}


def _object(name: str, ev: AuditEvent, sc: dict[str, Any]) -> dict[str, Any]:
    """The object columns of one syscall: paths, flags, modes, addresses, targets."""
    spec = SYSCALLS.get(name)
    a = [sc.get(f"a{i}") for i in range(4)]
    # the directory a relative name is resolved against: the *at calls' descriptor argument
    if name == "symlinkat":
        dirfd = _int(a[1])
    elif (name.endswith("at") and name != "creat") or name in ("openat2", "renameat2", "fchmodat2"):
        dirfd = _int(a[0])
    else:
        dirfd = None
    out: dict[str, Any] = {}
    if spec is not None:
        for col, i in spec.args.items():
            if i < 4 and col in ("file_flags", "file_mode", "file_uid", "file_gid", "target_pid", "signal",
                                 "mem_len", "mem_prot", "mem_flags", "mem_addr"):
                v = _int(a[i])
                if v is not None and col in ("file_uid", "file_gid", "target_pid", "signal"):
                    v = v & 0xFFFFFFFF
                    v = v - (1 << 32) if v >= 1 << 31 and col in ("file_uid", "file_gid", "signal") else v
                out[col] = v
    if name == "creat":
        out["file_flags"] = O_CREAT | O_WRONLY | O_TRUNC
    if name in ("rename", "renameat", "renameat2"):
        out |= _file_cols(_pick(ev.paths, "DELETE"), ev.cwd, dirfd)
        out |= _file_cols(_pick(ev.paths, "CREATE"), ev.cwd, dirfd, "target")
        if not out.get("file_path"):  # rename onto an existing name: two DELETEs, one CREATE
            out |= _file_cols(_pick(ev.paths, "NORMAL", "UNKNOWN"), ev.cwd, dirfd)
    elif name in ("unlink", "unlinkat", "rmdir"):
        out |= _file_cols(_pick(ev.paths, "DELETE", "NORMAL", "UNKNOWN"), ev.cwd, dirfd)
    elif name in ("link", "linkat", "symlink", "symlinkat", "mkdir", "mkdirat", "mknod", "mknodat"):
        out |= _file_cols(_pick(ev.paths, "CREATE", "NORMAL", "UNKNOWN"), ev.cwd, dirfd)
    elif ev.paths:
        out |= _file_cols(_pick(ev.paths, "CREATE", "NORMAL", "UNKNOWN", "PARENT"), ev.cwd, dirfd)
    sa = ev.sockaddr
    if sa is not None:  # connect, accept, bind, sendto/sendmsg with an address
        out["network_type"] = {"inet": "ipv4", "inet6": "ipv6", "unix": "unix"}.get(sa.family)
        if sa.family == "unix":
            out["network_transport"] = "unix"
            out["unix_path"] = sa.path
        elif name == "bind":
            out["source_ip"], out["source_port"] = sa.ip, sa.port
        else:  # connect: where to; accept: who from (the peer, as the recorder's destination)
            out["destination_ip"], out["destination_port"] = sa.ip, sa.port
    return out


def _process_cols(sc: dict[str, Any]) -> dict[str, Any]:
    return {"process_pid": _u32(sc.get("pid")), "process_tid": _u32(sc.get("pid")),
            "process_parent_pid": _u32(sc.get("ppid")), "process_name": sc.get("comm"),
            "user_id": _u32(sc.get("uid")), "user_effective_id": _u32(sc.get("euid")),
            "group_id": _u32(sc.get("gid")), "group_effective_id": _u32(sc.get("egid")),
            "user_audit_id": _u32(sc.get("auid")), "process_session_id": _u32(sc.get("ses"))}


def _image_cols(sc: dict[str, Any], ev: AuditEvent) -> dict[str, Any]:
    tty = sc.get("tty")
    return {"executable": sc.get("exe"), "name": sc.get("comm"), "working_directory": ev.cwd,
            "args": ev.argv if ev.argv is not None else ev.proctitle,
            "user_id": _u32(sc.get("uid")), "user_effective_id": _u32(sc.get("euid")),
            "group_id": _u32(sc.get("gid")), "user_audit_id": _u32(sc.get("auid")),
            "session_id": _u32(sc.get("ses")), "tty": None if tty in (None, "(none)") else tty}


def rows(ev: AuditEvent, procs: Processes, module: str) -> list[Row]:
    """The store rows of one audit event."""
    base = {**procs.host.origin(), "ts": ev.ts, "event_kind": "event", "event_module": module,
            "seq": ev.serial}
    if ev.syscall is not None:
        return _syscall_rows(ev, ev.syscall, procs, base)
    out: list[Row] = []
    for typ, f in ev.others:
        out += _user_rows(typ, f, ev, procs, base)
    return out


def _syscall_rows(ev: AuditEvent, sc: dict[str, Any], procs: Processes, base: dict[str, Any]) -> list[Row]:
    name = str(sc.get("syscall") or "")
    pid, ppid = _u32(sc.get("pid")), _u32(sc.get("ppid"))
    if pid is None:
        return []
    out: list[Row] = []
    life = procs.life(pid, ppid, ev.ts)
    success = sc.get("success")
    ret = _int(sc.get("exit"))
    ok = success == "yes" or (name == "connect" and ret == _EINPROGRESS)
    spec = SYSCALLS.get(name)
    if name in _EXECS and success == "yes":
        out.append(procs.image(life, ev.ts, "exec", **_image_cols(sc, ev)))
        category, action = "process", "exec"
    else:
        first = procs.seen(life, ev.ts, **_image_cols(sc, ev))
        if first is not None:
            out.append(first)
        if name in _EXECS:
            category, action = "process", "exec"
        elif name in _FORKS:
            category, action = "process", "fork"
        elif name in _EXITS:
            category, action = "process", "exit"
        elif spec is not None:
            category, action = spec.category, spec.action
        else:
            category, action = "syscall", name or "syscall"
    ev_row: dict[str, Any] = {**base, "event_class": category, "event_category": category,
                              "event_action": action, "syscall": name or None,
                              "event_outcome": "success" if ok else "failure", "ret": ret,
                              "process_entity_id": life.eid, **_process_cols(sc)}
    if isinstance(sc.get("key"), str) and sc["key"] not in ("(null)", ""):
        ev_row["rule_name"] = sc["key"]
    for i in range(4):
        v = _int(sc.get(f"a{i}"))
        ev_row[f"a{i}"] = v & 0xFFFFFFFFFFFFFFFF if v is not None else None
    if action == "exec":
        ev_row |= {"process_executable": sc.get("exe"), "process_args": ev.argv or ev.proctitle,
                   "process_working_directory": ev.cwd}
        ev_row |= _file_cols(ev.paths[0] if ev.paths else None, ev.cwd, None)
    elif action == "fork" and ok and ret is not None and ret > 0:
        a0 = _int(sc.get("a0")) or 0
        if not (name == "clone" and a0 & _CLONE_THREAD):
            child = procs.child(life, ret, ev.ts)
            out.append(child)
            ev_row |= {"target_pid": ret, "target_entity_id": child.values["entity_id"]}
    elif action == "exit":
        code = _int(sc.get("a0"))
        ev_row["process_exit_code"] = code & 0xFF if code is not None else None
        procs.exit(pid)
    else:
        ev_row |= _object(name, ev, sc)
    if ev.others:
        ev_row["message"] = "; ".join(_text(t, f) for t, f in ev.others)
    out.append(Row("events", ev_row))
    for col, key in _NAMED_IDS:  # the names the host itself gave its uids (enriched logs)
        named = procs.named(_u32(sc.get(col)), sc.get(key), ev.ts, str(base["event_module"]))
        if named is not None:
            out.append(named)
    return out


# uid fields of a SYSCALL record and the name an enriched log (auditd's log_format=ENRICHED,
# LAUREL) writes beside each, as the host's own user database had it then
_NAMED_IDS = (("uid", "UID"), ("euid", "EUID"), ("suid", "SUID"), ("fsuid", "FSUID"), ("auid", "AUID"))


def _text(typ: str, f: dict[str, Any]) -> str:
    parts = [f"{k}={f[k]}" for k in _TEXT_FIELDS if f.get(k) not in (None, "", "?")]
    return f"{typ} " + " ".join(parts)


def _user_rows(typ: str, f: dict[str, Any], ev: AuditEvent, procs: Processes, base: dict[str, Any]) -> list[Row]:
    category = USER_CATEGORIES.get(typ)
    if category is None:
        return []
    out: list[Row] = []
    pid = _u32(f.get("pid"))
    row: dict[str, Any] = {**base, "event_class": category, "event_category": category,
                           "event_action": typ.lower(), "message": _text(typ, f),
                           "process_pid": pid, "user_id": _u32(f.get("uid")),
                           "user_audit_id": _u32(f.get("auid")), "process_session_id": _u32(f.get("ses"))}
    res = f.get("res")
    if res is not None:
        row["event_outcome"] = "success" if str(res) in ("success", "1", "yes") else "failure"
    addr = f.get("addr")
    if isinstance(addr, str) and addr not in ("?", ""):
        try:
            row["source_ip"] = str(ipaddress.ip_address(addr))
        except ValueError:
            pass
    if pid:
        life = procs.life(pid, None, ev.ts)
        first = procs.seen(life, ev.ts, executable=f.get("exe"), user_id=_u32(f.get("uid")),
                           user_audit_id=_u32(f.get("auid")), session_id=_u32(f.get("ses")))
        if first is not None:
            out.append(first)
        row["process_entity_id"] = life.eid
    out.append(Row("events", row))
    return out
