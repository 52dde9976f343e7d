"""`forensix hosts` on a ClickHouse store answers in ClickHouse (events per host from the
fleet_hosts summary, agents' starts and stops and the log host's alerts by filtered scans)
instead of pulling the store, and gives the rows it gives on DuckDB for the same history."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.server.guard import REFUSED_RULE
from forensix.server.hosts import host_status
from forensix.server.ingest import SILENT_RULE
from forensix.store import schema
from forensix.store.base import Writer
from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import fleet

S = 10**9


def _rows(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.TABLES[table])


def _history(w: Writer, t0: int) -> None:
    """Six hosts' history; agents that started and stopped, a flow edge kept only in flows
    (the newest row of its host), silence and refusal alerts of the log host."""
    fleet(w, hosts=6, every=3)

    def host(i: int) -> dict[str, Any]:
        return {"host_id": f"id-host{i:04d}", "host_name": f"host{i:04d}", "boot_id": "boot"}

    def agent(i: int, action: str, ts: int) -> dict[str, Any]:
        return {**host(i), "ts": ts, "event_category": "agent", "event_action": action,
                "process_name": "forensix-agent"}

    w.append("events", _rows("events", [
        agent(0, "start", t0 - 100 * S), agent(0, "stop", t0 + 400 * S),  # stopped cleanly
        agent(1, "start", t0 - 100 * S), agent(1, "stop", t0 - 50 * S), agent(1, "start", t0 + 400 * S),
        agent(2, "start", t0 - 100 * S),
    ]))
    w.append("flows", _rows("flows", [{**host(4), "entity_id": 77, "file_path": "/var/log/x", "first_ts": t0,
                                       "last_ts": t0 + 900 * S, "write_bytes": 10, "in_events": False}]))
    w.append("alerts", _rows("alerts", [
        {**host(2), "alert_id": "a1", "ts": t0 + 300 * S, "detected_ts": t0 + 2000 * S, "rule_id": SILENT_RULE},
        {**host(3), "alert_id": "a2", "ts": t0 + 10 * S, "detected_ts": t0 + 20 * S, "rule_id": REFUSED_RULE},
        {**host(3), "alert_id": "a3", "ts": t0 + 30 * S, "detected_ts": t0 + 40 * S, "rule_id": REFUSED_RULE},
    ]))


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, int]:
    t0 = 1_790_000_000 * S  # where testing.fleet's history starts
    url = cluster.url(database=f"hs_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        _history(st, t0)
    duck = tmp_path_factory.mktemp("hosts") / "fleet.duckdb"
    w = open_writer(duck)
    try:
        _history(w, t0)
    finally:
        w.close()
    return url, duck, t0


def test_hosts_on_clickhouse_are_duckdbs_without_pulling_the_store(stores: tuple[str, Path, int]) -> None:
    url, duck, t0 = stores
    now = t0 + 1000 * S
    ch = ClickHouseReader(ClickHouseStore(url), own_store=True)
    try:
        on_ch = host_status(ch, now_ns=now, silence_s=300, enrolled=["host0000", "never9"])
        assert ch.pulls == []  # answered in ClickHouse: no table pulled into the reader
    finally:
        ch.close()
    r = open_reader(duck)
    try:
        on_duck = host_status(r, now_ns=now, silence_s=300, enrolled=["host0000", "never9"])
    finally:
        r.close()
    assert on_ch.to_pylist() == on_duck.to_pylist()
    by = {row["host_name"]: row for row in on_ch.to_pylist()}
    assert by["never9"]["status"] == "never"
    assert by["host0000"]["status"] == "stopped"  # its agent's last word was a stop
    assert by["host0001"]["status"] == "silent"  # started again after its stop, then went quiet
    assert by["host0002"]["status"] == "silent"  # the log host's alert came after its last event
    assert by["host0003"]["refusals"] == 2
    # the flow edge kept only in flows is its newest row: still reporting
    assert by["host0004"]["last_event_ts"] == t0 + 900 * S and by["host0004"]["status"] == "reporting"


def test_forensix_hosts_cli_on_clickhouse(stores: tuple[str, Path, int]) -> None:
    url, duck, _ = stores
    outs = []
    for store in (url, str(duck)):
        r = CliRunner().invoke(cli, ["hosts", "--store", store, "--format", "json"])
        assert r.exit_code == 3, r.output  # recorded in 2026-09: every host is silent now
        outs.append([{k: v for k, v in json.loads(x).items() if not k.startswith("quiet")}
                     for x in r.stdout.splitlines()])
    assert outs[0] == outs[1] and len(outs[0]) == 6
