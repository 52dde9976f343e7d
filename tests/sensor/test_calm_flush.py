"""A calm host's flow maps are flushed every few seconds instead of every second
(sensor/pacing.py), and nothing moves: every byte written and read, and every re-open,
is in the record exactly, whatever the period. The recorder's pacer is told the host is
calm whatever else runs on it (this shared host never is), so its periods do stretch."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.pacing import Pacer
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

# For SECONDS: 7 bytes written to a file kept open, and another file opened, read (64 bytes)
# and closed, every 5 ms.
WORKLOAD = """
import os, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
with open(os.path.join(d, "read"), "w") as f:
    f.write("r" * 64)
w = os.open(os.path.join(d, "written"), os.O_WRONLY | os.O_CREAT, 0o644)
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    os.write(w, b"x" * 7)
    fd = os.open(os.path.join(d, "read"), os.O_RDONLY)
    os.read(fd, 64)
    os.close(fd)
    n += 1
    time.sleep(0.005)
os.close(w)
print(os.getpid(), n)
"""


class _Calm(Pacer):
    """Every flush sees a calm host: only this test's own counts would be."""

    periods: ClassVar[list[float]] = []

    def flushed(self, rows: int, now: float | None = None) -> float:
        self.records_since_flush = 0
        period = super().flushed(0, now)
        _Calm.periods.append(period)
        return period


class _Rows:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tables: dict[str, list[pa.Table]] = {"events": [], "flows": []}

    def write(self, table: str, data: pa.Table) -> None:
        if table in self.tables and "file_path" in data.schema.names:
            keep = pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False)
            self.tables[table].append(data.filter(keep))

    def rows(self, table: str, pid: int) -> list[dict[str, object]]:
        t = pa.concat_tables(self.tables[table], promote_options="default")
        col = "pid" if table == "flows" else "process_pid"
        return t.filter(pc.equal(t.column(col), pid)).to_pylist()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_stretched_flush_periods_keep_every_byte_and_reopen(tmp_path: Path) -> None:
    d = tmp_path / f"calm-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    sink = _Rows(str(d) + "/")
    ready = threading.Event()
    _Calm.periods = []
    rec = Recorder([sink], SensorConfig(), on_ready=ready.set, pacer=_Calm)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        out = subprocess.run([sys.executable, "-c", WORKLOAD, str(d), "6"], check=True, capture_output=True,
                             text=True, timeout=120).stdout.split()
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    pid, n = int(out[0]), int(out[1])
    assert 4.0 in _Calm.periods, f"the flush period never stretched: {_Calm.periods}"
    flows = sink.rows("flows", pid)
    written = [r for r in flows if r["file_path"] == f"{d}/written"]
    read = [r for r in flows if r["file_path"] == f"{d}/read"]
    assert sum(r["write_count"] for r in written) == n  # type: ignore[misc]
    assert sum(r["write_bytes"] for r in written) == 7 * n  # type: ignore[misc]
    assert sum(r["read_bytes"] for r in read) == 64 * n  # type: ignore[misc]
    assert sum(r["write_bytes"] for r in read) == 64  # the file's own content, written once
    opens = [r for r in sink.rows("events", pid) if r["event_action"] == "open" and r["file_path"] == f"{d}/read"
             and r["file_flags"] is not None and not int(r["file_flags"]) & 0o3]  # type: ignore[call-overload]
    # the first open of each period is a record of its own; the repeats are counted
    assert sum(int(r["event_count"] or 1) for r in opens) == n, opens  # type: ignore[call-overload]
    # and per period, not per call: a handful of rows for ~1,500 opens
    assert len(opens) <= 2 * len(_Calm.periods) + 4
