"""Evidence retention on a log host: age whole segments out, and keep the chain verifiable.

A stream's segments are dropped oldest first, whole, and only when every frame in them is
older than the cutoff (by the log host's own clock, the segment's last write, and by the
frames' sealing times), already in the store (the ``ingested`` mark), and the segment is
not the one the stream appends to. Before a segment is unlinked, the log host appends a
record to ``HOST/STREAM/retention.jsonl`` (fsynced) signed with its checkpoint key::

    {"host", "stream", "first_seq", "last_seq", "last_hash", "segments", "frames", "bytes",
     "cutoff", "ts", "sig"}

``forensix verify`` then starts the chain at ``last_hash`` instead of the zero hash: the
first remaining frame must chain to it, so a deletion passed off as retention (or a
retention record for frames that never chained) is still a failure, and what retention
removed is a signed note, not a gap.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent.frame import HEADER, RAW_FLAG, SEED_FLAG, FrameError, frame_hash
from forensix.server.evidence import read_frame, walk_segment
from forensix.server.rawdecode import checkpoint_seq

__all__ = ["Drop", "RetentionRecord", "apply_retention", "plan_retention", "read_retention", "retention_message"]

FILE = "retention.jsonl"


def retention_message(host: str, stream: str, first_seq: int, last_seq: int, last_hash: str, segments: str,
                      ts: int) -> bytes:
    return f"forensix-retention/1\n{host}\n{stream}\n{first_seq}\n{last_seq}\n{last_hash}\n{segments}\n{ts}\n".encode()


@dataclass
class Drop:
    """One stream's run of old segments, dropped together."""

    host: str
    stream: str
    dir: Path
    segments: list[Path]
    first_seq: int
    last_seq: int
    last_hash: str
    frames: int
    bytes: int
    newest_ns: int  # the newest write or seal among the frames dropped


@dataclass
class RetentionRecord:
    host: str
    stream: str
    first_seq: int
    last_seq: int
    last_hash: bytes
    segments: str
    frames: int
    ts: int
    where: str


class _Facts(NamedTuple):
    first: int
    last: int
    frames: int
    newest_ns: int  # the newest sealing time in the segment, or its last write, whichever is later
    last_off: int
    last_len: int
    raw: bool = False  # holds frames of raw records (decoded on the log host)
    seed: int = -1  # the last frame that restarts the stream's decoder (agent/frame.py SEED_FLAG)


def _segment_facts(seg: Path) -> _Facts | None:
    """What a segment holds, or None when it has a torn or unreadable region (never dropped:
    verify must see it)."""
    st = seg.stat()
    first = last = -1
    frames = newest = end = last_off = last_len = 0
    raw, seed = False, -1
    with seg.open("rb") as f:
        for off, seq, length in walk_segment(seg):
            f.seek(off)
            head = HEADER.unpack(f.read(HEADER.size))
            seal_ns, flags = head[8], head[7]
            raw |= bool(flags & RAW_FLAG)
            seed = seq if flags & SEED_FLAG else seed
            first = seq if first < 0 else first
            last, frames, newest = seq, frames + 1, max(newest, seal_ns)
            end, last_off, last_len = off + length, off, length
    if frames == 0 or end != st.st_size:
        return None
    return _Facts(first, last, frames, max(newest, st.st_mtime_ns), last_off, last_len, raw, seed)


def _ingested(sdir: Path) -> int:
    try:
        return int((sdir / "ingested").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def _streams(evidence: Path, host: str | None) -> Iterator[tuple[str, str, Path]]:
    for hdir in sorted(p for p in evidence.iterdir() if p.is_dir() and (host is None or p.name == host)):
        for sdir in sorted(p for p in hdir.iterdir() if p.is_dir()):
            yield hdir.name, sdir.name, sdir


def _needed_from(segs: list[Path]) -> int | float:
    """The first frame a log-host restart needs to rebuild the stream's raw decoder: the one
    after its newest decoder checkpoint, or its newest seed if later (frames before it are never
    decoded again); none if the stream has no raw frames. Without a checkpoint, a raw stream
    keeps everything from its agent's last start."""
    facts = [_segment_facts(s) for s in segs]
    if not any(f is not None and f.raw for f in facts):
        return float("inf")
    ck = checkpoint_seq(segs[0].parent) if segs else -1  # the decoder as after that frame: later ones needed
    return max(max((f.seed for f in facts if f is not None), default=-1), ck + 1 if ck >= 0 else -1)


def plan_retention(evidence: Path, cutoff_ns: int, host: str | None = None) -> list[Drop]:
    """What retention at ``cutoff_ns`` would drop: per stream, the oldest segments wholly before it."""
    out: list[Drop] = []
    for h, stream, sdir in _streams(evidence, host):
        segs = sorted(sdir.glob("seg-*.fxe"))
        ingested = _ingested(sdir)
        take: list[tuple[Path, _Facts]] = []
        needed = _needed_from(segs)
        for seg in segs[:-1]:  # never the newest: the stream appends to it, and it holds the chain head
            f = _segment_facts(seg)
            if f is None or f.newest_ns >= cutoff_ns or f.last > ingested or f.last >= needed:
                break  # a prefix only: the remaining chain starts right after what is dropped
            take.append((seg, f))
        if not take:
            continue
        seg, f = take[-1]
        try:
            head = frame_hash(read_frame(seg, f.last_off, f.last_len).raw).hex()
        except FrameError:
            continue
        out.append(Drop(h, stream, sdir, [s for s, _ in take], take[0][1].first, f.last, head,
                        sum(x.frames for _, x in take), sum(s.stat().st_size for s, _ in take),
                        max(x.newest_ns for _, x in take)))
    return out


def apply_retention(drops: list[Drop], key: ed25519.Ed25519PrivateKey, cutoff_ns: int, now_ns: int) -> None:
    """Sign and fsync each stream's retention record, then unlink its segments (that order: a
    crash in between leaves a record for segments still present, which verify accepts)."""
    for d in drops:
        names = ",".join(s.name for s in d.segments)
        sig = key.sign(retention_message(d.host, d.stream, d.first_seq, d.last_seq, d.last_hash, names, now_ns))
        line = json.dumps({"host": d.host, "stream": d.stream, "first_seq": d.first_seq, "last_seq": d.last_seq,
                           "last_hash": d.last_hash, "segments": names, "frames": d.frames, "bytes": d.bytes,
                           "cutoff": cutoff_ns, "ts": now_ns, "sig": base64.b64encode(sig).decode()}) + "\n"
        fd = os.open(d.dir / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        for seg in d.segments:
            seg.unlink()
        dfd = os.open(d.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_retention(sdir: Path, pub: ed25519.Ed25519PublicKey | None
                   ) -> tuple[list[RetentionRecord], list[tuple[str, str]]]:
    """The stream's retention records whose signature verifies, and (where, why) of the others."""
    path = sdir / FILE
    if not path.exists():
        return [], []
    good: list[RetentionRecord] = []
    bad: list[tuple[str, str]] = []
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        where = f"{path}:{n}"
        try:
            r = json.loads(text)
            rec = RetentionRecord(str(r["host"]), str(r["stream"]), int(r["first_seq"]), int(r["last_seq"]),
                                  bytes.fromhex(str(r["last_hash"])), str(r["segments"]), int(r["frames"]),
                                  int(r["ts"]), where)
            sig = base64.b64decode(str(r["sig"]))
        except (ValueError, KeyError, TypeError):
            bad.append((where, "unreadable retention record"))
            continue
        if pub is None:
            bad.append((where, "no checkpoint key to check this retention record with"))
            continue
        try:
            pub.verify(sig, retention_message(rec.host, rec.stream, rec.first_seq, rec.last_seq,
                                              rec.last_hash.hex(), rec.segments, rec.ts))
        except InvalidSignature:
            bad.append((where, "the signature of this retention record does not verify: not taken into account"))
            continue
        good.append(rec)
    return good, bad
