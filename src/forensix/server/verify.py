"""``forensix verify``: integrity and completeness of the evidence, as separate verdicts.

Integrity: every frame parses, its MAC verifies under the key of its own epoch, the
sealing time lies in that epoch, epochs and sealing times never go back, each frame
chains to the one before it, and every signed checkpoint matches the evidence (so a
tail cut at a frame boundary is noticed). Completeness: sequence gaps, recorded drops
(``gaps`` batches the agent sealed: ringbuf-full, spool-full, agent-down), and, with a
store, the log host's silence alerts. Each finding names host, stream, segment file,
byte offset and sequence.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent.frame import ZERO_HASH, Frame, FrameError, decode_body, frame_hash
from forensix.errors import ForensixError
from forensix.model.timefmt import format_ns
from forensix.pki.sealkey import KeySchedule, SealState
from forensix.server.checks import seal_problem
from forensix.server.evidence import checkpoint_message, iter_segment, load_public_key
from forensix.server.ingest import SILENT_RULE
from forensix.store.base import Reader

__all__ = ["FINDINGS", "Verdicts", "verify_evidence"]

FINDINGS = pa.schema([
    ("verdict", pa.string()),  # integrity | completeness
    ("status", pa.string()),  # ok | FAIL | gap
    ("host_name", pa.string()),
    ("stream", pa.string()),
    ("segment", pa.string()),
    ("offset", pa.int64()),
    ("seq", pa.int64()),
    ("check", pa.string()),
    ("detail", pa.string()),
])


@dataclass
class Verdicts:
    findings: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0

    def add(self, verdict: str, status: str, host: str, stream: str = "", segment: str = "",
            offset: int | None = None, seq: int | None = None, check: str = "", detail: str = "") -> None:
        self.findings.append({"verdict": verdict, "status": status, "host_name": host, "stream": stream,
                              "segment": segment, "offset": offset, "seq": seq, "check": check,
                              "detail": detail})

    @property
    def integrity_ok(self) -> bool:
        return not any(f["verdict"] == "integrity" and f["status"] == "FAIL" for f in self.findings)

    @property
    def complete(self) -> bool:
        return not any(f["verdict"] == "completeness" and f["status"] in ("FAIL", "gap")
                       for f in self.findings)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.findings, schema=FINDINGS)


@dataclass
class _Prev:
    frame: Frame
    segment: str
    offset: int


def _fail(v: Verdicts, host: str, stream: str, seg: str, off: int | None, seq: int | None, check: str,
          detail: str) -> None:
    v.add("integrity", "FAIL", host, stream, seg, off, seq, check, detail)


def _check_frame(v: Verdicts, host: str, stream: str, seg: str, off: int, fr: Frame,
                 keys: KeySchedule, prev: _Prev | None) -> None:
    if fr.host != host or fr.stream.hex() != stream:
        _fail(v, host, stream, seg, off, fr.seq, "origin",
              f"frame names {fr.host}/{fr.stream.hex()}, found under {host}/{stream}")
    problem = seal_problem(fr, keys)
    if problem:
        _fail(v, host, stream, seg, off, fr.seq, "mac", problem)
    if prev is None:
        if fr.seq == 0 and fr.prev != ZERO_HASH:
            _fail(v, host, stream, seg, off, fr.seq, "chain", "first frame does not start the chain")
        if fr.seq != 0:
            v.add("completeness", "gap", host, stream, seg, off, fr.seq, "sequence",
                  f"stream starts at seq {fr.seq}: batches 0..{fr.seq - 1} are not in the evidence")
        return
    p = prev.frame
    where = f"seq {p.seq} at {prev.segment}@{prev.offset}"
    if fr.seq <= p.seq:
        _fail(v, host, stream, seg, off, fr.seq, "order",
              f"seq {fr.seq} comes after {where}: batches reordered or replayed")
    elif fr.seq > p.seq + 1:
        missing = f"{p.seq + 1}..{fr.seq - 1}" if fr.seq - p.seq > 2 else f"{p.seq + 1}"
        v.add("completeness", "gap", host, stream, seg, off, fr.seq, "sequence",
              f"batches {missing} missing before seq {fr.seq}")
        if fr.prev != frame_hash(p.raw):
            _fail(v, host, stream, seg, off, fr.seq, "chain",
                  f"seq {fr.seq} does not chain to {where}: batch(es) {missing} deleted")
        return
    if fr.seq == p.seq + 1 and fr.prev != frame_hash(p.raw):
        _fail(v, host, stream, seg, off, fr.seq, "chain",
              f"seq {fr.seq} does not chain to {where}: that batch was altered or replaced")
    if fr.epoch < p.epoch:
        _fail(v, host, stream, seg, off, fr.seq, "epoch",
              f"epoch {fr.epoch} after epoch {p.epoch} of {where}: that batch was re-sealed with a "
              "later epoch's key")
    elif fr.seal_ns < p.seal_ns:
        _fail(v, host, stream, seg, off, fr.seq, "epoch",
              f"sealed before {where}: sealing times go back (re-sealed batch)")


def _gaps_of(v: Verdicts, host: str, stream: str, seg: str, off: int, fr: Frame) -> None:
    try:
        data = decode_body(fr)
    except FrameError as e:
        _fail(v, host, stream, seg, off, fr.seq, "body", e.message)
        return
    for g in data.to_pylist():
        v.add("completeness", "gap", host, stream, seg, off, fr.seq, f"recorded:{g['reason']}",
              f"{'unknown number of' if g.get('count_unknown') else g['count']} rows ({g['event_class'] or 'all'}) "
              f"lost from {format_ns(g['ts_from'])} to "
              f"{format_ns(g['ts_to'])} (cpu {g['cpu']})")


def _stream(v: Verdicts, sdir: Path, host: str, keys: KeySchedule,
            pub: ed25519.Ed25519PublicKey | None) -> None:
    stream = sdir.name
    prev: _Prev | None = None
    hashes: dict[int, bytes] = {}
    for seg_path in sorted(sdir.glob("seg-*.fxe")):
        seg = str(seg_path)
        for rec in iter_segment(seg_path):
            if rec.frame is None:
                check = "truncated" if rec.error.startswith(("truncated", "short")) else "malformed"
                _fail(v, host, stream, seg, rec.offset, None, check,
                      f"{rec.error}; bytes from offset {rec.offset} to the end of the segment unreadable")
                break
            fr = rec.frame
            v.frames += 1
            _check_frame(v, host, stream, seg, rec.offset, fr, keys, prev)
            hashes[fr.seq] = frame_hash(fr.raw)
            if fr.table == "gaps" and not seal_problem(fr, keys):
                _gaps_of(v, host, stream, seg, rec.offset, fr)
            prev = _Prev(fr, seg, rec.offset)
    _checkpoints(v, sdir, host, stream, hashes, prev, pub)
    if prev is not None:
        v.add("integrity", "ok", host, stream, "", None, prev.frame.seq, "stream",
              f"{len(hashes)} batches checked, last seq {prev.frame.seq}")


def _checkpoints(v: Verdicts, sdir: Path, host: str, stream: str, hashes: dict[int, bytes],
                 last: _Prev | None, pub: ed25519.Ed25519PublicKey | None) -> None:
    path = sdir / "checkpoints.jsonl"
    if not path.exists():
        return
    last_seq = last.frame.seq if last else -1
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path}:{n}"
        try:
            cp = json.loads(line)
            seq, head, ts = int(cp["seq"]), str(cp["hash"]), int(cp["ts"])
            sig = base64.b64decode(cp["sig"])
        except (ValueError, KeyError, TypeError):
            _fail(v, host, stream, where, None, None, "checkpoint", "unreadable checkpoint line")
            continue
        if pub is not None:
            try:
                pub.verify(sig, checkpoint_message(host, stream, seq, head, ts))
            except InvalidSignature:
                _fail(v, host, stream, where, None, seq, "checkpoint", "signature does not verify")
                continue
        if seq > last_seq:
            _fail(v, host, stream, where, None, seq, "truncated",
                  f"a checkpoint signed seq {seq} but the evidence ends at seq {last_seq}: tail removed")
        elif seq in hashes and hashes[seq].hex() != head:
            _fail(v, host, stream, where, None, seq, "checkpoint",
                  f"the signed chain head at seq {seq} differs from the evidence")


def verify_evidence(evidence: Path, *, host: str | None = None, pki_seal_dir: Path | None = None,
                    public_key: Path | None = None, store: Reader | None = None) -> Verdicts:
    if not evidence.is_dir():
        raise ForensixError(f"no evidence directory at {evidence}", "give --evidence DIR or --store PATH")
    pub_path = public_key or evidence / "checkpoint.pub"
    pub = load_public_key(pub_path) if pub_path.exists() else None
    v = Verdicts()
    hosts = sorted(p for p in evidence.iterdir() if p.is_dir() and (host is None or p.name == host))
    if host is not None and not hosts:
        raise ForensixError(f"no evidence for host {host!r} in {evidence}", "see the host names under it")
    for hdir in hosts:
        seal = (pki_seal_dir / f"{hdir.name}.json") if pki_seal_dir else hdir / "seal.json"
        state = SealState.load(seal)
        # A forged epoch number must not make the verifier derive keys for ever.
        keys = KeySchedule(state, max_epoch=state.epoch_of(time.time_ns() + 86400 * 10**9))
        if pub is None:
            _fail(v, hdir.name, "", str(pub_path), None, None, "checkpoint", "no checkpoint key")
        for sdir in sorted(p for p in hdir.iterdir() if p.is_dir()):
            _stream(v, sdir, hdir.name, keys, pub)
    if store is not None:
        _silences(v, store, host)
    for verdict in ("integrity", "completeness"):
        for h in sorted({f["host_name"] for f in v.findings} | {p.name for p in hosts}):
            bad = [f for f in v.findings if f["host_name"] == h and f["verdict"] == verdict
                   and f["status"] in ("FAIL", "gap")]
            status = "ok" if not bad else ("FAIL" if verdict == "integrity" else "gap")
            v.add(verdict, status, h, check="verdict",
                  detail=f"{len(bad)} problem(s)" if bad else "no problem found")
    return v


def _silences(v: Verdicts, store: Reader, host: str | None) -> None:
    sql = ("SELECT host_name, ts, detected_ts, summary FROM alerts WHERE rule_id = $r"
           + (" AND host_name = $h" if host else "") + " ORDER BY ts")
    params: dict[str, Any] = {"r": SILENT_RULE}
    if host:
        params["h"] = host
    for row in store.query(sql, params).to_pylist():
        v.add("completeness", "note", row["host_name"], check="silence",
              detail=f"{row['summary']} (last heard at {format_ns(row['ts'])})")
    # Down-time between a clean stop and the next start, as the log host saw them.
    sql = ("SELECT host_name, ts, event_action FROM events WHERE event_category = 'agent' AND "
           "process_name = 'forensix-agent' AND event_action IN ('start', 'stop')"
           + (" AND host_name = $h" if host else "") + " ORDER BY host_name, ts")
    stopped: dict[str, int] = {}
    for row in store.query(sql, {"h": host} if host else None).to_pylist():
        h = row["host_name"]
        if row["event_action"] == "stop":
            stopped[h] = row["ts"]
        elif h in stopped:
            v.add("completeness", "note", h, check="agent-stopped",
                  detail=f"agent stopped cleanly at {format_ns(stopped.pop(h))}, "
                         f"started again at {format_ns(row['ts'])}: nothing recorded meanwhile")
    for h, ts in stopped.items():
        v.add("completeness", "note", h, check="agent-stopped",
              detail=f"agent stopped cleanly at {format_ns(ts)} and has not started since")
