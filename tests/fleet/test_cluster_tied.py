"""A test run killed with SIGKILL leaves no ClickHouse server behind: the project's clusters
for tests are started ``tied`` (the kernel sends the servers SIGTERM when their starter dies);
a cluster kept for others (the CLI's ``start``, a bench's --keep-cluster) outlives its starter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from forensix.testing.clickhouse import SERVER_BIN, load_cluster, stop_cluster

_STARTER = """
import sys, time
from forensix.testing.clickhouse import start_cluster
cl = start_cluster(sys.argv[1], shards=1, tied=sys.argv[2] == "tied")
print(cl.shards[0].pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # a zombie nobody reaped yet has stopped


def _start_then_kill_starter(directory: Path, mode: str) -> int:
    assert Path(SERVER_BIN).exists(), f"{SERVER_BIN} is missing: scripts/setup.sh installs clickhouse-server"
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(directory), mode], stdout=subprocess.PIPE,
                               text=True, env=os.environ.copy())
    assert starter.stdout is not None
    line = starter.stdout.readline()
    assert line.strip().isdigit(), f"the starter printed {line!r} (see {directory}/shard0/stdout.log)"
    server = int(line)
    assert _alive(server)
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    return server


def test_a_tied_cluster_stops_when_its_starter_is_killed(tmp_path: Path) -> None:
    server = _start_then_kill_starter(tmp_path / "tied", "tied")
    end = time.monotonic() + 30  # 18.16 takes up to ~10 s to stop on SIGTERM
    while _alive(server) and time.monotonic() < end:
        time.sleep(0.1)
    alive = _alive(server)
    if alive:
        stop_cluster(load_cluster(tmp_path / "tied"), timeout=2.0)
    assert not alive, "clickhouse-server outlived the SIGKILLed test process that started it"


def test_an_untied_cluster_outlives_its_starter(tmp_path: Path) -> None:
    server = _start_then_kill_starter(tmp_path / "kept", "kept")
    try:
        time.sleep(1.0)
        assert _alive(server), "a cluster started for others (not tied) stopped with its starter"
    finally:
        stop_cluster(load_cluster(tmp_path / "kept"), timeout=2.0)
