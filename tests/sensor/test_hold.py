"""The agent's hold of network ring records (sensor/hold.py) and the crash mark it needs.

Records the hold keeps may have had their ring space given back (a ring half full of
records read and not stored): until they are stored, the sensor's FXACC_EARLY mark must
stay set, or an agent killed meanwhile leaves a silent gap (its successor writes gaps of
unknown size only when the mark is set). The mark was cleared once every ring's space was
given back up to what had been read, which an early release makes true at once.
"""

from __future__ import annotations

import threading

import numpy as np

from forensix.sensor.hold import RingHold, hold_bytes
from forensix.sensor.recorder import Recorder
from forensix.sensor.ringbuf import Drained
from forensix.sensor.survival import ACC_EARLY


def _drain(start: int, records: int, size: int = 320) -> Drained:
    step = size + 8
    offs = np.arange(records, dtype=np.int64) * step + 8
    return Drained(bytes(records * step), offs, np.full(records, size, np.int64), start=start)


class _Ring:
    """What ``Recorder._released`` reads of a ring: the read and released positions."""

    def __init__(self, pos: int, released: int) -> None:
        self.pos, self._released = pos, released

    def released(self) -> int:
        return self._released

    def release(self, pos: int | None = None) -> None:
        self._released = self.pos if pos is None else pos


def test_the_hold_hands_on_in_ring_order_within_its_bound() -> None:
    hold = RingHold(limit=10 * 328, pos=1000)
    a, b, c = _drain(1000, 4), _drain(1000 + 4 * 328, 3), _drain(1000 + 7 * 328, 3)
    for d in (a, b, c):
        hold.put(d)
    assert len(hold) == 10 and hold.room() == 0 and hold.peak == 10 * 328
    first = hold.take(7 * 328)  # a and b, not c: about max_bytes, whole drains
    assert len(first) == 7 and first.start == 1000 and first.data == a.data + b.data
    assert hold.handed == 1000 + 7 * 328
    rest = hold.take(1)  # at least one drain
    assert len(rest) == 3 and rest.start == c.start and hold.handed == 1000 + 10 * 328
    assert len(hold.take(1 << 20)) == 0 and hold.handed == 1000 + 10 * 328 and hold.nbytes == 0


def test_the_bound_follows_memory() -> None:
    assert hold_bytes(24 << 30) == 192 << 20
    assert hold_bytes(1 << 30) == 32 << 20  # at least 32 MiB
    assert hold_bytes(1 << 40) == 512 << 20  # at most 512 MiB


def _accounting_recorder() -> tuple[Recorder, list[dict[int, int]]]:
    """A recorder without a sensor whose writes to the ``accounted`` map are kept in a list."""
    rec = Recorder([])
    written: list[dict[int, int]] = []
    rec._write_accounted = written.append  # type: ignore[method-assign]
    rec._acc_lock = threading.Lock()
    return rec, written


def test_held_records_whose_space_went_back_keep_the_crash_mark() -> None:
    rec, written = _accounting_recorder()
    # the network ring: 100 records read, all their space given back early; 60 of them are
    # still in the hold, 40 went to the writer in the batch now written
    proc, net, main = _Ring(500, 500), _Ring(100 * 328, 100 * 328), _Ring(800, 800)
    rec.rings = [proc, net, main]  # type: ignore[list-item]
    rec._released([(proc, 500), (net, 40 * 328), (main, 800)])  # type: ignore[list-item]
    assert written and ACC_EARLY not in written[-1], "the mark was cleared with records held and not stored"
    # once the held ones are written too, every record whose space went back is stored
    rec._released([(proc, 500), (net, 100 * 328), (main, 800)])  # type: ignore[list-item]
    assert written[-1].get(ACC_EARLY) == 0


def test_records_read_but_still_in_the_ring_do_not_keep_the_crash_mark() -> None:
    """On a busy host every tick ends with records read into the hold whose space the ring
    still holds (a killed agent's successor drains them): the mark goes once the records
    whose space went back are stored, or it would stay set for good after one early release
    and every later restart would write gaps of unknown size for nothing."""
    rec, written = _accounting_recorder()
    proc, net, main = _Ring(500, 500), _Ring(120 * 328, 100 * 328), _Ring(900, 800)
    rec.rings = [proc, net, main]  # type: ignore[list-item]
    rec._released([(proc, 500), (net, 100 * 328), (main, 800)])  # type: ignore[list-item]
    assert written[-1].get(ACC_EARLY) == 0
