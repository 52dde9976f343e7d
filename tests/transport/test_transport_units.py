"""Frames, keys, spool and verification, in process, with real TLS and a real store."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensix.agent import wire
from forensix.agent.frame import (
    HEADER,
    FrameError,
    decode_body,
    encode_batch,
    parse_frame,
    seal_frame,
)
from forensix.pki.authority import Authority
from forensix.pki.sealkey import KeySchedule, SealState, evolve, mac_key
from forensix.pki.tls import client_context
from forensix.server.evidence import iter_segment
from forensix.server.verify import verify_evidence
from forensix.testing.batches import events_batch
from forensix.testing.shipping import shipping_sink


def _wait(pred, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


# -- frames -------------------------------------------------------------------------

def _frame(seq: int = 0, key: bytes = b"k" * 32) -> bytes:
    t = events_batch(10)
    return seal_frame(host="alpha", stream=b"s" * 16, seq=seq, epoch=0, seal_ns=1, table="events",
                      ipc_bytes=encode_batch(t), rows=10, prev=bytes(32), key=key)


def test_frame_roundtrip() -> None:
    raw = _frame(7)
    fr = parse_frame(raw)
    assert (fr.host, fr.table, fr.seq, fr.rows) == ("alpha", "events", 7, 10)
    assert fr.mac_ok(b"k" * 32) and not fr.mac_ok(b"x" * 32)
    assert decode_body(fr).num_rows == 10


def test_frame_rejects_truncation_and_bad_lengths() -> None:
    raw = _frame()
    for cut in (0, 10, HEADER.size, len(raw) - 1):
        with pytest.raises(FrameError):
            parse_frame(raw[:cut])
    huge = bytearray(raw)
    huge[56:60] = (1 << 31).to_bytes(4, "big")  # body length far beyond the limit
    with pytest.raises(FrameError, match="too large"):
        parse_frame(bytes(huge))


def test_a_body_declaring_a_huge_size_is_refused_before_any_allocation() -> None:
    # a zstd frame header (single segment, 8-byte content size) claiming 4 EiB: decompress()
    # would try to allocate it (MemoryError, found by the fuzz test below)
    forged = b"\x28\xb5\x2f\xfd" + b"\xe0" + (1 << 62).to_bytes(8, "little") + b"\x01\x00\x00"
    fr = parse_frame(_frame())
    with pytest.raises(FrameError, match="declares"):
        decode_body(dataclasses.replace(fr, body=forged))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 2000))
def test_fuzz_frame_parser(data: bytes, pos: int) -> None:
    """Random bytes, and a real frame with random bytes spliced in: FrameError or a frame."""
    raw = bytearray(_frame())
    pos = pos % len(raw)
    mutated = bytes(raw[:pos]) + data + bytes(raw[pos + len(data):])
    for candidate in (data, mutated):
        try:
            fr = parse_frame(candidate)
        except FrameError:
            continue
        try:
            decode_body(fr)
        except FrameError:
            pass


# -- keys ----------------------------------------------------------------------------

def test_key_evolution_and_erasure(tmp_path: Path) -> None:
    s = SealState.new("alpha", 0, 1)
    path = tmp_path / "seal.key"
    s.save(path)
    k0 = s.key
    s.advance_to(5)
    s.save(path)
    text = path.read_text()
    assert k0.hex() not in text and '"epoch": 5' in text
    ks = KeySchedule(SealState("alpha", 0, 1, 0, k0), max_epoch=100)
    assert ks.mac_key(5) == mac_key(s.key)
    assert ks.mac_key(101) is None
    assert evolve(k0, 0) != k0


# -- delivery, in process -------------------------------------------------------------

def test_ship_and_verify_clean(pki: Authority, log_server: Any, tmp_path: Path) -> None:
    sink = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    for i in range(5):
        sink.write("events", events_batch(100, start_seq=i * 100))
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()
    log_server.srv.ingest.flush()
    n = log_server.store.query("SELECT count(*) n, count(DISTINCT seq) d FROM events "
                               "WHERE event_category <> 'agent'").to_pylist()[0]
    assert n == {"n": 500, "d": 500}
    cats = log_server.store.query("SELECT event_action FROM events WHERE event_category = 'agent' "
                                  "ORDER BY ts").column(0).to_pylist()
    assert cats == ["start", "stop"]
    time.sleep(0.5)  # a checkpoint
    v = verify_evidence(log_server.evidence)
    assert v.integrity_ok and v.complete, v.findings


def test_spool_full_writes_gap(pki: Authority, log_server: Any, tmp_path: Path) -> None:
    # Nothing listens on this port: the spool fills, later batches are counted, not kept.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    sink = shipping_sink(pki, "beta", tmp_path, ("127.0.0.1", port), spool_max_bytes=200_000)
    kept = 0
    for i in range(60):
        before = sink.batches
        sink.write("events", events_batch(500, start_seq=i * 500))
        kept += sink.batches - before
    assert sink.dropped_batches > 0 and kept + sink.dropped_batches == 60
    lost_rows = sink.dropped_rows
    sink.shipper.address = log_server.addr  # the log host is back
    _wait(lambda: sink.spool.unacked() == 0)
    sink.write("events", events_batch(10, start_seq=10**6))  # room again: the gap goes first
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()
    log_server.srv.ingest.flush()
    gaps = log_server.store.query("SELECT reason, count FROM gaps WHERE host_name = 'beta'").to_pylist()
    assert gaps == [{"reason": "spool-full", "count": lost_rows}]
    v = verify_evidence(log_server.evidence, host="beta")
    assert v.integrity_ok and not v.complete
    assert any(f["check"] == "recorded:spool-full" for f in v.findings)


# -- the server under malformed input -----------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300), st.sampled_from([b"F", b"K", b"Z", b"H", b"A"]))
def test_fuzz_server_connection(pki: Authority, log_server: Any, junk: bytes, kind: bytes) -> None:
    """After a valid hello, junk messages close that connection with a logged reason."""
    b = pki.bundle("beta")
    ctx = client_context(b.ca, b.cert, b.key)
    refused = len(log_server.srv.refusals)
    with socket.create_connection(log_server.addr, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="forensix-server") as s:
        wire.send(s, b"H", {"host": "beta", "stream": "ab" * 16, "agent_start_ns": 1})
        assert wire.recv(s)[0] == b"W"
        s.sendall(kind + len(junk).to_bytes(4, "big") + junk)
        got: list[bytes] = []
        try:
            while True:
                k, _ = wire.recv(s)
                got.append(k)
                if k == b"E":
                    break
        except (wire.WireClosed, OSError, ssl.SSLError):
            pass
        try:
            benign = kind == b"K" and isinstance(json.loads(junk), dict)
        except ValueError:
            benign = False
        if not benign:  # closed with a logged reason
            assert b"E" in got
            _wait(lambda: len(log_server.srv.refusals) > refused)
            assert "malformed message" in log_server.srv.refusals[-1]


def test_server_survives_junk_and_serves_others(pki: Authority, log_server: Any,
                                                tmp_path: Path) -> None:
    with socket.create_connection(log_server.addr, timeout=5) as raw:  # plaintext garbage
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
        try:
            assert raw.recv(100) == b""  # closed without an answer
        except ConnectionResetError:
            pass
    sink = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    sink.write("events", events_batch(50))
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()
    assert any("TLS handshake failed" in r for r in log_server.srv.refusals)


# -- verify detects tampering -----------------------------------------------------------

@pytest.fixture(scope="module")
def sealed_evidence(pki: Authority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Evidence of 8 batches over more than 3 seal epochs (1 s each), with checkpoints."""
    import threading

    from forensix.server.listener import LogServer, ServerConfig
    from forensix.store.embedded import open_writer

    tmp = tmp_path_factory.mktemp("ev")
    store = open_writer(tmp / "s.duckdb")
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), tmp / "ev", checkpoint_s=0.1), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    sink = shipping_sink(pki, "alpha", tmp, addr)
    for i in range(8):
        sink.write("events", events_batch(20, start_seq=i * 20))
        time.sleep(0.45)
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()
    time.sleep(0.3)
    srv.stop()
    store.close()
    return tmp / "ev"


def _copy(ev: Path, tmp: Path) -> tuple[Path, Path]:
    dst = tmp / "ev"
    shutil.copytree(ev, dst)
    seg = min(dst.glob("alpha/*/seg-*.fxe"))
    return dst, seg


def _offsets(seg: Path) -> list[tuple[int, int]]:
    return [(r.offset, len(r.frame.raw)) for r in iter_segment(seg) if r.frame is not None]


def _fails(ev: Path) -> list[tuple[str, int | None, str]]:
    v = verify_evidence(ev, host="alpha")
    assert not v.integrity_ok
    return [(f["check"], f["seq"], f["segment"]) for f in v.findings if f["status"] == "FAIL"]


def test_verify_clean(sealed_evidence: Path) -> None:
    v = verify_evidence(sealed_evidence, host="alpha")
    assert v.integrity_ok and v.complete, v.findings
    epochs = {r.frame.epoch for s in sealed_evidence.glob("alpha/*/seg-*.fxe") for r in iter_segment(s)
              if r.frame}
    assert len(epochs) >= 3


def test_verify_flipped_byte(sealed_evidence: Path, tmp_path: Path) -> None:
    ev, seg = _copy(sealed_evidence, tmp_path)
    off, n = _offsets(seg)[3]
    data = bytearray(seg.read_bytes())
    data[off + n - 40] ^= 0x01  # inside the body of seq 3
    seg.write_bytes(bytes(data))
    fails = _fails(ev)
    assert ("mac", 3, str(seg)) in fails
    assert ("chain", 4, str(seg)) in fails


def test_verify_deleted_batch(sealed_evidence: Path, tmp_path: Path) -> None:
    ev, seg = _copy(sealed_evidence, tmp_path)
    off, n = _offsets(seg)[4]
    data = seg.read_bytes()
    seg.write_bytes(data[:off] + data[off + n:])
    v = verify_evidence(ev, host="alpha")
    checks = {(f["verdict"], f["check"], f["seq"]) for f in v.findings if f["status"] in ("FAIL", "gap")}
    assert ("integrity", "chain", 5) in checks and ("completeness", "sequence", 5) in checks


def test_verify_reordered_batch(sealed_evidence: Path, tmp_path: Path) -> None:
    ev, seg = _copy(sealed_evidence, tmp_path)
    (o2, n2), (o3, n3) = _offsets(seg)[2:4]
    data = seg.read_bytes()
    seg.write_bytes(data[:o2] + data[o3:o3 + n3] + data[o2:o2 + n2] + data[o3 + n3:])
    fails = _fails(ev)
    assert any(c == "order" and s == 2 for c, s, _ in fails)


def test_verify_truncated_tail(sealed_evidence: Path, tmp_path: Path) -> None:
    ev, seg = _copy(sealed_evidence, tmp_path)
    offs = _offsets(seg)
    data = seg.read_bytes()
    seg.write_bytes(data[: offs[-1][0] + 50])  # torn inside the last frame
    fails = _fails(ev)
    assert ("truncated", None, str(seg)) in fails
    ev2, seg2 = _copy(sealed_evidence, tmp_path / "b")
    seg2.write_bytes(data[: offs[-1][0]])  # cut exactly at a frame boundary
    fails = _fails(ev2)
    assert any(c == "truncated" and s == len(offs) - 1 for c, s, _ in fails), fails


def test_verify_resealed_with_later_epoch_key(sealed_evidence: Path, tmp_path: Path) -> None:
    """An intruder holding a later epoch's key re-seals an earlier batch with changed content."""
    ev, seg = _copy(sealed_evidence, tmp_path)
    offs = _offsets(seg)
    data = seg.read_bytes()
    frames = [parse_frame(data, o) for o, _ in offs]
    victim, last = frames[1], frames[-1]
    state = SealState.load(ev / "alpha" / "seal.json")
    later = KeySchedule(state, 10**6).mac_key(last.epoch)
    assert later is not None and last.epoch > victim.epoch
    forged_rows = decode_body(victim).slice(0, 5)  # the intruder drops rows and re-seals
    for epoch, seal_ns in ((last.epoch, last.seal_ns), (victim.epoch, victim.seal_ns)):
        forged = seal_frame(host="alpha", stream=victim.stream, seq=victim.seq, epoch=epoch,
                            seal_ns=seal_ns, table="events", ipc_bytes=encode_batch(forged_rows), rows=5,
                            prev=victim.prev, key=later)
        o, n = offsets = offs[1]
        del offsets
        seg.write_bytes(data[:o] + forged + data[o + n:])
        fails = _fails(ev)
        if epoch == last.epoch:
            # authentic under the later key, but out of place: epochs go back after it
            assert ("epoch", 2, str(seg)) in fails and ("chain", 2, str(seg)) in fails, fails
        else:
            # claims its old epoch: the MAC fails under that epoch's key
            assert ("mac", 1, str(seg)) in fails, fails


def test_restart_ingests_what_evidence_has_and_store_lacks(pki: Authority, tmp_path: Path) -> None:
    """A crash between the evidence fsync and the store append: the next start fills the store."""
    import threading

    from forensix.server.listener import LogServer, ServerConfig
    from forensix.store.embedded import open_writer

    ev = tmp_path / "ev"
    store = open_writer(tmp_path / "a.duckdb")
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    sink = shipping_sink(pki, "alpha", tmp_path, addr)
    for i in range(3):
        sink.write("events", events_batch(10, start_seq=i * 10))
    _wait(lambda: sink.spool.unacked() == 0)
    sink.close()
    srv.stop()
    store.close()
    mark = next(ev.glob("alpha/*/ingested"))
    mark.write_text("0")  # as if only seq 0 had reached the store
    store2 = open_writer(tmp_path / "b.duckdb")
    srv2 = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev), store2)
    seqs = store2.query("SELECT DISTINCT seq FROM events WHERE event_category <> 'agent' ORDER BY 1")
    assert seqs.column(0).to_pylist() == list(range(10, 30))
    assert mark.read_text() == "2"
    srv2.stop()
    store2.close()
