"""The segmented store: bulk rows as Parquet segments + a journal, queried as one table.

What an investigator relies on: every appended row is queryable at once, exactly once;
a writer killed at any point loses nothing it had appended; stores written before
segments existed still open; malformed input is refused before it reaches a segment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forensix.errors import StoreError
from forensix.store import schema
from forensix.store.embedded import DuckDBStore, open_reader, open_writer, remove_store, store_files
from forensix.store.migrations import create_table_sql
from forensix.store.segments import SegmentedTable, segments_dir


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


def test_rows_are_visible_at_once_and_exactly_once_across_seals(tmp_path: Path) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    seg = w._segments["events"]
    seg.seal_rows = 1000
    seg.merge_count = 1000
    for k in range(7):
        w.append("events", rows(400, start=k * 400))
        assert ts_list(w) == list(range((k + 1) * 400))  # the writer itself sees every row
    files, tail = seg.snapshot()
    assert len(files) == 2 and tail is not None and tail.num_rows == 2800 - 2400
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    assert ts_list(r) == list(range(2800))
    assert not list(segments_dir(tmp_path / "s.duckdb").rglob("*.arrows"))  # closing sealed the journal
    r.close()


def test_small_segments_are_merged_and_nothing_is_counted_twice(tmp_path: Path) -> None:
    w = open_writer(tmp_path / "s.duckdb")
    seg = w._segments["events"]
    seg.seal_rows, seg.merge_count = 10_000, 4
    for k in range(9):
        w.append("events", rows(10, start=k * 10))
        w.flush()  # a quiet host: a few rows per seal
    names = sorted(p.name for p in seg.dir.glob("*.parquet"))
    # seals 1-4 merged at the 4th; that small merged file and seals 5-7 at the 7th; 8 and 9 wait
    assert names == ["000000000001-000000000007.parquet", "000000000008.parquet", "000000000009.parquet"]
    assert ts_list(w) == list(range(90))
    w.close()
    # a merge made durable whose inputs were not removed yet (a crash in between): inputs ignored
    d = segments_dir(tmp_path / "s.duckdb") / "events"
    t = pq.read_table(d / "000000000001-000000000007.parquet")
    t = t.filter(pa.compute.less(t.column("ts"), 50))
    pq.write_table(t, d / "000000000005.parquet")
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    assert ts_list(r) == list(range(90))
    r.close()
    w = open_writer(tmp_path / "s.duckdb")  # the writer removes the covered file
    assert not (d / "000000000005.parquet").exists() and ts_list(w) == list(range(90))
    w.close()


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import pyarrow as pa
    from forensix.store.embedded import open_writer
    w = open_writer(sys.argv[1])
    for k in range(5):
        w.append("events", pa.Table.from_pylist([
            {"host_id": "h1", "boot_id": "b1", "ts": k * 100 + i, "event_category": "file",
             "event_action": "open", "file_path": "/x"} for i in range(100)]))
    print("appended", flush=True)
    time.sleep(60)
""")


def test_a_writer_killed_before_sealing_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(store)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "appended"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    journals = list(segments_dir(store).rglob("*.arrows"))
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
    assert not list(segments_dir(store).rglob("*.arrows"))


def test_a_torn_journal_keeps_its_whole_batches_and_reports_the_rest(tmp_path: Path) -> None:
    d = tmp_path / "seg"
    t = SegmentedTable(d, "events", schema.EVENTS, writable=True)
    from forensix.store.segments import conform

    for k in range(3):
        t.append(conform(rows(50, start=k * 50), schema.EVENTS, "events"))
    journal = next((d / "events").glob("*.arrows"))
    journal.write_bytes(journal.read_bytes()[:-200])  # the last batch cut short, as by a crash mid-write
    t2 = SegmentedTable(d, "events", schema.EVENTS, writable=True)
    assert len(t2.recovered) == 1 and "sealed 100 rows" in t2.recovered[0] and "unreadable" in t2.recovered[0]
    files, tail = t2.snapshot()
    assert tail is None and sum(pq.read_metadata(f).num_rows for f in files) == 100


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
    assert w.format == "forensix-store/2" and "0003_segments" in w.migrations()
    w.append("events", rows(20, start=30))
    assert ts_list(w) == list(range(50))  # old rows in DuckDB and new ones in segments, as one table
    w.close()
    r2 = open_reader(store)
    assert count(r2) == 50  # type: ignore[arg-type]
    r2.close()


def test_malformed_batches_are_refused_before_they_reach_a_segment(tmp_path: Path) -> None:
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


def test_a_damaged_segment_names_itself_and_the_fix(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    w.append("events", rows(10))
    w.close()
    seg = next(segments_dir(store).rglob("*.parquet"))
    seg.write_bytes(seg.read_bytes()[:-20])
    r = DuckDBStore(store, read_only=True)
    with pytest.raises(StoreError) as e:
        count(r)
    assert seg.name in str(e.value) and "move it out" in str(e.value)
    r.close()


def test_store_files_and_remove_store_cover_the_segments(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    w.append("events", rows(10))
    w.append("processes", pa.Table.from_pylist([{"host_id": "h1", "boot_id": "b1", "entity_id": 1, "image_seq": 0, "pid": 1,
                                                     "start_ts": 5, "image_ts": 5, "source": "exec"}]))
    w.flush()
    files = store_files(store)
    assert store in files and {p.parent.name for p in files if p.suffix == ".parquet"} == {"events", "processes"}
    w.close()
    remove_store(store)
    assert not store.exists() and not segments_dir(store).exists()
