"""`forensix verify` over what the log host refused, and re-enrolling a host while the log host runs.

Real log host (in process), real TLS with a real CA, the real shipping sink as the agent,
a real DuckDB store; `pki issue` and `verify` through the real CLI."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from forensix.agent import wire
from forensix.agent.frame import encode_batch, seal_frame
from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.cli.main import cli as main_cli
from forensix.pki.authority import Authority
from forensix.pki.sealkey import SealState, mac_key
from forensix.pki.tls import client_context
from forensix.server.evidence import iter_segment
from forensix.server.guard import HostLimits
from forensix.server.listener import LogServer, ServerConfig
from forensix.server.verify import Verdicts, verify_evidence
from forensix.store.embedded import open_writer
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[LogServer, tuple[str, int], Path]]]:
    running: list[tuple[LogServer, Any, threading.Thread]] = []

    def start(pki: Authority, **limits: int) -> tuple[LogServer, tuple[str, int], Path]:
        store = open_writer(tmp_path / f"srv{len(running)}.duckdb")
        ev = tmp_path / f"srv{len(running)}.duckdb.evidence"
        srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=30, checkpoint_s=0.2,
                                     limits=HostLimits(**limits)), store)
        addr = srv.bind()
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        running.append((srv, store, t))
        return srv, addr, ev

    yield start
    for srv, store, t in running:
        srv.stop()
        t.join(timeout=5)
        store.close()


def sink_for(pki: Authority, host: str, spool: Path, seal: Path, addr: tuple[str, int], *,
             start: bool = True) -> ShippingSink:
    b = pki.bundle(host)
    cfg = ShippingConfig(host=host, server=addr, context=client_context(b.ca, b.cert, b.key), seal_key=seal,
                         spool_dir=spool, heartbeat_s=0.5, coalesce_s=0)
    return ShippingSink(cfg, start=start)


def found(v: Verdicts, **match: Any) -> list[dict[str, Any]]:
    return [f for f in v.findings if all(f[k] == x for k, x in match.items())]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main_cli, list(args))  # the real CLI, in process (no interpreter start)


def cli_verify(*args: str) -> tuple[int, list[dict[str, Any]]]:
    res = cli("verify", *args, "--format", "json")
    return res.exit_code, [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]


def test_verify_reports_refused_frames_as_completeness_not_integrity(pki: Authority, serve: Any,
                                                                     tmp_path: Path) -> None:
    _, addr, ev = serve(pki)
    seal = tmp_path / "beta.seal"
    shutil.copy(pki.bundle("beta").seal, seal)
    sink = sink_for(pki, "beta", tmp_path / "spool", seal, addr, start=False)
    for i in range(7):
        sink.write("events", events_batch(40, start_seq=i * 40))
    # frames 2 and 3 (refused one right after the other) and 6 (the last) damaged in the spool
    for seq in (2, 3, 6):
        e = next(x for x in sink.spool.entries if x.seq == seq)
        data = bytearray(e.segment.read_bytes())
        data[e.offset + e.length - 40] ^= 0x01
        e.segment.write_bytes(bytes(data))
    sink.shipper.start()
    wait_for(lambda: sink.spool.unacked() == 0 and len(sink.spool.refused) == 3, 20, "delivery past refusals")
    sink.close()
    stored = [r.frame.seq for s in sorted(ev.glob("beta/*/seg-*.fxe")) for r in iter_segment(s) if r.frame]
    assert stored == [0, 1, 4, 5]
    # the checkpoint file appears only with the first checkpoint: absent is "not yet", not an error
    wait_for(lambda: any(json.loads(x)["seq"] == 5 for f in ev.glob("beta/*/checkpoints.jsonl")
                         for x in f.read_text().splitlines()), 30, "checkpoint")

    v = verify_evidence(ev, host="beta")
    assert v.integrity_ok, [f for f in v.findings if f["status"] == "FAIL"]  # the chain holds over them
    assert not v.complete
    refused = found(v, check="refused", status="gap")
    assert sorted(f["seq"] for f in refused) == [2, 3, 6]  # each once, the trailing one too
    for f in refused:
        assert f["detail"].startswith(f"frame {f['seq']} of host beta refused by the log host at ")
        assert "MAC does not verify" in f["detail"] and f["verdict"] == "completeness"
    assert not found(v, check="sequence") and not found(v, check="chain")

    code, rows = cli_verify("--evidence", str(ev), "--host", "beta")
    assert code == 3, rows  # integrity holds, records missing
    assert [r["seq"] for r in rows if r["check"] == "refused"] == [2, 3, 6]

    # the records are signed: an edited one (say, to pass a deleted frame off as refused) is not believed
    path = ev / "refusals.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    rec = next(x for x in lines if x.get("seq") == 2)
    rec["reason"] = "nothing to see here"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    v = verify_evidence(ev, host="beta")
    assert not v.integrity_ok
    assert found(v, check="refusal", status="FAIL", seq=2)
    assert found(v, check="chain", status="FAIL", seq=4)  # 2 no longer bridges 1 to 3
    code, _ = cli_verify("--evidence", str(ev), "--host", "beta")
    assert code == 1


def test_a_frame_refused_for_quota_and_sent_again_is_not_counted_twice(pki: Authority, serve: Any,
                                                                      tmp_path: Path) -> None:
    srv, addr, ev = serve(pki, evidence_bytes=40_000)
    srv.refusal_log.interval_s = 0.3  # each retry's refusal gets its own record (10 s in service)
    seal = tmp_path / "alpha.seal"
    shutil.copy(pki.bundle("alpha").seal, seal)
    sink = sink_for(pki, "alpha", tmp_path / "spool", seal, addr)
    for i in range(12):
        sink.write("events", events_batch(200, start_seq=i * 200))
    wait_for(lambda: "at its limit of 40000" in sink.shipper.stats.last_error, 15, "the quota refusal")
    time.sleep(2.5)  # the agent retries (refused again) before the operator acts
    srv.limits.evidence_bytes = 0
    wait_for(lambda: sink.spool.unacked() == 0, 20, "delivery after the limit was raised")
    sink.close()
    recs = [json.loads(x) for x in (ev / "refusals.jsonl").read_text().splitlines()]
    quota = [r for r in recs if r["kind"] == "quota"]
    assert quota and all(r["final"] is False and r["hash"] for r in quota)  # which frame, kept by the agent
    assert len(quota) >= 2 and len({r["seq"] for r in quota}) < len(quota)  # the same frame, refused again

    v = verify_evidence(ev, host="alpha")
    assert v.integrity_ok and v.complete, [f for f in v.findings if f["status"] in ("FAIL", "gap")]
    notes = found(v, check="refused", status="note")
    assert sorted(f["seq"] for f in notes) == sorted({r["seq"] for r in quota})  # once per frame
    assert all("the agent sent it again and it was stored" in f["detail"] for f in notes)
    assert any(" times): evidence of alpha on the log host is" in f["detail"] for f in notes)
    code, rows = cli_verify("--evidence", str(ev), "--host", "alpha")
    assert code == 0, rows


def test_reenrolled_host_is_accepted_at_once_and_both_chains_verify(serve: Any, tmp_path: Path) -> None:
    pki = Authority(tmp_path / "pki")
    pki.init()
    pki.issue("delta", seal_interval_s=1)
    _, addr, ev = serve(pki)
    spool = tmp_path / "spool"
    seal = tmp_path / "agent" / "seal.key"  # the agent's copy, which evolves
    seal.parent.mkdir()
    shutil.copy(pki.bundle("delta").seal, seal)
    sink = sink_for(pki, "delta", spool, seal, addr)
    for i in range(3):
        sink.write("events", events_batch(30, start_seq=i * 30))
        time.sleep(0.4)
    wait_for(lambda: sink.spool.unacked() == 0, 15, "the first enrollment's frames")
    sink.close()
    old_stream = sink.spool.stream.hex()
    old_bundle = tmp_path / "old-bundle"  # what someone who took the host before holds
    shutil.copytree(pki.bundle("delta").directory, old_bundle)
    shutil.copy(seal, old_bundle / "seal.key")

    b = pki.bundle("delta")
    before = client_context(b.ca, b.cert, b.key).wrap_socket(socket.create_connection(addr, timeout=5),
                                                              server_hostname="forensix-server")
    wire.send(before, b"H", {"host": "delta", "stream": "ab" * 16, "agent_start_ns": 1})
    assert wire.recv(before)[0] == b"W"  # an old-enrollment connection, open across the re-issue

    res = cli("pki", "issue", "delta", "--pki", str(pki.dir), "--seal-interval", "1")
    assert res.exit_code == 0, res.output
    wire.send(before, b"K", {"ts": time.time_ns()})
    kind, body = wire.recv(before)
    assert kind == b"E" and b"delta was re-enrolled" in body, body  # its next message ends it
    before.close()
    shutil.copy(pki.bundle("delta").seal, seal)  # the new bundle installed on the host
    sink2 = sink_for(pki, "delta", spool, seal, addr)  # the same spool directory
    for i in range(3):
        sink2.write("events", events_batch(30, start_seq=1000 + i * 30))
    wait_for(lambda: sink2.spool.unacked() == 0, 15, "the new enrollment's frames accepted")
    assert not sink2.spool.refused
    new_stream = sink2.spool.stream.hex()
    assert new_stream != old_stream and sink2.spool.retired is not None  # a new chain; the old spool kept
    assert (sink2.spool.retired / "stream").read_text().strip() == old_stream
    sink2.close()

    wait_for(lambda: (ev / "delta" / new_stream / "checkpoints.jsonl").exists(), 30, "checkpoint")
    time.sleep(0.5)
    for extra in ([], ["--pki", str(pki.dir)]):  # keys from the evidence, then from the PKI's records
        code, rows = cli_verify("--evidence", str(ev), "--host", "delta", "--all", *extra)
        assert code == 0, rows
        chains = {r["stream"]: r for r in rows if r["check"] == "stream"}
        assert set(chains) == {old_stream, new_stream}
        assert "3 batches checked, last seq 2; enrollment 1 of 2" in chains[old_stream]["detail"]
        assert "3 batches checked, last seq 2; enrollment 2 of 2" in chains[new_stream]["detail"]
        notes = {r["stream"]: r["detail"] for r in rows if r["check"] == "enrollment"}
        assert set(notes) == {old_stream, new_stream, "ab" * 16}  # shown without --all too
        assert notes["ab" * 16].startswith("no batches; enrollment 1 of 2")

    # someone with the old certificate and the old (evolved) seal key: refused, the new certificate rules
    old = SealState.load(old_bundle / "seal.key")
    ctx = client_context(old_bundle / "ca.crt", old_bundle / "delta.crt", old_bundle / "delta.key")
    for stream in (old_stream, "ee" * 16):
        with ctx.wrap_socket(socket.create_connection(addr, timeout=5), server_hostname="forensix-server") as s:
            wire.send(s, b"H", {"host": "delta", "stream": stream, "agent_start_ns": 1})
            kind, body = wire.recv(s)
        assert kind == b"E" and b"belongs to an enrollment that a re-issue replaced" in body, body
    # ... and a frame sealed with the old key, sent under the new certificate: its MAC fails
    b = pki.bundle("delta")
    ctx = client_context(b.ca, b.cert, b.key)
    forged_stream = bytes.fromhex("ff" * 16)
    old.advance_to(old.epoch_of(time.time_ns()))
    raw = seal_frame(host="delta", stream=forged_stream, seq=0, epoch=old.epoch, seal_ns=time.time_ns(),
                     table="events", ipc_bytes=encode_batch(events_batch(5)), rows=5,
                     prev=bytes(32), key=mac_key(old.key))
    with ctx.wrap_socket(socket.create_connection(addr, timeout=5), server_hostname="forensix-server") as s:
        wire.send(s, b"H", {"host": "delta", "stream": forged_stream.hex(), "agent_start_ns": 1})
        assert wire.recv(s)[0] == b"W"
        wire.send(s, b"F", raw)
        kind, body = wire.recv(s)
    assert kind == b"R" and b"MAC does not verify" in body
    # and an old stream on the new certificate is refused: a chain never changes its key
    with ctx.wrap_socket(socket.create_connection(addr, timeout=5), server_hostname="forensix-server") as s:
        wire.send(s, b"H", {"host": "delta", "stream": old_stream, "agent_start_ns": 1})
        kind, body = wire.recv(s)
    assert kind == b"E" and b"a new enrollment starts a new stream" in body
    v = verify_evidence(ev, host="delta")
    assert v.integrity_ok
    assert [f["seq"] for f in found(v, check="refused", stream=forged_stream.hex())] == [0]
