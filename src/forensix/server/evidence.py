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
import errno
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
    "append_problem",
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
        self.mark_error: OSError | None = None  # the last ingested mark could not be written
        self._fd: int | None = None
        self._path: Path | None = None  # the segment being appended to
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
        """Write and fsync one frame (caller holds ``lock``).

        On an error (a full disk, EIO, a read-only or unwritable directory) the segment is cut
        back to its last whole frame and left; the next append starts a new segment, so no
        frame ever follows bytes that may be torn. The OSError goes to the caller."""
        try:
            if self._fd is None or self._size >= SEGMENT_BYTES:
                self._new_segment(frame.seq)
            assert self._fd is not None
            view = memoryview(frame.raw)
            while view:  # a write may take only part of the frame (a disk filling up)
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            self._abandon_segment()
            raise
        self._size += len(frame.raw)
        self.last_seq = frame.seq
        self.last_hash = frame_hash(frame.raw)
        self.last_epoch, self.last_seal_ns = frame.epoch, frame.seal_ns

    def _new_segment(self, seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.dir / f"seg-{seq:016d}.fxe"
        if path.exists():  # never append after bytes a crash may have torn
            path = self.dir / f"seg-{seq:016d}-{time.time_ns()}.fxe"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._path, self._size = path, 0
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _abandon_segment(self) -> None:
        """After a failed write: cut the frame's bytes off, close the segment; an empty one goes."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._size)
            if self._size == 0 and self._path is not None:
                self._path.unlink()
        except OSError:  # the tail stays torn; verify reports it, and no frame follows it
            pass
        finally:
            os.close(fd)

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
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line.encode())
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:  # no torn line for verify to stumble on: cut back, try again at the next tick
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
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
        """Not fsynced: after a crash an older mark only means re-ingesting a few frames.

        A mark that cannot be written (this stream's disk is full or broken) must not stop
        the ingest thread, which serves every host: the error is kept for the server to
        report (``mark_error``) and the write is tried again with the stream's next mark."""
        tmp = self.dir / ".ingested.tmp"
        try:
            tmp.write_text(str(seq))
            os.replace(tmp, self.dir / "ingested")
        except OSError as e:
            self.mark_error = e
            return
        self.mark_error = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_FIXES = {
    errno.ENOSPC: "free space on the file system that holds {dir} (forensix retention, or move old evidence "
                  "away); --min-free makes the log host refuse frames before a shared disk is full",
    errno.EDQUOT: "raise the disk quota of the user running forensix server on {dir}, or free space under it",
    errno.EROFS: "the file system that holds {dir} is read-only: find why in the kernel log (dmesg), repair "
                 "it and remount it read-write",
    errno.EACCES: "let the user running forensix server write {dir} (owner, mode, ACLs, SELinux/AppArmor)",
    errno.EPERM: "let the user running forensix server write {dir} (owner, mode, immutable attribute, "
                 "SELinux/AppArmor)",
    errno.EIO: "the disk that holds {dir} reports I/O errors: check the kernel log (dmesg) and the disk, and "
               "move the evidence directory to a healthy one",
}


def append_problem(err: OSError, directory: Path) -> tuple[str, str, str]:
    """What went wrong writing evidence into ``directory``: the errno's name (ENOSPC, for the
    metrics), the cause in words, and what the operator can do."""
    name = errno.errorcode.get(err.errno or 0, "other")
    fix = _FIXES.get(err.errno or 0, "check the file system that holds {dir} (dmesg, df, mount, permissions)")
    return name, f"{err.strerror or err} ({name})", fix.format(dir=directory)


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
