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
from forensix.server.guard import read_refusals, refusal_message
from forensix.server.ingest import SILENT_RULE
from forensix.server.quarantine import QUARANTINE_FILE, read_quarantine
from forensix.server.retention import RetentionRecord, read_retention
from forensix.store.base import Reader

__all__ = ["FINDINGS", "Verdicts", "verify_evidence"]

FINDINGS = pa.schema([
    ("verdict", pa.string()),  # integrity | completeness
    ("status", pa.string()),  # ok | FAIL | gap | note
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


@dataclass
class _Refusal:
    """The log host's record of a frame it refused (refusals.jsonl), newest of its sequence."""

    seq: int
    ts: int
    kind: str
    reason: str
    final: bool
    hash: bytes | None
    prev: bytes | None
    times: int = 1
    where: str = ""


def _refusal_text(host: str, r: _Refusal) -> str:
    again = f" ({r.times} times)" if r.times > 1 else ""
    return f"frame {r.seq} of host {host} refused by the log host at {format_ns(r.ts)}{again}: {r.reason}"


def _missing(v: Verdicts, host: str, stream: str, seg: str, off: int, fr: Frame, after: int, head: bytes,
             refused: dict[int, _Refusal], where: str) -> None:
    """Sequences after+1..fr.seq-1 are not in the evidence: refused by the log host, or missing.

    A frame the log host refused is a completeness fact, not a break of the evidence: when
    every sequence in between has a (signed) refusal record, the chain break they leave is
    accounted for. The records name each refused frame's hash and previous hash; when they
    link the frames before and after, the refused frames are the ones sealed in the chain,
    else their bytes were altered before they reached the log host (a MAC refusal). A
    sequence without a record is a gap, and the chain break it leaves an integrity failure.
    """
    seqs = range(after + 1, fr.seq)
    h: bytes | None = head
    for q in seqs:
        r = refused.get(q)
        h = r.hash if r is not None and h is not None and r.prev == h else None
    links = h is not None and fr.prev == h
    for q in seqs:
        r = refused.get(q)
        if r is not None:
            how = ("; it is the frame sealed in the chain" if links else
                   "; its bytes are not those the chain was sealed with (altered before they reached the "
                   "log host)")
            v.add("completeness", "gap", host, stream, r.where, None, q, "refused", _refusal_text(host, r) + how)
    lost = [q for q in seqs if q not in refused]
    if not lost:
        return
    runs = f"{lost[0]}..{lost[-1]}" if len(lost) > 1 else f"{lost[0]}"
    if after < 0:
        v.add("completeness", "gap", host, stream, seg, off, fr.seq, "sequence",
              f"stream starts at seq {fr.seq}: batches {runs} are not in the evidence")
        return
    v.add("completeness", "gap", host, stream, seg, off, fr.seq, "sequence",
          f"batches {runs} missing before seq {fr.seq}")
    if not links:
        _fail(v, host, stream, seg, off, fr.seq, "chain", f"seq {fr.seq} does not chain to {where}: batch(es) "
              f"{runs} deleted")


def _check_frame(v: Verdicts, host: str, stream: str, seg: str, off: int, fr: Frame,
                 keys: KeySchedule, prev: _Prev | None, refused: dict[int, _Refusal]) -> None:
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
            _missing(v, host, stream, seg, off, fr, -1, ZERO_HASH, refused, "the start of the stream")
        return
    p = prev.frame
    where = f"seq {p.seq} at {prev.segment}@{prev.offset}"
    if fr.seq <= p.seq:
        _fail(v, host, stream, seg, off, fr.seq, "order",
              f"seq {fr.seq} comes after {where}: batches reordered or replayed")
    elif fr.seq > p.seq + 1:
        _missing(v, host, stream, seg, off, fr, p.seq, frame_hash(p.raw), refused, where)
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


def _after_retention(v: Verdicts, host: str, stream: str, seg: str, off: int, fr: Frame, keys: KeySchedule,
                     base: RetentionRecord, refused: dict[int, _Refusal]) -> None:
    """The first frame left after retention: it must chain to the head the signed record names."""
    problem = seal_problem(fr, keys)
    if problem:
        _fail(v, host, stream, seg, off, fr.seq, "mac", problem)
    what = (f"batches {base.first_seq}..{base.last_seq} ({base.frames} frames in {base.segments}) removed by "
            f"retention on the log host at {format_ns(base.ts)} (signed record {base.where})")
    if fr.seq > base.last_seq + 1:
        _missing(v, host, stream, seg, off, fr, base.last_seq, base.last_hash, refused, "the retention record")
    elif fr.prev != base.last_hash:
        _fail(v, host, stream, seg, off, fr.seq, "chain",
              f"seq {fr.seq} does not chain to the head the retention record signed: evidence before it was "
              "altered or replaced, not aged out")
        return
    v.add("completeness", "note", host, stream, base.where, None, base.last_seq, "retention", what)


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
            pub: ed25519.Ed25519PublicKey | None, refused: dict[int, _Refusal], enrollment: str) -> None:
    stream = sdir.name
    prev: _Prev | None = None
    hashes: dict[int, bytes] = {}
    kept, bad = read_retention(sdir, pub)
    for where, why in bad:
        _fail(v, host, stream, where, None, None, "retention", why)
    # Retention removed the oldest segments: the chain resumes from the signed head they ended at.
    base = max(kept, key=lambda r: r.last_seq) if kept else None
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
            if prev is None and base is not None and fr.seq > base.last_seq:
                _after_retention(v, host, stream, seg, rec.offset, fr, keys, base, refused)
            else:
                _check_frame(v, host, stream, seg, rec.offset, fr, keys, prev, refused)
            hashes[fr.seq] = frame_hash(fr.raw)
            if fr.table == "gaps" and not seal_problem(fr, keys):
                _gaps_of(v, host, stream, seg, rec.offset, fr)
            prev = _Prev(fr, seg, rec.offset)
    _checkpoints(v, sdir, host, stream, hashes, prev, pub)
    last = prev.frame.seq if prev is not None else -1
    for q, r in sorted(refused.items()):
        if q in hashes:  # refused once, delivered later (e.g. after its quota was raised): nothing lost
            later = "" if r.hash is None or r.hash == hashes[q] else " (a different frame under that sequence)"
            v.add("completeness", "note", host, stream, r.where, None, q, "refused",
                  f"{_refusal_text(host, r)}; the agent sent it again and it was stored{later}")
        elif q > last:  # after the last frame stored: nothing later shows the hole
            v.add("completeness", "gap", host, stream, r.where, None, q, "refused", _refusal_text(host, r)
                  + ("" if r.final else "; not delivered since (the agent keeps it and sends it again)"))
    for q, held in sorted(read_quarantine(sdir).items()):
        v.add("completeness", "gap", host, stream, str(sdir / QUARANTINE_FILE), None, q, "not-ingested",
              f"frame {q} of host {host} ({held.table}) not ingested: {held.cause}; the evidence keeps it. "
              f"Fix: {held.fix}")
    if prev is not None:
        v.add("integrity", "ok", host, stream, "", None, prev.frame.seq, "stream",
              f"{len(hashes)} batches checked, last seq {prev.frame.seq}; {enrollment}")


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


def _refusals(v: Verdicts, evidence: Path, host: str | None, pub: ed25519.Ed25519PublicKey | None
              ) -> dict[tuple[str, str], dict[int, _Refusal]]:
    """The log host's records of refused frames, by (host, stream) and sequence.

    A record is trusted only when its checkpoint-key signature verifies (else it could pass
    a deleted frame off as refused); repeats of one sequence are one refusal. Refusals of a
    whole connection (revoked, over a limit) are summarised as one note per host and kind.
    """
    out: dict[tuple[str, str], dict[int, _Refusal]] = {}
    others: dict[tuple[str, str], list[dict[str, Any]]] = {}
    path = evidence / "refusals.jsonl"
    for n, rec in read_refusals(evidence):
        where = f"{path}:{n}"
        if rec is None:
            _fail(v, "", "", where, None, None, "refusal", "unreadable refusal record")
            continue
        h = str(rec.get("host", ""))
        if host is not None and h != host:
            continue
        if rec.get("hash") is None or not isinstance(rec.get("seq"), int):
            others.setdefault((h, str(rec.get("kind", ""))), []).append(rec)
            continue
        stream, seq = str(rec.get("stream", "")), int(rec["seq"])
        if pub is not None:
            try:
                pub.verify(base64.b64decode(str(rec.get("sig", ""))), refusal_message(rec))
            except (InvalidSignature, ValueError):
                _fail(v, h, stream, where, None, seq, "refusal",
                      "the signature of this refusal record does not verify: not taken into account")
                continue
        try:
            r = _Refusal(seq, int(rec["ts"]), str(rec["kind"]), str(rec["reason"]), bool(rec.get("final")),
                         bytes.fromhex(str(rec["hash"])), bytes.fromhex(str(rec["prev"])), where=where)
        except (KeyError, ValueError, TypeError):
            _fail(v, h, stream, where, None, seq, "refusal", "malformed refusal record")
            continue
        seen = out.setdefault((h, stream), {}).get(seq)
        if seen is not None:
            r.times, r.final = seen.times + 1, seen.final or r.final
        out[(h, stream)][seq] = r
    for (h, kind), recs in sorted(others.items()):
        times = sum(1 + int(x.get("repeats_before") or 0) for x in recs)
        v.add("completeness", "note", h, check=f"refused:{kind}",
              detail=f"the log host refused {h} ({kind}) at least {times} time(s) from {format_ns(int(recs[0]['ts']))} "
                     f"to {format_ns(int(recs[-1]['ts']))}; last: {recs[-1].get('reason', '')}")
    return out


def _stream_key(hdir: Path, sdir: Path, pki_seal_dir: Path | None) -> SealState:
    """The epoch-0 key of the enrollment a stream was sealed under.

    The log host keeps it beside the stream (``STREAM/seal.json``, since re-enrollment), or
    for older streams in ``HOST/seal.json``. With ``--pki`` the key comes from the PKI's
    record of that enrollment (``seal/HOST-SERIAL.json``) instead.
    """
    own = sdir / "seal.json"
    state = SealState.load(own if own.exists() else hdir / "seal.json")
    if pki_seal_dir is None:
        return state
    if state.serial and (pki_seal_dir / f"{hdir.name}-{state.serial}.json").exists():
        return SealState.load(pki_seal_dir / f"{hdir.name}-{state.serial}.json")
    return SealState.load(pki_seal_dir / f"{hdir.name}.json")


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
    refused = _refusals(v, evidence, host, pub)
    # A forged epoch number must not make the verifier derive keys for ever.
    horizon = time.time_ns() + 86400 * 10**9
    for hdir in hosts:
        if pub is None:
            _fail(v, hdir.name, "", str(pub_path), None, None, "checkpoint", "no checkpoint key")
        streams = sorted(p for p in hdir.iterdir() if p.is_dir())
        keyed = [(sdir, _stream_key(hdir, sdir, pki_seal_dir)) for sdir in streams]
        enrollments = sorted({k.enrollment: k for _, k in keyed}.values(), key=lambda k: k.t0_ns)
        for sdir, state in keyed:
            keys = KeySchedule(state, max_epoch=state.epoch_of(horizon))
            label = (f"enrollment {enrollments.index(state) + 1} of {len(enrollments)} (certificate "
                     f"{state.serial or 'unnamed'}, seal key from {format_ns(state.t0_ns)})")
            n0 = len(v.findings)
            _stream(v, sdir, hdir.name, keys, pub, refused.pop((hdir.name, sdir.name), {}), label)
            if len(enrollments) > 1:  # re-enrolled: say which chain is which, even without --all
                ok = [f for f in v.findings[n0:] if f["check"] == "stream"]
                v.add("integrity", "note", hdir.name, sdir.name, check="enrollment",
                      detail=(ok[0]["detail"] if ok else f"no batches; {label}"))
    for (h, stream), recs in refused.items():  # refusals of a stream with no evidence directory
        for q, r in sorted(recs.items()):
            v.add("completeness", "gap", h, stream, r.where, None, q, "refused", _refusal_text(h, r))
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
