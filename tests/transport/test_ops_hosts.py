"""`forensix hosts`: which hosts of a fleet store stopped reporting, from the store alone;
and the counting sink behind the recorder's and the agent's metrics."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.agent.metrics import AgentCollector
from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.metrics import RowCounter, parse_metrics_address, serve_metrics
from forensix.model.host import HostInfo
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.server.hosts import host_status
from forensix.server.ingest import Ingestor
from forensix.store import schema
from forensix.store.embedded import open_writer
from forensix.testing.batches import events_batch
from forensix.testing.scrape import sample, scrape

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]
S = 10**9


def _host(name: str) -> HostInfo:
    return HostInfo(host_id=f"id-{name}", host_name=name, boot_id="boot", kernel="6")


@pytest.fixture
def fleet_store(tmp_path: Path) -> tuple[Path, int]:
    """Four hosts as a log host would have stored them, at `now`."""
    now = time.time_ns()
    w = open_writer(tmp_path / "fleet.duckdb")
    ing = Ingestor(w)
    hello = {"pid": 1, "host_id": "x", "boot_id": "b"}
    ing.batch("events", events_batch(5, ts=now - 2 * S, host=_host("up")))  # reporting
    ing.batch("events", events_batch(5, ts=now - 600 * S, host=_host("quiet")))  # nothing for 10 min
    ing.batch("events", events_batch(5, ts=now - 20 * S, host=_host("cut")))
    ing.silent_alert("cut", {}, now - 19 * S, 5.0)  # the log host stopped hearing its heartbeats
    ing.agent_event("gone", hello, "start", now - 900 * S, "start")
    ing.batch("events", events_batch(5, ts=now - 800 * S, host=_host("gone")))
    ing.agent_event("gone", hello, "stop", now - 700 * S, "stop")  # a clean stop
    ing.close()
    w.close()
    return tmp_path / "fleet.duckdb", now


def test_host_status_names_the_silent_hosts(fleet_store: tuple[Path, int]) -> None:
    from forensix.store.embedded import open_reader

    path, now = fleet_store
    r = open_reader(path)
    try:
        t = host_status(r, now_ns=now, silence_s=60, enrolled=["never", "up"])
    finally:
        r.close()
    rows = {x["host_name"]: x for x in t.to_pylist()}
    status = {h: (x["status"], x["silent"]) for h, x in rows.items()}
    assert status == {"up": ("reporting", False), "quiet": ("silent", True), "cut": ("silent", True),
                      "gone": ("stopped", True), "never": ("never", True)}
    assert t.column("host_name").to_pylist()[-1] == "up"  # silent hosts first
    assert rows["up"]["events"] == 5 and 1.5 < rows["up"]["quiet_s"] < 30
    assert rows["gone"]["last_stop_ts"] == now - 700 * S


def test_hosts_command(fleet_store: tuple[Path, int]) -> None:
    from click.testing import CliRunner

    from forensix.cli.main import cli

    path, _ = fleet_store
    res = CliRunner().invoke(cli, ["hosts", "--store", str(path), "--silent", "--format", "json"])
    assert res.exit_code == 3, res.output
    names = [json.loads(x)["host.name"] for x in res.stdout.splitlines()]
    assert sorted(names) == ["cut", "gone", "quiet"]
    res = CliRunner().invoke(cli, ["hosts", "--store", str(path), "--silence", "100000"])
    # with a long enough limit only the host whose heartbeats stopped (an alert after its last event) is silent
    assert res.exit_code == 3 and "cut" in res.stdout.split("\n")[1], res.stdout


def test_row_counter_counts_rows_and_losses_per_class() -> None:
    rc = RowCounter()
    rc.write("events", events_batch(7))
    gaps = pa.Table.from_pylist([
        {"host_id": "h", "host_name": "h", "boot_id": "b", "ts_from": 1, "ts_to": 2, "cpu": 0,
         "event_class": "file", "count": 10, "reason": "ringbuf-full"},
        {"host_id": "h", "host_name": "h", "boot_id": "b", "ts_from": 1, "ts_to": 2, "cpu": 1,
         "event_class": "file", "count": 5, "reason": "ringbuf-full"},
        {"host_id": "h", "host_name": "h", "boot_id": "b", "ts_from": 1, "ts_to": 2, "cpu": -1,
         "event_class": "batches:3", "count": 300, "reason": "spool-full"},
    ], schema=schema.GAPS)
    rc.write("gaps", gaps)
    rows, lost = rc.snapshot()
    assert rows == {"events": 7, "gaps": 3}
    assert lost == {("file", "ringbuf-full"): 15, ("any", "spool-full"): 300}


def test_metrics_address_defaults_to_loopback() -> None:
    assert parse_metrics_address("9514") == ("127.0.0.1", 9514)
    assert parse_metrics_address("0.0.0.0:9514") == ("0.0.0.0", 9514)
    assert parse_metrics_address("[::1]:0") == ("::1", 0)
    from forensix.errors import UsageError

    with pytest.raises(UsageError, match="not a metrics address"):
        parse_metrics_address("localhost:http")


def test_agent_metrics_when_the_log_host_is_unreachable(pki: Authority, tmp_path: Path) -> None:
    """Spool filling, lag growing, batches lost to a full spool: all on the agent's /metrics."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens here
    b = pki.bundle("beta")
    seal = tmp_path / "beta.seal"
    seal.write_bytes(b.seal.read_bytes())
    sink = ShippingSink(ShippingConfig(host="beta", server=("127.0.0.1", port),
                                       context=client_context(b.ca, b.cert, b.key), seal_key=seal,
                                       spool_dir=tmp_path / "spool", spool_max_bytes=150_000, heartbeat_s=0.5,
                                       coalesce_s=0, drain_s=0.2))
    counter = RowCounter()
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(AgentCollector(sink, counter))
    ep = serve_metrics(reg, ("127.0.0.1", 0))
    try:
        for i in range(40):
            batch = events_batch(500, start_seq=i * 500)
            counter.write("events", batch)
            sink.write("events", batch)
        time.sleep(1.1)
        m = scrape(ep.url)
        unacked = sink.spool.unacked()
    finally:
        ep.stop()
        sink.close()
    assert sample(m, "forensix_rows_total", table="events") == 20_000
    assert sample(m, "forensix_agent_connected") == 0
    assert (sample(m, "forensix_agent_shipping_lag_seconds") or 0) >= 1.0
    assert sample(m, "forensix_agent_spool_unacked_frames") == unacked > 0
    assert 0 < (sample(m, "forensix_agent_spool_bytes") or 0) <= 150_000
    assert sample(m, "forensix_agent_spool_limit_bytes") == 150_000
    assert sample(m, "forensix_agent_frames_acked_total") == 0
    lost = sample(m, "forensix_lost_events_total", **{"class": "any", "reason": "spool-full"})
    assert lost == sink.lost_rows_total > 0
    assert sample(m, "forensix_agent_spool_full_batches_total") == sink.lost_batches_total


def test_a_busy_metrics_port_is_a_clear_error(pki: Authority, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from forensix.cli.main import cli

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        res = CliRunner().invoke(cli, ["server", "--pki", str(pki.dir), "--listen", "127.0.0.1:0", "--store",
                                       str(tmp_path / "s.duckdb"), "--metrics", f"127.0.0.1:{port}"])
    finally:
        held.close()
    assert res.exit_code == 2, res.output
    assert f"cannot serve metrics on 127.0.0.1:{port}" in res.output and "hint: pick a free port" in res.output
