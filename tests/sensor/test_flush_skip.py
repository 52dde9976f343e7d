"""A flush walks the flows and reopens hash maps only when the programs inserted into them since
the last walk (they count their inserts: bpf/events.h FX_ACC_*_INSERTS), and never loses an edge
for it: an edge inserted between two flushes is in the next one.

Recorded: a network namespace of the test's own, so nothing else inserts. Every CPU's slot caches
are marked busy (``slot_busy``), so the child's edge and open go to the hash maps, not the slots,
as a slot's edge given up under load does. Before the change every flush walked both maps (no
walk skipped); with the skip but without the programs' count, the edge waited for the last flush."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor import libbpf as lb
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

# writes 5 x 3 bytes to PATH, keeps it open (no close, no exit: the edge stays in the map) until stdin closes
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
for _ in range(5):
    os.write(fd, b"abc")
print("written", flush=True)
sys.stdin.read()
"""


class _Edges:
    """The flows rows of one file, by inode, as the recorder stored them."""

    def __init__(self) -> None:
        self.flows: list[pa.Table] = []

    def write(self, table: str, data: pa.Table) -> None:
        if table == "flows":
            self.flows.append(data)

    def writes(self, ino: int) -> tuple[int, int]:
        if not self.flows:
            return 0, 0
        t = pa.concat_tables(self.flows, promote_options="default")
        t = t.filter(pc.equal(t.column("file_inode"), ino))
        return int(pc.sum(t.column("write_count")).as_py() or 0), int(pc.sum(t.column("write_bytes")).as_py() or 0)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _slots_busy(rec: Recorder) -> None:
    """Every CPU's slot caches taken: the programs go to the hash maps."""
    assert rec.sensor is not None
    ncpu = lb.lib.libbpf_num_possible_cpus()
    ones = (ctypes.c_uint64 * ncpu)(*([1] * ncpu))  # a per-CPU __u32, 8 bytes a CPU
    key = ctypes.c_uint32(0)
    lb.check_int(lb.lib.bpf_map_update_elem(rec.sensor.map_fd("slot_busy"), ctypes.byref(key), ones, 0),
                 "mark the slots busy")


def test_an_edge_inserted_between_two_flushes_is_in_the_next_one(netns: str, tmp_path: Path) -> None:
    sink = _Edges()
    rec = Recorder([sink], SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino), flow_interval=3600,
                   idle_flow_interval=3600, clock_interval=3600)
    rec.start()
    child = None
    try:
        _slots_busy(rec)
        rec.flush_flows(drain=True)  # the first flush walks whatever the counts say
        before = rec.stats.walks_skipped
        rec.flush_flows(drain=True)  # nothing happened in the namespace since
        assert rec.stats.walks_skipped == before + 2, "an empty flush walked the hash maps"
        target = tmp_path / "edge"
        child = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", WRITER, str(target)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
        rec.flush_flows(drain=True)  # the edge went into the flows map: this flush takes it
        ino = target.stat().st_ino
        deadline = time.monotonic() + 30  # the writer thread hands the rows to the sink
        while sink.writes(ino) != (5, 15) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.writes(ino) == (5, 15), f"the flush after the writes shipped {sink.writes(ino)} (writes, bytes)"
        assert rec.stats.walks_skipped == before + 2, "a flush after inserts skipped a walk"
    finally:
        if child is not None:
            child.communicate(timeout=30)
        rec.finish()
