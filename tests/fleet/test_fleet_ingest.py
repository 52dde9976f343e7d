"""Two log hosts writing to a real 2-shard ClickHouse cluster: every event once, on its shard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.pki.authority import Authority
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.batches import events_batch
from forensix.testing.clickhouse import Cluster, start_shard, stop_shard
from forensix.testing.shipping import host_info, shipping_sink


def _wait(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _ship(pki: Authority, tmp: Path, addr: tuple[str, int], host: str, batches: int, rows: int) -> None:
    sink = shipping_sink(pki, host, tmp, addr)
    for i in range(batches):
        sink.write("events", events_batch(rows, start_seq=i * rows, host=host_info(host)))
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()


def _counts(store: ClickHouseStore) -> dict[str, tuple[int, int]]:
    t = store.native("SELECT host_name, count() AS n, uniqExact(seq) AS d FROM events "
                     "WHERE event_category != 'agent' GROUP BY host_name ORDER BY host_name")
    return {r["host_name"]: (r["n"], r["d"]) for r in t.to_pylist()}


def test_two_servers_two_shards_every_event_once_on_its_shard(
        cluster: Cluster, url: str, pki: Authority, tmp_path: Path, start_server: Callable[..., Any]) -> None:
    s1 = start_server(url, tmp_path / "ev1")
    s2 = start_server(url, tmp_path / "ev2")
    try:
        for host, srv in (("alpha", s1), ("beta", s1), ("gamma", s2), ("delta", s2)):
            _ship(pki, tmp_path, srv.addr, host, 4, 250)
        s1.srv.ingest.flush()
        s2.srv.ingest.flush()
        # one query through the Distributed table sees both log hosts' fleets, each event once
        assert _counts(s1.store) == {h: (1000, 1000) for h in ("alpha", "beta", "delta", "gamma")}
        # every host's rows are on exactly one shard: the one its (certified) name hashes to
        for i, shard in enumerate(s1.store.shards):
            rows = shard.execute(f"SELECT host_name, cityHash64(host_name) % 2, count() "
                                 f"FROM {s1.store.db}.events_local GROUP BY host_name")
            assert rows and all(int(mod) == i for _, mod, _ in rows), rows
        assert sum(len(sh.execute(f"SELECT DISTINCT host_name FROM {s1.store.db}.events_local"))
                   for sh in s1.store.shards) == 4
        _wait(lambda: s1.store.native("SELECT count() FROM events WHERE event_category = 'agent'")
              .column(0)[0].as_py() == 8)  # the last agent's stop is written by its connection thread
        agent = s1.store.native("SELECT host_name, event_action FROM events WHERE event_category = 'agent' "
                                "ORDER BY host_name, ts").to_pylist()
        assert [(r["host_name"], r["event_action"]) for r in agent] == [
            (h, a) for h in ("alpha", "beta", "delta", "gamma") for a in ("start", "stop")]
        # the evidence stays on each log host and verifies there, with the fleet store beside it
        time.sleep(0.5)  # a checkpoint
        for ev in ("ev1", "ev2"):
            r = CliRunner().invoke(cli, ["verify", "--evidence", str(tmp_path / ev), "--store", url])
            assert r.exit_code == 0, r.output
    finally:
        s1.stop()
        s2.stop()


def test_restart_after_a_crash_mid_insert_stores_each_frame_once(
        cluster: Cluster, url: str, pki: Authority, tmp_path: Path, start_server: Callable[..., Any]) -> None:
    """The store had the frames but the ingested mark did not (a kill between the INSERT and
    the mark): the next start re-ingests from evidence and finds them there already."""
    ev = tmp_path / "ev"
    s = start_server(url, ev)
    try:
        _ship(pki, tmp_path, s.addr, "alpha", 5, 200)
        s.srv.ingest.flush()
    finally:
        s.stop()
    for mark in ev.glob("alpha/*/ingested"):
        mark.write_text("-1")  # as if nothing had been marked ingested when it died
    # ... and the last frame never reached the store: delete its rows (a kill before its INSERT)
    st = ClickHouseStore(url)
    last = st.native("SELECT max(seq) FROM events WHERE host_name = 'alpha'").column(0)[0].as_py()
    for shard in st.shards:
        shard.execute(f"ALTER TABLE {st.db}.events_local DELETE WHERE host_name = 'alpha' AND seq >= 800")
    _wait(lambda: st.native("SELECT count() FROM events WHERE host_name = 'alpha' AND seq >= 800")
          .column(0)[0].as_py() == 0)
    assert last == 999
    s2 = start_server(url, ev)  # replays evidence at start
    try:
        assert _counts(s2.store)["alpha"] == (1000, 1000)
    finally:
        s2.stop()
        st.close()


def test_a_shard_down_names_it_keeps_the_batch_and_loses_nothing_acked(
        cluster: Cluster, url: str, pki: Authority, tmp_path: Path, start_server: Callable[..., Any],
        caplog: pytest.LogCaptureFixture) -> None:
    s = start_server(url, tmp_path / "ev")
    down = s.store.shards[1]
    # a host that lives on shard 2 (cityHash64(host_id) % 2 == 1)
    host = next(h for h in ("alpha", "beta", "gamma", "delta")
                if s.store.native("SELECT cityHash64({h}) % 2", {"h": h}).column(0)[0].as_py() == 1)
    shard = next(x for x in cluster.shards if x.tcp_port == down.port)
    try:
        stop_shard(shard, kill=True)
        with caplog.at_level(logging.ERROR, logger="forensix.store"):
            _ship(pki, tmp_path, s.addr, host, 3, 100)  # acknowledged: durable in evidence
            _wait(lambda: any(down.where in r.getMessage() for r in caplog.records))
        msg = next(r.getMessage() for r in caplog.records if down.where in r.getMessage())
        assert "kept and retried" in msg
        start_shard(shard, cluster)
        s.srv.ingest.flush()
        assert _counts(s.store)[host] == (300, 300)
    finally:
        if not shard.pid:
            start_shard(shard, cluster)
        s.stop()


def test_forensix_server_killed_mid_insert_loses_and_duplicates_nothing(
        cluster: Cluster, url: str, pki: Authority, tmp_path: Path) -> None:
    """The real `forensix server` process, SIGKILLed while an agent ships; restarted on the
    same evidence, the agent resends what was not acknowledged: every event once."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ev = tmp_path / "ev"
    fx = [sys.executable, "-c", "from forensix.cli.main import main; main()", "server", "--pki", str(pki.dir),
          "--listen", f"127.0.0.1:{port}", "--store", url, "--evidence", str(ev), "--no-rules",
          "--checkpoint-interval", "0.2"]
    env = dict(os.environ)

    def start(name: str) -> subprocess.Popen[bytes]:
        log = tmp_path / name
        p = subprocess.Popen(fx, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        _wait(lambda: "listening on" in log.read_text() or p.poll() is not None)
        assert p.poll() is None, log.read_text()
        return p

    srv = start("s1.log")
    sink = shipping_sink(pki, "beta", tmp_path, ("127.0.0.1", port))
    try:
        for i in range(40):
            sink.write("events", events_batch(500, start_seq=i * 500, host=host_info("beta")))
            if i == 20:
                srv.send_signal(signal.SIGKILL)  # mid-stream: some frames acked, some in flight
                srv.wait()
                srv = start("s2.log")
        _wait(lambda: sink.spool.unacked() == 0, 60)
        sink.close()
        st = ClickHouseStore(url)
        try:
            _wait(lambda: _counts(st).get("beta", (0, 0))[0] >= 20_000, 60)
            time.sleep(0.5)  # anything late would show as a duplicate
            assert _counts(st)["beta"] == (20_000, 20_000)
        finally:
            st.close()
    finally:
        srv.terminate()
        srv.wait(30)
