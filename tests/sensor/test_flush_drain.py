"""At a flow-map flush the recorder drains once, after taking the maps: the flush's edges
and the ring records before them are one batch (each batch costs the decoder, the sinks and
the rules a fixed ~3-10 ms whatever its size: a drain just before the flush and another in
it, a few ms apart, were two). Nothing is lost or reordered by it: every file's open comes
before its flow edge, and every edge is named by its open."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

# For SECONDS, a file every 50 ms: created, written (100 bytes) and kept open, so that its
# edge is still in the kernel's map at the next flush; all closed at the end.
WRITER = """
import os, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
fds, i, end = [], 0, time.monotonic() + seconds
while time.monotonic() < end:
    fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"w" * 100)
    fds.append(fd)
    i += 1
    time.sleep(0.05)
for fd in fds:
    os.close(fd)
print(i)
"""


class _Sink:
    """Keeps, in arrival order, which batch first held each file's open and its edges."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.batches = 0
        self.opened: dict[str, int] = {}
        self.edge: dict[str, int] = {}
        self.written: dict[str, int] = {}

    def write(self, table: str, data: pa.Table) -> None:
        self.batches += 1
        if table not in ("events", "flows") or "file_path" not in data.schema.names:
            return
        mine = data.filter(pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False))
        if table == "flows":
            for r in mine.select(["file_path", "write_bytes"]).to_pylist():
                self.edge.setdefault(r["file_path"], self.batches)
                self.written[r["file_path"]] = self.written.get(r["file_path"], 0) + r["write_bytes"]
            return
        for r in mine.select(["file_path", "event_action", "flow_write_bytes"]).to_pylist():
            if r["event_action"] == "open":
                self.opened.setdefault(r["file_path"], self.batches)
            elif r["event_action"] == "flow":
                self.edge.setdefault(r["file_path"], self.batches)
                self.written[r["file_path"]] = self.written.get(r["file_path"], 0) + r["flow_write_bytes"]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_flush_tick_is_one_batch_and_keeps_every_edge_named_after_its_open(tmp_path: Path) -> None:
    d = tmp_path / f"fl-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    sink = _Sink(str(d) + "/")
    ready = threading.Event()
    # a flush every second, calm or not (sensor/pacing.py stretches the period on a calm host;
    # this test is about what one flush tick drains, and wants several)
    rec = Recorder([sink], SensorConfig(), on_ready=ready.set, idle_flow_interval=1.0)
    calls: list[str] = []
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        decode, flush = rec.decoder.decode, rec.flush_flows

        def counted_decode(*a: Any, **k: Any) -> Any:
            calls.append("decode")
            return decode(*a, **k)

        def counted_flush(*a: Any, **k: Any) -> Any:
            calls.append("flush")
            return flush(*a, **k)

        rec.decoder.decode = counted_decode  # type: ignore[method-assign]
        rec.flush_flows = counted_flush  # type: ignore[method-assign]
        out = subprocess.run([sys.executable, "-c", WRITER, str(d), "6"], check=True, capture_output=True,
                             text=True, timeout=120)
        n = int(out.stdout)
        time.sleep(1.5)
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    paths = [f"{d}/f{i}" for i in range(n)]
    assert sorted(sink.opened) == sorted(paths), "opens were lost"
    assert sorted(sink.edge) == sorted(paths), "flow edges were lost or not named by their file's open"
    assert all(sink.written[p] == 100 for p in paths), "bytes written were lost or counted twice"
    assert all(sink.opened[p] <= sink.edge[p] for p in paths), "an edge reached the sinks before its open"
    # While busy, the loop drains at each flush tick and at no other (the batch timer and the
    # flush share their second): one decoded batch per flush, plus the last drains of the stop.
    flushes = calls.count("flush")
    assert flushes >= 4, calls
    assert calls.count("decode") <= flushes + 3, calls
