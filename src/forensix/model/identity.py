"""Process identity: PIDs are reused, entity ids are not.

A process is (host, boot id, pid, start time). Its ``entity_id`` is a 64-bit mix of
those, computed the same way, vectorised, for kernel events (start time from the task's
``start_boottime``) and for processes snapshotted from /proc at start-up (field 22 of
``/proc/PID/stat``, in clock ticks). Both are reduced to clock ticks before mixing, so
the two paths agree; two processes with the same pid would need to start within one
tick (10 ms) of each other, which pid allocation does not allow.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

__all__ = ["TICK_NS", "entity_id", "entity_ids", "format_entity", "host_key", "parse_entity"]

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
    ticks = np.asarray(start_boot_ns, dtype=np.uint64) // np.uint64(TICK_NS)
    p = np.asarray(pids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _mix(np.uint64(hkey) ^ (p << np.uint64(40)) ^ ticks)
    x = np.where(x == 0, np.uint64(1), x)  # 0 means "unknown" in the store
    return x


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
