"""Drain a BPF ring buffer from Python through mmap, in batches.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write it); page 1
the producer position; the data follow (the kernel offers them mapped twice, so that no
record wraps; each drain maps the span it reads, see ``RingBuffer._window``). Each
record has an 8-byte header: a u32 length whose bit 31 means "still being written" and
bit 30 "discarded", then a u32 page offset. Records are 8-byte aligned.

``drain`` walks the headers (``walk``: numpy screens every 8-byte slot for a header's
page offset and confirms the chain of lengths; a small drain, or one the screen cannot
vouch for, is walked record by record) and returns one contiguous copy of the finished
records with their offsets, for vectorised decoding. It does not
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
    start: int = -1  # the ring position of data's first byte, if one ring's (a drain's, a hold's)

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
         mask: int = (1 << 63) - 1, ring: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The records from ring position ``start`` that start before ``start + limit``:
    their payload offsets from ``start`` and lengths (discarded records left out), and
    how far the walk went (to the end of the last record, or to the header of one still
    being written). ``buf`` is the ring mapping (data from byte ``base``, positions
    wrapped by ``mask``), or a drained copy (the defaults: no wrap). ``ring``: the ring
    position of the first record and the ring's size, when known (a drain knows them):
    the screen below is then exact, wrap included.

    Large regions are screened by numpy (``_walk_screened``); small ones, and any region
    the screen cannot vouch for, are walked record by record (``_walk_loop``). Both give
    the same answer: the screen only ever returns a chain it has confirmed end to end.
    """
    if limit >= _SCREEN_FROM and mask == (1 << 63) - 1 and start == 0 and not base % 8:
        got = _walk_screened(buf, limit, base, ring)
        if got is not None:
            return got
    return _walk_loop(buf, limit, start, base, mask)


# Below this many bytes the loop costs less than the screen's ~20 numpy calls (the process
# and network rings' drains hold a few dozen records).
_SCREEN_FROM = 32 << 10
_PAGE_SHIFT = mmap.PAGESIZE.bit_length() - 1  # the header's page offset counts the kernel's pages
_SLOTS_PER_PAGE = mmap.PAGESIZE // _HDR
_LEN = ~(_BUSY | _DISCARD) & 0xFFFFFFFF


def _walk_screened(buf: bytes | mmap.mmap, limit: int, base: int,
                   ring: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``walk`` without per-record Python, or None when it cannot vouch for its answer.

    The kernel writes each record's header as (length and flags, page offset), the page
    offset being that of the header within the ring's memory (kernel/bpf/ringbuf.c,
    ``bpf_ringbuf_rec_pg_off``): C + (position & mask) >> 12 for a constant C, learnt here
    from the first record. So every 8-byte slot whose second word is its own page's offset
    is a candidate header: every real header is one, and a payload word that happens to
    look like one is rare (~1 in 600 records on a build). The records are then the chain of
    candidates that starts at the first and steps by each header's length (found for all
    candidates at once by pointer doubling): a candidate inside a payload is never on it,
    since the chain steps over payloads. Unknown geometry (a drained copy): the first
    record's offset within its page is unknown, so a slot's page is its own or the next,
    and a wrap is not foreseen; a chain that then stops where no candidate is (a wrap, a
    header the screen missed, bytes that are not a ring's) is left to the loop.
    """
    have = (len(buf) - base) // _HDR
    n = -(-limit // _HDR)  # slots where a record may start
    if n > have:
        return None  # a region shorter than its limit: the loop says what it says
    # views of the caller's mapping, all gone when this returns (the caller closes it)
    pairs = np.frombuffer(buf, np.uint32, count=2 * have, offset=base).reshape(have, 2)
    words = pairs[:n, 1]
    first = int(words[0])
    if ring is not None:
        pos, size = ring
        pages = size >> _PAGE_SHIFT
        in_page = pos & (size - 1) & ((1 << _PAGE_SHIFT) - 1)
        page0 = (pos & (size - 1)) >> _PAGE_SHIFT
    else:
        pages, in_page, page0 = 0, 0, 0
    # slots by page: the rest of the first record's page, whole pages, the last part
    head = min(n, _SLOTS_PER_PAGE - in_page // _HDR)
    rows = (n - head) // _SLOTS_PER_PAGE
    expect = np.arange(page0, page0 + rows + 2, dtype=np.int64)
    if pages:
        expect %= pages
    expect = (expect + (first - page0)).astype(np.uint32)
    body_end = head + rows * _SLOTS_PER_PAGE
    if ring is not None:
        def screen(w: np.ndarray, e: np.ndarray) -> np.ndarray:
            return np.asarray(w == e)
    else:
        def screen(w: np.ndarray, e: np.ndarray) -> np.ndarray:
            return np.asarray((w - e) <= np.uint32(1))  # its own page or the next (wraps below: no match)
    hits = [np.flatnonzero(screen(words[:head], expect[0]))]
    if rows:
        block = words[head:body_end].reshape(rows, _SLOTS_PER_PAGE)
        hits.append(np.flatnonzero(screen(block, expect[1:rows + 1, None])) + head)
    if body_end < n:
        hits.append(np.flatnonzero(screen(words[body_end:], expect[rows + 1])) + body_end)
    cand = np.concatenate(hits)
    lo = pairs[cand, 0]
    return _chain(cand, lo, n)


def _chain(cand: np.ndarray, lo: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The records among candidate header slots ``cand`` (ascending, first = slot 0) with
    first words ``lo``: the chain from slot 0, as ``walk`` returns it; None if it does not
    end as a walk ends (past slot ``n``, or at a record still being written)."""
    m = len(cand)
    length = (lo & np.uint32(_LEN)).astype(np.int64)
    nxt = cand + ((length + _HDR + 7) >> 3)  # the slot of the next header
    flagged = lo >= np.uint32(_DISCARD)
    if nxt[-1] >= n and not flagged.any() and (nxt[:-1] == cand[1:]).all():
        # every candidate is a header, none busy or discarded: the common case
        return cand * _HDR + _HDR, length, int(nxt[-1]) * _HDR
    busy = (lo & np.uint32(_BUSY)) != 0
    at = np.searchsorted(cand, nxt)
    linked = at < m
    linked[linked] = cand[at[linked]] == nxt[linked]
    # the candidates reachable from slot 0 (the chain ends at a busy record or one whose
    # next header is no candidate): after step k, all within 2**(k+1) links
    jump = np.append(np.where(linked & ~busy, at, m), m)
    on = np.zeros(m + 1, bool)
    on[0] = True
    reach = 1
    while reach <= m:
        on[jump[on]] = True
        jump = jump[jump]
        reach *= 2
    on = on[:m]
    last = int(np.flatnonzero(on)[-1])
    if busy[last]:
        end = int(cand[last]) * _HDR
        on[last] = False
    elif nxt[last] >= n:
        end = int(nxt[last]) * _HDR
    else:
        return None  # the next header is not a candidate: not a chain this screen can vouch for
    keep = on & ((lo & np.uint32(_DISCARD)) == 0)
    return cand[keep] * _HDR + _HDR, length[keep], end


def _walk_loop(buf: bytes | mmap.mmap, limit: int, start: int = 0, base: int = 0,
               mask: int = (1 << 63) - 1) -> tuple[np.ndarray, np.ndarray, int]:
    """``walk`` record by record: each header's length says where the next one is; reading
    32-bit words through a memoryview costs a quarter less than unpacking each header with
    struct (~0.25 µs per record)."""
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
            offs, lens, taken = walk(window, limit, 0, skip, ring=(start, self.size))
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
        return Drained(data, offs, lens, start=start)

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
