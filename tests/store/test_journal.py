"""The journaled store: bulk rows go to a journal, sealed into DuckDB in large batches.

What an investigator relies on: every appended row is queryable at once, exactly once,
also while a seal runs; a writer killed at any point loses nothing it had appended and
nothing is counted twice; stores of the first format still open; malformed input is
refused before it reaches the journal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from forensix.errors import StoreError
from forensix.store import schema
from forensix.store.embedded import DuckDBStore, open_reader, open_writer, remove_store, store_files
from forensix.store.journal import journal_dir
from forensix.store.migrations import STORE_FORMAT, create_table_sql


def rows(n: int, start: int = 0, path: str = "/etc/passwd") -> pa.Table:
    return pa.Table.from_pylist([
        {"host_id": "h1", "boot_id": "b1", "ts": start + i, "event_category": "file", "event_action": "open",
         "file_path": f"{path}.{start + i}", "process_pid": 100 + i % 7}
        for i in range(n)
    ])


def count(reader: DuckDBStore, table: str = "events") -> int:
    return int(reader.query(f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def ts_list(reader: DuckDBStore) -> list[int]:
    return [int(x) for x in reader.query("SELECT ts FROM events ORDER BY ts").column("ts").to_pylist()]


def base_rows(store: DuckDBStore) -> int:
    return int(store._con.execute("SELECT count(*) FROM events_base").fetchall()[0][0])


def test_rows_are_visible_at_once_and_exactly_once_across_seals(tmp_path: Path) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    w._journals["events"].seal_rows = 1000
    for k in range(7):
        w.append("events", rows(400, start=k * 400))
        assert ts_list(w) == list(range((k + 1) * 400))  # the writer itself sees every row
    # whole groups of 1000 sealed at 1200 and 2000 rows; 800 still in the journals
    assert base_rows(w) == 2000
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    assert ts_list(r) == list(range(2800))
    assert not list(journal_dir(tmp_path / "s.duckdb").rglob("*.arrows"))  # closing sealed the journal
    r.close()


def _wait_sealed(w: DuckDBStore, rows: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while base_rows(w) < rows:
        assert time.monotonic() < deadline, f"only {base_rows(w)} of {rows} rows sealed"
        time.sleep(0.05)


@pytest.mark.parametrize("role", ["recorder", "log host"])
def test_background_sealing_takes_whole_groups_off_the_appending_thread(tmp_path: Path, role: str) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    w._journals["events"].seal_rows = 1000
    threads = int(w._con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    nice = 19 if role == "recorder" else 0
    w.seal_in_background(nice=nice, single_threaded=role == "recorder")
    # a recorder's DuckDB runs on its sealing thread alone; a log host keeps its threads for queries
    assert int(w._con.execute("SELECT current_setting('threads')").fetchall()[0][0]) == (
        1 if role == "recorder" else threads)
    sealed_by: set[str] = set()
    sealer = w._journals["events"].sealer
    assert sealer is not None

    def spy(data: pa.Table, pos: tuple[int, int], flip: Any) -> None:
        sealed_by.add(threading.current_thread().name)
        sealer(data, pos, flip)

    w._journals["events"].sealer = spy
    for k in range(7):
        w.append("events", rows(400, start=k * 400))
        assert ts_list(w) == list(range((k + 1) * 400))  # every row visible at once, once
    _wait_sealed(w, 2000)
    assert sealed_by == {"fx-seal"}  # the appending thread never sealed
    assert base_rows(w) == 2000  # whole groups only while recording: 800 wait in the journal
    seal_thread = next(t for t in threading.enumerate() if t.name == "fx-seal")
    assert os.getpriority(os.PRIO_PROCESS, seal_thread.native_id) == nice  # a recorder's workload comes first
    # sealed journals are removed while recording: what is left holds the unsealed rows.
    # The sealing thread removes them just after the commit that made the rows visible
    # in events_base, so wait for the removal itself, not only for the sealed count.
    journals = journal_dir(tmp_path / "s.duckdb").joinpath("events")
    deadline = time.monotonic() + 30
    while len(left := sorted(journals.glob("*.arrows"))) > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 1 <= len(left) <= 2, [j.name for j in left]
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    assert ts_list(r) == list(range(2800))
    assert base_rows(r) == 2800
    assert not list(journal_dir(tmp_path / "s.duckdb").rglob("*.arrows"))
    r.close()


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_queries_during_seals_never_see_a_row_twice_or_miss_one(tmp_path: Path, background: bool) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    w._journals["events"].seal_rows = 500
    if background:
        w.seal_in_background()
    done = threading.Event()
    seen: list[int] = []

    def query_loop() -> None:
        while not done.is_set():
            t = w.query("SELECT count(*) AS n, count(DISTINCT ts) AS d FROM events")
            n, d = t.column("n")[0].as_py(), t.column("d")[0].as_py()
            assert n == d, f"{n} rows but {d} distinct: a row counted twice"
            seen.append(n)

    q = threading.Thread(target=query_loop)
    q.start()
    for k in range(60):
        w.append("events", rows(100, start=k * 100))
    if background:
        _wait_sealed(w, 5500)
    done.set()
    q.join()
    assert len(seen) > 5 and seen == sorted(seen)  # never went back: no row lost halfway
    assert count(w) == 6000
    w.close()


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import pyarrow as pa
    from forensix.store.embedded import open_writer
    w = open_writer(sys.argv[1])
    w._journals["events"].seal_rows = int(sys.argv[2])
    if sys.argv[3] == "background":
        w.seal_in_background()
    for k in range(5):
        w.append("events", pa.Table.from_pylist([
            {"host_id": "h1", "boot_id": "b1", "ts": k * 100 + i, "event_category": "file",
             "event_action": "open", "file_path": "/x"} for i in range(100)]))
    if sys.argv[3] == "background":  # let the sealing thread catch up with the appends
        while w._con.execute("SELECT count(*) FROM events_base").fetchall()[0][0] < int(sys.argv[4]):
            time.sleep(0.02)
    print("appended", flush=True)
    time.sleep(60)
""")


def kill_writer_after_appends(store: Path, seal_rows: int = 122_880, background_sealed: int = 0) -> None:
    """A writer appends 5 x 100 rows and is killed with SIGKILL, as by a crash
    (``background_sealed``: sealing on its own thread, killed once it sealed that many)."""
    mode = "background" if background_sealed else "inline"
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(store), str(seal_rows), mode,
                          str(background_sealed)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "appended"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def test_a_writer_killed_before_sealing_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    kill_writer_after_appends(store)
    journals = list(journal_dir(store).rglob("*.arrows"))
    assert [j.parent.name for j in journals] == ["events"]
    # a reader before any writer came back: the journal's rows are there
    r = DuckDBStore(store, read_only=True)
    assert ts_list(r) == list(range(500))
    r.close()
    # the next writer seals the journal, says so, and counts nothing twice
    w = open_writer(store)
    assert any("sealed 500 rows" in n for n in w.recovered)
    w.append("events", rows(5, start=1000))
    assert count(w) == 505
    w.close()
    assert not list(journal_dir(store).rglob("*.arrows"))


def test_a_reader_answers_every_query_with_journal_rows_across_threads_and_failed_queries(tmp_path: Path) -> None:
    # a reader keeps one cursor per thread, with its views over base tables and journal tails
    store = tmp_path / "s.duckdb"
    kill_writer_after_appends(store, seal_rows=150)  # 450 rows sealed, 50 left in the journal
    r = DuckDBStore(store, read_only=True)
    assert ts_list(r) == list(range(500))
    with pytest.raises(StoreError, match="nosuch"):
        r.query("SELECT nosuch FROM events")
    assert ts_list(r) == list(range(500))  # the failed statement did not take the reader with it
    got: list[int] = []

    def worker() -> None:
        for _ in range(20):
            got.append(count(r))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [500] * 80
    r.close()
    w = open_writer(store)  # the reader let go of the file
    assert count(w) == 500
    w.close()


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_a_writer_killed_after_a_partial_seal_loses_nothing_and_repeats_nothing(tmp_path: Path, background: bool) -> None:
    store = tmp_path / "s.duckdb"
    # 5 x 100 rows, sealed in whole groups of 150 at 200, 300 and 500 rows: 450 sealed, 50 not
    kill_writer_after_appends(store, seal_rows=150, background_sealed=450 if background else 0)
    r = DuckDBStore(store, read_only=True)
    assert base_rows(r) == 450 and ts_list(r) == list(range(500))
    r.close()
    w = open_writer(store)
    assert sum(int(n.split("sealed ")[1].split()[0]) for n in w.recovered) == 50
    assert ts_list(w) == list(range(500)) and base_rows(w) == 500
    w.close()


def test_a_journal_sealed_but_not_removed_is_not_counted_twice(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    w.append("events", rows(50))
    journal = next(journal_dir(store).rglob("*.arrows"))
    kept = journal.read_bytes()
    w.close()  # seals: the rows are in DuckDB and the journal is removed
    journal.write_bytes(kept)  # as if the writer died between the commit and the unlink
    r = DuckDBStore(store, read_only=True)
    assert count(r) == 50
    r.close()
    w = open_writer(store)
    assert count(w) == 50 and not w.recovered and not journal.exists()
    w.close()


def test_a_torn_journal_keeps_its_whole_batches_and_reports_the_rest(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    kill_writer_after_appends(store)
    journal = next(journal_dir(store).rglob("*.arrows"))
    journal.write_bytes(journal.read_bytes()[:-200])  # the last batch cut short, as by a crash mid-write
    w = open_writer(store)
    assert len(w.recovered) == 1 and "sealed 400 rows" in w.recovered[0] and "unreadable" in w.recovered[0]
    assert ts_list(w) == list(range(400))
    w.close()


def test_a_store_of_the_first_format_opens_and_is_migrated(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    con = duckdb.connect(str(store))
    con.execute("CREATE TABLE forensix_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE forensix_migrations (name VARCHAR PRIMARY KEY, applied_ns BIGINT)")
    con.execute("INSERT INTO forensix_meta VALUES ('format', 'forensix-store/1')")
    for n, s in schema.TABLES.items():
        con.execute(create_table_sql(n, s))
    con.execute("INSERT INTO forensix_migrations VALUES ('0001_initial', 0), ('0002_event_counts', 0)")
    con.register("old_rows", rows(30))
    con.execute("INSERT INTO events BY NAME SELECT * FROM old_rows")
    con.close()
    r = DuckDBStore(store, read_only=True)
    assert r.format == "forensix-store/1" and count(r) == 30
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT and "0005_codec" in w.migrations() and "0006_flow_edges_once" in w.migrations()
    w.append("events", rows(20, start=30))
    assert ts_list(w) == list(range(50))  # old rows and journal rows, as one table
    w.close()
    r2 = open_reader(store)
    assert r2.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 50
    r2.close()


def test_malformed_batches_are_refused_before_they_reach_the_journal(tmp_path: Path) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", rows(3))
    with pytest.raises(StoreError, match="no column"):
        w.append("events", rows(2).append_column("evil", pa.array([1, 2])))
    bad = rows(2).set_column(0, "host_id", pa.array([None, "h"], pa.string()))
    with pytest.raises(StoreError, match="must not be null"):
        w.append("events", bad)
    # dictionary-encoded and narrower columns are conformed, not refused
    ok = rows(2, start=10)
    ok = ok.set_column(ok.schema.get_field_index("event_action"), "event_action",
                       ok.column("event_action").dictionary_encode())
    w.append("events", ok)
    assert ts_list(w) == [0, 1, 2, 10, 11]
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    assert ts_list(r) == [0, 1, 2, 10, 11]
    r.close()


def test_store_files_and_remove_store_cover_the_journals(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    w.append("events", rows(10))
    w.append("processes", pa.Table.from_pylist([{"host_id": "h1", "boot_id": "b1", "entity_id": 1, "image_seq": 0,
                                                 "pid": 1, "start_ts": 5, "image_ts": 5, "source": "exec"}]))
    files = store_files(store)
    assert store in files and {p.parent.name for p in files if p.suffix == ".arrows"} == {"events", "processes"}
    w.close()
    remove_store(store)
    assert not store.exists() and not journal_dir(store).exists()


def _edges(n: int, in_events: bool | None, start: int = 0) -> pa.Table:
    return pa.Table.from_pylist([
        {"host_id": "h1", "host_name": "web1", "boot_id": "b1", "entity_id": 7 + i % 3, "pid": 100 + i % 3, "fd": 4,
         "file_inode": 1000 + i, "file_device": 2049, "file_type": "file", "file_path": f"/srv/f{start + i}",
         "first_ts": 10 * (start + i), "last_ts": 10 * (start + i) + 5, "read_count": 2, "read_bytes": 512,
         "write_count": 0, "write_bytes": 0, "reason": "periodic", "tid": 100 + i % 3, "process_name": "nginx",
         "ts_boot": 10 * (start + i) + 5 - 1_000_000, "in_events": in_events}
        for i in range(n)
    ], schema=schema.FLOWS)


@pytest.mark.parametrize("sealed", [False, True], ids=["journal", "sealed"])
def test_a_flow_edge_stored_once_is_one_events_row(tmp_path: Path, sealed: bool) -> None:
    """Edges flushed from the kernel's map are stored in flows only; the events view shows
    each as the flow row the recorder used to write, and edges also kept in events_base
    (ring records, older stores) are not shown twice."""
    w = open_writer(tmp_path / "s.duckdb")
    w.append("flows", _edges(5, in_events=False))
    w.append("flows", _edges(2, in_events=None, start=100))  # an older writer: also rows of events
    w.append("events", rows(3))
    if sealed:
        w.flush()
    got = w.query("SELECT ts, ts_boot, event_kind, event_category, event_action, process_entity_id, process_pid, "
                  "process_tid, process_name, fd, file_inode, file_path, flow_read_count, flow_read_bytes, "
                  "flow_first_ts, flow_last_ts FROM events WHERE event_action = 'flow' ORDER BY ts").to_pylist()
    assert [r["file_path"] for r in got] == [f"/srv/f{i}" for i in range(5)]
    assert got[1] == {"ts": 15, "ts_boot": 15 - 1_000_000, "event_kind": "event", "event_category": "flow",
                      "event_action": "flow", "process_entity_id": 8, "process_pid": 101, "process_tid": 101,
                      "process_name": "nginx", "fd": 4, "file_inode": 1001, "file_path": "/srv/f1",
                      "flow_read_count": 2, "flow_read_bytes": 512, "flow_first_ts": 10, "flow_last_ts": 15}
    assert count(w) == 3 + 5 and count(w, "flows") == 7
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)  # as a reader of the sealed file sees it
    assert count(r) == 8 and r.query("SELECT count(*) AS n FROM flows WHERE ts_boot = last_ts - 1000000"
                                     ).column("n")[0].as_py() == 7
    r.close()


def test_a_store_of_format_5_reads_with_null_flow_uids_and_is_migrated(tmp_path: Path) -> None:
    """/6 added flows.user_id: a /5 store opened read-only still answers every query (NULL
    uids, which the analyses fill from the process table); its next writer migrates it."""
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    w.append("flows", _edges(3, in_events=False))
    w.close()
    con = duckdb.connect(str(store))  # back to what a /5 recorder left
    con.execute('ALTER TABLE flows_base DROP COLUMN "user_id"')
    con.execute("DELETE FROM forensix_migrations WHERE name = '0007_flow_uid'")
    con.execute("UPDATE forensix_meta SET value = 'forensix-store/5' WHERE key = 'format'")
    con.close()
    r = DuckDBStore(store, read_only=True)
    assert r.format == "forensix-store/5"
    assert r.query("SELECT user_id FROM events WHERE event_action = 'flow'").column("user_id").to_pylist() == [None] * 3
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT and "0007_flow_uid" in w.migrations()
    w.append("flows", _edges(1, in_events=False, start=50).set_column(
        schema.FLOWS.get_field_index("user_id"), "user_id", pa.array([1001], pa.uint32())))
    assert sorted(w.query("SELECT user_id FROM events WHERE event_action = 'flow'").column("user_id").to_pylist(),
                  key=lambda u: u or 0) == [None, None, None, 1001]
    w.close()
