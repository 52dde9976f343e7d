"""A store append that fails for real: the log host's ``ingested`` mark never passes a
frame the store lacks; the group is retried, or re-ingested from evidence at the next start.

DuckDB: its file on a small tmpfs that the test fills (a full disk, the kernel's ENOSPC,
nothing mocked). ClickHouse: a shard killed while frames wait for it, and the log host
stopped before it comes back."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_fleet_ingest import _counts, _wait

from forensix.pki.authority import Authority
from forensix.server.listener import LogServer, ServerConfig
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.testing import disk
from forensix.testing.batches import events_batch
from forensix.testing.clickhouse import Cluster, start_shard, stop_shard
from forensix.testing.shipping import host_info, shipping_sink


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of the test's own (root: CI runs these tests as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "fleet-test", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _send(pki: Authority, tmp: Path, addr: tuple[str, int], first: int, batches: int, rows: int = 200,
          host: str = "alpha") -> None:
    """Ship ``batches`` of a host's events numbered from ``first`` and wait until all are acked."""
    sink = shipping_sink(pki, host, tmp, addr)
    for i in range(batches):
        sink.write("events", events_batch(rows, start_seq=first + i * rows, host=host_info(host)))
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()


class _DuckHost:
    """A log host as `forensix server --store FILE.duckdb` runs it."""

    def __init__(self, pki: Authority, path: Path, ev: Path) -> None:
        self.store: DuckDBStore = open_writer(path)
        self.store.seal_in_background(nice=0, single_threaded=False)
        self.srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=60, checkpoint_s=0.2),
                             self.store)
        self.addr = self.srv.bind()
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.srv.stop()
        self.thread.join(timeout=5)


def _stored(path: Path) -> tuple[int, int]:
    st = open_writer(path)
    try:
        r = st.query("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM events "
                     "WHERE host_name = 'alpha' AND event_category != 'agent'").to_pylist()[0]
        return int(r["n"]), int(r["d"])
    finally:
        st.close()



def _no_space(caplog: pytest.LogCaptureFixture) -> bool:
    """The log host said an append failed on the full disk (it logs each failure it sees)."""
    return any("No space left" in r.getMessage() for r in caplog.records)


def _marks(ev: Path) -> dict[str, int]:
    return {p.parent.name: int(p.read_text()) for p in ev.glob("alpha/*/ingested")}


def test_duckdb_full_disk_the_failed_group_is_retried_and_nothing_acked_is_lost(
        pki: Authority, tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="forensix.server")
    path, ev = small_disk / "fleet.duckdb", tmp_path / "ev"
    h = _DuckHost(pki, path, ev)
    try:
        _send(pki, tmp_path, h.addr, 0, 2)
        h.srv.ingest.flush()
        filler = disk.fill(small_disk / "filler")
        _send(pki, tmp_path, h.addr, 400, 4)  # acked: durable in evidence, not in the store
        _wait(lambda: _no_space(caplog))
        filler.unlink()  # space again: the waiting group goes in, then the ones behind it
        h.srv.ingest.flush()
        _send(pki, tmp_path, h.addr, 1200, 2)
        h.srv.ingest.flush()
    finally:
        h.stop()
        h.store.close()
    assert _stored(path) == (1600, 1600)


def test_duckdb_full_disk_until_stop_everything_acked_is_reingested_once_at_start(
        pki: Authority, tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="forensix.server")
    path, ev = small_disk / "fleet.duckdb", tmp_path / "ev"
    h = _DuckHost(pki, path, ev)
    filler = None
    try:
        _send(pki, tmp_path, h.addr, 0, 2)
        h.srv.ingest.flush()
        before = _marks(ev)
        filler = disk.fill(small_disk / "filler")
        _send(pki, tmp_path, h.addr, 400, 4)
        _wait(lambda: _no_space(caplog))
    finally:
        h.stop()  # gives up on the waiting group and everything behind it: the marks stay below them
        if filler is not None:
            filler.unlink()
        h.store.close()
    assert before and _marks(ev) == before  # no mark moved over a frame the store lacks
    h2 = _DuckHost(pki, path, ev)  # re-ingests from evidence at start
    h2.stop()
    h2.store.close()
    assert _stored(path) == (1200, 1200)


def test_clickhouse_shard_down_until_stop_everything_acked_is_reingested_once_at_start(
        cluster: Cluster, url: str, pki: Authority, tmp_path: Path, start_server: Callable[..., Any]) -> None:
    ev = tmp_path / "ev"
    s = start_server(url, ev)
    down = s.store.shards[1]
    host = next(h for h in ("alpha", "beta", "gamma", "delta")
                if s.store.native("SELECT cityHash64({h}) % 2", {"h": h}).column(0)[0].as_py() == 1)
    shard = next(x for x in cluster.shards if x.tcp_port == down.port)
    try:
        _send(pki, tmp_path, s.addr, 0, 2, 100, host)
        s.srv.ingest.flush()
        stop_shard(shard, kill=True)
        _send(pki, tmp_path, s.addr, 200, 3, 100, host)  # acked, waiting for the shard
    finally:
        s.stop()  # the waiting append gives up
        if not shard.pid:
            start_shard(shard, cluster)
    s2 = start_server(url, ev)
    try:
        assert _counts(s2.store)[host] == (500, 500)
    finally:
        s2.stop()
