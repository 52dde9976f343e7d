"""`forensix hunt --store clickhouse://...` runs in ClickHouse, on every shard at once, and
finds what the DuckDB hunt finds on the same history.

The history: forensix.testing.generator's host (daemons, logins, cron, pid reuse, a planted
intrusion) and forensix.testing.fleet's eight hosts (a miner on some), written to a DuckDB
store and to the real 2-shard 18.16 cluster. The rules: the curated set, SigmaHQ's Linux
rules the project tests with (tests/rules/fixtures/sigmahq), every operator
(tests/rules/fixtures/ops) and the modifiers of fixtures/hunt_modifiers.yml; the built-in
detectors too. The scans also run on current ClickHouse (chdb) and must agree."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from pyarrow import ipc

from forensix.cli.main import cli
from forensix.rules import default_detectors, hunt, load_rules
from forensix.rules.clickhouse_sql import Tables
from forensix.rules.compile import CompiledRule
from forensix.rules.fleet_hunt import _scan, fleet_hunt, shard_servers
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.store import stored_table
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import fleet
from forensix.testing.generator import generate

RULES = Path(__file__).parent.parent / "rules" / "fixtures"
MODIFIERS = Path(__file__).parent / "fixtures" / "hunt_modifiers.yml"


def _write(store: Any) -> None:
    generate(store, events=20_000, seed=3)
    fleet(store, hosts=8, every=3)


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("hunt") / "fleet.duckdb"
    with open_writer(path) as w:
        _write(w)
    url = cluster.url(database=f"h_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        _write(ch)
    return str(path), url


def _rules() -> list[CompiledRule]:
    rs = load_rules([RULES / "ops", RULES / "sigmahq", MODIFIERS])
    return rs.ok


def _plain(t: pa.Table) -> list[str]:
    cols = [c for c in t.column_names if c != "detected_ts"]
    return sorted(str(r) for r in t.select(cols).to_pylist())


def test_fleet_hunt_finds_what_the_duckdb_hunt_finds(stores: tuple[str, str]) -> None:
    duck, url = stores
    rules = _rules()
    rd = open_reader(duck)
    try:
        want = hunt(rd, rules, default_detectors())
    finally:
        rd.close()
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, rules, default_detectors())
        shard_of = st._shard_of(sorted({str(h) for h in got.alerts.column("host_name").to_pylist()}))
    assert got.fallback == [] and len(got.in_clickhouse) == len(rules) and got.shards == 2
    assert want.num_rows > 300
    assert _plain(got.alerts) == _plain(want)
    fired = set(got.alerts.column("rule_id").to_pylist())
    assert len(fired) >= 35, sorted(fired)
    mods = {r.rule_id for r in load_rules([MODIFIERS], builtin=False).ok}
    assert len(mods & fired) >= 12, sorted(mods - fired)
    assert set(shard_of.values()) == {0, 1}  # alerts come from the hosts of both shards


def test_time_window_and_cli(stores: tuple[str, str]) -> None:
    duck, url = stores
    lo, hi = "2026-09-21T14:15:00Z", "2026-09-21T18:00:00Z"

    def run(store: str) -> tuple[str, str]:
        r = CliRunner().invoke(cli, ["hunt", str(RULES / "ops"), "--store", store, "--from", lo, "--to", hi,
                                     "--format", "json"])
        assert r.exit_code == 0, (r.output, r.exception)
        return r.stdout, r.stderr

    def docs(out: str, store: str) -> list[str]:  # without the moment the hunt ran
        return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "event.created"}, sort_keys=True)
                      for line in out.replace(store, "S").splitlines())

    (a, _), (b, err) = run(duck), run(url)
    assert a.count("\n") > 20
    assert docs(a, duck) == docs(b, url)
    assert "rules hunted in ClickHouse on 2 shard(s), 0 over host slices" in err


def test_a_rule_clickhouse_cannot_say_is_named_and_the_others_run(stores: tuple[str, str], tmp_path: Path) -> None:
    _, url = stores
    bad = tmp_path / "args.yml"
    bad.write_text("title: on_args\nname: on_args\nlogsource: {product: linux, category: process_creation}\n"
                   "detection:\n  sel:\n    process.args|contains: pool\n  condition: sel\n")
    r = CliRunner().invoke(cli, ["hunt", str(bad), str(MODIFIERS), "--no-builtin", "--store", url,
                                 "--format", "json"])
    assert r.exit_code == 3, (r.output, r.exception)  # a rule was skipped (rules.hunt, as on DuckDB)
    assert "on_args: a test on the list/binary column process_args" in r.stderr
    # DuckDB cannot run it either: named, and the hunt goes on
    assert "skipped on_args: it fails over the slices too" in r.stderr
    assert "16 rules hunted in ClickHouse on 2 shard(s), 1 over host slices" in r.stderr
    assert r.stdout.count("mod_contains_all") >= 2


class Chdb:
    """A chdb session answering like ``connection.Server.table`` (current ClickHouse)."""

    def __init__(self, sess: Any) -> None:
        self.sess = sess

    def table(self, sql: str) -> pa.Table:
        return ipc.open_file(pa.py_buffer(self.sess.query(sql, "Arrow").bytes())).read_all()

    def close(self) -> None:
        pass


def test_the_scans_agree_on_18_16_and_current_clickhouse(stores: tuple[str, str], tmp_path: Path) -> None:
    chdb_session = pytest.importorskip("chdb.session")
    _, url = stores
    rules = _rules()
    sess = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS fx")
        for _, statements in MIGRATIONS:
            for stmt in statements("fx", None):
                sess.query(stmt)
        with ClickHouseStore(url) as st:
            for name in ("events", "processes", "flows", "accounts"):
                whole = st.select_table(name)
                stored = stored_table(name, whole, pa.array([0] * whole.num_rows, pa.uint64()))  # noqa: F841 - read by chdb
                sess.query(f"INSERT INTO fx.{name} SELECT * FROM Python(stored)")
            new_server = [(Chdb(sess), Tables("fx.events", "fx.processes", "fx.flows", "fx.accounts"))]
            old_servers = shard_servers(st)
            for start in range(0, len(rules), 40):
                chunk = rules[start:start + 40]
                old, new = _scan(old_servers, chunk, None, None), _scan(new_server, chunk, None, None)
                assert old.num_rows > 0
                assert sorted(map(str, old.to_pylist())) == sorted(map(str, new.to_pylist()))
            for srv, _ in old_servers:
                srv.close()
    finally:
        sess.close()


def test_a_detector_with_too_many_rows_is_skipped_and_named(stores: tuple[str, str]) -> None:
    _, url = stores
    rules = load_rules([MODIFIERS], builtin=False).ok
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, rules, default_detectors(), max_replay_rows=10)
    assert got.skipped and all("(more than 10); hunt it per host" in why for _, why in got.skipped)
    assert any("forensix-store-touched" in name for name, _ in got.skipped), got.skipped
    assert "mod_contains_all" in set(got.alerts.column("rule_id").to_pylist())  # the rules ran all the same
