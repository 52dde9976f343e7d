"""Network rows in a table of their own (format /17, migration 0018; store/codec.py).

An accept or a connect fills ~40 of events_base's 96 columns, and DuckDB's seal costs per row
and column whatever the column holds: network rows are journaled and sealed into
``events_net_base`` (the columns a socket row fills) and read back as rows of ``events``. What a
reader sees must not change: every row and column as the old layout (every row in
events_base) gives them, before and after the seal, in a store migrated from /16 too, and in
what the analyses of the network (sessions' sources, a process's peers) make of them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.analysis.report import network_peers
from forensix.analysis.sessions import sessions
from forensix.store import codec, embedded, migrations, schema
from forensix.store.embedded import DuckDBStore, open_reader, open_writer
from forensix.store.journal import Parts
from forensix.store.keeper import RecorderStore
from forensix.testing.generator import StoreBuilder

ALL = "SELECT * FROM events ORDER BY ts, seq"


def _history() -> dict[str, pa.Table]:
    """sshd accepting logins whose shells connect out, over every kind of network row the
    sensor writes (accept, connect: tcp over IPv4 and IPv6, a failed one, unix with a path and
    a peer; bind, listen) and rows that must stay in events_base: a socketpair (its descriptors),
    an imported connection (its module), a file open."""
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    b.connect(sshd, 0.6, ("0.0.0.0", 22), ("0.0.0.0", 0), action="bind")
    b.connect(sshd, 0.7, ("0.0.0.0", 22), ("0.0.0.0", 0), action="listen")
    for i in range(3):
        t = 10.0 + 100 * i
        b.accept(sshd, t - 0.01, ("10.0.0.5", 22), (f"198.51.100.{i + 1}", 40001 + i))
        priv = b.spawn(sshd, 600 + i, t, "/usr/sbin/sshd", [f"sshd: user{i} [priv]"])
        sh = b.spawn(priv, 700 + i, t + 1, "/usr/bin/bash", ["-bash"])
        b.connect(sh, t + 2, ("10.0.0.5", 50000 + i), ("203.0.113.9", 443))
        b.connect(sh, t + 3, ("::1", 50100 + i), ("2001:db8::7", 8443))
        b.unix_connect(sh, t + 4, "/run/systemd/journal/stdout", peer_inode=9000 + i)
        b.open(sh, t + 5, "/etc/passwd")
    curl = b.spawn(init, 900, 400, "/usr/bin/curl", ["curl", "http://192.0.2.1/"])
    b.connect(curl, 401, ("10.0.0.5", 51000), ("192.0.2.1", 80))
    b.events[-1] |= {"ret": -111, "event_outcome": "failure"}  # refused
    b.socketpair(curl, 402, 7001, 7002)
    b.connect(curl, 403, ("10.0.0.5", 51001), ("192.0.2.2", 80))
    b.events[-1] |= {"event_module": "sysmon"}
    t = b.tables()
    ev = t["events"]
    # as the sensor writes them: a socket row has no parent pid (decode masks it off fork and
    # exec rows), its syscall and raw arguments, and file_path_truncated false on every row
    net = pa.array([c == "network" for c in ev.column("event_category").to_pylist()])
    ev = ev.set_column(ev.schema.get_field_index("process_parent_pid"), "process_parent_pid",
                       pa.compute.if_else(net, pa.scalar(None, pa.uint32()), ev.column("process_parent_pid")))
    for col, val in (("syscall", "connect"), ("a0", 3), ("a1", 140737488346112), ("a2", 16), ("file_path_truncated", False)):
        typ = ev.schema.field(col).type
        ev = ev.set_column(ev.schema.get_field_index(col), col,
                           pa.compute.if_else(net, pa.scalar(val, typ), ev.column(col)))
    t["events"] = ev
    return t


def _write(path: Path, tables: dict[str, pa.Table], flush: bool = True) -> DuckDBStore:
    w = open_writer(path)
    for name, t in tables.items():
        for s in range(0, t.num_rows, 7):  # in batches, as a recorder appends
            w.append(name, t.slice(s, 7))
    if flush:
        w.flush()
    return w


def _net_rows(w: DuckDBStore) -> tuple[int, int]:
    net = w._con.execute("SELECT count(*) FROM events_net_base").fetchall()[0][0]
    base = w._con.execute("SELECT count(*) FROM events_base WHERE event_category = 'network'").fetchall()[0][0]
    return int(net), int(base)


def _old(tmp_path: Path, tables: dict[str, pa.Table], monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    with monkeypatch.context() as m:
        m.setattr(codec, "parts", lambda table, data: [(table, data)])
        w = _write(tmp_path / "old.duckdb", tables)
    assert _net_rows(w) == (0, 17)
    got = w.query(ALL)
    w.close()
    return got


def test_network_rows_read_back_as_the_old_layout_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _history()
    want = _old(tmp_path, tables, monkeypatch)
    w = _write(tmp_path / "new.duckdb", tables, flush=False)
    journaled = w.query(ALL)  # before the seal: the two journals' rows
    w.flush()
    # 17 network rows: all but the socketpair (descriptors) and the imported one (module)
    assert _net_rows(w) == (15, 2)
    sealed = w.query(ALL)
    w.close()
    reread = open_reader(tmp_path / "new.duckdb").query(ALL)
    assert want.num_rows == tables["events"].num_rows + tables["flows"].num_rows
    for got in (journaled, sealed, reread):
        assert got.column_names == want.column_names
        assert got.to_pylist() == want.to_pylist()


def test_a_network_row_keeps_every_column_it_has(tmp_path: Path) -> None:
    """Each network column, set on a row the narrow table takes, reads back as it went in;
    a value in a column it lacks keeps the row in events_base."""
    base = {"host_id": "h", "host_name": "n", "boot_id": "b", "event_kind": "event", "event_category": "network",
            "event_action": "accept", "ts_boot": 5}
    rows = []
    for i, c in enumerate(codec.NET_COLUMNS):
        f = schema.EVENTS.field(c)
        if c in base or c == "ts":
            continue
        val: object = {"string": "x", "bool": True}.get(str(f.type), 7)
        rows.append(base | {"ts": 100 + i, "seq": i, c: val})
    rows.append(base | {"ts": 1000, "seq": 999, "process_exit_code": 1})  # not a socket row's column
    data = pa.Table.from_pylist(rows, schema=schema.EVENTS)
    w = _write(tmp_path / "s.duckdb", {"events": data})
    assert _net_rows(w) == (len(rows) - 1, 1)
    got = w.query("SELECT * FROM events ORDER BY ts").select(schema.EVENTS.names)
    w.close()
    assert got.to_pylist() == data.to_pylist()


def test_the_network_analyses_answer_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Who connected where (a process's peers, a report's network section) and where a
    session came from (the accept its sshd leader holds) from both layouts."""
    tables = _history()
    with monkeypatch.context() as m:
        m.setattr(codec, "parts", lambda table, data: [(table, data)])
        _write(tmp_path / "old.duckdb", tables).close()
    w = _write(tmp_path / "new.duckdb", tables)
    assert _net_rows(w)[0] > 0
    w.close()
    out = []
    for name in ("old.duckdb", "new.duckdb"):
        r = open_reader(tmp_path / name)
        members = [int(x) for x in r.query("SELECT DISTINCT process_entity_id FROM events "
                                           "WHERE process_entity_id IS NOT NULL").column(0).to_pylist()]
        out.append((network_peers(r, members).to_pylist(),
                    sessions(r, names=lambda u: {}).to_pylist(),
                    r.query("SELECT process_pid, destination_ip, destination_port, count(*) AS n FROM events "
                            "WHERE event_action = 'connect' GROUP BY ALL ORDER BY ALL").to_pylist()))
    assert out[0] == out[1]
    peers, sess, _ = out[1]
    assert {p["peer_ip"] for p in peers} >= {"203.0.113.9", "2001:db8::7", "/run/systemd/journal/stdout"}
    assert sorted(s["source_ip"] for s in sess if s["kind"] == "sshd") == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]


def test_a_store_of_format_16_migrates_and_then_takes_network_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _history()
    path = tmp_path / "s.duckdb"
    with monkeypatch.context() as m:  # forensix before /17: migrations up to 0017, one events journal
        m.setattr(embedded, "MIGRATIONS", [x for x in migrations.MIGRATIONS if x[0] < "0018"])
        m.setattr(embedded, "STORE_FORMAT", "forensix-store/16")
        m.setattr(codec, "parts", lambda table, data: [(table, data)])
        _write(path, {"events": tables["events"]}).close()
    old = DuckDBStore(path, read_only=True)  # read as it is, not migrated
    assert old.format == "forensix-store/16" and "events_net" not in old._journals
    before = old.query(ALL)
    old.close()
    w = open_writer(path)
    assert w.migrations()[-2:] == ["0018_network_rows", "0019_implied_columns"]
    assert w.query(ALL).to_pylist() == before.to_pylist()
    later = tables["events"].filter(pa.compute.equal(tables["events"].column("event_category"), "network"))
    later = later.set_column(later.schema.get_field_index("ts"), "ts", pa.compute.add(later.column("ts"), 10**12))
    w.append("events", later)
    w.flush()
    assert _net_rows(w) == (15, 17 + 2)  # the old rows where they were, the new ones apart
    w.close()
    got = open_reader(path).query(ALL)
    assert got.num_rows == before.num_rows + later.num_rows
    assert got.slice(0, before.num_rows).to_pylist() == before.to_pylist()
    assert got.slice(before.num_rows).select(later.column_names).to_pylist() == later.to_pylist()


def test_the_recorder_journals_network_rows_apart_and_its_keeper_seals_them(tmp_path: Path) -> None:
    """`forensix record`'s writer (RecorderStore) splits as the store does, and its keeper
    process seals both journals."""
    tables = _history()
    path = tmp_path / "r.duckdb"
    w = RecorderStore(path)
    for name, t in tables.items():
        for s in range(0, t.num_rows, 5):
            w.append(name, t.slice(s, 5))
    w.close()
    jd = path.with_name(path.name + ".journal")
    assert not list(jd.rglob("*.arrows"))  # all sealed
    r = DuckDBStore(path, read_only=True)
    assert _net_rows(r) == (15, 2)
    got = r.query("SELECT * FROM events WHERE event_action <> 'flow' ORDER BY ts, seq")
    r.close()
    assert got.select(schema.EVENTS.names).to_pylist() == tables["events"].to_pylist()


def test_a_batch_split_between_journals_is_resumed_not_appended_twice() -> None:
    """The writer retries a refused batch (a full disk) as the same table: the part that went
    in is not appended again, and the one that failed is given again as the same object (a
    JournalAppender then resumes inside it)."""
    data = pa.table({"x": [1, 2, 3]})
    parts = [("events", data.slice(0, 2)), (codec.NET_TABLE, data.slice(2))]
    put: list[tuple[str, object]] = []
    fail = [True]  # the network journal's first append fails

    def append(name: str, t: pa.Table) -> None:
        if name == codec.NET_TABLE and fail:
            fail.pop()
            raise OSError(28, "No space left on device")
        put.append((name, t))

    p = Parts()
    with pytest.raises(OSError):
        p.append(data, lambda: parts, append)
    p.append(data, lambda: [("events", data), (codec.NET_TABLE, data)], append)  # not split again
    assert put == [("events", parts[0][1]), (codec.NET_TABLE, parts[1][1])]
    assert put[1][1] is parts[1][1]
    p.append(pa.table({"x": [4]}), lambda: [("events", pa.table({"x": [4]}))], append)  # another batch: split anew
    assert len(put) == 3



@pytest.mark.parametrize("pattern", ["blocks", "alternating", "all", "none"])
def test_a_batch_is_split_with_every_row_once_in_order(pattern: str) -> None:
    """A recorder's batch holds its network rows in a run or a few (taken as slices), an
    import's may interleave them with others (filtered): either way each row lands once, in
    order, on the side a row-by-row reading of the rule puts it."""
    ev = _history()["events"]
    net = [r for r in ev.to_pylist() if r["event_category"] == "network"]
    other = [r for r in ev.to_pylist() if r["event_category"] != "network"]
    rows = {"blocks": other[:5] + net * 3 + other[5:] + net,
            "alternating": [r for pair in zip(other * 4, net * 3, strict=False) for r in pair],
            "all": net, "none": other}[pattern]
    rows = [r | {"seq": i} for i, r in enumerate(rows)]
    rest, narrow = codec.split_network(pa.Table.from_pylist(rows, schema=schema.EVENTS))
    fits = [r["event_category"] == "network" and all(r[c] is None for c in schema.EVENTS.names
                                                      if c not in codec.NET_COLUMNS) for r in rows]
    assert rest.to_pylist() == [r for r, f in zip(rows, fits, strict=True) if not f]
    assert narrow.to_pylist() == [{c: r[c] for c in codec.NET_COLUMNS} for r, f in zip(rows, fits, strict=True) if f]
    assert narrow.schema == codec.NET_SCHEMA and rest.schema == schema.EVENTS


@pytest.mark.parametrize("cut", ["runs", "across", "one"])
def test_a_decoded_drain_in_chunks_is_split_as_one_table(cut: str) -> None:
    """The decoder hands a drain as chunks (its socket rows decoded apart, sensor/decode.py
    ``_decode_apart``): the split reads a chunk's null counts instead of every row, and must
    put each row where the same rows in one chunk go, a network row that fills another
    column (a socketpair's descriptor) among plain ones included."""
    ev = _history()["events"]
    net = [r for r in ev.to_pylist() if r["event_category"] == "network"]
    other = [r for r in ev.to_pylist() if r["event_category"] != "network"]
    filled = net[0] | {"fd": 3}
    rows = [r | {"seq": i} for i, r in enumerate(other[:3] + net * 4 + [filled] + net + other[3:] + net * 2)]
    one = pa.Table.from_pylist(rows, schema=schema.EVENTS)
    k = len(other[:3])
    m = k + 5 * len(net) + 1
    bounds = {"runs": [0, k, m, m + len(other[3:]), len(rows)],
              "across": [0, k + 1, m - 2, len(rows) - 1, len(rows)], "one": [0, len(rows)]}[cut]
    chunked = pa.concat_tables([one.slice(a, b - a) for a, b in itertools.pairwise(bounds)])
    for got, want in zip(codec.split_network(chunked), codec.split_network(one), strict=True):
        assert got.to_pylist() == want.to_pylist()
    assert filled | {"seq": k + 4 * len(net)} in codec.split_network(chunked)[0].to_pylist()
