"""Fleet questions answered in ClickHouse, retention by whole partitions, and the errors a
user meets (server unreachable, wrong database, a newer schema, unknown cluster)."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.errors import StoreError
from forensix.store.clickhouse import ClickHouseStore, ClickHouseUnavailable, SchemaTooNewError
from forensix.store.embedded import open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import content_sha256, fleet


@pytest.fixture(scope="module")
def store(cluster: Cluster) -> tuple[str, list[str]]:
    url = cluster.url(database=f"q_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        infected = fleet(st, hosts=12, every=4)
    return url, infected


def ask(url: str, *args: str) -> list[dict[str, object]]:
    r = CliRunner().invoke(cli, ["fleet", args[0], "--store", url, "--format", "json", *args[1:]])
    assert r.exit_code == 0, r.output
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_which_hosts_ran_an_executable_connected_to_an_ip_touched_a_path(store: tuple[str, list[str]]) -> None:
    url, infected = store
    assert infected == ["host0000", "host0004", "host0008"]
    assert sorted(r["host.name"] for r in ask(url, "exe", "/tmp/.x/miner")) == infected
    assert sorted({r["host.name"] for r in ask(url, "exe", "/tmp/*")}) == infected
    assert sorted(r["host.name"] for r in ask(url, "cmdline", "--", "--pool 198.51.100.23")) == infected
    rows = ask(url, "ip", "198.51.100.23")
    assert sorted(r["host.name"] for r in rows) == infected and {r["process.name"] for r in rows} == {"miner"}
    touched = ask(url, "path", "/etc/ld.so.preload")
    assert sorted({r["host.name"] for r in touched}) == infected
    assert {r["action"] for r in touched} == {"open", "flow"}
    assert len(ask(url, "hosts")) == 12
    # by content: the hosts whose miner has the known hash, not host0008 whose copy differs
    known = ask(url, "sha256", content_sha256("/tmp/.x/miner"))
    assert sorted(r["host.name"] for r in known) == infected[:-1]
    assert {r["process.executable"] for r in known} == {"/tmp/.x/miner"}
    assert [r["host.name"] for r in ask(url, "sha256", content_sha256("/tmp/.x/miner (v2)"))] == infected[-1:]
    assert len(ask(url, "sha256", content_sha256("/usr/bin/logrotate"))) == 12
    # nothing for a path no host touched; a window before the miners ran finds none
    assert ask(url, "path", "/etc/nothing") == []
    assert ask(url, "exe", "/tmp/.x/miner", "--to", "2026-09-21T14:13:20Z") == []


def test_fleet_questions_need_clickhouse(tmp_path: object) -> None:
    r = CliRunner().invoke(cli, ["fleet", "hosts", "--store", "some.duckdb"])
    assert r.exit_code == 2 and "fleet questions run in ClickHouse" in r.output


def test_retention_drops_whole_day_partitions_on_every_shard(cluster: Cluster) -> None:
    url = cluster.url(database=f"r_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        fleet(st, hosts=6, every=3)
        before = st.partitions()
        assert {srv for srv, *_ in before} == {s.where for s in st.shards}  # rows on both shards
    dry = CliRunner().invoke(cli, ["retention", "--keep", "90d", "--store", url, "--dry-run"])
    assert dry.exit_code == 0 and "would drop" in dry.output
    with ClickHouseStore(url) as st:
        assert st.partitions() == before
    # the generated history is from 2026-09-21: older than 90 days before now (2026-12)? keep 1d drops it
    r = CliRunner().invoke(cli, ["retention", "--keep", "1d", "--store", url])
    assert r.exit_code == 0, r.output
    with ClickHouseStore(url) as st:
        assert st.partitions() == []
        assert st.native("SELECT count() FROM events").column(0)[0].as_py() == 0
    bad = CliRunner().invoke(cli, ["retention", "--keep", "ninety", "--store", url])
    assert bad.exit_code == 2 and "number of days" in bad.output


def test_errors_name_the_cause_and_the_fix(cluster: Cluster) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ClickHouseUnavailable) as e:
        ClickHouseStore(f"clickhouse://127.0.0.1:{port}/forensix")
    assert f"127.0.0.1:{port}" in e.value.message and "does not answer" in e.value.message
    r = CliRunner().invoke(cli, ["ps", "--store", f"clickhouse://127.0.0.1:{port}/forensix"])
    assert r.exit_code == 2 and "does not answer" in r.output and "hint:" in r.output
    with pytest.raises(StoreError) as e2:
        ClickHouseStore(cluster.url(database="no_such_db"))
    assert "no database 'no_such_db'" in e2.value.message and e2.value.hint
    with pytest.raises(StoreError) as e3:
        ClickHouseStore(f"clickhouse://127.0.0.1:{cluster.shards[0].tcp_port}/x?cluster=nosuch")
    assert "no cluster 'nosuch'" in e3.value.message and "forensix" in (e3.value.hint or "")
    url = cluster.url(database=f"n_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        st.entry.execute(f"INSERT INTO {st.db}.forensix_migrations (name, applied_ns) VALUES",
                         [["0099_from_the_future"], [1]])
    with pytest.raises(SchemaTooNewError) as e4:
        ClickHouseStore(url)
    assert "newer forensix" in e4.value.message
    r = CliRunner().invoke(cli, ["ps", "--store", "clickhouse://h:notaport/db"])
    assert r.exit_code == 2 and "bad port" in r.output
    r = CliRunner().invoke(cli, ["server", "--store", url, "--pki", "/nonexistent"])
    assert r.exit_code == 2 and "--evidence" in r.output  # the sealed frames need a home on the log host


def test_hunt_over_the_fleet_one_host_at_a_time_finds_what_duckdb_finds(
        store: tuple[str, list[str]], tmp_path: Path) -> None:
    """`forensix hunt --store clickhouse://` pulls each host's slice in turn (memory of one
    host, not of the fleet) and raises the alerts a hunt over the same history in DuckDB does."""
    url, infected = store
    duck = tmp_path / "fleet.duckdb"
    w = open_writer(duck)
    try:
        fleet(w, hosts=12, every=4)
    finally:
        w.close()

    def hunt(s: str) -> list[tuple[object, ...]]:
        rows = ask_any(["hunt", "--store", s, "--format", "json"])
        return sorted((r["host.name"], r["rule.id"], r["process.entity_id"]) for r in rows)

    on_ch, on_duck = hunt(url), hunt(str(duck))
    assert on_ch == on_duck
    assert {h for h, _, _ in on_ch} >= set(infected)  # alerts of several hosts, each from its own slice


def ask_any(args: list[str]) -> list[dict[str, object]]:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return [json.loads(x) for x in r.stdout.splitlines()]
