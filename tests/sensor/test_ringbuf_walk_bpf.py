"""The numpy walk of the ring (sensor/ringbuf.py ``_walk_screened``) on the real kernel's rings.

The screen finds headers by the page offset the kernel writes into each one
(kernel/bpf/ringbuf.c ``bpf_ringbuf_rec_pg_off``), learnt from the drain's first record and
the ring's geometry. If that layout were not what this kernel writes, every drain would fall
back to the record-by-record loop (still right, only slower) or, worse, a wrong screen could
take records that are not there: so every drain of a real recording is walked again here by
the loop over the bytes it took, and must give the same records; and the drains large enough
for the screen must have been answered by it, not by the fallback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forensix.sensor import ringbuf
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder
from forensix.testing.sinks import NullSink

pytestmark = pytest.mark.bpf

# Enough records for drains of several 100 KB: 20,000 files created, written and removed.
WORKLOAD = """
import os, sys
d = sys.argv[1]
for i in range(20000):
    p = os.path.join(d, f"f{i}")
    with open(p, "w") as f:
        f.write("x")
    os.unlink(p)
"""


def test_every_drain_of_a_real_ring_walks_as_the_loop_walks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / f"walk-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    answered: list[bool] = []  # per screened drain: did the screen vouch for it
    mismatches: list[str] = []
    drains = [0]
    screened = ringbuf._walk_screened

    def counting(*a: Any, **k: Any) -> Any:
        got = screened(*a, **k)
        answered.append(got is not None)
        return got

    drain = ringbuf.RingBuffer.drain

    def checked(self: ringbuf.RingBuffer, *a: Any, **k: Any) -> ringbuf.Drained:
        got = drain(self, *a, **k)
        if len(got):
            drains[0] += 1
            offs, lens, end = ringbuf._walk_loop(got.data, len(got.data))
            if not (np.array_equal(offs, got.offsets) and np.array_equal(lens, got.lengths) and end == len(got.data)):
                mismatches.append(f"drain of {len(got.data)} bytes: {len(got)} records, the loop finds {len(offs)}")
        return got

    monkeypatch.setattr(ringbuf, "_walk_screened", counting)
    monkeypatch.setattr(ringbuf.RingBuffer, "drain", checked)
    ready = threading.Event()
    rec = Recorder([NullSink()], SensorConfig(), on_ready=ready.set)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        subprocess.run([sys.executable, "-c", WORKLOAD, str(d)], check=True, timeout=180)
        time.sleep(1.5)
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    assert not mismatches, mismatches[:5]
    assert drains[0] > 0
    assert answered, "no drain was large enough for the screen (20,000 files are ~40,000 records)"
    assert all(answered), f"the screen fell back to the loop on {answered.count(False)} of {len(answered)} drains"
