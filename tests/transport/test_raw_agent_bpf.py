"""The raw-record agent (agent/raw.py) against the decoding agent, on one real recording.

One real sensor records a workload of ours. ``TeeRecorder`` (forensix.testing.rawtee)
delivers what it drains twice: decoded by the agent into a DuckDB store (what ``forensix
agent --decode`` stores), and raw over real mutual TLS to a real log host that decodes it
(``forensix agent --raw``). Both stores must hold the same rows, table by table.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from forensix.agent.raw import RawRecorder
from forensix.agent.sink import StoreSink
from forensix.artifacts import ArtifactStore, Collector
from forensix.model.host import HostInfo, local_host
from forensix.pki.authority import Authority
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.crash import pause_between_tables
from forensix.testing.loghost import start_log_host
from forensix.testing.rawtee import Routed, TeeRecorder, assert_same_store
from forensix.testing.scenario import free_port
from forensix.testing.shipping import shipping_sink


def _workload(work: Path, pause: str = "") -> list[str]:
    """Our own processes: execs, files written, read, renamed, a pipe, an exit code."""
    script = (f"cd {work} && for i in 1 2 3 4; do echo $i > f$i; cat f$i > g$i; mv g$i h$i; {pause} done; "
              "ls > list; sh -c 'exit 3'; cat list | wc -l > n; rm f1")
    return ["sh", "-c", script]


def _ours(store: Any, work: Path) -> None:
    """The workload is in the store: its files, its processes, its edges (not a vacuous match)."""
    ev = store.query(f"SELECT event_action, file_path, file_target_path FROM events WHERE file_path LIKE '{work}/%'")
    acts = set(ev["event_action"].to_pylist())
    assert {"open", "rename", "unlink"} <= acts, acts
    assert f"{work}/h4" in ev["file_target_path"].to_pylist()
    procs = store.query("SELECT executable, args FROM processes WHERE source = 'exec'")
    assert any(a and "exit 3" in " ".join(a) for a in procs["args"].to_pylist())
    fl = store.query(f"SELECT count(*) AS n FROM flows WHERE file_path LIKE '{work}/%'")
    assert fl["n"][0].as_py() > 0


def _host() -> HostInfo:
    local = local_host()
    return HostInfo(local.host_id, "alpha", local.boot_id, local.kernel)  # the enrolled name, as the agent ships


@pytest.mark.bpf
def test_raw_agent_stores_what_the_decoding_agent_stores(pki: Authority, log_server: Any, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    decoded = open_writer(tmp_path / "decoded.duckdb")
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    rec = TeeRecorder([Routed(StoreSink(decoded), True), Routed(ship, False)], host=_host())
    assert rec.run(command=_workload(work)) == 0
    log_server.srv.ingest.flush()
    assert ship.spool.unacked() == 0
    counts = assert_same_store(decoded, log_server.store)
    assert counts["events"] > 20 and counts["processes"] > 5, counts
    _ours(log_server.store, work)
    decoded.close()


@pytest.mark.bpf
def test_log_host_killed_between_frames_rebuilds_its_decoders(pki: Authority, tmp_path: Path) -> None:
    """SIGKILL the log host mid-recording, start it again: its decoders are rebuilt from the
    evidence (the newest decoder checkpoint, then a dry re-decode of the stored frames after
    it), the agent resends what was not acknowledged, and the store equals the agent-decoded
    one: nothing twice, nothing missing."""
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    store = tmp_path / "srv.duckdb"
    log = tmp_path / "server.log"
    srv = start_log_host(pki, store, port, log, "--decoder-checkpoint", "0.3")
    decoded = open_writer(tmp_path / "decoded.duckdb")
    ship = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", port))
    ship.config.drain_s = 60  # on stop, wait for the restarted log host (its start is slow on a busy machine)
    rec = TeeRecorder([Routed(StoreSink(decoded), True), Routed(ship, False)], host=_host(), flow_interval=0.2,
                      batch_interval=0.2)
    killed = {"done": False}

    def kill_and_restart() -> None:
        # once a decoder checkpoint is written and a frame acknowledged after it, kill -9
        end = time.monotonic() + 30
        while not list(tmp_path.glob("srv.duckdb.evidence/alpha/*/decoder-*.ckpt")) and time.monotonic() < end:
            time.sleep(0.05)
        after = ship.spool.acked + 1
        while ship.spool.acked < after and time.monotonic() < end:
            time.sleep(0.05)
        srv.send_signal(signal.SIGKILL)
        srv.wait()
        killed["at"] = ship.spool.acked
        time.sleep(0.5)  # frames spool meanwhile
        killed["srv"] = start_log_host(pki, store, port, log, "--decoder-checkpoint", "0.3")
        killed["done"] = True

    t = threading.Thread(target=kill_and_restart, daemon=True)
    t.start()
    try:
        assert rec.run(command=_workload(work, pause="sleep 0.6;")) == 0
        t.join(30)
        assert killed["done"], log.read_text()[-3000:]
        assert ship.spool.unacked() == 0, log.read_text()[-3000:]
    finally:
        for p in (srv, killed.get("srv")):
            if isinstance(p, subprocess.Popen) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    decoded.flush()
    assert 0 < killed["at"] < ship.spool.acked, killed
    said = log.read_text()
    assert "decoder of alpha/" in said and "checkpoint after frame" in said  # rebuilt, not started blank
    server_store = open_reader(str(store))
    try:
        assert_same_store(decoded, server_store)
        _ours(server_store, work)
    finally:
        server_store.close()
        decoded.close()
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.bpf
def test_raw_agent_keeps_what_execs_ran_and_the_log_host_hashes_the_rows(pki: Authority, log_server: Any,
                                                                         tmp_path: Path) -> None:
    """Executed files are preserved at exec time on the agent (it decodes the process ring and
    executable mappings only), and the hash lands on the rows the log host decodes."""
    work = tmp_path / "work"
    work.mkdir()
    exe = work / "fx-true"
    shutil.copy("/usr/bin/true", exe)
    lib = work / "libfxz.so"
    shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1", lib)
    kept = ArtifactStore(tmp_path / "artifacts").open()
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    rec = RawRecorder([ship], host=_host(), artifacts=Collector(kept, _host(), ship=True))
    load = f"import ctypes, time; ctypes.CDLL({str(lib)!r}); time.sleep(0.5)"  # alive while the mapping is read
    assert rec.run(command=["sh", "-c", '"$1" && "$2" -c "$3"', "sh", str(exe), sys.executable, load]) == 0
    log_server.srv.ingest.flush()
    st = log_server.store
    sha_exe = hashlib.sha256(exe.read_bytes()).hexdigest()
    sha_lib = hashlib.sha256(lib.read_bytes()).hexdigest()
    ev = st.query(f"SELECT process_hash_sha256 AS h FROM events WHERE event_action = 'exec' AND syscall IS NULL "
                  f"AND process_executable = '{exe}'")
    assert ev["h"].to_pylist() == [sha_exe]
    pr = st.query(f"SELECT hash_sha256 AS h FROM processes WHERE source = 'exec' AND executable = '{exe}'")
    assert pr["h"].to_pylist() == [sha_exe]
    arts = st.query(f"SELECT sha256, kind FROM artifacts WHERE path LIKE '{work}/%'")
    assert {(sha_exe, "executable"), (sha_lib, "library")} <= set(zip(arts["sha256"].to_pylist(),
                                                                      arts["kind"].to_pylist(), strict=True))


@pytest.mark.bpf
def test_log_host_killed_between_the_tables_of_a_raw_frame_stores_each_row_once(pki: Authority,
                                                                                tmp_path: Path) -> None:
    """A raw frame decodes to several tables (events, processes...), one ingest item whose
    tables are appended one after the other. The log host is SIGKILLed with the first of a
    frame's tables in the store and the next not (a seam stops its ingest thread there,
    forensix.testing.crash). At the restart the frame's missing tables are stored, and only
    those: the store equals the agent-decoded one, nothing twice, nothing missing."""
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    store, log, paused = tmp_path / "srv.duckdb", tmp_path / "server.log", tmp_path / "paused"
    srv = start_log_host(pki, store, port, log, env=pause_between_tables(paused))
    decoded = open_writer(tmp_path / "decoded.duckdb")
    ship = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", port))
    ship.config.drain_s = 60  # on stop, wait for the restarted log host
    rec = TeeRecorder([Routed(StoreSink(decoded), True), Routed(ship, False)], host=_host(), batch_interval=0.2)
    got: dict[str, Any] = {}

    def kill_and_restart() -> None:
        end = time.monotonic() + 60
        while not paused.exists() and time.monotonic() < end:
            time.sleep(0.05)
        if not paused.exists():
            return
        srv.send_signal(signal.SIGKILL)  # half of a raw frame's tables in the store
        srv.wait()
        got["srv"] = start_log_host(pki, store, port, log)

    t = threading.Thread(target=kill_and_restart, daemon=True)
    t.start()
    try:
        assert rec.run(command=_workload(work, pause="sleep 0.3;")) == 0
        t.join(60)
        assert "srv" in got, "the log host never paused between two tables of a raw frame: " + log.read_text()[-3000:]
        assert ship.spool.unacked() == 0, log.read_text()[-3000:]
    finally:
        for p in (srv, got.get("srv")):
            if isinstance(p, subprocess.Popen) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    decoded.flush()
    said = log.read_text()
    assert "raw frame(s) half in the store: only their other tables are stored" in said, said[-3000:]
    server_store = open_reader(str(store))
    try:
        assert_same_store(decoded, server_store)
        _ours(server_store, work)
    finally:
        server_store.close()
        decoded.close()
