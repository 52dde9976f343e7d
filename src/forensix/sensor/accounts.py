"""The host's user and group database, read as facts for the store (``schema.ACCOUNTS``).

A uid means nothing off its host: uid 1001 is a different person on every machine, and
the machine an investigator reads the store on has its own. So the recorder stores what
this host's ``/etc/passwd`` and ``/etc/group`` said, and when: at start, whenever a file
changes (a cheap ``stat`` each second, comparing inode, size and times: useradd, usermod
and vipw write a new file and rename it over the old one), and once a day (so that a store
that ages out old days keeps a copy). Each reading is stored whole, valid from the file's
change time; a user or group gone since the last reading gets a row without a name.

Only the files are read, never NSS (a directory service's users are not in the host's
files, and asking it would block the recorder) and never ``/etc/shadow``: the password
field is skipped, not stored.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix.model.host import HostInfo
from forensix.store import schema

__all__ = ["GROUP", "PASSWD", "AccountWatcher", "parse_group", "parse_passwd"]

PASSWD = Path("/etc/passwd")
GROUP = Path("/etc/group")
# a user database larger than this is not a user database: read no more of it
_MAX_BYTES = 64 << 20
_DAY_NS = 86400 * 10**9


def _lines(data: bytes) -> list[list[str]]:
    out = []
    for raw in data.decode("utf-8", errors="replace").splitlines():
        if not raw or raw.startswith(("#", "+", "-")):  # comments; NIS compat entries name no one
            continue
        out.append(raw.split(":"))
    return out


def _id(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if 0 <= v < 2**32 else None


def parse_passwd(data: bytes) -> dict[int, dict[str, Any]]:
    """uid -> the user's row (name, gid, GECOS, home, shell); malformed lines are skipped.

    A uid listed twice keeps its first line, as getpwuid(3) answers."""
    out: dict[int, dict[str, Any]] = {}
    for f in _lines(data):
        if len(f) < 7:
            continue
        uid = _id(f[2])
        if uid is None or uid in out:
            continue
        # f[1] is the password field: never kept
        out[uid] = {"kind": "user", "uid": uid, "gid": _id(f[3]), "name": f[0], "full_name": f[4] or None,
                    "home": f[5] or None, "shell": ":".join(f[6:]) or None, "members": None}
    return out


def parse_group(data: bytes) -> dict[int, dict[str, Any]]:
    """gid -> the group's row (name, members)."""
    out: dict[int, dict[str, Any]] = {}
    for f in _lines(data):
        if len(f) < 4:
            continue
        gid = _id(f[2])
        if gid is None or gid in out:
            continue
        members = [m for m in f[3].split(",") if m]
        out[gid] = {"kind": "group", "uid": None, "gid": gid, "name": f[0], "full_name": None,
                    "home": None, "shell": None, "members": members}
    return out


@dataclass
class _File:
    path: Path
    kind: str
    parse: Any
    key: tuple[int, ...] | None = None  # (dev, inode, size, mtime, ctime) of the last reading
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    read_ns: int = 0


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class AccountWatcher:
    """Readings of the user and group files as ``accounts`` rows, when they change."""

    def __init__(self, host: HostInfo, passwd: Path = PASSWD, group: Path = GROUP,
                 reread_ns: int = _DAY_NS) -> None:
        self.host = host
        self.reread_ns = reread_ns
        self.files = [_File(passwd, "user", parse_passwd), _File(group, "group", parse_group)]
        self.errors: list[str] = []  # files that could not be read (said once each, by the recorder)

    def poll(self, now_ns: int | None = None) -> pa.Table | None:
        """Rows of every file that changed since its last reading (all files the first time)."""
        now = time.time_ns() if now_ns is None else now_ns
        rows: list[dict[str, Any]] = []
        for f in self.files:
            try:
                st = os.stat(f.path)
            except OSError as e:
                self._error(f, e)
                continue
            if f.key == _stat_key(st) and now - f.read_ns < self.reread_ns:
                continue
            rows += self._read(f, now)
        return pa.Table.from_pylist(rows, schema=schema.ACCOUNTS) if rows else None

    def _error(self, f: _File, e: OSError) -> None:
        msg = f"cannot read {f.path}: {e.strerror}"
        if msg not in self.errors:
            self.errors.append(msg)

    def _read(self, f: _File, now: int) -> list[dict[str, Any]]:
        try:
            with open(f.path, "rb") as fh:
                st = os.fstat(fh.fileno())  # the times of the content read, not of a newer file
                data = fh.read(_MAX_BYTES)
        except OSError as e:
            self._error(f, e)
            return []
        parsed: dict[int, dict[str, Any]] = f.parse(data)
        # what the file says holds since it last changed (a rename onto it sets its ctime)
        valid = max(st.st_mtime_ns, st.st_ctime_ns)
        origin = {"host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id,
                  "valid_from": valid, "recorded_ts": now, "source": str(f.path)}
        out = [{**origin, **r} for r in parsed.values()]
        for gone in f.rows.keys() - parsed.keys():
            out.append({**origin, **f.rows[gone], "name": None, "full_name": None, "home": None, "shell": None,
                        "members": None})
        f.key, f.rows, f.read_ns = _stat_key(st), parsed, now
        return out
