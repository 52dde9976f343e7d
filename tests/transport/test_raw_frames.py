"""Malformed raw frames (agent/raw.py) at a real log host over real TLS: each becomes a stored
``decode-warning`` naming the frame and the cause, is acknowledged (kept in the evidence,
not retried for ever), and the stream's later frames are decoded and stored."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from forensix.agent.frame import RAW_TABLE, encode_batch
from forensix.agent.raw import raw_row
from forensix.pki.authority import Authority
from forensix.sensor.abi import enum, struct_dtype
from forensix.sensor.decode import Decoder
from forensix.sensor.decoder_state import export_state
from forensix.sensor.loader import load_abi
from forensix.server import evidence as evidence_mod
from forensix.server.listener import LogServer, ServerConfig
from forensix.server.retention import apply_retention, plan_retention
from forensix.server.verify import verify_evidence
from forensix.store import schema
from forensix.testing.scenario import wait_for
from forensix.testing.shipping import host_info, shipping_sink


def _record(abi: dict[str, Any], pid: int, ts: int) -> bytes:
    """One ring record as the kernel writes it: an 8-byte header, then a syscall record."""
    dt = struct_dtype(abi, "fx_event")
    r = np.zeros(1, dt)
    r["kind"] = enum(abi, "fx_kind")["FX_KIND_SYSCALL"]
    r["nr"] = int(abi["syscalls"]["getpid"])
    r["pid"] = r["tid"] = pid
    r["ts"] = ts
    body = r.tobytes()
    pad = (-len(body)) % 8
    return len(body).to_bytes(4, "little") + bytes(4) + body + bytes(pad)


def _ring(data: bytes, parts: list[list[int]] | None = None, **meta: Any) -> pa.Table:
    return raw_row("ring", {"offset_ns": 10**18, "parts": parts or [[2, 0, len(data)]], **meta}, data)


def test_malformed_raw_frames_become_warnings_and_the_stream_goes_on(pki: Authority, log_server: Any,
                                                                     tmp_path: Path) -> None:
    abi = load_abi()
    good = _record(abi, 4242, 5_000)
    short = (16).to_bytes(4, "little") + bytes(4) + bytes(16)  # shorter than a record header
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    try:
        ship.write(RAW_TABLE, _ring(_record(abi, 4240, 1_000)))  # before any seed: cannot be decoded
        ship.write(RAW_TABLE, _seed(abi))
        bad_meta = _ring(good).set_column(1, "meta", pa.array(["{not json"], pa.string()))
        ship.write(RAW_TABLE, bad_meta)
        ship.write(RAW_TABLE, _ring(good[:100], parts=[[2, 0, len(good)]]))  # bytes cut off the row
        ship.write(RAW_TABLE, _ring(good[:-16]))  # the record runs past its part
        ship.write(RAW_TABLE, _ring(short))  # the decoder's own warning, with its origin
        ship.write(RAW_TABLE, raw_row("flows", {"offset_ns": 0, "n": 3}, b"\0" * 10))
        ship.write(RAW_TABLE, raw_row("ring", {"format": 99}, good))
        ship.write(RAW_TABLE, _ring(good))  # a later, well-formed frame
        ship.flush()
    finally:
        ship.close()
    assert ship.spool.unacked() == 0 and not ship.spool.refused  # acknowledged, none retried or refused
    log_server.srv.ingest.flush()
    st = log_server.store
    warn = st.query("SELECT message FROM events WHERE event_action = 'decode-warning' ORDER BY message")
    msgs = warn["message"].to_pylist()
    expect = ["records before the stream's seed", "preamble", "do not add up", "run past its",
              "shorter than the", "map entries", "format-1"]
    for e in expect:
        assert any(e in m for m in msgs), (e, msgs)
    assert all("alpha/" in m for m in msgs if "shorter" not in m)  # each names its frame
    rows = st.query("SELECT process_pid, ts FROM events WHERE process_pid = 4242")
    assert rows["ts"].to_pylist() == [10**18 + 5_000]  # the later frame: decoded once, with its offset
    v = verify_evidence(log_server.evidence)
    assert v.integrity_ok and v.frames >= 9  # the evidence keeps the malformed frames too


def _artifacts(host_name: str, ts: int | None, sha: str) -> pa.Table:
    info = host_info("alpha")
    return pa.Table.from_pylist([{"host_id": info.host_id, "host_name": host_name, "boot_id": info.boot_id, "ts": ts,
                                  "sha256": sha, "size": 3, "kind": "executable", "path": "/tmp/x",
                                  "source": "/proc/7/exe", "process_entity_id": 7, "process_pid": 7,
                                  "stored": True, "certain": True, "reason": None}], schema=schema.ARTIFACTS)


def _table_row(name: str, t: pa.Table, rows: int | None = None) -> pa.Table:
    return raw_row("table", {"table": name, "rows": t.num_rows if rows is None else rows}, encode_batch(t))


def test_the_collectors_rows_ride_in_the_tick_frame_and_bad_ones_become_warnings(pki: Authority, log_server: Any,
                                                                                  tmp_path: Path) -> None:
    """The raw agent's artifacts rows travel as ``table`` rows of its tick's frame: stored under
    the enrolled name whatever they say; a table it may not send this way, bytes that are not
    Arrow IPC, a row count the preamble contradicts, a NOT NULL column left empty: warnings."""
    abi = load_abi()
    good = _artifacts("mallory", 5, "a" * 64)
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    try:
        ship.write(RAW_TABLE, _seed(abi))
        ship.write(RAW_TABLE, pa.concat_tables([_ring(_record(abi, 4243, 7_000)), _table_row("artifacts", good)]))
        ship.write(RAW_TABLE, _table_row("hosts", good))
        ship.write(RAW_TABLE, raw_row("table", {"table": "artifacts", "rows": 1}, b"not arrow"))
        ship.write(RAW_TABLE, _table_row("artifacts", _artifacts("alpha", 6, "b" * 64), rows=2))
        ship.write(RAW_TABLE, _table_row("artifacts", _artifacts("alpha", None, "c" * 64)))
        ship.flush()
    finally:
        ship.close()
    assert ship.spool.unacked() == 0 and not ship.spool.refused
    log_server.srv.ingest.flush()
    st = log_server.store
    arts = st.query("SELECT host_name, sha256, ts FROM artifacts ORDER BY ts").to_pylist()
    assert arts == [{"host_name": "alpha", "sha256": "a" * 64, "ts": 5}]
    assert st.query("SELECT ts FROM events WHERE process_pid = 4243")["ts"].to_pylist() == [10**18 + 7_000]
    msgs = st.query("SELECT message FROM events WHERE event_action = 'decode-warning'")["message"].to_pylist()
    for e in ("names 'hosts'", "not an Arrow IPC stream", "the preamble says 2", "nulls in column(s)"):
        assert sum(e in m for m in msgs) == 1, (e, msgs)


def _seed(abi: dict[str, Any]) -> pa.Table:
    info = host_info("alpha")
    seed = {"abi": abi, "host": {"host_id": info.host_id, "boot_id": info.boot_id, "kernel": info.kernel},
            "state": export_state(Decoder(abi, info))}
    return raw_row("seed", {}, json.dumps(seed).encode())


def test_retention_keeps_a_raw_stream_from_its_newest_seed(pki: Authority, log_server: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted log host rebuilds a raw stream's decoder from the evidence: retention drops
    only segments before the stream's newest seed, and a log host started after it still decodes."""
    monkeypatch.setattr(evidence_mod, "SEGMENT_BYTES", 1)  # a segment per frame
    abi = load_abi()
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    for i, row in enumerate([_seed(abi), _ring(_record(abi, 1, 1)), _seed(abi), _ring(_record(abi, 2, 2)),
                             _ring(_record(abi, 3, 3))]):
        ship.write(RAW_TABLE, row)
        wait_for(lambda: ship.spool.unacked() == 0, 20, f"frame {i} acknowledged")
    ship.close()
    log_server.srv.ingest.flush()
    stream = next(log_server.evidence.glob("alpha/*/"))
    wait_for(lambda: (stream / "ingested").read_text().strip() == "4", 20, "every frame ingested")
    later = time.time_ns() + 2 * 86400 * 10**9
    drops = plan_retention(log_server.evidence, later)
    assert [(d.first_seq, d.last_seq) for d in drops] == [(0, 1)]  # not seed 2 and what follows it
    apply_retention(drops, log_server.srv.checkpoint_key, later, later)
    log_server.srv.config.decoder_checkpoint_s = 0  # no checkpoint at the stop: rebuilt from the evidence
    log_server.srv.stop()
    store = log_server.store
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), log_server.evidence, silence_s=30), store)
    try:
        dec = srv.raw.get("alpha", stream.name)
        assert dec.rebuilt == 3 and dec.decoder is not None  # from the seed on, nothing stored twice
        rows = store.query("SELECT process_pid FROM events WHERE process_pid IN (1, 2, 3) ORDER BY 1")
        assert rows["process_pid"].to_pylist() == [1, 2, 3]
    finally:
        srv.stop()


def test_a_corrupt_decoder_checkpoint_means_decoding_the_stream_again(pki: Authority, log_server: Any,
                                                                       tmp_path: Path) -> None:
    """A checkpoint that does not load (torn, altered) is said and passed over: the restarted
    log host decodes the stream from its seed, and stores each frame once."""
    log_server.srv.config.decoder_checkpoint_s = 1e-9  # a checkpoint at every frame
    abi = load_abi()
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    for i, row in enumerate([_seed(abi), _ring(_record(abi, 7, 1)), _ring(_record(abi, 8, 2)),
                             _ring(_record(abi, 9, 3))]):
        ship.write(RAW_TABLE, row)
        wait_for(lambda: ship.spool.unacked() == 0, 20, f"frame {i} acknowledged")
        log_server.srv.ingest.flush()
    ship.close()
    stream = next(log_server.evidence.glob("alpha/*/"))
    wait_for(lambda: list(stream.glob("decoder-*.ckpt")), 20, "a decoder checkpoint")
    log_server.srv.stop()  # writes the checkpoint of the last frame
    (ckpt,) = stream.glob("decoder-*.ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:40])  # torn
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), log_server.evidence, silence_s=30), log_server.store)
    try:
        dec = srv.raw.get("alpha", stream.name)
        assert dec.decoder is not None and dec.rebuilt == 4  # from the seed, nothing stored again
        rows = log_server.store.query("SELECT process_pid FROM events WHERE process_pid IN (7, 8, 9) ORDER BY 1")
        assert rows["process_pid"].to_pylist() == [7, 8, 9]
    finally:
        srv.stop()


def _ship(pki: Authority, tmp: Path, addr: tuple[str, int], rows: list[pa.Table]) -> None:
    ship = shipping_sink(pki, "alpha", tmp, addr)  # one spool: one stream, however often called
    try:
        for i, row in enumerate(rows):
            ship.write(RAW_TABLE, row)
            wait_for(lambda: ship.spool.unacked() == 0, 20, f"frame {i} acknowledged")
    finally:
        ship.close()


def test_a_log_host_stopped_cleanly_decodes_nothing_again_at_its_start(pki: Authority, log_server: Any,
                                                                       tmp_path: Path) -> None:
    """A clean stop writes each raw stream's decoder state (the store holds every frame then):
    the next start loads it instead of decoding the stream again, and decodes what comes next
    with it."""
    abi = load_abi()
    _ship(pki, tmp_path, log_server.addr, [_seed(abi), _ring(_record(abi, 11, 1)), _ring(_record(abi, 12, 2))])
    log_server.srv.ingest.flush()
    stream = next(log_server.evidence.glob("alpha/*/"))
    assert not list(stream.glob("decoder-*.ckpt"))  # none yet (every 300 s)
    log_server.srv.stop()
    assert [p.name for p in stream.glob("decoder-*.ckpt")] == [f"decoder-{2:016d}.ckpt"]
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), log_server.evidence, silence_s=30), log_server.store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        dec = srv.raw.get("alpha", stream.name)
        assert dec.decoder is not None and dec.rebuilt == 0 and dec.last_seq == 2
        _ship(pki, tmp_path, addr, [_ring(_record(abi, 13, 3))])  # decoded with the loaded state
        srv.ingest.flush()
        rows = log_server.store.query("SELECT process_pid FROM events WHERE process_pid IN (11, 12, 13) ORDER BY 1")
        assert rows["process_pid"].to_pylist() == [11, 12, 13]
        assert not log_server.store.query("SELECT 1 FROM events WHERE event_action = 'decode-warning'").num_rows
    finally:
        srv.stop()
        t.join(5)


def test_a_restart_decodes_a_raw_stream_from_its_newest_seed(pki: Authority, log_server: Any,
                                                             tmp_path: Path) -> None:
    """Without a checkpoint a restart rebuilds the decoder from the evidence, but not from the
    stream's first frame: a seed (an agent restarted on the same spool) restarts the decoder, so
    the stored frames before the newest one are passed over."""
    log_server.srv.config.decoder_checkpoint_s = 0
    abi = load_abi()
    _ship(pki, tmp_path, log_server.addr, [_seed(abi), _ring(_record(abi, 21, 1)), _seed(abi),
                                           _ring(_record(abi, 22, 2)), _ring(_record(abi, 23, 3))])
    log_server.srv.ingest.flush()
    stream = next(log_server.evidence.glob("alpha/*/"))
    wait_for(lambda: (stream / "ingested").read_text().strip() == "4", 20, "every frame ingested")
    log_server.srv.stop()
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), log_server.evidence, silence_s=30), log_server.store)
    try:
        dec = srv.raw.get("alpha", stream.name)
        assert dec.decoder is not None and dec.rebuilt == 3  # frames 2, 3, 4: not 0 and 1
        rows = log_server.store.query("SELECT process_pid FROM events WHERE process_pid IN (21, 22, 23) ORDER BY 1")
        assert rows["process_pid"].to_pylist() == [21, 22, 23]  # nothing stored twice
    finally:
        srv.stop()


def test_agent_metrics_count_a_raw_agents_records_as_the_rows_they_become() -> None:
    """`forensix agent --metrics` of a raw agent: events/s from the records shipped, not frames."""
    from forensix.metrics import RowCounter

    c = RowCounter()
    abi = load_abi()
    rec = _record(abi, 1, 1)
    c.write(RAW_TABLE, pa.concat_tables([_ring(rec + rec, records=2), raw_row("flows", {"n": 3}, b"")]))
    c.write(RAW_TABLE, _seed(abi))
    assert c.rows == {"events": 2, "flows": 3}
