"""While few records arrive, the recorder drains every STRETCHED_INTERVAL (sensor/pacing.py)
instead of every second, and nothing is lost for it: every file a workload makes is in the
record, each drain that carries rows is followed by a ``tick_end`` to the sinks (the live
rules evaluate then), and no drain waits much past its period. The pacer is told that few
records arrive whatever else this shared host records, so the period does stretch."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.pacing import STRETCHED_INTERVAL, Pacer
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

# FILES files created, written and closed over ~4 s: ~100 records a second
WORKLOAD = """
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"f{i}"), "w") as f:
        f.write("x")
    time.sleep(4.0 / n)
"""
FILES = 400


class _Few(Pacer):
    """Sees few records a second whatever the host records; notes each drain's time."""

    drains: ClassVar[list[float]] = []

    def drained(self, records: int, now: float) -> None:
        super().drained(min(records, 1), now)
        if records:
            _Few.drains.append(now)


class _Sink:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.log: list[tuple[str, Any]] = []  # ("rows", paths) of our files, ("tick", None)

    def write(self, table: str, data: pa.Table) -> None:
        if table == "events" and "file_path" in data.schema.names:
            ours = pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False)
            opens = pc.and_(ours, pc.equal(data.column("event_action"), "open"))
            paths = data.column("file_path").filter(opens).to_pylist()
            if paths:
                self.log.append(("rows", paths))

    def tick_end(self) -> None:
        self.log.append(("tick", None))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_stretched_drain_loses_nothing_and_ends_each_tick(tmp_path: Path) -> None:
    d = tmp_path / f"few-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    sink = _Sink(str(d) + "/")
    ready = threading.Event()
    _Few.drains = []
    rec = Recorder([sink], SensorConfig(), on_ready=ready.set, pacer=_Few)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", WORKLOAD, str(d), str(FILES)], check=True, timeout=120)
        t1 = time.monotonic()
        time.sleep(STRETCHED_INTERVAL + 0.5)  # the last files' drain, while still recording
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    opened = {p for kind, paths in sink.log if kind == "rows" for p in paths}
    assert opened == {f"{d}/f{i}" for i in range(FILES)}  # every file, none lost
    # each run of our rows is followed by a tick end (the log has only the two kinds): the
    # live rules are told to evaluate every tick that carried them
    kinds = [k for k, _ in sink.log]
    assert kinds[-1] == "tick", kinds
    runs = sum(1 for i, k in enumerate(kinds) if k == "rows" and (i == 0 or kinds[i - 1] == "tick"))
    assert runs >= 2 and kinds.count("tick") >= runs
    during = [b - a for a, b in zip(_Few.drains, _Few.drains[1:]) if t0 <= a]  # (the tail records too)
    assert len(during) >= 3, (t0, t1, _Few.drains)
    # stretched: the drains come every STRETCHED_INTERVAL, not every second (a quarter-full
    # ring would drain sooner: not at ~100 records a second)
    assert statistics.median(during) >= STRETCHED_INTERVAL - 0.1, during
    # and the loop keeps its period: a record waits one period, not an idle flush's 4 s
    assert max(during) < 2 * STRETCHED_INTERVAL, during
