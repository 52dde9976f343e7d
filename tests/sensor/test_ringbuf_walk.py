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
        for i, b in enumerate(data):  # byte by byte: a record may wrap around the end
            self.map[2 * PAGE + ((pos + i) % self.size)] = b
            self.map[2 * PAGE + self.size + ((pos + i) % self.size)] = b

    def add(self, payload: bytes, state: str = "done") -> bool:
        """Reserve and write one record (``busy``: reserved, not committed yet); False if
        the ring has no room for it."""
        need = (len(payload) + 8 + 7) & ~7
        if self.prod + need - self.cons() > self.size:
            return False
        word = len(payload) | (BUSY if state == "busy" else DISCARD if state == "discard" else 0)
        self._put(self.prod, struct.pack("<II", word, 0) + payload)
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
