"""The fleet questions from their summary tables give the rows the scan of the events gives,
on the real 2-shard cluster: for a store of 0003's layout migrated to 0005 with rows already
in it (the backfill), for rows added after (the materialized views), after a batch is sent
again (the de-duplication), for windows that cut days and hours, and after retention drops
a day. And `forensix fleet hosts` shows which hosts stopped reporting."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as hs

import forensix.store.clickhouse.store as ch_store
from forensix.cli.main import cli
from forensix.errors import StoreError
from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.fleet import ask, split_window, summarized_sql
from forensix.store.clickhouse.summaries import (
    HOURLY,
    LOCK,
    MIGRATION,
    PATHS,
    SUMMARIZING,
    lock_sql,
    summary_tables,
    unlock_sql,
)
from forensix.testing.clickhouse import Cluster
from forensix.testing.collect import CollectingWriter
from forensix.testing.fleet import content_sha256, fleet
from forensix.testing.generator import StoreBuilder

DAY = 86_400 * 10**9
HOUR = 3_600 * 10**9

# every question, with patterns (a prefix, a directory) beside exact values
ASKED = [("exe", "/tmp/.x/miner"), ("exe", "/tmp/*"), ("exe", "/usr/*"), ("cmdline", "--pool"),
         ("cmdline", "logrotate"), ("ip", "198.51.100.23"), ("ip", "10.0.0.53"), ("path", "/etc/ld.so.preload"),
         ("path", "/etc/*"), ("hosts", ""), ("sha256", content_sha256("/tmp/.x/miner").upper()),
         ("sha256", content_sha256("/usr/bin/logrotate"))]




def _shift(table: str, t: pa.Table, by: int) -> pa.Table:
    """The rows ``by`` ns earlier: every time column moved."""
    for i, f in enumerate(schema.TABLES[table]):
        if pa.types.is_int64(f.type) and (f.name == "ts" or f.name.endswith("_ts") or f.name.startswith("ts_")
                                          or f.name in ("first_seen", "last_seen")):
            t = t.set_column(i, f.name, pc.subtract(t.column(f.name), pa.scalar(by, pa.int64())))
    return t


def _store_day(st: ClickHouseStore, data: CollectingWriter, days_back: int, hours_back: int = 0,
               only_in_events: bool = False) -> int:
    """The fleet's history ``days_back`` days (and hours) earlier, appended as frames (one per
    host and table); ``only_in_events``: without the flow edges kept only in flows (0003's
    view of them refused every INSERT that had one: its action was Nullable)."""
    added = 0
    for name, parts in data.tables.items():
        frames = []
        for part in (p for p in parts if p.num_rows):
            if only_in_events and name == "flows":
                part = part.filter(pc.invert(pc.fill_null(pc.equal(part["in_events"], False), False)))
            host = part.column("host_name")[0].as_py()
            frames.append((f"{host}/day-{days_back}-{hours_back}/{name}",
                           _shift(name, part, days_back * DAY + hours_back * HOUR)))
        added += st.append_frames(name, frames)
    return added


def _summaries_0003() -> ModuleType:
    """0003's summaries as forensix shipped them (tests/fleet/fixtures/summaries_0003.py)."""
    spec = importlib.util.spec_from_file_location("summaries_0003", Path(__file__).parent / "fixtures" /
                                                  "summaries_0003.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    return mod


def _apply_0003(st: ClickHouseStore) -> None:
    """What a log host of the previous version did: 0003's tables, views and backfill, recorded."""
    old = _summaries_0003()
    for srv in st.shards:
        for stmt in old.migration(st.db, st.cluster):
            srv.execute(stmt)
        srv.execute(f"INSERT INTO `{st.db}`.forensix_migrations (name, applied_ns) VALUES", [[MIGRATION], [1]])


def _same(st: ClickHouseStore, windows: list[tuple[int | None, int | None]]) -> int:
    """Every question in every window from the summaries and by the scan; returns the rows compared."""
    rows = 0
    assert len(st.native_each("SELECT count() FROM events{local}") or []) == 2  # a shard each, not the fallback
    for name, value in ASKED:
        for since, until in windows:
            scan = ask(st.native, name, value, since, until).to_pylist()
            summ = ask(st.native, name, value, since, until, summarized=True).to_pylist()
            assert summ == scan, (name, value, since, until)
            # every shard answering for its own hosts (what `forensix fleet` runs) gives the same rows
            for summarized in (False, True):
                assert ask(st.native, name, value, since, until, summarized=summarized,
                           each=st.native_each).to_pylist() == scan, (name, value, since, until, summarized)
            rows += len(scan)
    return rows


@pytest.fixture(scope="module")
def history() -> CollectingWriter:
    data = CollectingWriter()
    fleet(data, hosts=8, every=3)
    # flow edges stored only in flows (in_events false): rows of the events view on DuckDB,
    # so of fleet_hosts and fleet_path too
    data.tables["flows"] = [p.set_column(p.schema.get_field_index("in_events"), "in_events",
                                         pa.array([i % 2 == 0 for i in range(p.num_rows)], pa.bool_()))
                            for p in data.tables["flows"]]
    # renames: the path question matches a target (kept by a view of its own) and counts an
    # event whose path and target both match once
    b = StoreBuilder(host_id="r-id", host_name="renamer", boot_id="boot-r")
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    mv = b.spawn(init, 600, 10, "/usr/bin/mv", ["mv"])
    b.rename(mv, 11, "/tmp/p.tmp", "/etc/ld.so.preload")
    b.rename(mv, 12, "/etc/a", "/etc/b")
    b.write(data)  # type: ignore[arg-type]
    return data


def test_summaries_answer_as_the_scan_through_backfill_dedup_windows_and_retention(
        cluster: Cluster, history: CollectingWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    url = cluster.url(database=f"s_{uuid.uuid4().hex[:12]}")
    # a store of the previous version: a day of rows, then 0003 (its layout, by day, a GROUP BY
    # per insert), then a day through 0003's views
    monkeypatch.setattr(ch_store, "MIGRATIONS", [m for m in MIGRATIONS if m[0] not in SUMMARIZING])
    with ClickHouseStore(url, write=True) as st:
        _store_day(st, history, 2)
        _apply_0003(st)
        _store_day(st, history, 1, only_in_events=True)
        assert not st.summarized()  # 0003's layout is not this version's: scanned
        before = ask(st.native, "exe", "/tmp/.x/miner").to_pylist()
    monkeypatch.undo()
    # the next writer applies 0005 on both shards: 0003's views and tables dropped, every row summarized
    with ClickHouseStore(url, write=True) as st:
        assert st.summarized()
        for s in st.shards:
            done = [r[0] for r in s.execute(f"SELECT name FROM `{st.db}`.forensix_migrations")]
            assert done.count(HOURLY) == 1 and done.count(MIGRATION) == 1
            views = {r[0] for r in s.execute(f"SELECT name FROM system.tables WHERE database = '{st.db}' "
                                             "AND engine = 'MaterializedView'")}
            assert views == {"fleet_exec_local_from_events", "fleet_ip_local_from_events",
                             "fleet_path_local_from_events", "fleet_path_local_from_events_targets",
                             "fleet_path_local_from_flows", "fleet_hosts_local_from_events",
                             "fleet_hosts_local_from_flows"} | {f"fleet_{t}_local_from_{v}" for t in ("files", "names")
                                                                for v in ("events", "events_targets", "flows")} | {
                             "fleet_kinds_local_from_events", "fleet_exec_other_local_from_events",
                             "fleet_exec_unkeyed_local_from_events"}
            assert done.count(PATHS) == 1
        assert ask(st.native, "exe", "/tmp/.x/miner", summarized=True).to_pylist() == before
        # a third day through the views, and the same day two and five hours earlier; then the same frames again: stored once
        assert _store_day(st, history, 0) > 0 and _store_day(st, history, 0, 2) > 0 and _store_day(st, history, 0, 5) > 0
        assert _store_day(st, history, 0) == 0 and _store_day(st, history, 0, 5) == 0
        first = st.native("SELECT min(ts) AS t FROM events").column(0)[0].as_py()
        last = st.native("SELECT max(ts) AS t FROM events").column(0)[0].as_py()
        midnight = first // DAY * DAY
        hour = last // HOUR * HOUR  # the last hour with rows (the unshifted copy's)
        windows: list[tuple[int | None, int | None]] = [
            (None, None),
            (midnight + DAY, None),  # whole days only
            (first + 200 * 10**9, first + DAY + 200 * 10**9),  # partial hours at both ends
            (first + 200 * 10**9, first + 2 * DAY + 200 * 10**9),  # partial hour, whole hours and days, partial hour
            (midnight + DAY, midnight + 2 * DAY - 1),  # exactly one day
            # inside the last day: whole hours between partial ones, exactly some hours, one hour's part
            (hour - 5 * HOUR + 100 * 10**9, hour + 200 * 10**9),
            (hour - 5 * HOUR, hour - 1),
            (hour - 2 * HOUR + 50 * 10**9, None),
            (hour + 100 * 10**9, hour + 150 * 10**9),
            (None, hour - 3 * HOUR + 10**9),
        ]
        assert _same(st, windows) > 150
        # the whole hours come from the summary: a window of whole hours reads no events
        assert "FROM events" not in summarized_sql("hosts", hour - 5 * HOUR, hour - 1)
        # a rename into the path is found by its target; one whose path and target both match counts once a day
        preload = ask(st.native, "path", "/etc/ld.so.preload", summarized=True).to_pylist()
        assert {(r["host_name"], r["file_path"]) for r in preload if r["action"] == "rename"} == {
            ("renamer", "/tmp/p.tmp")}
        etc = ask(st.native, "path", "/etc/*", summarized=True).to_pylist()
        assert [r["times"] for r in etc if r["host_name"] == "renamer" and r["file_path"] == "/etc/a"] == [5]
        # the answers count all five copies, each exec once (three hosts ran the miner, once in each)
        miner = ask(st.native, "exe", "/tmp/.x/miner", summarized=True).to_pylist()
        assert sorted(r["host_name"] for r in miner) == ["host0000", "host0003", "host0006"]
        assert {r["execs"] for r in miner} == {5} and {r["processes"] for r in miner} == {1}
        # the summaries live on both shards, in the day partitions of the events
        parts = {(srv, t, p) for srv, t, p, _ in st.partitions()}
        days = {p for _, t, p in parts if t == "events_local"}
        assert len(days) == 3
        for t in summary_tables(st.cluster):
            assert {p for _, tt, p in parts if tt == t} <= days
        assert {srv for srv, t, _ in parts if t == "fleet_exec_local"} == {s.where for s in st.shards}
    # retention drops the oldest day from the events and the summaries alike
    keep = (datetime.now(UTC).date() - datetime.fromtimestamp(first // 10**9, UTC).date()).days - 1
    r = CliRunner().invoke(cli, ["retention", "--keep", f"{keep}d", "--store", url, "--format", "json"])
    assert r.exit_code == 0, r.output
    dropped = {json.loads(x)["what"].split()[0] for x in r.stdout.splitlines()}  # "TABLE partition DAY"
    assert {"events_local", "fleet_exec_local", "fleet_hosts_local", "fleet_path_local"} <= dropped
    with ClickHouseStore(url) as st:
        assert st.native("SELECT min(ts) AS t FROM events").column(0)[0].as_py() >= midnight + DAY
        assert {r["execs"] for r in ask(st.native, "exe", "/tmp/.x/miner", summarized=True).to_pylist()} == {4}
        assert _same(st, windows) > 50


def test_two_log_hosts_starting_at_once_backfill_once(
        cluster: Cluster, history: CollectingWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer that takes a server's migration lock backfills; the others wait for it. A
    lock left by a writer that died is named in the error, with what to do."""
    url = cluster.url(database=f"l_{uuid.uuid4().hex[:12]}")
    monkeypatch.setattr(ch_store, "MIGRATIONS", [m for m in MIGRATIONS if m[0] not in SUMMARIZING])
    with ClickHouseStore(url, write=True) as st:
        _store_day(st, history, 0)
        db, shard0 = st.db, st.shards[0]
        shard0.execute(lock_sql(db))  # a writer that is migrating shard 0 (or died doing it)
    monkeypatch.undo()
    monkeypatch.setattr(ClickHouseStore, "MIGRATION_WAIT_S", 1.0)
    with pytest.raises(StoreError) as e:
        ClickHouseStore(url, write=True)
    assert LOCK in e.value.message and f"DROP TABLE {db}.{LOCK}" in (e.value.hint or "")
    monkeypatch.setattr(ClickHouseStore, "MIGRATION_WAIT_S", 60.0)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ClickHouseStore(url, write=True).close()
        except BaseException as ex:  # noqa: BLE001 - reported by the test
            errors.append(ex)

    writers = [threading.Thread(target=start) for _ in range(3)]
    for w in writers:
        w.start()
    time.sleep(1.0)
    with ClickHouseStore(url) as st:
        st.shards[0].execute(unlock_sql(db))  # the migrating writer finishes: the waiting ones go on
    for w in writers:
        w.join(60)
    assert not errors
    with ClickHouseStore(url) as st:
        assert st.summarized()
        assert _same(st, [(None, None)]) > 20
        for srv in st.shards:
            done = [r[0] for r in srv.execute(f"SELECT name FROM `{db}`.forensix_migrations")]
            assert sorted(done) == sorted(n for n, _ in MIGRATIONS)  # each once


@settings(max_examples=200, deadline=None)
@given(hs.integers(0, 20 * DAY), hs.integers(0, 4 * DAY), hs.booleans(), hs.booleans())
def test_a_window_is_whole_days_and_the_rest_each_instant_once(start: int, length: int, open_lo: bool,
                                                                open_hi: bool) -> None:
    since, until = (None if open_lo else start), (None if open_hi else start + length)
    days, ranges = split_window(since, until)
    lo, hi = start if since is not None else 0, start + length if until is not None else 2**63 - 1
    for t in {lo, hi, lo - 1, hi + 1, start + length // 2} | {d + k for d in (days or (0, 0)) for k in (-1, 0, 1)}:
        if not 0 <= t <= 2**63 - 1:
            continue  # not an instant a store holds
        inside = lo <= t <= hi
        # whole days [lo, hi); an open end (hi = 2**63 - 1) takes every later day
        in_days = days is not None and days[0] <= t and (t < days[1] or days[1] == 2**63 - 1)
        n = sum(a <= t <= b for a, b in ranges) + in_days
        assert n == (1 if inside else 0), (t, days, ranges)
    assert days is None or (days[0] % HOUR == 0 and (days[1] % HOUR == 0 or days[1] == 2**63 - 1))


def test_a_question_without_a_window_reads_only_its_summary() -> None:
    for name, _ in ASKED:
        sql = summarized_sql(name, None, None)
        assert "FROM events" not in sql and "FROM flows" not in sql and "FROM fleet_" in sql, name
    # a window inside one day: nothing whole to take from the summary
    assert "FROM fleet_" not in summarized_sql("exe", 10 * DAY + 5, 10 * DAY + 99)
    assert "day BETWEEN" in summarized_sql("exe", 10 * DAY + 5, 13 * DAY + 99)


def test_fleet_hosts_shows_the_hosts_that_stopped_reporting(cluster: Cluster, history: CollectingWriter) -> None:
    url = cluster.url(database=f"h_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        _store_day(st, history, 0)
        last = st.native("SELECT max(ts) AS t FROM events").column(0)[0].as_py()
        table = ask(st.native, "hosts", summarized=True, now_ns=last + 30 * 10**9, silence_s=60)
    rows = table.to_pylist()
    assert len(rows) == 9
    # the miners' hosts report until their last write; the others went quiet after the third cron round
    talking = {r["host_name"] for r in rows if not r["silent"]}
    assert talking == {"host0000", "host0003", "host0006"}
    assert rows[-1]["host_name"] == "host0006" and rows[-1]["quiet_s"] == 30.0
    assert rows[0]["quiet_s"] > rows[-1]["quiet_s"]  # the longest silent first
    r = CliRunner().invoke(cli, ["fleet", "hosts", "--store", url, "--silent", "--format", "json"])
    assert r.exit_code == 0, r.output
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 9 and all(o["silent"] and o["quiet.s"] > 60 for o in out)  # recorded in 2026-09


def test_writers_migrating_a_new_store_at_once_apply_each_migration_once(cluster: Cluster) -> None:
    """Every migration (0001 ... 0005, not only the summaries') is applied under the server's
    lock: four log hosts starting together on an empty database record each once, the
    store's format once, and all four come up."""
    url = cluster.url(database=f"m_{uuid.uuid4().hex[:12]}")
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def start() -> None:
        try:
            go.wait()
            ClickHouseStore(url, write=True).close()
        except BaseException as ex:  # noqa: BLE001 - reported by the test
            errors.append(ex)

    writers = [threading.Thread(target=start) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert not errors
    with ClickHouseStore(url) as st:
        for srv in st.shards:
            done = [r[0] for r in srv.execute(f"SELECT name FROM `{st.db}`.forensix_migrations")]
            assert sorted(done) == sorted(n for n, _ in MIGRATIONS)
            assert srv.execute(f"SELECT count() FROM `{st.db}`.forensix_meta WHERE key = 'format'") == [(1,)]
            assert not srv.execute(f"EXISTS TABLE `{st.db}`.`{LOCK}`")[0][0]  # the lock is let go
