"""A batch held for its executables' hashes holds everything after it, ring space included.

The recorder gives a drain's ring space back to the kernel once the writer has written the
drain's batch (``after_written``): a next agent re-reads what was not given back. A batch
held for its hashes (artifacts/defer.py ``HeldWriter``) must therefore hold that callback
too, and every batch put after it, in order: nothing may reach the writer before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from forensix.artifacts.defer import HeldWriter


class Writer:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        self.got.append((table, data.num_rows))

    def after_written(self, fn: Callable[[], None]) -> None:
        self.got.append("released")

    def finish(self) -> None:
        self.got.append("finished")


class Later:
    def __init__(self, rows: int) -> None:
        self.done = threading.Event()
        self.rows = rows

    def ready(self) -> bool:
        return self.done.is_set()

    def wait(self) -> None:
        self.done.set()  # as the collector's reader: read now, at once

    def tables(self) -> dict[str, pa.Table]:
        return {"events": pa.table({"x": list(range(self.rows))})}


def _t(n: int) -> pa.Table:
    return pa.table({"x": list(range(n))})


def test_a_held_batch_keeps_its_place_and_the_ring_space_behind_it() -> None:
    w = Writer()
    counted: list[tuple[str, int]] = []
    h = HeldWriter(w, lambda t, d: counted.append((t, d.num_rows)), lambda e: None)
    h.put("events", _t(1))
    first, second = Later(2), Later(3)
    h.hold(first, False, 2)
    h.after_written(lambda: None)  # the first drain's ring space
    h.put("flows", _t(4))
    h.hold(second, False, 3)
    h.after_written(lambda: None)
    assert w.got == [("events", 1)]  # nothing overtakes the held batch
    second.done.set()
    h.release()
    assert w.got == [("events", 1)]  # the second is ready, but behind the first
    first.done.set()
    h.release()
    assert w.got == [("events", 1), ("events", 2), "released", ("flows", 4), ("events", 3), "released"]
    assert counted == [("events", 2), ("events", 3)]  # the held batches, counted as they go
    assert h.held_rows == 0
    h.put("events", _t(5))  # nothing held: straight through
    assert w.got[-1] == ("events", 5)


def test_finish_reads_what_is_left_and_hands_it_on() -> None:
    w = Writer()
    h = HeldWriter(w, lambda t, d: None, lambda e: None)
    h.hold(Later(2), False, 2)
    h.after_written(lambda: None)
    h.finish()
    assert w.got == [("events", 2), "released", "finished"]
