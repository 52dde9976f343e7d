"""The writer giving a drain's ring space back (``Recorder._released``) wakes the loop only when
that cannot wait for its drain: the loop asleep until its next drain (``Pacer.sleep_busy``) while
records trickle in (a build) was woken at every give-back, ~once a tick, to find nothing to do
(~70-100 µs of CPU a wake-up in this VM). Still woken: an idle loop waiting for the space, a ring
a quarter full, a hold of network records to hand on (tests/sensor/test_held_sleep.py and
test_conn_burst.py hold those). Counted, not timed: the wake-ups the writer thread asks for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.pacing import Pacer
from forensix.sensor.recorder import Recorder
from forensix.testing.sinks import NullSink

from .conftest import OPENS

pytestmark = pytest.mark.bpf


class _CountingPacer(Pacer):
    writer_wakes = 0  # wake() called on the writer's thread (the give-back)

    def wake(self) -> None:
        if threading.current_thread().name == "fx-writer":
            _CountingPacer.writer_wakes += 1
        super().wake()


def test_a_trickle_of_records_is_given_back_without_waking_the_loop(netns: str, tmp_path: Path) -> None:
    ready = threading.Event()
    rec = Recorder([NullSink()], SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino), pacer=_CountingPacer,
                   on_ready=ready.set)
    th = threading.Thread(target=rec.run, kwargs={"duration": 60})
    th.start()
    load = None
    try:
        assert ready.wait(90), "the recorder did not start"
        # a file every 0.1 s for ~8 s: records keep coming, the loop drains every 1.5 s
        load = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", OPENS, str(tmp_path), "80", "0.1"])
        time.sleep(2.0)
        drains, wakes = rec.stats.drains, _CountingPacer.writer_wakes
        time.sleep(5.0)
        drains, wakes = rec.stats.drains - drains, _CountingPacer.writer_wakes - wakes
        assert load.poll() is None, "the load ended inside the window"
    finally:
        if load is not None:
            load.wait(60)
        rec.stop()
        th.join(60)
    assert drains >= 3, f"{drains} drains in 5 s of a trickle of records"
    assert wakes <= 1, f"the writer woke the loop {wakes} times for {drains} drains given back"
    assert rec.stats.dropped == 0
