"""The writer thread's rules for failing sinks, without the kernel (sensor/writer.py):
an evidence sink that never takes a batch again stops the recording past the bound with
its cause and fix; one that recovers has its batches, in order, once each."""

from __future__ import annotations

import pyarrow as pa
import pytest

from forensix.errors import ForensixError, StoreError
from forensix.sensor.writer import BatchWriter
from forensix.testing.sinks import BrokenSink


class _Disk:
    """An evidence sink that refuses ``refusals`` writes (a full disk), then takes them."""

    evidence = True
    sink_name = "the test store"

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.rows: list[int] = []
        self.closed = False

    def write(self, table: str, data: pa.Table) -> None:
        if self.refusals:
            self.refusals -= 1
            raise StoreError("cannot write the journal in /x: [Errno 28] No space left on device",
                             "free disk space in /x")
        self.rows += data.column("n").to_pylist()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _batch(a: int, b: int) -> pa.Table:
    return pa.table({"n": pa.array(range(a, b), pa.int64())})


def test_an_evidence_sink_that_never_recovers_stops_the_recording_naming_the_cause() -> None:
    said: list[str] = []
    w = BatchWriter([_Disk(refusals=10**9)], depth=4, on_warning=said.append, evidence_retry_s=0.3)
    w.start()
    w.put("events", _batch(0, 5))
    with pytest.raises(ForensixError) as e:
        w.finish()
    assert "the test store refused batches for" in e.value.message and "No space left" in e.value.message
    assert e.value.hint == "free disk space in /x"


def test_kept_batches_go_in_once_in_order_and_the_warnings_are_said_once() -> None:
    disk, broken, said = _Disk(refusals=3), BrokenSink(), []
    w = BatchWriter([disk, broken], depth=4, on_warning=said.append, evidence_retry_s=30)
    w.coalesce_rows = 1  # one batch per write
    w.start()
    for i in range(4):
        w.put("events", _batch(10 * i, 10 * i + 10))
    w.finish()
    assert disk.rows == list(range(40))
    assert broken.calls == 1
    assert len(said) == 2
    assert sum("broken-test-sink" in m for m in said) == 1
    assert sum("the test store refused batches" in m and "free disk space in /x" in m for m in said) == 1


def test_a_sink_failing_to_flush_at_the_stop_does_not_keep_the_store_open() -> None:
    disk, flaky = _Disk(refusals=0), BrokenSink(ok_batches=10**9, name="flaky-flush")  # writes fine, flush raises
    w = BatchWriter([flaky, disk], depth=4)
    w.start()
    w.put("events", _batch(0, 3))
    w.finish()
    w.end_sinks()
    assert disk.rows == [0, 1, 2] and disk.closed
