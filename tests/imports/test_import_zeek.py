"""Zeek conn.log, TSV and JSON, imported as network events linked to recorded processes.

tests/imports/fixtures/zeek/conn.log is Zeek's own TSV output (source in the README beside
it). The JSON lines are the first of its records in Zeek's two JSON forms, written here.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from forensix.cli.main import cli
from forensix.imports import FORMATS, Host, Importer
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.testing.generator import StoreBuilder

FIX = Path(__file__).parent / "fixtures" / "zeek"
FIRST = {"ts": 1521911721_255387000, "source_ip": "10.164.94.120", "source_port": 39681,
         "destination_ip": "10.47.3.155", "destination_port": 3389, "network_transport": "tcp",
         "event_end": 1521911721_255387000 + 4_266_000}
_COLS = "ts, source_ip, source_port, destination_ip, destination_port, network_transport, event_end"


def _import(w: DuckDBStore, path: Path) -> object:
    return Importer(w, "zeek", FORMATS["zeek"].make, Host("sensor", "sensor")).import_file(path)


def _conns(w: DuckDBStore) -> list[dict[str, object]]:
    return w.query(f"SELECT {_COLS}, message, process_entity_id, event_module FROM events "
                   "WHERE event_action = 'zeek-conn' ORDER BY ts").to_pylist()


def test_zeek_tsv_conn_log(tmp_path: Path) -> None:
    store = str(tmp_path / "s.duckdb")
    r = CliRunner().invoke(cli, ["import", "zeek", str(FIX / "conn.log"), "--store", store, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "6 events" in r.stdout and "0 skipped" in r.stdout, r.stdout
    w = open_writer(store)
    rows = _conns(w)
    first = next(x for x in rows if "C8Tful1TvM3Zf5x8fl" in str(x["message"]))
    assert {k: first[k] for k in FIRST} == FIRST
    assert "state RSTR bytes 97/19" in str(first["message"]) and first["event_module"] == "zeek"
    assert {x["destination_port"] for x in rows} == {3389, 23189, 27765}
    assert all(x["process_entity_id"] is None for x in rows)  # nothing recorded: no process to name
    w.close()


def test_zeek_json_forms_read_as_the_tsv(tmp_path: Path) -> None:
    """use_json (epoch ts, no _path) and JSON Streaming Logs (_path, ISO ts; other logs passed over)."""
    rec = {"uid": "C8Tful1TvM3Zf5x8fl", "id.orig_h": "10.164.94.120", "id.orig_p": 39681,
           "id.resp_h": "10.47.3.155", "id.resp_p": 3389, "proto": "tcp", "duration": 0.004266,
           "orig_bytes": 97, "resp_bytes": 19, "conn_state": "RSTR", "missed_bytes": 0, "history": "ShADTdtr"}
    a = tmp_path / "conn-a.json"
    a.write_text(json.dumps({"ts": 1521911721.255387, **rec}) + "\n")
    b = tmp_path / "conn-b.json"
    b.write_text(json.dumps({"_path": "dns", "ts": "2018-03-24T17:15:21.3Z", "query": "x"}) + "\n"
                 + json.dumps({"_path": "conn", "_write_ts": "2018-03-24T17:15:21.400275Z",
                               "ts": "2018-03-24T17:15:21.255387Z", **rec}) + "\n")
    for f in (a, b):
        w = open_writer(tmp_path / f"{f.stem}.duckdb")
        res = _import(w, f)
        assert res.skipped == 0, res.warnings  # type: ignore[attr-defined]
        (row,) = _conns(w)
        assert {k: row[k] for k in FIRST} == FIRST, f
        w.close()


def test_zeek_connection_links_to_the_recorded_process(tmp_path: Path) -> None:
    """The process whose connect (or accept) has the connection's 4-tuple is named, either way round."""
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    curl = b.spawn(init, 700, 10, "/usr/bin/curl", ["curl", "http://203.0.113.7/x"])
    b.connect(curl, 10.5, ("10.0.0.5", 40404), ("203.0.113.7", 80))
    sshd = b.spawn(init, 500, 1, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    b.accept(sshd, 20, ("10.0.0.5", 22), ("198.51.100.9", 51515))
    w = open_writer(tmp_path / "s.duckdb")
    b.write(w)
    conn = tmp_path / "conn.json"
    lines = [
        {"ts": b.t(10.49) / 1e9, "uid": "Cout", "id.orig_h": "10.0.0.5", "id.orig_p": 40404,
         "id.resp_h": "203.0.113.7", "id.resp_p": 80, "proto": "tcp", "duration": 0.2},
        {"ts": b.t(19.99) / 1e9, "uid": "Cin", "id.orig_h": "198.51.100.9", "id.orig_p": 51515,
         "id.resp_h": "10.0.0.5", "id.resp_p": 22, "proto": "tcp"},
        # the same peer and port, another source port: not curl's connection
        {"ts": b.t(10.6) / 1e9, "uid": "Cother", "id.orig_h": "10.0.0.5", "id.orig_p": 40405,
         "id.resp_h": "203.0.113.7", "id.resp_p": 80, "proto": "tcp"},
    ]
    conn.write_text("".join(json.dumps(x) + "\n" for x in lines))
    _import(w, conn)
    got = {str(x["message"]).split(":")[0]: x["process_entity_id"] for x in _conns(w)}
    assert got == {"Cout": curl.entity_id, "Cin": sshd.entity_id, "Cother": None}
    w.close()


def test_zeek_bad_lines_are_counted_and_the_rest_imported(tmp_path: Path) -> None:
    good = (FIX / "conn.log").read_bytes().splitlines()
    header, records = good[:8], good[8:]
    bad = [
        records[0].replace(b"\t10.164.94.120\t", b"\tnot-an-ip\t"),
        records[0].replace(b"\t39681\t", b"\t70000\t"),
        b"\t".join(records[0].split(b"\t")[:5]),
        b"garbage-ts" + records[0][len(b"1521911721.255387"):],
        b"\xff\xfe" + records[0],
        b'{"ts": "yesterday", "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.2"}',
        b"[1, 2]",
        b"#fields\tfoo\tbar",
    ]
    p = tmp_path / "conn.log"
    p.write_bytes(b"\n".join([*header, *bad, records[1]]) + b"\n")
    w = open_writer(tmp_path / "s.duckdb")
    res = _import(w, p)
    assert [n for n, _ in res.warnings] == list(range(9, 17)), res.warnings  # type: ignore[attr-defined]
    reasons = " | ".join(why for _, why in res.warnings)  # type: ignore[attr-defined]
    assert "not an IP address" in reasons and "out of range" in reasons and "columns" in reasons
    assert len(_conns(w)) == 1  # the good record after them
    # a grown log imported from its middle has no header: Zeek's standard columns are assumed
    q = tmp_path / "tail.log"
    q.write_bytes(b"\n".join(records[2:4]) + b"\n")
    res = _import(w, q)
    assert res.skipped == 0 and len(_conns(w)) == 3  # type: ignore[attr-defined]
    w.close()


_RECORDS = (FIX / "conn.log").read_bytes().splitlines()
_VALUES = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from([float("inf"), float("nan"), 1e400, -1, 2**70, "1e400", "2018-03-24T17:15:21", {"a": 1}]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.sampled_from(_RECORDS)
                | st.dictionaries(st.sampled_from(["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p",
                                                   "proto", "duration", "orig_bytes", "_path", "id"]),
                                  _VALUES, max_size=8).map(lambda d: json.dumps(d).encode()),
                max_size=12))
def test_zeek_parser_never_crashes(lines: list[bytes]) -> None:
    """Any bytes, any JSON: each line is imported or a BadLine, never another exception."""
    from forensix.imports.rows import BadLine, Processes
    from forensix.imports.zeek import ZeekConnParser

    p = ZeekConnParser(Processes(Host("h", "h")))
    for i, line in enumerate(lines):
        try:
            list(p.feed(line.replace(b"\n", b" "), i + 1))
        except BadLine:
            pass
