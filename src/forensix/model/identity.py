"""Process identity: PIDs are reused, entity ids are not.

A process is (host, boot id, pid, start time). Its ``entity_id`` is a 64-bit mix of
those, computed vectorised from the task's ``start_boottime`` in nanoseconds, so two
processes that get the same pid are two entities however close together they start
(``ns_last_pid`` lets root force that within a millisecond).

Processes already running when recording starts are known from /proc, whose start time
is in clock ticks (10 ms): their id is the mix of the tick-rounded start. The decoder
keeps a table of them (``SnapshotIds``) and gives a kernel event whose (pid, start tick)
matches a snapshotted process that process's id, so both views agree.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

__all__ = ["TICK_NS", "SnapshotIds", "entity_id", "entity_ids", "format_entity", "host_key", "parse_entity"]

TICK_NS = 10**9 // os.sysconf("SC_CLK_TCK")
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def host_key(host_id: str, boot_id: str) -> int:
    """A 64-bit key for one boot of one host."""
    d = hashlib.blake2b(f"{host_id}\0{boot_id}".encode(), digest_size=8).digest()
    return int.from_bytes(d, "little")


def _mix(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: a bijection on 64 bits, so distinct inputs stay distinct.
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return np.asarray(x ^ (x >> np.uint64(31)))


def entity_ids(hkey: int, pids: np.ndarray, start_boot_ns: np.ndarray) -> np.ndarray:
    """Entity ids for arrays of (pid, start time in boot-clock ns)."""
    p = np.asarray(pids, dtype=np.uint64)
    start = np.asarray(start_boot_ns, dtype=np.uint64)
    # Two rounds of a bijection: for one pid, distinct start times give distinct ids.
    x = _mix(_mix(np.uint64(hkey) ^ p) ^ start)
    return np.where(x == 0, np.uint64(1), x)  # 0 means "unknown" in the store


class SnapshotIds:
    """Entity ids of processes seen in /proc (start known to the tick only)."""

    def __init__(self, hkey: int) -> None:
        self.hkey = hkey
        self._pid = np.empty(0, np.uint64)
        self._tick = np.empty(0, np.uint64)
        self._eid = np.empty(0, np.uint64)

    def add(self, pids: np.ndarray, start_ticks: np.ndarray) -> np.ndarray:
        """Remember processes; returns their entity ids."""
        pids = np.asarray(pids, np.uint64)
        ticks = np.asarray(start_ticks, np.uint64)
        eids = entity_ids(self.hkey, pids, ticks * np.uint64(TICK_NS))
        pid = np.concatenate([self._pid, pids])
        order = np.argsort(pid, kind="stable")
        self._pid = pid[order]
        self._tick = np.concatenate([self._tick, ticks])[order]
        self._eid = np.concatenate([self._eid, eids])[order]
        return eids

    def ids(self, pids: np.ndarray, start_boot_ns: np.ndarray) -> np.ndarray:
        """Entity ids for kernel-observed (pid, exact start), snapshot ids where they match."""
        eid = entity_ids(self.hkey, pids, start_boot_ns)
        if not len(self._pid) or not len(eid):
            return eid
        p = np.asarray(pids, np.uint64)
        i = np.minimum(np.searchsorted(self._pid, p), len(self._pid) - 1)
        tick = np.asarray(start_boot_ns, np.uint64) // np.uint64(TICK_NS)
        hit = (self._pid[i] == p) & (self._tick[i] == tick)
        return np.where(hit, self._eid[i], eid)


def entity_id(hkey: int, pid: int, start_boot_ns: int) -> int:
    return int(entity_ids(hkey, np.array([pid]), np.array([start_boot_ns]))[0])


def format_entity(eid: int) -> str:
    return f"{int(eid):016x}"


def parse_entity(text: str) -> int:
    from forensix.errors import UsageError

    s = text.strip().lower().removeprefix("0x")
    try:
        if len(s) != 16:
            raise ValueError
        return int(s, 16)
    except ValueError:
        raise UsageError(
            f"{text!r} is not an entity id", "an entity id is 16 hex digits, as `forensix ps` shows"
        ) from None
