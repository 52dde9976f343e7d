"""The sealed layout (store/codec.py): rows sorted within a row group, ts_boot as a clock offset.

What an investigator relies on: every column of every row reads back exactly as it was
appended, before and after the seal; a seal never moves a row into another row group
(another span of the recording); stores written before the re-encoding still open, read
their old rows unchanged, and take new ones.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from bench.synth import EventGenerator
from forensix.store import schema
from forensix.store.codec import FILE_KEY, ROW_GROUP
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.store.journal import conform
from forensix.store.migrations import MIGRATIONS, STORE_FORMAT

ALL = "SELECT * FROM events ORDER BY seq"
NO_EDGES = "SELECT * FROM events WHERE seq IS NOT NULL ORDER BY seq"  # not the rows of flows_base's edges


def _edge_rows(seq0: int) -> pa.Table:
    """Rows the encodings must not get wrong: no ts_boot, a difference that would overflow,
    negative times, every raw argument at its extremes."""
    rows = [
        {"ts": 5, "ts_boot": None},
        {"ts": 2**62, "ts_boot": -(2**62) - 10},  # ts - ts_boot overflows int64: kept as it is
        {"ts": -(2**62), "ts_boot": 2**62 + 1},  # and the other way
        {"ts": -7, "ts_boot": -9},
        {"ts": 2**63 - 1, "ts_boot": 0, "a0": 2**64 - 1, "a1": 0, "a2": None, "a3": 2**63},
        # raw arguments against the columns they are XOR-ed with: copies (stored as 0), a
        # mismatch, an argument missing where its column has a value, extremes of both
        {"ts": 11, "ts_boot": 1, "event_action": "mmap", "a1": 4096, "mem_len": 4096, "a2": 5,
         "mem_prot": 5, "a3": 0x812, "mem_flags": 0x812},
        {"ts": 12, "ts_boot": 2, "a2": 0x80000, "file_flags": 0x80001, "a3": None, "file_mode": 0o644},
        {"ts": 13, "ts_boot": 3, "a1": 2**64 - 1, "mem_len": 2**64 - 2, "a2": 2**64 - 1,
         "file_flags": 2**32 - 1, "mem_prot": 3, "a3": 7, "mem_flags": 7},
        # raw paths against their resolved paths (/15: stored once where equal): equal, a
        # relative one, one without a resolved path, none, empty strings, a target pair
        {"ts": 20, "ts_boot": 0, "file_path": "/usr/include/stdio.h", "file_path_raw": "/usr/include/stdio.h"},
        {"ts": 21, "ts_boot": 0, "file_path": "/tmp/b/x.c", "file_path_raw": "x.c"},
        {"ts": 22, "ts_boot": 0, "file_path": None, "file_path_raw": "/gone"},
        {"ts": 23, "ts_boot": 0, "file_path": "/lib/libc.so.6", "file_path_raw": None},
        {"ts": 24, "ts_boot": 0, "file_path": "", "file_path_raw": ""},
        {"ts": 25, "ts_boot": 0, "event_action": "rename", "file_path": "/a", "file_path_raw": "a", "file_target_path": "/b",
         "file_target_path_raw": "/b"},
        {"ts": 26, "ts_boot": 0, "event_action": "rename", "file_path": "/a", "file_path_raw": "/a", "file_target_path": "/b",
         "file_target_path_raw": "b"},
        # ret and event_end stored as their distance from fd and ts (/15): open's fd, a failed
        # open, a difference that overflows, a summary row's end
        {"ts": 30, "ts_boot": 0, "fd": 5, "ret": 5},
        {"ts": 31, "ts_boot": 0, "fd": None, "ret": -2},
        {"ts": 32, "ts_boot": 0, "fd": 2**31 - 1, "ret": -(2**63)},
        {"ts": 33, "ts_boot": 0, "event_count": 3, "event_start": 1, "event_end": 33},
        {"ts": 34, "ts_boot": 0, "event_count": 2, "event_start": 1, "event_end": 40},
    ]
    base = {"host_id": "h", "boot_id": "b", "event_category": "file", "event_action": "open"}
    # the schema given: from_pylist would otherwise take the first row's keys as the columns
    return pa.Table.from_pylist([base | r | {"seq": seq0 + i} for i, r in enumerate(rows)], schema=schema.EVENTS)


def _rows(n: int) -> pa.Table:
    return pa.concat_tables([EventGenerator(seed=3).batch(n), conform(_edge_rows(n), schema.EVENTS, "events")])


def _same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.names == schema.EVENTS.names and got.num_rows == want.num_rows
    for name in schema.EVENTS.names:
        assert got.column(name).equals(want.column(name).cast(got.schema.field(name).type)), name


def test_every_column_reads_back_exactly_before_and_after_the_seal(tmp_path: Path) -> None:
    data = _rows(ROW_GROUP + 5_000)  # one whole row group and part of the next
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    want = data.sort_by("seq")
    before = w.query(ALL)  # from the journal
    w.flush()
    after = w.query(ALL)  # from DuckDB, sorted and encoded
    w.close()
    r = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    reopened = r.query(ALL)
    base = r._con.execute("SELECT count(*), count(ts_boot), count(clock_offset) FROM events_base").fetchone()
    r.close()
    for got in (before, after, reopened):
        assert got.schema.names == schema.EVENTS.names
        for name in schema.EVENTS.names:
            assert got.column(name).equals(want.column(name).cast(got.schema.field(name).type)), name
    # in DuckDB ts_boot is the offset, except where it was null or would overflow
    assert base == (data.num_rows, 2, data.num_rows - 3)


def test_raw_arguments_that_copy_a_named_column_are_stored_as_zero(tmp_path: Path) -> None:
    data = _rows(1_000)
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.flush()
    stored = w._con.execute("SELECT a1, a2, a3, args_xor FROM events_base WHERE ts = 11").fetchall()
    mismatch = w._con.execute("SELECT a2, a3 FROM events_base WHERE ts = 12").fetchall()
    got = w.query(ALL)
    w.close()
    _same(got, data.sort_by("seq"))
    assert stored == [(0, 0, 0, True)]  # mmap's length, protection and flags: copies
    assert mismatch == [(1, None)]  # 0x80000 ^ 0x80001; a missing argument stays missing


def test_a_raw_path_equal_to_its_resolved_path_is_stored_once(tmp_path: Path) -> None:
    data = _rows(1_000)
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.flush()
    stored = w._con.execute(
        "SELECT ts, file_path_raw, path_raw_same, file_target_path_raw, target_path_raw_same FROM events_base "
        "WHERE ts BETWEEN 20 AND 26 ORDER BY ts").fetchall()
    got = w.query(ALL)
    w.close()
    _same(got, data.sort_by("seq"))  # every raw path reads back as appended
    assert stored == [
        (20, None, True, None, False),  # the copy is not stored
        (21, "x.c", False, None, False),
        (22, "/gone", False, None, False),
        (23, None, False, None, False),  # a missing raw path stays missing, not the resolved one
        (24, None, True, None, False),
        (25, "a", False, None, True),
        (26, None, True, "b", False),
    ]


def test_ret_and_event_end_are_stored_as_their_distance_from_fd_and_ts(tmp_path: Path) -> None:
    data = _rows(1_000)
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.flush()
    stored = w._con.execute("SELECT ts, ret, ret_offset, event_end, event_end_offset FROM events_base "
                            "WHERE ts BETWEEN 30 AND 34 ORDER BY ts").fetchall()
    got = w.query(ALL)
    w.close()
    _same(got, data.sort_by("seq"))
    assert stored == [(30, None, 0, None, None), (31, -2, None, None, None), (32, -(2**63), None, None, None),
                      (33, None, None, None, 0), (34, None, None, None, -6)]


def _file_rows() -> pa.Table:
    """Events naming files the /16 encoding (a file table) must not get wrong: one file twice,
    the same path as two lives of an inode (generations), a path without an inode and an
    inode without a path, an empty path, a row with no file."""
    rows = [
        {"file_path": "/usr/include/stdio.h", "file_inode": 7, "file_device": 8, "file_generation": 1, "file_type": "file"},
        {"file_path": "/usr/include/stdio.h", "file_inode": 7, "file_device": 8, "file_generation": 1, "file_type": "file"},
        {"file_path": "/usr/include/stdio.h", "file_inode": 7, "file_device": 8, "file_generation": 2, "file_type": "file"},
        {"file_path": "/gone", "file_inode": None, "file_device": None, "file_generation": None},
        {"file_path": None, "file_inode": 99, "file_device": 5, "file_generation": 0, "file_type": "fifo"},
        {"file_path": "", "file_inode": 0, "file_device": 0, "file_generation": 0},
        {"event_action": "fork"},
    ]
    base = {"host_id": "h", "boot_id": "b", "event_category": "file", "event_action": "open", "ts_boot": 0}
    return pa.Table.from_pylist([base | r | {"ts": 100 + i, "seq": 10**6 + i} for i, r in enumerate(rows)],
                                schema=schema.EVENTS)


def test_a_file_is_stored_once_and_rows_point_at_it(tmp_path: Path) -> None:
    data = _file_rows()
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.append("flows", _flow_rows())  # every edge names /f
    w.flush()
    w.append("events", data)  # a later seal: the same files keep their ids
    w.flush()
    files = w._con.execute("SELECT file_path, file_inode, file_generation FROM forensix_files ORDER BY file_id").fetchall()
    inline = w._con.execute("SELECT count(file_path), count(file_inode), count(file_generation), count(file_device), "
                            "count(file_type) FROM events_base").fetchone()
    ids = w._con.execute("SELECT count(file_id), count(DISTINCT file_id) FROM events_base").fetchone()
    edge_ids = w._con.execute("SELECT count(DISTINCT file_id) FROM flows_base").fetchone()
    got = w.query("SELECT * FROM events WHERE seq IS NOT NULL ORDER BY ts, seq")
    stdio = w.query("SELECT count(*) AS n FROM events WHERE file_path = '/usr/include/stdio.h' AND file_generation = 1")
    fifo = w.query("SELECT count(*) AS n FROM events WHERE file_inode = 99 AND file_path IS NULL")
    comp = w._con.execute("SELECT string_agg(DISTINCT compression) FROM pragma_storage_info('forensix_files') "
                          "WHERE column_name = 'file_path' AND segment_type = 'VARCHAR'").fetchone()
    w.close()
    _same(got, pa.concat_tables([data, data]).sort_by([("ts", "ascending"), ("seq", "ascending")]))
    # ordered by path within a seal (no path first), the edges' seal after; each life of
    # stdio.h is a file of its own
    assert files == [(None, 99, 0), ("", 0, 0), ("/gone", None, None), ("/usr/include/stdio.h", 7, 1),
                     ("/usr/include/stdio.h", 7, 2), ("/f", None, None)]
    assert inline == (0, 0, 0, 0, 0)  # nothing of a file is stored in the rows themselves
    assert ids == (12, 5)  # 6 rows with a file per seal, 5 files, the same ids in both seals
    assert edge_ids == (1,)
    assert stdio.column("n")[0].as_py() == 4 and fifo.column("n")[0].as_py() == 2
    assert comp == ("ZSTD",)


def _flow_rows() -> pa.Table:
    """Edges whose last_ts the /15 encoding (an offset from first_ts) must not get wrong."""
    rows = [
        {"first_ts": 100, "last_ts": 100, "ts_boot": 40},  # one instant: stored as 0
        {"first_ts": 100, "last_ts": 5_000_000_100, "ts_boot": 7},
        {"first_ts": None, "last_ts": 9, "ts_boot": 3},  # no first_ts: kept as it is
        {"first_ts": 9, "last_ts": None, "ts_boot": None},
        {"first_ts": -(2**62), "last_ts": 2**62 + 5, "ts_boot": 1},  # the difference overflows
        {"first_ts": 2**63 - 1, "last_ts": -1, "ts_boot": -1},
    ]
    base = {"host_id": "h", "boot_id": "b", "file_path": "/f", "read_count": 1, "in_events": False}
    return pa.Table.from_pylist([base | r | {"entity_id": i} for i, r in enumerate(rows)], schema=schema.FLOWS)


def test_an_edges_last_ts_is_stored_as_its_distance_from_first_ts(tmp_path: Path) -> None:
    data = _flow_rows()
    w = open_writer(tmp_path / "s.duckdb")
    w.append("flows", data)
    w.flush()
    stored = w._con.execute("SELECT entity_id, last_ts, last_ts_offset FROM flows_base ORDER BY entity_id").fetchall()
    got = w.query("SELECT * FROM flows ORDER BY entity_id")
    as_events = w.query("SELECT ts, flow_last_ts, ts_boot FROM events WHERE event_action = 'flow' "
                        "ORDER BY process_entity_id").to_pylist()
    w.close()
    for name in schema.FLOWS.names:
        assert got.column(name).equals(data.column(name).cast(got.schema.field(name).type)), name
    assert stored == [(0, None, 0), (1, None, -5_000_000_000), (2, 9, None), (3, None, None),
                      (4, 2**62 + 5, None), (5, -1, None)]
    assert [r["flow_last_ts"] for r in as_events] == data.column("last_ts").to_pylist()
    assert [r["ts_boot"] for r in as_events] == data.column("ts_boot").to_pylist()


def test_a_seal_sorts_rows_within_their_row_group_and_never_across(tmp_path: Path) -> None:
    data = _rows(2 * ROW_GROUP)
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.flush()
    first = w._con.sql(f"SELECT seq FROM events_base WHERE rowid < {ROW_GROUP}").to_arrow_table()
    runs = w._con.execute(
        f"SELECT count(*) FROM (SELECT event_action, lag(event_action) OVER (ORDER BY rowid) AS prev "
        f"FROM events_base WHERE rowid < {ROW_GROUP}) WHERE event_action IS DISTINCT FROM prev").fetchone()[0]
    w.close()
    assert sorted(first.column("seq").to_pylist()) == list(range(ROW_GROUP))  # the first group's rows, all
    assert runs == len(set(data.column("event_action").slice(0, ROW_GROUP).to_pylist()))  # one run per action


def _third_format_store(path: Path, rows: pa.Table, before: str = "0005_codec") -> None:
    """A store as an older version wrote it: migrations up to ``before`` (0004 by default),
    rows sealed raw (ts_boot in place, arguments as they were)."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE forensix_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE forensix_migrations (name VARCHAR PRIMARY KEY, applied_ns BIGINT)")
    con.execute("INSERT INTO forensix_meta VALUES ('format', 'forensix-store/1')")
    for name, statements in MIGRATIONS:
        if name == before:
            break
        for stmt in statements:
            con.execute(stmt)
        con.execute("INSERT INTO forensix_migrations VALUES ($n, 0)", {"n": name})
    con.execute("INSERT INTO forensix_sealed VALUES ('events', 1, 0)")
    con.register("old_rows", rows)
    con.execute("INSERT INTO events_base BY NAME SELECT * FROM old_rows")
    con.close()


def test_a_store_of_the_third_format_reads_as_it_is_and_is_migrated(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    old, new = _rows(3_000).slice(0, 2_000), _rows(3_000).slice(2_000)
    _third_format_store(store, old)
    r = DuckDBStore(store, read_only=True)
    assert r.format == "forensix-store/3"
    _same(r.query(ALL), old.sort_by("seq"))
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT and w.migrations()[-1] == MIGRATIONS[-1][0]
    w.append("events", new)
    w.flush()
    both = w.query(ALL)
    w.close()
    _same(both, pa.concat_tables([old, new]).sort_by("seq"))
    # the old rows kept their ts_boot in place; the new ones hold the offset
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT count(ts_boot), count(clock_offset) FROM events_base").fetchone() == (
        old.num_rows + 2, new.num_rows - 3)  # 2 would overflow, 1 has no ts_boot
    con.close()


def test_a_store_of_the_eighth_format_reads_its_raw_arguments_as_they_are(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    rows = _rows(3_000)
    old, new = rows.slice(0, 2_000), rows.slice(2_000)
    _third_format_store(store, old, before="0010_args_xor")
    r = DuckDBStore(store, read_only=True)  # a reader never migrates: no args_xor column
    assert r.format == "forensix-store/8"
    _same(r.query(ALL), old.sort_by("seq"))
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT
    w.append("events", new)
    w.flush()
    both = w.query(ALL)
    flags = w._con.execute("SELECT count(args_xor), count(*) FROM events_base").fetchone()
    w.close()
    _same(both, rows.sort_by("seq"))
    assert flags == (new.num_rows, rows.num_rows)  # the old rows were never re-encoded


def test_a_store_of_the_fourteenth_format_reads_its_paths_and_edges_as_they_are(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    rows = _rows(3_000)
    old, new = rows.slice(0, 2_000), rows.slice(2_000)
    _third_format_store(store, old, before="0016_paths_once")
    con = duckdb.connect(str(store))
    con.register("old_edges", _flow_rows())
    con.execute("INSERT INTO flows_base BY NAME SELECT * FROM old_edges")
    con.close()
    r = DuckDBStore(store, read_only=True)  # a reader never migrates: no flag columns
    assert r.format == "forensix-store/14"
    _same(r.query(NO_EDGES), old.sort_by("seq"))
    assert r.query("SELECT last_ts FROM flows ORDER BY entity_id").column("last_ts").to_pylist() == \
        _flow_rows().column("last_ts").to_pylist()
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT
    w.append("events", new)
    w.flush()
    both = w.query(NO_EDGES)
    flags = w._con.execute("SELECT count(path_raw_same), count(*) FROM events_base").fetchone()
    edges = w.query("SELECT last_ts FROM flows ORDER BY entity_id").column("last_ts").to_pylist()
    w.close()
    _same(both, rows.sort_by("seq"))
    assert flags == (new.num_rows, rows.num_rows)  # the old rows were never re-encoded
    assert edges == _flow_rows().column("last_ts").to_pylist()


def test_a_store_of_the_fifteenth_format_reads_its_files_as_they_are(tmp_path: Path) -> None:
    store = tmp_path / "old.duckdb"
    rows = pa.concat_tables([_rows(2_000), conform(_file_rows(), schema.EVENTS, "events")])
    old, new = rows.slice(0, 1_500), rows.slice(1_500)
    _third_format_store(store, old, before="0017_files_once")
    r = DuckDBStore(store, read_only=True)  # a reader never migrates: no file table
    assert r.format == "forensix-store/15"
    _same(r.query(NO_EDGES), old.sort_by("seq"))
    r.close()
    w = open_writer(store)
    assert w.format == STORE_FORMAT
    w.append("events", new)
    w.flush()
    both = w.query(NO_EDGES)
    ids = w._con.execute("SELECT count(file_id), count(file_path) FROM events_base").fetchone()
    w.close()
    _same(both, rows.sort_by("seq"))
    # the old rows keep their paths in place; the new ones point at the file table
    with_file = sum(any(r[k] is not None for k in FILE_KEY) for r in new.select(list(FILE_KEY)).to_pylist())
    assert ids == (with_file, len(old.column("file_path").drop_null()))


def test_sockets_stay_in_their_rows(tmp_path: Path) -> None:
    """A socket is named by nobody else: its rows keep the file's columns (file_id NULL, as rows
    sealed before /16), the file table holds none of them, and the rows read back the same."""
    base = {"host_id": "h", "boot_id": "b", "event_category": "network", "ts_boot": 0}
    rows = [{"event_action": "accept", "file_inode": 1000 + i, "file_device": 9, "file_generation": 0,
             "file_type": "socket"} for i in range(4)]
    rows.append({"event_action": "open", "event_category": "file", "file_path": "/etc/passwd", "file_inode": 7,
                 "file_device": 8, "file_generation": 1, "file_type": "file"})
    data = pa.Table.from_pylist([base | r | {"ts": 100 + i, "seq": i} for i, r in enumerate(rows)], schema=schema.EVENTS)
    edges = pa.Table.from_pylist([{"host_id": "h", "boot_id": "b", "entity_id": 1, "pid": 1, "fd": 3, "file_inode": 1000,
                                   "file_device": 9, "file_generation": 0, "file_type": "socket",
                                   "file_path": "socket:[1000]", "first_ts": 100, "last_ts": 100, "ts_boot": 0,
                                   "in_events": False}], schema=schema.FLOWS)
    w = open_writer(tmp_path / "s.duckdb")
    w.append("events", data)
    w.append("flows", edges)
    w.flush()
    files = w._con.execute("SELECT file_type, count(*) FROM forensix_files GROUP BY ALL").fetchall()
    # network rows are sealed into a table of their own (/17), where the file's columns are inline
    inline = w._con.execute("SELECT (SELECT count(file_inode) FROM events_net_base WHERE file_type = 'socket'), "
                            "(SELECT count(file_id) FROM events_base WHERE file_type = 'socket')").fetchone()
    got = w.query("SELECT * FROM events WHERE seq IS NOT NULL ORDER BY ts, seq")
    got_edges = w.query("SELECT * FROM flows")
    w.close()
    assert files == [("file", 1)]
    assert inline == (4, 0)
    _same(got, data)
    assert got_edges.select(edges.schema.names).to_pylist() == edges.to_pylist()
