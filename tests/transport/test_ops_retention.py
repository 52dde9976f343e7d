"""Evidence retention on a log host: whole old segments go, signed; `verify` still holds the chain.

Real log host (in process), real TLS with a real CA, the real shipping sink as the agent, a
real DuckDB store; `retention` and `verify` through the real CLI."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.cli import fleet as fleet_cli
from forensix.cli.main import cli as main_cli
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.server import evidence as evidence_mod
from forensix.server.evidence import iter_segment
from forensix.server.listener import LogServer, ServerConfig
from forensix.server.retention import retention_message
from forensix.server.verify import Verdicts, verify_evidence
from forensix.store.embedded import open_writer
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for

DAY = 86400 * 10**9


def cli(*args: str) -> Result:
    return CliRunner().invoke(main_cli, list(args))  # the real CLI, in process


def cli_verify(*args: str) -> int:
    return cli("verify", *args, "--format", "json").exit_code


def found(v: Verdicts, **match: Any) -> list[dict[str, Any]]:
    return [f for f in v.findings if all(f[k] == x for k, x in match.items())]


def sink_for(pki: Authority, host: str, spool: Path, seal: Path, addr: tuple[str, int]) -> ShippingSink:
    b = pki.bundle(host)
    return ShippingSink(ShippingConfig(host=host, server=addr, context=client_context(b.ca, b.cert, b.key),
                                       seal_key=seal, spool_dir=spool, heartbeat_s=0.5, coalesce_s=0))


def _record(pki: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: int) -> Path:
    """A log host that received ``frames`` batches of host alpha, one segment per frame, then stopped."""
    monkeypatch.setattr(evidence_mod, "SEGMENT_BYTES", 1)  # a new segment for every frame
    store = open_writer(tmp_path / "srv.duckdb")
    ev = tmp_path / "srv.duckdb.evidence"
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=30, checkpoint_s=0.2), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    seal = tmp_path / "alpha.seal"
    shutil.copy(pki.bundle("alpha").seal, seal)
    sink = sink_for(pki, "alpha", tmp_path / "spool", seal, addr)
    for i in range(frames):
        sink.write("events", events_batch(40, start_seq=i * 40))
        wait_for(lambda i=i: sink.spool.unacked() == 0, 20, f"frame {i} acknowledged")
    sink.close()
    wait_for(lambda: any(json.loads(x)["seq"] == frames - 1 for f in ev.glob("alpha/*/checkpoints.jsonl")
                         for x in f.read_text().splitlines()), 30, "the last checkpoint")
    srv.stop()
    t.join(timeout=5)
    store.close()
    return ev


def _seqs(ev: Path) -> list[int]:
    return [r.frame.seq for s in sorted(ev.glob("alpha/*/seg-*.fxe")) for r in iter_segment(s) if r.frame]


def _later(monkeypatch: pytest.MonkeyPatch, days: int) -> None:
    """Retention's clock ``days`` later."""
    real = time.time_ns()
    monkeypatch.setattr(fleet_cli, "_now_ns", lambda: real + days * DAY)


def test_retention_drops_old_segments_signed_and_verify_still_holds(pki: Authority, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ev = _record(pki, tmp_path, monkeypatch, 5)
    stream = next(ev.glob("alpha/*/"))
    assert _seqs(ev) == [0, 1, 2, 3, 4] and len(list(stream.glob("seg-*.fxe"))) == 5

    # nothing is older than 90 days yet: a dry run and a real run drop nothing
    r = cli("retention", "--keep", "90d", "--evidence", str(ev), "--pki", str(pki.dir))
    assert r.exit_code == 0, r.output
    assert "dropped 0 evidence segments" in r.output and _seqs(ev) == [0, 1, 2, 3, 4]

    (stream / "ingested").write_text("2")  # frames 3 and 4 not in the store yet: they must stay
    _later(monkeypatch, 2)
    dry = cli("retention", "--keep", "1d", "--evidence", str(ev), "--pki", str(pki.dir), "--dry-run",
              "--format", "json")
    assert dry.exit_code == 0, dry.output
    rows = [json.loads(x) for x in dry.stdout.splitlines() if x.startswith("{")]
    assert rows == [{"where": f"alpha/{stream.name}", "what": "seq 0..2 in 3 segment(s)", "rows": 3,
                     "bytes": rows[0]["bytes"], "status": "would drop"}]
    assert _seqs(ev) == [0, 1, 2, 3, 4]

    (stream / "ingested").write_text("4")
    r = cli("retention", "--keep", "1d", "--evidence", str(ev), "--pki", str(pki.dir))
    assert r.exit_code == 0, r.output
    assert _seqs(ev) == [4]  # every segment but the one the stream appends to
    rec = json.loads((stream / "retention.jsonl").read_text())
    assert (rec["first_seq"], rec["last_seq"], rec["frames"]) == (0, 3, 4)

    v = verify_evidence(ev, host="alpha")
    assert v.integrity_ok and v.complete, [f for f in v.findings if f["status"] in ("FAIL", "gap")]
    note = found(v, check="retention", status="note")
    assert len(note) == 1 and "batches 0..3 (4 frames" in note[0]["detail"]
    assert "removed by retention on the log host" in note[0]["detail"]
    assert cli_verify("--evidence", str(ev), "--host", "alpha") == 0


def test_retention_cannot_hide_a_deletion(pki: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = _record(pki, tmp_path, monkeypatch, 5)
    stream = next(ev.glob("alpha/*/"))
    _later(monkeypatch, 2)
    # a wrong key is refused before anything is removed
    other = Authority(tmp_path / "other-pki")
    other.init([])
    bad = cli("retention", "--keep", "1d", "--evidence", str(ev), "--pki", str(other.dir))
    assert bad.exit_code == 2 and "not the one this evidence is checked with" in bad.output
    assert _seqs(ev) == [0, 1, 2, 3, 4]
    missing = cli("retention", "--keep", "1d", "--evidence", str(ev), "--pki", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "checkpoint key" in missing.output and _seqs(ev) == [0, 1, 2, 3, 4]

    (stream / "ingested").write_text("4")
    assert cli("retention", "--keep", "1d", "--evidence", str(ev), "--pki", str(pki.dir)).exit_code == 0
    assert _seqs(ev) == [4]

    # an edited record (to cover more than was aged out) is not believed
    path = stream / "retention.jsonl"
    rec: dict[str, Any] = json.loads(path.read_text())
    forged = dict(rec, last_seq=4)
    path.write_text(json.dumps(forged) + "\n")
    v = verify_evidence(ev, host="alpha")
    assert found(v, check="retention", status="FAIL")
    assert not v.complete  # without a believable record, batches 0..3 are simply missing
    path.write_text(json.dumps(rec) + "\n")
    assert verify_evidence(ev, host="alpha").integrity_ok

    # a record whose head the remaining chain does not continue: the evidence was replaced, not aged out
    rec2 = dict(rec, last_hash="00" * 32)
    key = serialization.load_pem_private_key((pki.dir / "checkpoint.key").read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    rec2["sig"] = base64.b64encode(key.sign(retention_message(
        "alpha", stream.name, 0, 3, rec2["last_hash"], rec["segments"], rec["ts"]))).decode()
    path.write_text(json.dumps(rec2) + "\n")
    v = verify_evidence(ev, host="alpha")
    assert found(v, check="chain", status="FAIL", seq=4)
    assert "not aged out" in found(v, check="chain", status="FAIL", seq=4)[0]["detail"]


def test_retention_needs_something_to_age_out() -> None:
    r = cli("retention", "--keep", "30d")
    assert r.exit_code == 2 and "give --store clickhouse://... and/or --evidence DIR" in r.output
