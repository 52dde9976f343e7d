"""An idle recorder sleeps until something happens, and still stores what happens within
its latency bounds: a record wakes it through the ring (epoll), a flow edge (which puts no
record in a ring) waits at most for the backed-off flow-map flush.

The recorder runs with ``forensix.testing.AlwaysIdle``: no tick, no batch timer, as on a
quiet host (this shared one never is). Each test looks only at its own file."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.agent.sink import StoreSink
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder
from forensix.store.embedded import open_writer
from forensix.testing.pacing import AlwaysIdle

pytestmark = pytest.mark.bpf


class _Arrivals:
    """A sink after the store's: when a row about ``path`` reaches it, the store has it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: dict[str, float] = {}  # table -> monotonic time of the first row about path
        self.got = threading.Condition()

    def write(self, table: str, data: pa.Table) -> None:
        if "file_path" not in data.column_names or table in self.seen:
            return
        if pc.any(pc.equal(data.column("file_path"), self.path)).as_py():
            with self.got:
                self.seen[table] = time.monotonic()
                self.got.notify_all()

    def wait(self, table: str, timeout: float) -> float | None:
        with self.got:
            self.got.wait_for(lambda: table in self.seen, timeout)
            return self.seen.get(table)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _recording(tmp_path: Path, arrivals: _Arrivals, **kw: float) -> Iterator[Recorder]:
    writer = open_writer(tmp_path / "s.duckdb")
    ready = threading.Event()
    rec = Recorder([StoreSink(writer), arrivals], SensorConfig(), pacer=AlwaysIdle, on_ready=ready.set, **kw)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        yield rec
    finally:
        rec.stop()
        t.join(120)
        writer.close()


def test_a_record_wakes_the_idle_recorder(tmp_path: Path) -> None:
    """No timer drains (flows flushed once an hour): only the kernel's wake-up does."""
    path = str(tmp_path / f"touched-{uuid.uuid4().hex[:8]}")
    arrivals = _Arrivals(path)
    for _ in _recording(tmp_path, arrivals, flow_interval=3600, idle_flow_interval=3600):
        time.sleep(1.0)
        t0 = time.monotonic()
        subprocess.run(["touch", path], check=True)  # not from this process: the recorder's own are not recorded
        stored = arrivals.wait("events", 10)
        assert stored is not None, "the file's open was not stored within 10 s"
        # No timer could have drained it: the kernel's wake-up did (on a quiet host), or the
        # loop found the record unread when the writer woke it (on a busy one, like this)
        assert stored - t0 < 2.0, f"stored {stored - t0:.2f} s after it happened"


def test_a_flow_edge_is_stored_within_the_idle_flush_bound(tmp_path: Path) -> None:
    """A write to a file opened long before puts no record in a ring: the edge waits for
    the flow-map flush, which backs off to idle_flow_interval when nothing happens."""
    bound = 2.0
    path = str(tmp_path / f"written-{uuid.uuid4().hex[:8]}")
    arrivals = _Arrivals(path)
    writer_code = ("import sys, time\n"
                   f"f = open({path!r}, 'w')\n"
                   "sys.stdin.readline()\n"
                   "f.write('x'); f.flush(); print('written', flush=True)\n"
                   "sys.stdin.readline()\n")
    for _ in _recording(tmp_path, arrivals, flow_interval=0.5, idle_flow_interval=bound):
        p = subprocess.Popen([sys.executable, "-c", writer_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdin is not None and p.stdout is not None
        try:
            assert arrivals.wait("events", 10) is not None, "the open was not stored"
            time.sleep(3 * bound)  # long enough for the flushes to back off, were the host quiet
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline() == "written\n"
            t0 = time.monotonic()
            stored = arrivals.wait("flows", 3 * bound)
            assert stored is not None, f"the write's edge was not stored within {3 * bound} s"
            assert stored - t0 < bound + 1.0, f"edge stored {stored - t0:.2f} s after the write (bound {bound} s)"
        finally:
            p.stdin.write("\n")
            p.stdin.close()
            p.wait(10)
