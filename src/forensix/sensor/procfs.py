"""Processes already running when recording starts, read from /proc and marked as such.

Start times come from /proc/PID/stat (clock ticks since boot), which is the precision
entity ids are built at, so a snapshotted process and its later kernel events agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from forensix.model.identity import TICK_NS, SnapshotIds

__all__ = ["open_files", "snapshot"]


def _stat(pid: int) -> tuple[str, int, int] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rp = data.rfind(b")")
    comm = data[data.find(b"(") + 1 : rp].decode("utf-8", "backslashreplace")
    fields = data[rp + 2 :].split()
    # fields[0] is state (field 3): ppid is field 4, starttime field 22
    return comm, int(fields[1]), int(fields[19])


def _status_ids(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid"):
                parts = v.split()
                out[k.lower()] = int(parts[0])
                out["e" + k.lower()] = int(parts[1])
    except OSError:
        pass
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _ns(pid: int, name: str) -> int | None:
    target = _link(f"/proc/{pid}/ns/{name}")
    if target and "[" in target:
        return int(target[target.find("[") + 1 : -1])
    return None


def _cgroup_id(pid: int) -> int | None:
    # The cgroup id the kernel reports is the inode of the cgroup's directory (v2).
    text = _read(f"/proc/{pid}/cgroup")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            try:
                return os.stat("/sys/fs/cgroup" + line[3:]).st_ino
            except OSError:
                return None
    return None


def _pids(netns: int) -> list[int]:
    """Every process, or only those in network namespace ``netns`` (non-zero)."""
    pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    return [p for p in pids if _ns(p, "net") == netns] if netns else pids


def snapshot(ids: SnapshotIds, offset_ns: int, netns: int = 0) -> Iterator[dict[str, Any]]:
    """One processes-table row per running process (source = 'snapshot'); with ``netns``,
    per process of that network namespace (its parent, if outside, is another host's)."""
    stats: dict[int, tuple[str, int, int]] = {}
    for pid in _pids(netns):
        st = _stat(pid)
        if st is not None:
            stats[pid] = st
    pids = np.array(sorted(stats), np.uint64)
    ticks = np.array([stats[p][2] for p in pids.tolist()], np.uint64)
    eids = dict(zip(pids.tolist(), ids.add(pids, ticks).tolist()))
    for pid, (comm, ppid, start_ticks) in stats.items():
        start_boot = start_ticks * TICK_NS
        parent = eids.get(ppid)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            args = [a.decode("utf-8", "backslashreplace") for a in argv] if argv != [b""] else None
        except OSError:
            args = None
        uids = _status_ids(pid)
        auid = _read(f"/proc/{pid}/loginuid")
        ses = _read(f"/proc/{pid}/sessionid")
        yield {
            "entity_id": eids[pid],
            "image_seq": 0,
            "pid": pid,
            "parent_entity_id": parent,
            "parent_pid": ppid,
            "start_ts": start_boot + offset_ns,
            "image_ts": start_boot + offset_ns,
            "executable": _link(f"/proc/{pid}/exe"),
            "args": args,
            "working_directory": _link(f"/proc/{pid}/cwd"),
            "name": comm,
            "user_id": uids.get("uid"),
            "user_effective_id": uids.get("euid"),
            "group_id": uids.get("gid"),
            "user_audit_id": int(auid) if auid and auid.isdigit() else None,
            "session_id": int(ses) if ses and ses.isdigit() else None,
            "tty": None,
            "cgroup_id": _cgroup_id(pid),
            "ns_mnt": _ns(pid, "mnt"),
            "ns_pid": _ns(pid, "pid_for_children"),
            "ns_net": _ns(pid, "net"),
            "ns_user": _ns(pid, "user"),
            "ns_uts": _ns(pid, "uts"),
            "source": "snapshot",
        }


def open_files(netns: int = 0) -> Iterator[tuple[int, int, str]]:
    """(inode, kernel dev_t, path) of every file open in a running process (of ``netns``).

    Edges on files opened before recording began (a daemon's log file) carry inodes
    only; the kernel's own names for them, from /proc/PID/fd, label those edges.
    """
    for pid in _pids(netns):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            link = f"{fd_dir}/{fd}"
            target = _link(link)
            if not target or not target.startswith("/"):
                continue  # pipes, sockets and anonymous inodes are named by inode anyway
            try:
                st = os.stat(link)
            except OSError:
                continue
            # the kernel's dev_t (MKDEV: major << 20 | minor), as the sensor reports it
            yield st.st_ino, (os.major(st.st_dev) << 20) | os.minor(st.st_dev), target
