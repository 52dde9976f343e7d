"""Memory bounded under load: decoded batches waiting for slow sinks stop at the writer's
byte cap, and the drainer leaves the rest in the kernel's ring (back-pressure), so nothing
is lost, it only waits (sensor/writer.py, QUEUE_BYTES)."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf


class _SlowSink:
    """A sink that holds its first batch about one directory until the drainer has found
    the writer's queue full (at most 60 s), then takes 0.05 s per batch; it keeps the rows
    about that directory."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.paths: list[str] = []
        self.rec: Recorder | None = None

    def write(self, table: str, data: pa.Table) -> None:
        time.sleep(0.05)
        if self.rec is not None and not self.paths and self._mine(table, data):
            deadline = time.monotonic() + 60
            while self.rec._writer.full_waits == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        self._keep(table, data)

    def _mine(self, table: str, data: pa.Table) -> bool:
        return table == "events" and "file_path" in data.column_names and bool(
            pc.any(pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False)).as_py())

    def _keep(self, table: str, data: pa.Table) -> None:
        if table == "events" and "file_path" in data.column_names:
            mine = data.filter(pc.and_(pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False),
                                       pc.equal(data.column("event_action"), "open")))
            self.paths += [str(p) for p in mine.column("file_path").to_pylist()]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_full_queue_holds_records_in_the_ring_not_in_memory(tmp_path: Path) -> None:
    files = tmp_path / f"q-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    sink = _SlowSink(str(files))
    cap = 256 << 10
    ready = threading.Event()
    rec = Recorder([sink], SensorConfig(), on_ready=ready.set, queue_bytes=cap, batch_interval=0.2)
    sink.rec = rec
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        # 3000 files as fast as one shell makes them, far more than the sink takes per batch,
        # in ten waves further apart than a drain: on a quiet host one burst can fit in the
        # one drain the sink is holding, and nothing would queue behind it
        subprocess.run(["sh", "-c", f"cd {files} && for w in 0 1 2 3 4 5 6 7 8 9; do "
                        f"for i in $(seq $((w * 300)) $((w * 300 + 299))); do : > f$i; done; sleep 0.3; done"],
                       check=True, timeout=120)
        time.sleep(1.0)
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    w = rec._writer
    assert w.full_waits > 0, "the queue never filled: the test did not load the writer"
    # the queue stops at the cap, plus what one drain adds on top of it
    assert w.peak_bytes <= cap + 4 * w.largest_put, (w.peak_bytes, w.largest_put)
    assert sorted(set(sink.paths)) == sorted(f"{files}/f{i}" for i in range(3000)), "records were lost"
    assert len(sink.paths) == 3000
