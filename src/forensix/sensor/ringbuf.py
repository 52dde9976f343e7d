"""Drain a BPF ring buffer from Python through mmap, in batches.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write it); page 1
the producer position; the data follow (the kernel offers them mapped twice, so that no
record wraps; each drain maps the span it reads, see ``RingBuffer._window``). Each
record has an 8-byte header: a u32 length whose bit 31 means "still being written" and
bit 30 "discarded", then a u32 page offset. Records are 8-byte aligned.

``drain`` walks the headers (the only per-record Python) and returns one contiguous
copy of the finished records with their offsets, for vectorised decoding. It does not
give the space back to the kernel: ``release`` does, once the records are in the store,
so that an agent killed with records in its memory leaves them in the ring for the next
one (the ring is pinned: sensor/loader.py).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Drained", "RingBuffer"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_u64 = struct.Struct("<Q")
_u32 = struct.Struct("<I")


@dataclass
class Drained:
    data: bytes  # the finished records' region, headers included
    offsets: np.ndarray  # int64: start of each record's payload within data
    lengths: np.ndarray  # int64: payload length of each record
    parts: tuple[Drained, ...] = ()  # the drains this one joins, if it joins several

    def __len__(self) -> int:
        return len(self.offsets)

    @staticmethod
    def join(drains: Sequence[Drained]) -> Drained:
        """Several drains as one batch, in order (decoding has a fixed cost per batch).

        Each region's length is a multiple of 8, so records stay 8-byte aligned."""
        drains = [d for d in drains if len(d)]
        if len(drains) == 1:
            return drains[0]
        shift = np.cumsum([0] + [len(d.data) for d in drains[:-1]])
        return Drained(
            b"".join(d.data for d in drains),
            np.concatenate([d.offsets + int(k) for d, k in zip(drains, shift)]),
            np.concatenate([d.lengths for d in drains]),
            tuple(drains),
        )


# Past the drain's limit, the walk reads at most one more record: none is near this long.
_MAX_RECORD = 1 << 20


class RingBuffer:
    def __init__(self, map_fd: int, size: int) -> None:
        self.size = size
        self.mask = size - 1
        page = mmap.PAGESIZE
        self.fd = map_fd
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page
        self.records = 0
        self.bytes = 0
        self.peak = 0  # most bytes waiting at a drain since ``take_peak``
        self.pos = _u64.unpack_from(self._cons, 0)[0]  # read up to here; released up to the consumer position

    def take_peak(self) -> int:
        """The fullest the ring has been since the last call: between drains the fill
        only grows, so it is the largest of the fills seen at drains and of the fill now."""
        peak, self.peak = max(self.peak, self.pending()), 0
        return peak

    def pending(self) -> int:
        prod = _u64.unpack_from(self._prod, 0)[0]
        cons = _u64.unpack_from(self._cons, 0)[0]
        return int(prod - cons)

    def unread(self) -> int:
        """Bytes the kernel wrote that no drain has read yet."""
        return int(_u64.unpack_from(self._prod, 0)[0] - self.pos)

    def drain(self, max_bytes: int | None = None, hold: bool = False) -> Drained:
        """Take every finished record (up to about ``max_bytes``); ``hold``: keep their
        space from the kernel until ``release``."""
        prod = _u64.unpack_from(self._prod, 0)[0]
        self.peak = max(self.peak, prod - _u64.unpack_from(self._cons, 0)[0])
        cons = self.pos
        if prod == cons:
            return Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64))
        limit = prod if max_bytes is None else min(prod, cons + max_bytes)
        buf, base = self._window(cons, min(prod, limit + _MAX_RECORD))
        start = cons
        pos = cons
        offs: list[int] = []
        lens: list[int] = []
        unpack = _u32.unpack_from
        while pos < limit:
            word = unpack(buf, base + pos)[0]
            if word & _BUSY:
                break
            length = word & ~(_BUSY | _DISCARD)
            if not word & _DISCARD:
                offs.append(pos - start + _HDR)
                lens.append(length)
            pos += (length + _HDR + 7) & ~7
        data = buf[base + start : base + pos]
        buf.close()
        if pos == start:
            return Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64))
        self.pos = pos
        if not hold:
            self.release()
        self.records += len(offs)
        self.bytes += pos - start
        return Drained(data, np.asarray(offs, np.int64), np.asarray(lens, np.int64))

    def _window(self, start: int, end: int) -> tuple[mmap.mmap, int]:
        """Map the ring's data from position ``start`` to ``end``, for one drain; returns the
        mapping and what to add to a position to index it.

        The kernel fills a ring mapping in whole at mmap time, so a ring mapped for good is
        resident in the agent in full (the 96 MiB of rings were most of an idle recorder's
        RSS); mapped for the drain only, it costs what the drain reads. The kernel maps
        the data twice in a row, so a window that wraps around the ring's end is still
        one contiguous mapping."""
        page = self._page
        lo = (start & self.mask) & ~(page - 1)
        skip = (start & self.mask) - lo
        length = (skip + (end - start) + page - 1) & ~(page - 1)
        m = mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=2 * page + lo)
        return m, skip - start

    def released(self) -> int:
        """The consumer position the kernel sees: space up to here is free."""
        return int(_u64.unpack_from(self._cons, 0)[0])

    def release(self, pos: int | None = None) -> None:
        """Give the kernel back the space of the records read up to ``pos`` (default: all)."""
        _u64.pack_into(self._cons, 0, self.pos if pos is None else pos)

    def close(self) -> None:
        self._cons.close()
        self._prod.close()
