"""Columns a web server's network rows can be read back from, stored NULL (format /18, migration
0019; store/codec.py ``NET_IMPLIED``).

A web-conn request stores an accept, a connect and a socket edge per side, and the keeper's
seal costs per row and column, most for strings: the four columns every network row of the
sensor holds the same values in (category, class, kind, file type) are stored NULL under a
flag. A reader must see every row and column as the /17 layout gives them, journaled, sealed
and reopened, in a store migrated from /17 too; a row whose values differ (an older
recorder's journal, an import) keeps its own.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.errors import NotAStoreError
from forensix.store import codec, embedded, migrations
from forensix.store.embedded import DuckDBStore, open_reader, open_writer
from forensix.store.keeper import RecorderStore
from forensix.testing.generator import StoreBuilder

EVENTS = "SELECT * FROM events ORDER BY ts, seq, event_action, process_pid, file_inode"
FLOWS = "SELECT * FROM flows ORDER BY first_ts, entity_id, fd, file_inode"
SENSOR = {"event_class": "network"}  # as the sensor's network rows have it (sensor/losses.py)


def _web() -> dict[str, pa.Table]:
    """nginx accepting connections from wrk, each with a socket edge per side (stored once, as
    the recorder flushes them), and the rows that must keep their own values: a network row of
    another kind (a state row), an edge with no name, one named otherwise than by its inode,
    a pipe's and a file's."""
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    nginx = b.spawn(init, 500, 0.5, "/usr/sbin/nginx", ["nginx: worker process"])
    wrk = b.spawn(init, 600, 0.6, "/usr/bin/wrk", ["wrk", "-c16", "http://127.0.0.1:8080/"])
    for i in range(40):
        t = 1.0 + i / 100
        b.connect(wrk, t, ("127.0.0.1", 40000 + i), ("127.0.0.1", 8080))
        b.events[-1] |= SENSOR
        b.accept(nginx, t + 0.001, ("127.0.0.1", 8080), ("127.0.0.1", 40000 + i))
        b.events[-1] |= SENSOR
        b.flow(wrk, t, t + 0.002, "", file_type="socket", inode=70000 + 2 * i, read=4096, write=80, stored_once=True)
        b.flow(nginx, t, t + 0.002, "", file_type="socket", inode=70001 + 2 * i, read=80, write=4096, stored_once=True)
    b.accept(nginx, 2.0, ("127.0.0.1", 8080), ("127.0.0.1", 41000))
    b.events[-1] |= SENSOR | {"event_kind": "state"}  # not the sensor's: keeps its values
    b.connect(wrk, 2.1, ("127.0.0.1", 41001), ("127.0.0.1", 8080))  # no class: as an import's
    b.flow(nginx, 2.2, 2.3, "", file_type="socket", inode=71000, read=1, stored_once=True)
    b.flows[-1] |= {"file_path": None}  # an unnamed socket's edge
    b.flow(nginx, 2.4, 2.5, "", file_type="socket", inode=71001, read=1, stored_once=True)
    b.flows[-1] |= {"file_path": "socket:[9]"}  # named otherwise than by its inode
    b.flow(nginx, 2.6, 2.7, "", file_type="fifo", inode=71002, write=5, stored_once=True)
    b.flow(nginx, 2.8, 2.9, "/var/log/nginx/access.log", write=100, stored_once=True)
    t = b.tables()
    ev = t["events"]
    net = pc.equal(ev.column("event_category"), "network")
    for col, val in (("syscall", "accept4"), ("a0", 6), ("file_path_truncated", False)):
        typ = ev.schema.field(col).type
        ev = ev.set_column(ev.schema.get_field_index(col), col, pc.if_else(net, pa.scalar(val, typ), ev.column(col)))
    ev = ev.set_column(ev.schema.get_field_index("process_parent_pid"), "process_parent_pid",
                       pc.if_else(net, pa.scalar(None, pa.uint32()), ev.column("process_parent_pid")))
    t["events"] = ev
    return t


def _append(w: DuckDBStore | RecorderStore, tables: dict[str, pa.Table]) -> None:
    for name, t in tables.items():
        for s in range(0, t.num_rows, 9):  # in batches, as a recorder appends
            w.append(name, t.slice(s, 9))


def _as_17(monkeypatch: pytest.MonkeyPatch) -> None:
    """forensix before /18: migrations up to 0018, nothing stored NULL for being implied."""
    monkeypatch.setattr(embedded, "MIGRATIONS", [x for x in migrations.MIGRATIONS if x[0] < "0019"])
    monkeypatch.setattr(embedded, "STORE_FORMAT", "forensix-store/17")
    monkeypatch.setattr(codec, "_encode_implied", lambda t: t)


def _stored(w: DuckDBStore) -> tuple[int, int]:
    """Network rows stored with their implied columns NULL, and such rows left with a value in them."""
    q = w._con.execute
    implied = q("SELECT count(*) FROM events_net_base WHERE implied AND event_category IS NULL AND event_class IS NULL "
                "AND event_kind IS NULL AND file_type IS NULL").fetchall()[0][0]
    kept = q("SELECT count(*) FROM events_net_base WHERE event_kind IS NOT NULL").fetchall()[0][0]
    return int(implied), int(kept)


def test_web_rows_read_back_as_the_17_layout_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _web()
    with monkeypatch.context() as m:
        _as_17(m)
        old = open_writer(tmp_path / "old.duckdb")
        _append(old, tables)
        old.flush()
        want = old.query(EVENTS), old.query(FLOWS)
        old.close()
    w = open_writer(tmp_path / "new.duckdb")
    _append(w, tables)
    journaled = w.query(EVENTS), w.query(FLOWS)  # before the seal: the journals' rows
    w.flush()
    assert _stored(w) == (80, 2)  # 40 accepts + 40 connects
    sealed = w.query(EVENTS), w.query(FLOWS)
    w.close()
    r = open_reader(tmp_path / "new.duckdb")
    reopened = r.query(EVENTS), r.query(FLOWS)
    r.close()
    for got in (journaled, sealed, reopened):
        assert got[0].to_pylist() == want[0].to_pylist()
        assert got[1].to_pylist() == want[1].to_pylist()
    names = {p for p in want[1].column("file_path").to_pylist() if p}
    assert {"socket:[70000]", "socket:[9]", "fifo:[71002]", "/var/log/nginx/access.log"} <= names


def test_the_recorders_keeper_seals_them_so(tmp_path: Path) -> None:
    """`forensix record`'s writer and its keeper process (store/keeper.py): the same rows."""
    tables = _web()
    w = RecorderStore(tmp_path / "r.duckdb")
    _append(w, tables)
    w.close()
    r = DuckDBStore(tmp_path / "r.duckdb", read_only=True)
    assert _stored(r) == (80, 2)
    got = r.query("SELECT * FROM events WHERE event_category = 'network' ORDER BY ts, seq")
    edges = r.query(FLOWS)
    r.close()
    ev = tables["events"]
    want = ev.filter(pc.equal(ev.column("event_category"), "network")).sort_by([("ts", "ascending"), ("seq", "ascending")])
    assert got.select(want.column_names).to_pylist() == want.to_pylist()
    fl = tables["flows"]
    assert edges.select(fl.column_names).to_pylist() == fl.sort_by([("first_ts", "ascending")]).to_pylist()


def test_a_store_of_format_17_migrates_and_reads_its_old_rows_as_stored(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _web()
    path = tmp_path / "s.duckdb"
    with monkeypatch.context() as m:
        _as_17(m)
        old = open_writer(path)
        _append(old, tables)
        old.close()
    r = DuckDBStore(path, read_only=True)  # read as it is, not migrated
    assert r.format == "forensix-store/17"
    before = r.query(EVENTS), r.query(FLOWS)
    r.close()
    w = open_writer(path)
    assert w.migrations()[-1] == "0019_implied_columns"
    assert (w.query(EVENTS).to_pylist(), w.query(FLOWS).to_pylist()) == (before[0].to_pylist(), before[1].to_pylist())
    later = {n: _later(tables[n], cols) for n, cols in (("events", ("ts",)), ("flows", ("first_ts", "last_ts")))}
    _append(w, later)
    w.flush()
    assert _stored(w) == (80, 84)  # the new rows only: the old ones as they were
    w.close()
    r = open_reader(path)
    got = r.query(EVENTS), r.query(FLOWS)
    r.close()
    n_ev, n_fl = before[0].num_rows, before[1].num_rows
    assert got[0].slice(0, n_ev).to_pylist() == before[0].to_pylist()
    assert got[1].slice(0, n_fl).to_pylist() == before[1].to_pylist()
    assert got[0].num_rows - n_ev == later["events"].num_rows + later["flows"].num_rows  # edges' rows derived
    assert got[1].slice(n_fl).select(later["flows"].column_names).to_pylist() == later["flows"].to_pylist()


def _later(t: pa.Table, cols: tuple[str, ...]) -> pa.Table:
    for c in cols:
        t = t.set_column(t.schema.get_field_index(c), c, pc.add(t.column(c), 10**12))
    return t


def test_a_forensix_of_format_17_refuses_the_store_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    _append(w, _web())
    w.close()
    monkeypatch.setattr(embedded, "KNOWN_FORMATS", migrations.KNOWN_FORMATS - {"forensix-store/18"})
    with pytest.raises(NotAStoreError) as e:
        open_reader(path)
    assert "forensix-store/18" in e.value.message and "version that wrote it" in (e.value.hint or "")
