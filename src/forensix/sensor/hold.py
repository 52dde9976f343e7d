"""Network ring records the agent took while its writer had no room: raw, in order, bounded.

Why: the drainer takes the main ring only while the writer has room for more decoded
batches (back-pressure: src/forensix/sensor/writer.py), and so it did the network ring. A web
server taking a new connection per request writes two ~320-byte records a request (accept,
connect) into it, ~16 MB a second at ~25 k requests/s, and a writer behind for a few seconds
(the store's journal and the live rules share two cores with nginx and wrk) filled the 64 MiB
ring: a record or a few lost per 15-s run (docs/benchmarks.md, "web-conn: nothing lost").
Unlike the main ring's file records, whose repeats the kernel counts, each network record is
a distinct fact (a port scan's probes, a connection flood's sources).

So the network ring is drained whatever the writer's room, into this hold: the records as the
ring held them (not decoded: ~5-10x smaller than their rows), handed to the writer in order,
oldest first, once it has room. The space of held records goes back to the kernel when a
ring is half full of records read and not stored (``Recorder.poll_once``), with the sensor's
``FXACC_EARLY`` mark: an agent killed then leaves a next one a gap of unknown size, never a
silent one. The hold is bounded (``hold_bytes``); past the bound the ring is not drained and
the kernel counts what it cannot keep, as for any loss.
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np

from forensix.sensor.ringbuf import Drained, RingBuffer

__all__ = ["RingHold", "hold_bytes"]


def hold_bytes(mem_bytes: int | None = None) -> int:
    """The hold's bound: 1/128 of memory within 32-512 MiB (188 MiB on 23.5 GiB: ~11 s of
    web-conn's network records at 25 k requests/s beyond the 64 MiB ring's four). It is only
    filled while the writer is behind: an agent that keeps up holds a tick's records at most."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if mem_bytes is None else mem_bytes
    return int(min(max(mem // 128, 32 << 20), 512 << 20))


class RingHold:
    """Drains of one ring, in ring order, waiting for the writer; ``limit`` bytes at most
    (plus at most one record: a drain ends at a record's end)."""

    def __init__(self, limit: int, pos: int) -> None:
        """``pos``: the ring position the first drain put here starts at."""
        self.limit = limit
        self._parts: deque[Drained] = deque()
        self.nbytes = 0
        self.records = 0
        self.peak = 0  # most bytes held at once
        self.handed = pos  # ring position up to which records went to the writer

    def __len__(self) -> int:
        return self.records

    def room(self) -> int:
        return max(self.limit - self.nbytes, 0)

    def fill(self, ring: RingBuffer) -> int:
        """Take the ring's records, as many as there is room for (past the bound the ring
        waits, and the kernel counts what it cannot keep); returns how many. A copy of ~16 MB
        takes a few ms: the recorder fills at both ends of a drain tick, so that a long decode
        (an agent starved of CPU) does not leave the ring to fill meanwhile."""
        took = 0
        while self.room() and ring.unread():  # 16 MiB a drain: the window it maps is resident meanwhile
            d = ring.drain(max_bytes=min(self.room(), 16 << 20), hold=True)
            if not d.data:
                break  # a record still being written
            self.put(d)
            took += len(d)
        return took

    def put(self, d: Drained) -> None:
        if not d.data:  # (a drain of discarded records only is kept: its space is given back in turn)
            return
        self._parts.append(d)
        self.nbytes += len(d.data)
        self.records += len(d)
        self.peak = max(self.peak, self.nbytes)

    def take(self, max_bytes: int) -> Drained:
        """The oldest held drains, about ``max_bytes`` of them (at least one), as one drain;
        ``handed`` moves past them."""
        parts: list[Drained] = []
        size = 0
        while self._parts and (not parts or size + len(self._parts[0].data) <= max_bytes):
            d = self._parts.popleft()
            parts.append(d)
            size += len(d.data)
        if parts:
            self.nbytes -= size
            self.records -= sum(len(d) for d in parts)
            self.handed = parts[-1].start + len(parts[-1].data)
        parts = [d for d in parts if len(d)]  # (not those of discarded records only)
        if not parts:
            return Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64), start=self.handed)
        joined = Drained.join(parts)
        joined.start = parts[0].start  # consecutive drains of one ring: one region of it
        return joined
