"""What an alert's event acted on: a file, an account, an address, a process.

An account tool's exec names the account (its last operand), so an analyst reads
"account backup2 created by useradd" rather than the files useradd wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ACCOUNT_TOOLS", "account_of", "group_object", "object_of"]

# Tools that manage accounts, and what they do to the account their last operand names.
ACCOUNT_TOOLS = {
    "useradd": "created", "adduser": "created", "newusers": "created", "groupadd": "created",
    "addgroup": "created", "usermod": "changed", "passwd": "changed", "chpasswd": "changed",
    "chage": "changed", "chsh": "changed", "chfn": "changed", "gpasswd": "changed",
    "groupmod": "changed", "userdel": "removed", "deluser": "removed", "groupdel": "removed",
    "delgroup": "removed",
}
_NET = frozenset({"connect", "accept", "bind", "listen", "sendto", "recvfrom"})
_ON_PROCESS = frozenset({"kill", "ptrace"})
# A file's side copies (useradd writes /etc/passwd+, /etc/passwd-, /etc/passwd.lock,
# /etc/passwd.123): one object for grouping.
_SIDE = re.compile(r"(\.lock|\.tmp|\.\d+|\.[A-Za-z0-9]{6}|[+~-])$")


def _base(path: str | None) -> str:
    return (path or "").rsplit("/", 1)[-1]


def account_of(args: Sequence[str] | None) -> str | None:
    """The account an account tool acts on: its last operand (``useradd -m -s /bin/sh bob``)."""
    if not args or len(args) < 2:
        return None
    last = args[-1]
    return None if not last or last.startswith("-") else last


def object_of(r: dict[str, Any]) -> tuple[str | None, str | None]:
    """What an alert's event acted on, as (kind, name)."""
    act = r.get("event_action") or ""
    if act == "exec":
        exe = r.get("process_executable") or r.get("file_path")
        tool = _base(exe)
        if tool in ACCOUNT_TOOLS:
            name = account_of(r.get("process_args"))
            if name:
                return "account", name
        return ("file", exe) if exe else (None, None)
    if act in _NET and r.get("unix_path"):
        return "socket", str(r["unix_path"])
    if act in _NET:
        ip, port = (r.get("source_ip"), r.get("source_port")) if act in ("bind", "listen") else (
            r.get("destination_ip"), r.get("destination_port"))
        if ip or port is not None:
            return "address", f"{ip or ''}:{'' if port is None else port}"
        return None, None
    if act in _ON_PROCESS and r.get("target_pid") is not None:
        return "process", str(r["target_pid"])
    path = r.get("file_path")
    if path and path.startswith(("fifo:[", "pipe:[")):
        return "pipe", path
    if path:
        tgt = r.get("file_target_path")
        return "file", f"{path} -> {tgt}" if tgt else path
    if r.get("syscall") or act:  # bpf(), a module load without a path: the call itself
        return "syscall", str(r.get("syscall") or act)
    return None, None


def group_object(name: str | None) -> str | None:
    return _SIDE.sub("", name) if name else name
