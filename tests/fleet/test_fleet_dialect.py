"""The same DDL and queries on current ClickHouse (chdb, embedded) as on Debian's 18.16.

Every migration statement (single-server form), the reader's SELECT, the de-duplication
query and every fleet question run on both engines over the same generated fleet; the
answers must agree."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import ipc

from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.connection import render
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.fleet import QUESTIONS, ask
from forensix.store.clickhouse.store import from_stored, present_sql, select_sql, stored_table
from forensix.testing.clickhouse import Cluster
from forensix.testing.collect import CollectingWriter
from forensix.testing.fleet import content_sha256, fleet

chdb_session = pytest.importorskip("chdb.session")




def _plain(t: pa.Table) -> list[dict[str, Any]]:
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in t.columns]
    return pa.Table.from_arrays(cols, names=t.column_names).to_pylist()


@pytest.fixture(scope="module")
def engines(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = CollectingWriter()
    fleet(data, hosts=8, every=3)
    url = cluster.url(database=f"c_{uuid.uuid4().hex[:12]}")
    old = ClickHouseStore(url, write=True)
    for name, parts in data.tables.items():
        for part in parts:
            old.append(name, part)
    sess = chdb_session.Session(str(tmp_path_factory.mktemp("chdb") / "data"))
    db = "fx"
    sess.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    for _, statements in MIGRATIONS:
        for stmt in statements(db, None):  # every statement, as a single server runs it
            sess.query(stmt)
    for name, parts in data.tables.items():
        whole = pa.concat_tables(parts)
        stored = stored_table(name, whole, pa.array([0] * whole.num_rows, pa.uint64()))  # noqa: F841 - read by chdb's Python()
        sess.query(f"INSERT INTO {db}.{name} SELECT * FROM Python(stored)")
    sess.query(f"USE {db}")

    def new(sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        res = sess.query(render(sql, params), "Arrow")
        return ipc.open_file(pa.py_buffer(res.bytes())).read_all()

    yield data, old, new
    old.close()
    sess.close()


def test_ddl_and_reader_select_round_trip_on_current_clickhouse(engines: Any) -> None:
    data, old, new = engines
    for name, parts in data.tables.items():
        want = pa.concat_tables(parts)
        got = from_stored(name, new(select_sql(name)))
        key = [f.name for f in schema.TABLES[name] if f.name in ("host_name", "ts", "seq", "entity_id",
                                                                   "image_seq", "last_ts")]
        assert got.sort_by([(k, "ascending") for k in key]).equals(want.sort_by([(k, "ascending") for k in key]))
        assert from_stored(name, old.native(select_sql(name))).num_rows == want.num_rows


def test_every_fleet_question_agrees_on_18_16_and_current(engines: Any) -> None:
    """By a scan and from the summary tables (whole days and hours, and windows whose partial
    hours are scanned beside them): the same rows on both engines, and the same as the scan's."""
    _, old, new = engines
    asked = {"exe": "/tmp/.x/miner", "cmdline": "--pool", "ip": "198.51.100.23", "path": "/etc/ld.so.preload",
             "hosts": "", "sha256": content_sha256("/tmp/.x/miner").upper()}
    assert set(asked) == set(QUESTIONS)
    first = old.native("SELECT min(ts) AS t FROM events").column(0)[0].as_py()
    midnight = first // (86_400 * 10**9) * 86_400 * 10**9
    hour = first // (3_600 * 10**9) * 3_600 * 10**9
    # whole days, whole hours (the fleet's history is inside one hour: from the summary alone),
    # and windows that cut that hour (its parts scanned)
    windows = [(None, None), (midnight, None), (hour, hour + 3_600 * 10**9 - 1), (first + 200 * 10**9, None),
               (None, first + 200 * 10**9), (first + 100 * 10**9, first + 200 * 10**9)]
    for name, value in asked.items():
        for since, until in windows:
            scan = _plain(ask(old.native, name, value, since, until))
            for summarized in (False, True):
                a = _plain(ask(old.native, name, value, since, until, summarized=summarized))
                b = _plain(ask(new, name, value, since, until, summarized=summarized))
                assert a == b == scan, (name, since, until, summarized)
            assert scan or since or until, name  # every question finds rows over the whole history


def test_dedup_and_partition_queries_run_on_both(engines: Any) -> None:
    _, old, new = engines
    sql = present_sql("events", "events", ["host0000"], 0, 2**62, [0, 1])
    got = _plain(new(sql))
    assert got == _plain(old.native(sql)) and {r["fx_batch"] for r in got} == {0} and got[0]["fx_day"] > 20000
    parts = "SELECT partition, sum(rows) AS n FROM system.parts WHERE active AND table = 'events' " \
            "AND database = currentDatabase() GROUP BY partition"
    assert [r["partition"] for r in _plain(new(parts))] == ["20260921"]


def test_chdb_is_the_current_dialect(engines: Any, tmp_path: Path) -> None:
    _, old, new = engines
    v_new = new("SELECT version() AS v").column(0)[0].as_py()
    v_old = old.native("SELECT version() AS v").column(0)[0].as_py()
    assert v_old.startswith("18.16") and int(v_new.split(".")[0]) >= 23


def test_the_summed_hunt_counts_agree_on_18_16_and_current(engines: Any) -> None:
    """rules/summed.py's queries (fleet_exec's counts with 0008's fleet_exec_unkeyed, and the
    hours a window cuts scanned and merged as aggregate states): the same rows on both engines
    (18.16: each shard's own tables, the hosts being sharded whole)."""
    from forensix.rules import load_rules
    from forensix.rules.clickhouse_sql import Tables
    from forensix.rules.fleet_hunt import shard_servers
    from forensix.rules.summed import combined_sql, first_sql, summed_sql

    _, old, new = engines
    rules = list(enumerate(load_rules([Path(__file__).parent / "fixtures" / "hunt_summed.yml"], builtin=False).ok))
    first = old.native("SELECT min(ts) AS t FROM events").column(0)[0].as_py()
    hour = first // (3_600 * 10**9) * 3_600 * 10**9
    servers = shard_servers(old)

    def both(sql_of: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        a = [r for srv, tables in servers for r in _plain(srv.table(sql_of(tables)))]
        b = _plain(new(sql_of(Tables())))
        return sorted(a, key=str), sorted(b, key=str)

    try:
        for since, until in [(None, None), (hour, None), (first + 100 * 10**9, first + 200 * 10**9)]:
            a, b = both(lambda t: summed_sql(t, rules, since, until))  # noqa: B023 - called at once
            assert a == b and a, (since, until)
            cut = sorted({r["host_name"] for r in a if r["fx_cut"]})
            if cut:
                a, b = both(lambda t: combined_sql(t, rules, since, until, cut))  # noqa: B023
                assert a == b and a
            a, b = both(lambda t: first_sql(t, rules[3][1], ["host0000", "host0003"], since, until, 4))  # noqa: B023
            assert a == b
        assert {r["fx_cut"] for r in both(lambda t: summed_sql(t, rules, first + 10**9, None))[0]} == {1}
    finally:
        for srv, _ in servers:
            srv.close()
