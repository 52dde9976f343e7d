"""The ring drain takes exactly the finished records, in order, whatever their sizes,
wherever the ring wraps, however a drain is cut: checked on a ring laid out as the
kernel lays it out (consumer page, producer page, data), in a memfd, against a reference
walk written from kernel/bpf/ringbuf.c's description, record by record."""

from __future__ import annotations

import mmap
import os
import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from forensix.sensor.ringbuf import Drained, RingBuffer, walk

PAGE = mmap.PAGESIZE
BUSY, DISCARD = 1 << 31, 1 << 30


class FakeRing:
    """A producer writing records the way the kernel does, into a memfd mapped as a ring;
    the data twice in a row, as the kernel maps them (a drain maps the span it reads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("fx-ring-test")
        os.ftruncate(self.fd, 2 * PAGE + 2 * size)
        self.map = mmap.mmap(self.fd, 2 * PAGE + 2 * size)
        self.prod = 0
        self.records: list[tuple[int, bytes, str]] = []  # (position, payload, state)

    def cons(self) -> int:
        return int(struct.unpack_from("<Q", self.map, 0)[0])

    def _put(self, pos: int, data: bytes) -> None:
        at = pos % self.size
        first = data[: self.size - at]  # a record may wrap around the end
        for copy in (2 * PAGE, 2 * PAGE + self.size):
            self.map[copy + at: copy + at + len(first)] = first
            rest = data[len(first):]
            self.map[copy: copy + len(rest)] = rest

    def page_offset(self, pos: int) -> int:
        """The header's second word as the kernel writes it: the page of the header in the
        ring's memory (bpf_ringbuf_rec_pg_off; the data begin at page 3 there)."""
        return 3 + (pos % self.size) // PAGE

    def add(self, payload: bytes, state: str = "done") -> bool:
        """Reserve and write one record (``busy``: reserved, not committed yet); False if
        the ring has no room for it."""
        need = (len(payload) + 8 + 7) & ~7
        if self.prod + need - self.cons() > self.size:
            return False
        word = len(payload) | (BUSY if state == "busy" else DISCARD if state == "discard" else 0)
        self._put(self.prod, struct.pack("<II", word, self.page_offset(self.prod)) + payload)
        self.records.append((self.prod, payload, state))
        self.prod += need
        struct.pack_into("<Q", self.map, PAGE, self.prod)
        return True

    def commit(self, pos: int) -> None:
        """A busy record at ``pos`` is finished."""
        at = 2 * PAGE + (pos % self.size)
        word = struct.unpack_from("<I", self.map, at)[0] & ~BUSY
        struct.pack_into("<I", self.map, at, word)
        struct.pack_into("<I", self.map, at + self.size, word)
        self.records = [(p, d, "done" if p == pos else s) for p, d, s in self.records]

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


@contextmanager
def fake_ring(size: int) -> Iterator[tuple[FakeRing, RingBuffer]]:
    ring = FakeRing(size)
    rb = RingBuffer(ring.fd, size)
    try:
        yield ring, rb
    finally:
        rb.close()
        ring.close()


def payloads(d: Drained) -> list[bytes]:
    return [d.data[o : o + n] for o, n in zip(d.offsets.tolist(), d.lengths.tolist())]


@pytest.mark.parametrize("seed", range(6))
def test_drains_return_every_finished_record_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    with fake_ring(4 * PAGE) as (ring, rb):
        expected: list[bytes] = []
        got: list[bytes] = []
        busy: list[int] = []
        for _ in range(300):
            for _ in range(rng.randint(0, 12)):
                payload = rng.randbytes(rng.choice([0, 1, 7, 8, 9, 300, 301, rng.randint(0, 900)]))
                state = rng.choices(["done", "discard", "busy"], [8, 1, 1])[0]
                if busy and state == "busy":
                    state = "done"  # one record in progress at a time keeps the check simple
                if not ring.add(payload, state):
                    break
                if state == "busy":
                    busy.append(ring.records[-1][0])
            max_bytes = rng.choice([None, 8, 64, 500, 4096])
            d = rb.drain(max_bytes=max_bytes, hold=rng.random() < 0.3)
            got += payloads(d)
            assert len(d.data) % 8 == 0
            if rb.released() != rb.pos and rng.random() < 0.5:
                rb.release()
            if busy and rng.random() < 0.5:
                ring.commit(busy.pop())
            if not busy:
                rb.release()
        if busy:
            ring.commit(busy.pop())
        while True:
            d = rb.drain()
            if not len(d):
                break
            got += payloads(d)
        expected = [p for _, p, s in ring.records if s == "done"]
        assert got == expected
        assert rb.pos == ring.prod


def test_a_record_in_progress_stops_the_drain_until_it_is_committed() -> None:
    with fake_ring(PAGE) as (ring, rb):
        ring.add(b"a" * 10)
        ring.add(b"b" * 20, "busy")
        ring.add(b"c" * 30)
        assert payloads(rb.drain()) == [b"a" * 10]
        assert not len(rb.drain())
        ring.commit(ring.records[1][0])
        assert payloads(rb.drain()) == [b"b" * 20, b"c" * 30]
        assert rb.released() == ring.prod


def test_a_drain_cut_by_max_bytes_takes_whole_records() -> None:
    with fake_ring(PAGE) as (ring, rb):
        for i in range(5):
            ring.add(bytes([i]) * 100)
        d = rb.drain(max_bytes=150)  # the second record starts before the cut
        assert payloads(d) == [bytes([0]) * 100, bytes([1]) * 100]
        assert len(d.data) == 2 * 112
        assert payloads(rb.drain()) == [bytes([i]) * 100 for i in range(2, 5)]


def test_walk_of_a_region_cut_inside_its_last_record_says_so() -> None:
    """The caller copies more when the last record runs past what it copied."""
    region = struct.pack("<II", 20, 0) + b"x" * 24 + struct.pack("<II", 100, 0) + b"y" * 16
    offs, lens, end = walk(region, len(region))
    assert offs.tolist() == [8, 40] and lens.tolist() == [20, 100]
    assert end == 32 + 8 + 104 > len(region)
    assert np.asarray(offs).dtype == np.int64


def _lookalike_payload(rng: random.Random, ring: FakeRing, size: int, flags: bool = True) -> bytes:
    """A payload holding words that look like headers where they lie (their slot's own page
    offset after a plausible length): what the numpy screen must not mistake for records.
    ``flags``: some look like busy or discarded records too."""
    body = bytearray(rng.randbytes(size))
    start = ring.prod + 8  # where the payload will be in the ring
    for at in range(0, size - 7, 8):
        if rng.random() < 0.05:
            fake_len = rng.choice([0, 8, 24, rng.randint(0, 600)] + ([BUSY | 16, DISCARD | 40] if flags else []))
            struct.pack_into("<II", body, at, fake_len, ring.page_offset(start + at))
    return bytes(body)


@pytest.mark.parametrize("seed", range(4))
def test_screened_drains_equal_the_record_walk_with_lookalike_headers(seed: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Drains large enough for the numpy screen (ringbuf._walk_screened), of records whose
    payloads are full of header lookalikes, across wraps, with busy and discarded records:
    every finished record once, in order; and the screen answered most of the drains."""
    from forensix.sensor import ringbuf

    screened = [0, 0]
    plain = ringbuf._walk_screened

    def counting(*a: object, **k: object) -> object:
        got = plain(*a, **k)  # type: ignore[arg-type]
        screened[got is None] += 1
        return got

    monkeypatch.setattr(ringbuf, "_walk_screened", counting)
    rng = random.Random(seed)
    with fake_ring(64 * PAGE) as (ring, rb):
        busy: list[int] = []
        got: list[bytes] = []
        for round_ in range(40):
            flags = round_ % 2 == 0  # odd rounds: no busy or discarded record, real or lookalike
            while busy and not flags:
                ring.commit(busy.pop())
            for _ in range(rng.randint(100, 1000)):
                state = rng.choices(["done", "discard", "busy"], [40, 1, 1])[0] if flags else "done"
                if busy and state == "busy":
                    state = "done"
                size = rng.choice([0, 8, 13, 120, 400, rng.randint(0, 1500)])
                if not ring.add(_lookalike_payload(rng, ring, size, flags), state):
                    break
                if state == "busy":
                    busy.append(ring.records[-1][0])
            got += payloads(rb.drain(max_bytes=rng.choice([None, None, 40_000, 100_000])))
            if busy and rng.random() < 0.7:
                ring.commit(busy.pop())
            rb.release()
        for pos in busy:
            ring.commit(pos)
        while len(d := rb.drain()):
            got += payloads(d)
            rb.release()
        assert got == [p for _, p, s in ring.records if s == "done"]
        assert rb.pos == ring.prod
    assert screened[0] > screened[1], screened  # the screen answered, the loop was the fallback


@pytest.mark.parametrize("seed", range(20))
def test_walk_of_a_drained_copy_equals_the_record_walk(seed: int) -> None:
    """A copy (no ring geometry: the log host's walk): the screen takes a slot's page or the
    next; same records as the loop, whether the copy wraps the ring or is cut mid-record."""
    from forensix.sensor.ringbuf import _walk_loop

    rng = random.Random(seed)
    ring = FakeRing(16 * PAGE)
    try:
        ring.prod = rng.randrange(0, 16 * PAGE, 8)
        struct.pack_into("<Q", ring.map, 0, ring.prod)  # consumer: an empty ring from there
        first = ring.prod
        while ring.add(_lookalike_payload(rng, ring, rng.randint(0, 500)),
                       rng.choices(["done", "discard"], [30, 1])[0]):
            pass
        span = ring.prod - first
        at = 2 * PAGE + first % ring.size
        region = bytes(ring.map[at: at + span])  # the second copy makes it contiguous
        cut = rng.choice([span, span - 8 * rng.randint(1, 20), rng.randrange(8, span, 8)])
        want = _walk_loop(region[:cut], cut)
        got = walk(region[:cut], cut)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
        assert got[2] == want[2]
    finally:
        ring.close()
