"""An agent replaced mid-stream: killed (as an upgrade or a crash does) and started again on
the same spool, in the other mode (raw, then --decode, then raw again), each new agent
adopting the pinned sensor the dead one left, while the log host keeps the stream's decoder.

Real `forensix agent` processes on the real kernel, a real `forensix server` over mutual TLS
with a DuckDB store. The workload writes files the whole time, through both kills: each of
its files must be on the log host exactly once (nothing lost while no agent ran, nothing
shipped twice by the agent that adopted the rings).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import open_reader
from forensix.testing.loghost import FX, start_log_host
from forensix.testing.scenario import free_port, wait_for

pytestmark = pytest.mark.bpf


def _agent(pki: Authority, tmp: Path, port: int, name: str, *mode: str) -> subprocess.Popen[bytes]:
    """A `forensix agent` on the test's spool; returns once it records (new or adopted sensor)."""
    b = pki.bundle("alpha")
    log = tmp / f"{name}.log"
    p = subprocess.Popen(FX + ["agent", "--server", f"127.0.0.1:{port}", "--bundle", str(b.directory),
                               "--seal-key", str(tmp / "alpha.seal"), "--spool", str(tmp / "spool"),
                               "--heartbeat", "0.5", "--batch-ms", "100", "--drain", "60", *mode],
                         stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for(lambda: "recording: every program attached" in log.read_text() or p.poll() is not None, 90,
             f"{name} recording")
    assert p.poll() is None, log.read_text()[-3000:]
    return p


def _kill(p: subprocess.Popen[bytes], spool: Path) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (pin_dir_for(spool) / "control").exists(), "the killed agent's sensor is not pinned"


def test_agents_replaced_in_both_modes_adopt_the_sensor_and_ship_each_event_once(pki: Authority,
                                                                                 tmp_path: Path) -> None:
    work, spool = tmp_path / "work", tmp_path / "spool"
    work.mkdir()
    (tmp_path / "alpha.seal").write_bytes(pki.bundle("alpha").seal.read_bytes())  # the agents evolve their copy
    port = free_port()
    store, log = tmp_path / "srv.duckdb", tmp_path / "server.log"
    srv = start_log_host(pki, store, port, log, "--decoder-checkpoint", "0.5")
    agents: list[subprocess.Popen[bytes]] = []
    stop = tmp_path / "stop"
    work_p: subprocess.Popen[bytes] | None = None
    try:
        agents.append(_agent(pki, tmp_path, port, "raw-1"))
        # files until told to stop, through both kills and restarts
        work_p = subprocess.Popen(["sh", "-c", (f'i=0; while [ ! -e {stop} ]; do : > {work}/f$i; i=$((i+1)); '
                                              'sleep 0.02; done')])
        time.sleep(1.5)
        _kill(agents[-1], spool)
        time.sleep(1.0)  # the kernel records alone
        agents.append(_agent(pki, tmp_path, port, "decode-2", "--decode"))
        time.sleep(1.5)
        _kill(agents[-1], spool)
        time.sleep(1.0)
        agents.append(_agent(pki, tmp_path, port, "raw-3", "--raw"))
        time.sleep(1.5)
        stop.touch()
        work_p.wait(30)
        time.sleep(1.0)  # the last files' records drained
        agents[-1].send_signal(signal.SIGTERM)
        assert agents[-1].wait(120) == 0, (tmp_path / "raw-3.log").read_text()[-3000:]
    finally:
        stop.touch()
        for p in [*agents, srv]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    said = (tmp_path / "raw-3.log").read_text()
    assert "0 unacknowledged left in the spool" in said, said[-3000:]
    assert "kernel records and flow entries undecoded (the log host counts the rows it stores)" in said
    assert not pin_dir_for(spool).exists(), "the clean stop left the sensor pinned"
    made = {f"{work}/{p.name}" for p in work.iterdir()}
    r = open_reader(store)
    try:
        rows = r.query(f"SELECT file_path, count(*) AS n FROM events WHERE event_action = 'open' "
                       f"AND file_path LIKE '{work}/f%' GROUP BY file_path").to_pylist()
        starts = r.query("SELECT message FROM events WHERE host_name = 'alpha' AND event_action = 'start' "
                         "AND event_category = 'agent' AND message LIKE 'forensix % recording%'")
        warnings = r.query("SELECT message FROM events WHERE event_action = 'decode-warning'")
    finally:
        r.close()
    got = {x["file_path"]: x["n"] for x in rows}
    assert len(made) > 100, len(made)
    missing = sorted(made - got.keys(), key=lambda f: int(re.sub(r"\D", "", f.rsplit("/", 1)[1])))
    assert not missing, f"{len(missing)} of {len(made)} files not on the log host: {missing[:5]}..."
    twice = {f: n for f, n in got.items() if n != 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"
    adopted = [m for m in starts["message"].to_pylist() if "adopted" in m]
    assert len(adopted) == 2, starts["message"].to_pylist()
    assert not warnings.num_rows, warnings["message"].to_pylist()[:3]
