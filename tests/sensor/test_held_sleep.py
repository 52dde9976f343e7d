"""While a drained batch waits for its sinks (read, not stored, its ring space not given back),
the recorder's loop sleeps until its next drain, the kernel's wake-up (a ring past a quarter)
or the writer's (the space given back), instead of ticking every ``poll_interval``
(sensor/recorder.py ``_busy_sleep``). A build's batches wait so for the nice-19 reader of its new
executables (artifacts/defer.py): the loop ticked ~16 times a second through a lua build.

Recorded in a network namespace made for the test; the loop thread's sleeps are counted from
/proc (voluntary context switches), not timed. The sink is slow on purpose (0.5 s an events
batch): the ring holds read records most of the time, while the writer has room."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

from .conftest import OPENS

pytestmark = pytest.mark.bpf


class _SlowOpens:
    """Takes ``pause`` seconds for every events batch (a store far behind, with room), and
    keeps the paths opened under ``prefix``."""

    def __init__(self, prefix: str, pause: float) -> None:
        self.prefix, self.pause = prefix, pause
        self.paths: set[str] = set()
        self.gaps = 0

    def write(self, table: str, data: pa.Table) -> None:
        if table == "gaps":
            self.gaps += data.num_rows
        if table != "events" or "file_path" not in data.schema.names:
            return
        time.sleep(self.pause)
        ours = pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False)
        self.paths.update(data.column("file_path").filter(ours).to_pylist())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _sleeps(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_records_waiting_for_a_slow_sink_do_not_make_the_loop_tick(netns: str, tmp_path: Path) -> None:
    config = SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino)
    sink = _SlowOpens(str(tmp_path), 0.5)
    rec = Recorder([sink], config, batch_interval=1.0, stretched_interval=1.0, flow_interval=3600,
                   idle_flow_interval=3600, clock_interval=3600)
    ready = threading.Event()
    rec.on_ready = ready.set
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    assert ready.wait(90), "the recorder did not start"
    n = 1600
    load = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", OPENS, str(tmp_path), str(n),
                             "0.005"])
    held_seen = 0
    try:
        time.sleep(2.0)
        assert load.poll() is None, "the load ended before the window"
        assert t.native_id is not None
        before = _sleeps(t.native_id)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # how often the ring held read records (the state under test)
            held_seen += any(r.pending() > r.unread() for r in rec.rings)
            time.sleep(0.05)
        slept = _sleeps(t.native_id) - before
        assert load.poll() is None, "the load ended inside the window"
    finally:
        load.wait(60)
        rec.stop()
        t.join(120)
    assert held_seen >= 20, f"the ring held read records at {held_seen} of ~60 looks: the sink was not slow enough"
    assert rec.stats.dropped == 0 and sink.gaps == 0, f"{rec.stats.dropped} records lost in the kernel"
    assert len(sink.paths) == n, f"{len(sink.paths)} of {n} files recorded"
    # a few a drain (the drain's own waits, the writer's wake-up once it gave the space back);
    # a tick every 50 ms while the records waited for the sink was ~40 more
    assert slept <= 25, f"the loop slept {slept} times in 3 s while its records waited for a slow sink"
