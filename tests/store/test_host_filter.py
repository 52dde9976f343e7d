"""A log host's store holds many hosts: --host shows one, for every query command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.store import schema
from forensix.store.embedded import open_writer

NOW = 1_795_000_000 * 10**9


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    store = tmp_path / "fleet.duckdb"
    w = open_writer(store)
    ev, pr = [], []
    for i, host in enumerate(["web01", "db01"]):
        for pid in (100 + i, 200 + i):
            eid = (i + 1) * 1000 + pid
            o = {"host_id": f"id-{host}", "host_name": host, "boot_id": "b"}
            pr.append({**o, "entity_id": eid, "image_seq": 1, "pid": pid, "start_ts": NOW, "image_ts": NOW,
                       "executable": f"/usr/bin/{host}-tool", "args": [f"{host}-tool"], "source": "exec"})
            ev.append({**o, "ts": NOW + pid, "event_category": "process", "event_action": "exec",
                       "process_pid": pid, "process_entity_id": eid, "process_executable": f"/usr/bin/{host}-tool"})
            ev.append({**o, "ts": NOW + pid + 1, "event_category": "file", "event_action": "open",
                       "process_pid": pid, "process_entity_id": eid, "file_path": "/etc/hosts", "file_inode": 7,
                       "file_device": 1})
    w.append("events", pa.Table.from_pylist(ev, schema=schema.EVENTS))
    w.append("processes", pa.Table.from_pylist(pr, schema=schema.PROCESSES))
    w.close()
    return store


def _fx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forensix", *args], capture_output=True, text=True, timeout=120)


def test_events_and_ps_for_one_host(fleet: Path) -> None:
    out = _fx("events", "--store", str(fleet), "--host", "db01", "--format", "json")
    hosts = {json.loads(line)["host.name"] for line in out.stdout.splitlines()}
    assert hosts == {"db01"}
    ps = _fx("ps", "--store", str(fleet), "--host", "id-web01", "--all", "--at", str(NOW + 10**9), "--format", "json")
    assert {json.loads(line)["process.pid"] for line in ps.stdout.splitlines()} == {100, 200}


def test_analyses_for_one_host(fleet: Path) -> None:
    tree = _fx("tree", "--store", str(fleet), "--host", "web01", "--at", str(NOW + 10**9), "--format", "json")
    assert tree.returncode == 0, tree.stderr
    assert "web01-tool" in tree.stdout and "db01-tool" not in tree.stdout
    hist = _fx("file", "/etc/hosts", "--store", str(fleet), "--host", "db01", "--format", "json")
    assert hist.returncode == 0, hist.stderr
    pids = {json.loads(line).get("process.pid") for line in hist.stdout.splitlines()}
    assert pids == {101, 201}


def test_an_unknown_host_names_the_known_ones(fleet: Path) -> None:
    res = _fx("tree", "--store", str(fleet), "--host", "mail01")
    assert res.returncode == 2 and "db01" in res.stderr and "web01" in res.stderr
