"""A recorder between drains wakes to watch its rings only while they hold records.

While records arrive the loop ticks every ``poll_interval`` (50 ms) to see a ring pass a
quarter (sensor/pacing.py). With every ring empty there is nothing to watch: it sleeps in
epoll until its next drain, and the kernel wakes it for the first record (recorder.py
``_busy_sleep``). Here the loop is made to believe records arrive (``AlwaysBusy``) while its
sensor is paused, so the rings stay empty: the main thread's sleeps are counted from /proc
(voluntary context switches), not timed. Before, it woke 20 times a second."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder
from forensix.testing.pacing import AlwaysBusy
from forensix.testing.sinks import NullSink

pytestmark = pytest.mark.bpf


def _sleeps(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_a_busy_loop_with_empty_rings_sleeps_until_its_drain() -> None:
    ready = threading.Event()
    rec = Recorder([NullSink()], SensorConfig(), pacer=AlwaysBusy, on_ready=ready.set, batch_interval=1.0,
                   stretched_interval=1.0, flow_interval=3600, idle_flow_interval=3600, clock_interval=3600)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        assert rec.sensor is not None
        rec.sensor.pause()  # every program returns at once: nothing more comes into the rings
        # what came before the pause is drained and given back within a few drains
        deadline = time.monotonic() + 30
        while any(r.pending() for r in rec.rings) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(r.pending() for r in rec.rings), "the rings were not emptied"
        time.sleep(1.5)  # the drain after the last one that had records
        assert t.native_id is not None
        before = _sleeps(t.native_id)
        time.sleep(3.0)  # a window to count in (the count is the assertion, not the time)
        slept = _sleeps(t.native_id) - before
    finally:
        rec.stop()
        t.join(120)
    # one sleep per drain (every second) and per writer wake-up; ticking every 50 ms was ~60
    assert slept <= 15, f"the loop slept {slept} times in 3 s with empty rings (ticking every 50 ms: ~60)"
