"""A killed recorder's pinned sensor records on for a bounded time, not forever: with no
agent heartbeat for --orphan-timeout, the kernel's heartbeat watch stops it; the next
recorder on the store adopts it, resumes recording, and writes the pause as a gap that
says why nothing was recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import DuckDBStore

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf

TIMEOUT_S = 1.0  # the watch looks every timeout / 4 (at least every 0.1 s)


def _start(store: Path, ready: Path, timeout: float = TIMEOUT_S) -> subprocess.Popen[str]:
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-system-logs", "--no-artifacts",
                          "--store", str(store), "--orphan-timeout", str(timeout), "--ready-file", str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.1)
    return p


def _paused(store: Path) -> bool:
    out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", str(pin_dir_for(store) / "control")],
                         capture_output=True, text=True, check=True).stdout
    return '"paused":2' in out.replace(" ", "")


def test_orphaned_sensor_stops_and_the_next_agent_records_the_pause(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    work = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    first = _start(store, ready)
    first.send_signal(signal.SIGKILL)
    first.wait()
    ready.unlink()
    (work / "before-timeout").touch()  # the sensor records alone, within its timeout
    killed = time.clock_gettime(time.CLOCK_BOOTTIME)
    deadline = time.monotonic() + 30
    while not _paused(store):
        assert time.monotonic() < deadline, "the orphaned sensor never stopped recording"
        time.sleep(0.1)
    stopped_after = time.clock_gettime(time.CLOCK_BOOTTIME) - killed
    assert stopped_after < TIMEOUT_S + 3, f"stopped {stopped_after:.1f} s after the kill, timeout {TIMEOUT_S} s"
    (work / "while-orphaned").touch()  # nobody records this: the gap must say so
    time.sleep(0.5)
    second = _start(store, ready)
    (work / "after-adoption").touch()
    time.sleep(1.5)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert not pin_dir_for(store).exists()

    st = DuckDBStore(store, read_only=True)
    opened = {r["file_path"] for r in rows(st, "SELECT DISTINCT file_path FROM events WHERE event_action = 'open' "
                                               "AND file_path LIKE $p", p=f"{work}/%")}
    assert opened == {f"{work}/before-timeout", f"{work}/after-adoption"}
    created = rows(st, "SELECT min(ts) AS ts FROM events WHERE file_path = $p", p=f"{work}/before-timeout")[0]["ts"]
    resumed = rows(st, "SELECT min(ts) AS ts FROM events WHERE file_path = $p", p=f"{work}/after-adoption")[0]["ts"]
    gaps = rows(st, "SELECT event_class, count, count_unknown, ts_from, ts_to FROM gaps WHERE reason = 'agent-absent'")
    assert {g["event_class"] for g in gaps} == {"process", "file", "network", "flow"}
    for g in gaps:  # the pause: after what was still recorded, before what was recorded again
        assert g["count_unknown"] and g["count"] == 0
        assert created < g["ts_from"] < g["ts_to"] <= resumed
    why = rows(st, "SELECT message FROM events WHERE event_action = 'gap' AND message LIKE 'nothing recorded%'")
    assert len(why) == 1 and "no agent heartbeat" in why[0]["message"], why
    assert f"timeout {TIMEOUT_S:g} s" in why[0]["message"]


def test_a_live_agent_keeps_its_sensor_recording(tmp_path: Path) -> None:
    """The heartbeat keeps a running recorder's sensor going well past the timeout (a few
    seconds: on a loaded 2-core host the loop itself can stall past one second)."""
    os.chmod(tmp_path, 0o755)
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    timeout = 3.0
    p = _start(store, ready, timeout)
    try:
        time.sleep(timeout * 2.5)
        assert not _paused(store)
        (tmp_path / "late").touch()
        time.sleep(1.5)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    st = DuckDBStore(store, read_only=True)
    assert rows(st, "SELECT 1 FROM events WHERE file_path = $p", p=str(tmp_path / "late"))
    assert not rows(st, "SELECT 1 FROM gaps WHERE reason = 'agent-absent'")
