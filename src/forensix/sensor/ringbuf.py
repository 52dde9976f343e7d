"""Drain a BPF ring buffer from Python through mmap, in batches.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write it); page 1
the producer position; the data follow (the kernel offers them mapped twice, so that no
record wraps; each drain maps the span it reads, see ``RingBuffer._window``). Each
record has an 8-byte header: a u32 length whose bit 31 means "still being written" and
bit 30 "discarded", then a u32 page offset. Records are 8-byte aligned.

``drain`` walks the headers (``walk``: the only per-record Python, a word read and a few
additions each; see there why not numpy) and returns one contiguous copy of the
finished records with their offsets, for vectorised decoding. It does not
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

__all__ = ["Drained", "RingBuffer", "walk"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_u64 = struct.Struct("<Q")


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


def walk(buf: bytes | mmap.mmap, limit: int, start: int = 0, base: int = 0,
         mask: int = (1 << 63) - 1) -> tuple[np.ndarray, np.ndarray, int]:
    """The records from ring position ``start`` that start before ``start + limit``:
    their payload offsets from ``start`` and lengths (discarded records left out), and
    how far the walk went (to the end of the last record, or to the header of one still
    being written). ``buf`` is the ring mapping (data from byte ``base``, positions
    wrapped by ``mask``), or a drained copy (the defaults: no wrap).

    Why a loop: each header's length says where the next one is, and a vectorised walk
    (pointer doubling over every 8-byte slot) costs per byte, ~50 slots per record here,
    more than this loop's ~0.25 µs per record; reading 32-bit words through a memoryview
    costs a quarter less than unpacking each header with struct.
    """
    offs: list[int] = []
    lens: list[int] = []
    add_off, add_len = offs.append, lens.append
    pos = 0
    with memoryview(buf) as view, view.cast("I") as words:  # released: the mmap can close
        while pos < limit:
            word = words[(base + ((start + pos) & mask)) >> 2]
            if word >= _DISCARD:  # busy or discarded
                if word & _BUSY:
                    break
                pos += ((word & ~_DISCARD) + _HDR + 7) & ~7
                continue
            add_off(pos + _HDR)
            add_len(word)
            pos += (word + _HDR + 7) & ~7
    return np.asarray(offs, np.int64), np.asarray(lens, np.int64), pos


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
        start = self.pos
        if prod == start:
            return Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64))
        limit = prod - start if max_bytes is None else min(prod - start, max_bytes)
        window, skip = self._window(start, min(prod, start + limit + _MAX_RECORD))
        try:
            offs, lens, taken = walk(window, limit, 0, skip)
            data = window[skip : skip + taken]
        finally:
            window.close()
        if taken == 0:
            return Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64))
        self.pos = start + taken
        if not hold:
            self.release()
        self.records += len(offs)
        self.bytes += taken
        return Drained(data, offs, lens)

    def _window(self, start: int, end: int) -> tuple[mmap.mmap, int]:
        """Map the ring's data from position ``start`` to ``end``, for one drain; returns the
        mapping and where ``start`` is in it.

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
        return m, skip

    def released(self) -> int:
        """The consumer position the kernel sees: space up to here is free."""
        return int(_u64.unpack_from(self._cons, 0)[0])

    def release(self, pos: int | None = None) -> None:
        """Give the kernel back the space of the records read up to ``pos`` (default: all)."""
        _u64.pack_into(self._cons, 0, self.pos if pos is None else pos)

    def close(self) -> None:
        self._cons.close()
        self._prod.close()
