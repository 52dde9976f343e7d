"""The log host's evidence: append-only segments of sealed frames, per host and stream.

Layout of an evidence directory::

    checkpoint.pub                    the Ed25519 key that signs the checkpoints
    HOST/seal.json                    the host's enrollment seal key (epoch 0)
    HOST/STREAM/seg-<seq>.fxe         frames exactly as the agent sealed them, fsynced
    HOST/STREAM/checkpoints.jsonl     signed chain heads {seq, hash, ts, sig}
    HOST/STREAM/ingested              the last sequence appended to the store

Frames are written before they are acknowledged (write, fsync); the store is filled from
them. ``checkpoints.jsonl`` lets ``forensix verify`` notice a tail cut at a frame boundary.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent.frame import HEADER, Frame, FrameError, frame_hash, frame_length, parse_frame
from forensix.errors import ForensixError

__all__ = [
    "EvidenceStore",
    "SegmentRecord",
    "StreamLog",
    "checkpoint_message",
    "iter_segment",
    "load_public_key",
    "read_frame",
    "walk_segment",
]

SEGMENT_BYTES = 64 << 20


def checkpoint_message(host: str, stream: str, seq: int, head: str, ts: int) -> bytes:
    return f"forensix-checkpoint/1\n{host}\n{stream}\n{seq}\n{head}\n{ts}\n".encode()


def load_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ForensixError(f"{path} is not an Ed25519 public key", "use checkpoint.pub from the PKI")
    return key


@dataclass
class SegmentRecord:
    segment: Path
    offset: int
    frame: Frame | None  # None: unparseable bytes from offset on
    error: str = ""


def iter_segment(path: Path) -> Iterator[SegmentRecord]:
    """Every frame of a segment; a malformed or truncated region ends the iteration."""
    data = path.read_bytes()
    off = 0
    while off < len(data):
        try:
            total = frame_length(data[off : off + HEADER.size], off)
            if len(data) - off < total:
                raise FrameError(f"truncated frame: {len(data) - off} of {total} bytes", off)
            fr = parse_frame(data, off)
        except FrameError as e:
            yield SegmentRecord(path, off, None, e.message)
            return
        yield SegmentRecord(path, off, fr)
        off += total


def walk_segment(path: Path) -> Iterator[tuple[int, int, int]]:
    """(offset, seq, length) of each whole frame, reading only headers (fast start-up)."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 0
        while off < size:
            f.seek(off)
            head = f.read(HEADER.size)
            try:
                total = frame_length(head, off)
            except FrameError:
                return
            if off + total > size:
                return
            yield off, int.from_bytes(head[24:32], "big"), total
            off += total


def read_frame(path: Path, offset: int, length: int) -> Frame:
    with path.open("rb") as f:
        f.seek(offset)
        return parse_frame(f.read(length))


class StreamLog:
    """One (host, stream): its segments, its chain head, its checkpoints."""

    def __init__(self, directory: Path, host: str, stream: str) -> None:
        self.dir = directory
        self.host = host
        self.stream = stream
        self.lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.last_seq = -1
        self.last_hash: bytes | None = None
        self.last_epoch = 0
        self.last_seal_ns = 0
        self.checkpointed = -1
        self._fd: int | None = None
        self._size = 0
        self._scan()

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.fxe"))

    def _scan(self) -> None:
        last: tuple[Path, int, int] | None = None
        for seg in self.segments():
            for off, seq, length in walk_segment(seg):  # a torn tail ends the walk: verify reports it
                if seq > self.last_seq:
                    self.last_seq, last = seq, (seg, off, length)
        if last is not None:
            try:
                fr = read_frame(*last)
            except FrameError:
                return
            self.last_hash = frame_hash(fr.raw)
            self.last_epoch, self.last_seal_ns = fr.epoch, fr.seal_ns

    def append(self, frame: Frame) -> None:
        """Write and fsync one frame (caller holds ``lock``)."""
        if self._fd is None or self._size >= SEGMENT_BYTES:
            if self._fd is not None:
                os.close(self._fd)
            path = self.dir / f"seg-{frame.seq:016d}.fxe"
            if path.exists():  # never append after bytes a crash may have torn
                path = self.dir / f"seg-{frame.seq:016d}-{time.time_ns()}.fxe"
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            self._size = 0
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
        os.write(self._fd, frame.raw)
        os.fsync(self._fd)
        self._size += len(frame.raw)
        self.last_seq = frame.seq
        self.last_hash = frame_hash(frame.raw)
        self.last_epoch, self.last_seal_ns = frame.epoch, frame.seal_ns

    def checkpoint(self, key: ed25519.Ed25519PrivateKey) -> bool:
        with self.lock:
            if self.last_seq <= self.checkpointed or self.last_hash is None:
                return False
            seq, head = self.last_seq, self.last_hash.hex()
        ts = time.time_ns()
        sig = key.sign(checkpoint_message(self.host, self.stream, seq, head, ts))
        line = json.dumps({"host": self.host, "stream": self.stream, "seq": seq, "hash": head, "ts": ts,
                           "sig": base64.b64encode(sig).decode()}) + "\n"
        fd = os.open(self.dir / "checkpoints.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.checkpointed = seq
        return True

    def ingested(self) -> int:
        try:
            return int((self.dir / "ingested").read_text())
        except (FileNotFoundError, ValueError):
            return -1

    def set_ingested(self, seq: int) -> None:
        # Not fsynced: after a crash an older mark only means re-ingesting a few frames.
        tmp = self.dir / ".ingested.tmp"
        tmp.write_text(str(seq))
        os.replace(tmp, self.dir / "ingested")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EvidenceStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._streams: dict[tuple[str, str], StreamLog] = {}
        self._lock = threading.Lock()

    def stream(self, host: str, stream: str) -> StreamLog:
        with self._lock:
            log = self._streams.get((host, stream))
            if log is None:
                log = StreamLog(self.dir / host / stream, host, stream)
                self._streams[(host, stream)] = log
            return log

    def open_all(self) -> list[StreamLog]:
        for hdir in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            for sdir in sorted(p for p in hdir.iterdir() if p.is_dir()):
                self.stream(hdir.name, sdir.name)
        with self._lock:
            return list(self._streams.values())

    def streams(self) -> list[StreamLog]:
        with self._lock:
            return list(self._streams.values())

    def close(self) -> None:
        for s in self.streams():
            s.close()
