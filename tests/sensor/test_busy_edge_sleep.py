"""Between drains, a recorder whose rings receive a steady trickle of records sleeps until its
drain instead of looking every ``poll_interval``, and still drains a ring at once when it
passes a quarter (sensor/pacing.py ``Pacer.sleep_busy``, bpf/sensor.bpf.c ``fx_wake_flags``).

Both tests record only a network namespace made for them (``SensorConfig.netns``), so this
shared host's other work neither adds records nor wakes the loop. The loop thread's sleeps are
counted from /proc (voluntary context switches), not timed: before, a build-like load woke
it 20 times a second (~60 in the 3-s window), to see whether a ring had passed a quarter."""

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
from forensix.testing.sinks import NullSink

from .conftest import OPENS

pytestmark = pytest.mark.bpf


def _sleeps(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


class _Opens:
    """The paths of the files opened under ``prefix``, as the recorder stored them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.paths: set[str] = set()
        self.gaps = 0

    def write(self, table: str, data: pa.Table) -> None:
        if table == "gaps":
            self.gaps += data.num_rows
        if table != "events" or "file_path" not in data.schema.names:
            return
        ours = pc.fill_null(pc.starts_with(data.column("file_path"), self.prefix), False)
        self.paths.update(data.column("file_path").filter(ours).to_pylist())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _start(rec: Recorder) -> threading.Thread:
    ready = threading.Event()
    rec.on_ready = ready.set
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    assert ready.wait(90), "the recorder did not start"
    return t


def _workload(netns: str, d: Path, n: int, pause: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", OPENS, str(d), str(n), str(pause)])


def test_a_steady_trickle_of_opens_does_not_wake_the_loop_between_drains(netns: str, tmp_path: Path) -> None:
    config = SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino)
    rec = Recorder([NullSink()], config, batch_interval=1.0, stretched_interval=1.0, flow_interval=3600,
                   idle_flow_interval=3600, clock_interval=3600)
    t = _start(rec)
    load = _workload(netns, tmp_path, 1600, 0.005)  # ~200 new files a second for ~8 s: a build's rate
    try:
        time.sleep(2.0)  # the load is running, the drains come every second
        assert load.poll() is None, "the load ended before the window"
        assert t.native_id is not None
        before = _sleeps(t.native_id)
        ring_before = rec.stats.events
        time.sleep(3.0)  # a window to count in (the count is the assertion, not the time)
        slept = _sleeps(t.native_id) - before
        recorded = rec.stats.events - ring_before
        assert load.poll() is None, "the load ended inside the window"
    finally:
        load.wait(60)
        rec.stop()
        t.join(120)
    assert recorded > 100, f"only {recorded} events in the window: the load did not reach the recorder"
    # a few a drain: the drain's own waits, the writer's wake-up once the batch is stored, the
    # kernel's for the first record after the ring emptied; a tick every 50 ms was ~60 more
    assert slept <= 25, f"the loop slept {slept} times in 3 s of a steady load (a tick every 50 ms: ~70)"


def test_a_ring_passing_a_quarter_is_drained_at_once_and_nothing_is_lost(netns: str, tmp_path: Path) -> None:
    """The drain timer is far off (30 s) and the main ring small (1 MiB): a burst of opens
    takes it past a quarter within a second; the kernel's wake-up makes the loop drain it
    then, long before it is full (a loop asleep until its timer would lose most of them)."""
    config = SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino, ring_main_mb=1)
    sink = _Opens(str(tmp_path))
    rec = Recorder([sink], config, batch_interval=30.0, stretched_interval=30.0, flow_interval=3600,
                   idle_flow_interval=3600, clock_interval=3600)
    t = _start(rec)
    n = 6000  # ~2 MiB of records: twice the ring
    try:
        load = _workload(netns, tmp_path, n, 0.0002)
        assert load.wait(120) == 0
        main = rec.rings[2]
        # what the drain left is read well inside the 30-s timer: a wake-up made it, not the timer
        deadline = time.monotonic() + 10
        while main.unread() > main.size // 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        unread, peak, size = main.unread(), main.peak, main.size
        drained_early = len(sink.paths)
    finally:
        rec.stop()
        t.join(120)
    dropped = rec.stats.dropped
    assert dropped == 0 and sink.gaps == 0, f"{dropped} records lost in the kernel ({sink.gaps} gap rows)"
    assert len(sink.paths) == n, f"{len(sink.paths)} of {n} files recorded"
    assert unread <= size // 4 and drained_early > n // 2, (
        f"{unread} of {size} bytes unread long after the burst, {drained_early} files stored before the timer")
    assert peak <= size // 2, f"the main ring held {peak} of {size} bytes at a drain: drained late"
