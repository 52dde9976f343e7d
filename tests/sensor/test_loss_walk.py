"""The loss accounting at each flush (sensor/losses.py) reads the kernel's drop counters in one
bpf() call, and walks the per-process drop map (``proc_drops``: a hash map, ~0.25 ms to walk its
buckets) only while the counters move: a flush with no drop since the one before walks nothing.
Before, every flush of a live agent made one lookup per event class and walked the map, drops or
not (~0.5 ms a flush, ~1 flush every 1.5 s while a build runs). That the gaps still add up to the
kernel's counters when drops do happen is tests/sensor/test_loss.py's and test_storms.py's."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forensix.sensor import libbpf as lb
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder
from forensix.testing.sinks import NullSink

pytestmark = pytest.mark.bpf


def test_quiet_flushes_neither_walk_the_drop_map_nor_read_the_counters_class_by_class(netns: str,
                                                                                      tmp_path: Path) -> None:
    rec = Recorder([NullSink()], SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino), flow_interval=3600,
                   idle_flow_interval=3600, clock_interval=3600)
    rec.start()
    walks: list[str] = []
    calls = {"counters": 0}
    take_map = rec._take_map
    real: dict[str, Callable[..., int]] = {}
    try:
        assert rec.sensor is not None
        counters_fd = rec.sensor.map_fd("counters")

        def counted_take(name: str, *a: Any) -> Any:
            walks.append(name)
            return take_map(name, *a)

        def counting(fn: Callable[..., int]) -> Callable[..., int]:
            def call(fd: int, *a: Any) -> int:
                if fd == counters_fd:
                    calls["counters"] += 1
                return fn(fd, *a)
            return call

        rec._take_map = counted_take  # type: ignore[method-assign]
        for name in ("bpf_map_lookup_elem", "bpf_map_lookup_batch"):
            real[name] = getattr(lb.lib, name)
            setattr(lb.lib, name, counting(real[name]))
        rec.account_losses()  # the first pass walks whatever the counters say
        first = walks.count("proc_drops")
        calls["counters"] = 0
        for _ in range(4):  # nothing recorded in the namespace, nothing lost
            rec.flush_flows(drain=True)
            rec.account_losses()
        assert first == 1
        assert walks.count("proc_drops") == 1, \
            f"{walks.count('proc_drops') - 1} walks of proc_drops in 4 flushes with no drop"
        assert calls["counters"] == 4, f"{calls['counters']} bpf() calls reading the counters in 4 passes"
        assert int(np.asarray(rec.read_counters()["drops"]).sum()) == sum(rec.stats.drops.values())
    finally:
        for name, fn in real.items():
            setattr(lb.lib, name, fn)
        rec.__dict__.pop("_take_map", None)
        walks.clear()
        rec.finish()
    assert rec.drop_walks_skipped == 4
