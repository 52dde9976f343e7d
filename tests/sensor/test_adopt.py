"""The agent may die, the kernel keeps recording: a recorder killed with SIGKILL leaves its
sensor pinned in bpffs, and the next `forensix record` on the same store adopts it and
stores what happened meanwhile; `forensix record --stop` detaches what a killed one left."""

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


def _start(store: Path) -> subprocess.Popen[str]:
    # Ready means this recorder runs its sensor (new or adopted): a killed recorder's pins
    # exist already, so their presence does not say the next one has started.
    ready = store.with_name(f"ready-{uuid.uuid4().hex[:6]}")
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store),
                          "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.2)
    assert (pin_dir_for(store) / "control").exists()  # pinned: it outlives this process
    return p


def test_killed_recorder_loses_no_file(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store = tmp_path / "s.duckdb"
    files = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    first = _start(store)
    # the workload: 100 files over ~5 s, through the kill and the restart
    work = subprocess.Popen(["sh", "-c", f"for i in $(seq 0 99); do : > {files}/f$i; sleep 0.05; done"])
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (pin_dir_for(store) / "control").exists(), "the killed recorder's sensor is gone"
    time.sleep(1.5)  # the kernel records alone
    second = _start(store)
    work.wait(timeout=60)
    time.sleep(1.5)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert not pin_dir_for(store).exists(), "a clean stop leaves nothing pinned"
    st = DuckDBStore(store, read_only=True)
    got = rows(st, "SELECT DISTINCT file_path FROM events WHERE event_action = 'open' AND file_path LIKE $p",
               p=f"{files}/f%")
    assert {r["file_path"] for r in got} == {f"{files}/f{i}" for i in range(100)}
    assert rows(st, "SELECT message FROM events WHERE event_action = 'start' AND message LIKE '%adopted%'")
    gaps = rows(st, "SELECT count, count_unknown, reason FROM gaps")
    # what the dead agent had taken from the kernel and not stored: unknown, never "0"
    assert {"count": 0, "count_unknown": True, "reason": "agent-restart"} in gaps
    assert all(g["count"] > 0 or g["count_unknown"] for g in gaps), gaps


def test_stop_detaches_what_a_killed_recorder_left(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    p = _start(store)
    p.send_signal(signal.SIGKILL)
    p.wait()
    res = subprocess.run([*FORENSIX, "record", "--stop", "--store", str(store)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "detached" in res.stderr
    assert not pin_dir_for(store).exists()
