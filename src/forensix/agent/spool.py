"""The agent's on-disk spool: append-only segments of sealed frames, kept until acked.

Layout of a spool directory::

    stream          the stream id (32 hex digits), made once
    seg-<seq>.fxs   frames, appended and fsynced, in sequence order; named by first seq
    acked           the highest sequence the log host acknowledged (advisory: resends are
                    de-duplicated by the server, so losing it only costs bandwidth)
    clean           present while the agent is stopped cleanly
    refused/        frames the log host refused for good (``seq-<seq>.fxs``, the frame as
                    sealed) with why (``seq-<seq>.json``): kept, never resent, counted in
                    the spool's size
    status.json     what the shipper last knew (``forensix agent-status`` reads it)
    enrollment      the enrollment whose seal key sealed this stream (certificate serial, t0)
    retired/STREAM/ the spool of an earlier enrollment: when the host is re-enrolled (a new
                    seal key), a new stream starts and the old one is moved here, kept as it
                    was (the log host accepts it from no certificate but the old one)

A segment is deleted once every frame in it is acked, except the newest one: the last
frame always stays, so a restarted agent continues the hash chain and the sequence.
A torn frame at the end of the newest segment (the agent was killed while writing it)
is cut off on open; it was never acknowledged and never fsynced as complete.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forensix.agent.frame import HEADER, FrameError, frame_hash, frame_length, parse_frame
from forensix.errors import ForensixError
from forensix.pki.sealkey import write_atomic

__all__ = ["Spool", "SpoolEntry", "SpoolError", "read_refused"]

DEFAULT_SEGMENT_BYTES = 16 << 20


class SpoolError(ForensixError, OSError):
    """The spool directory cannot be used."""


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    segment: Path
    offset: int
    length: int
    seal_ns: int = 0


def read_refused(directory: Path) -> list[dict[str, Any]]:
    """The refusal records of a spool's ``refused/`` directory, by sequence."""
    out = []
    for p in sorted((directory / "refused").glob("seq-*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            out.append({"seq": None, "reason": f"unreadable refusal record {p.name}"})
    return out


class Spool:
    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        enrollment: str = "",
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.cond = threading.Condition()
        # the shipper's thread and the recorder's flush both save the acked mark: one at a
        # time (they share write_atomic's temp file, and a later mark must not be overwritten
        # by an earlier one), without holding `cond` through the fsyncs
        self._save = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise SpoolError(f"cannot create spool {self.dir}: {e.strerror}", "check --spool") from e
        self.retired: Path | None = None
        if enrollment:
            self._bind(enrollment)
        self.stream = self._stream_id()
        self.entries: list[SpoolEntry] = []
        self.bytes = 0
        self.last_hash: bytes | None = None
        self.last_seal_ns = 0
        self.last_epoch = 0
        self.acked = self._read_acked()
        self.was_clean = (self.dir / "clean").exists()
        # counted for the metrics (since this process started)
        self.frames_spooled = 0
        self.frames_acked = 0
        self.refused: set[int] = set()
        self.refused_bytes = 0
        self._load_refused()
        self._scan()
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._acked_dirty = False
        if self.entries:
            self._open_active(self.entries[-1].segment)
        (self.dir / "clean").unlink(missing_ok=True)

    # -- state -----------------------------------------------------------------
    def _bind(self, enrollment: str) -> None:
        """One stream, one enrollment: a new seal key (re-issue) starts a new stream.

        The old stream's frames are sealed with the old key and chain among themselves; the
        log host keeps that chain as it was and accepts the new key only on a new stream.
        """
        mark = self.dir / "enrollment"
        try:
            was = mark.read_text().strip()
        except FileNotFoundError:
            was = ""  # a new spool, or one from before enrollments were recorded: it is this one
        if was and was != enrollment and (self.dir / "stream").exists():
            old = (self.dir / "stream").read_text().strip() or "unknown"
            dest = self.dir / "retired" / f"{old}-{time.time_ns()}"
            dest.mkdir(parents=True, mode=0o700)
            for p in list(self.dir.iterdir()):
                if p.name != "retired":
                    os.replace(p, dest / p.name)
            self.retired = dest
        if was != enrollment:
            write_atomic(mark, enrollment.encode() + b"\n")

    def _stream_id(self) -> bytes:
        p = self.dir / "stream"
        if p.exists():
            try:
                return bytes.fromhex(p.read_text().strip())
            except ValueError:
                raise SpoolError(f"{p} is corrupt", "move the spool away to start a new stream") from None
        sid = uuid.uuid4().bytes
        write_atomic(p, sid.hex().encode() + b"\n")
        return sid

    def _read_acked(self) -> int:
        try:
            return int((self.dir / "acked").read_text())
        except (FileNotFoundError, ValueError):
            return -1

    @property
    def next_seq(self) -> int:
        return self.entries[-1].seq + 1 if self.entries else max(0, self.acked + 1)

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.fxs"))

    def _scan(self) -> None:
        for seg in self.segments():
            data = seg.read_bytes()
            off = 0
            while off < len(data):
                try:
                    total = frame_length(data[off : off + HEADER.size], off)
                    if len(data) - off < total:
                        raise FrameError("torn frame", off)
                    fr = parse_frame(data, off)
                except FrameError:
                    # A torn tail (killed while writing): never acked, cut it off.
                    with seg.open("r+b") as f:
                        f.truncate(off)
                        os.fsync(f.fileno())
                    break
                self.entries.append(SpoolEntry(fr.seq, seg, off, total, fr.seal_ns))
                self.bytes += total
                self.last_hash = frame_hash(fr.raw)
                self.last_seal_ns, self.last_epoch = fr.seal_ns, fr.epoch
                off += total

    def _load_refused(self) -> None:
        for p in (self.dir / "refused").glob("seq-*.fxs"):
            try:
                self.refused.add(int(p.stem.removeprefix("seq-")))
                self.refused_bytes += p.stat().st_size
            except (ValueError, OSError):
                continue

    def _open_active(self, seg: Path) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(seg, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._active = seg
        self._active_size = os.fstat(self._fd).st_size

    # -- writing (the recorder's thread) ----------------------------------------
    def fits(self, length: int) -> bool:
        return self.bytes + self.refused_bytes + length <= self.max_bytes

    def append(self, seq: int, raw: bytes, seal_ns: int, epoch: int) -> bool:
        """Append and fsync one frame; False when the size limit forbids it."""
        with self.cond:
            if not self.fits(len(raw)):
                return False
            if self._fd is None or self._active_size >= self.segment_bytes:
                self._open_active(self.dir / f"seg-{seq:016d}.fxs")
                dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dfd)
                os.close(dfd)
            assert self._fd is not None and self._active is not None
            off = self._active_size
            try:
                view, done = memoryview(raw), 0
                while done < len(raw):  # a nearly full disk writes short before it refuses
                    done += os.write(self._fd, view[done:])
                os.fsync(self._fd)
            except OSError:
                # a torn frame would shift every later one; the writer keeps and retries the batch
                os.ftruncate(self._fd, off)
                raise
            self._active_size += len(raw)
            self.entries.append(SpoolEntry(seq, self._active, off, len(raw), seal_ns))
            self.bytes += len(raw)
            self.frames_spooled += 1
            self.last_hash = frame_hash(raw)
            self.last_seal_ns, self.last_epoch = seal_ns, epoch
            self.cond.notify_all()
            return True

    # -- shipping (the shipper's thread) ----------------------------------------
    def pending(self, after: int, limit: int) -> list[SpoolEntry]:
        """Up to ``limit`` entries with seq > after (and > acked)."""
        with self.cond:
            lo = max(after, self.acked)
            out = []
            for e in self.entries:  # short list: only unacked frames and the last segment
                if e.seq > lo and e.seq not in self.refused:
                    out.append(e)
                    if len(out) >= limit:
                        break
            return out

    def read(self, e: SpoolEntry) -> bytes:
        with open(e.segment, "rb") as f:
            f.seek(e.offset)
            return f.read(e.length)

    def ack(self, seq: int) -> None:
        with self.cond:
            if seq <= self.acked:
                return
            self.frames_acked += sum(1 for e in self.entries
                                     if self.acked < e.seq <= seq and e.seq not in self.refused)
            self.acked = seq
            self._acked_dirty = True
            self._drop_acked_segments()
            self.cond.notify_all()

    def _drop_acked_segments(self) -> None:
        by_seg: dict[Path, int] = {}
        for e in self.entries:
            by_seg[e.segment] = e.seq
        for seg, last in by_seg.items():
            if seg != self._active and last <= self.acked:
                size = sum(e.length for e in self.entries if e.segment == seg)
                seg.unlink(missing_ok=True)
                self.bytes -= size
                self.entries = [e for e in self.entries if e.segment != seg]
        # entries of the active segment that are acked stay listed (the chain head lives
        # there) but need not be resent; pending() skips them.

    def refuse(self, seq: int, reason: str, server: str = "") -> bool:
        """The log host refused frame ``seq`` for good: keep it aside with why, move on.

        The log host answers in order, so every frame before ``seq`` is acked or refused by
        now: the watermark moves past it, and the segment holding it may go once the rest
        is acked, because the frame itself is copied into ``refused/`` first (fsynced).
        Returns False for a sequence this spool does not hold (nothing is recorded).
        """
        with self.cond:
            entry = next((e for e in self.entries if e.seq == seq), None)
            if entry is None or seq in self.refused:
                return False
            raw = self.read(entry)
        rdir = self.dir / "refused"
        rdir.mkdir(mode=0o700, exist_ok=True)
        write_atomic(rdir / f"seq-{seq:016d}.fxs", raw)
        record = {"seq": seq, "reason": reason, "refused_ns": time.time_ns(), "server": server,
                  "sealed_ns": entry.seal_ns, "bytes": len(raw), "stream": self.stream.hex()}
        write_atomic(rdir / f"seq-{seq:016d}.json", json.dumps(record).encode())
        with self.cond:
            self.refused.add(seq)
            self.refused_bytes += len(raw)
            if all(e.seq in self.refused for e in self.entries if self.acked < e.seq <= seq):
                self.acked = seq  # only over a run of refusals: never over a frame still unanswered
                self._acked_dirty = True
                self._drop_acked_segments()
            self.cond.notify_all()
        return True

    def unacked(self) -> int:
        with self.cond:
            return sum(1 for e in self.entries if e.seq > self.acked and e.seq not in self.refused)

    def oldest_unacked_ns(self) -> int | None:
        """Sealing time of the oldest frame the log host has not acknowledged (shipping lag)."""
        with self.cond:
            for e in self.entries:
                if e.seq > self.acked and e.seq not in self.refused:
                    return e.seal_ns
            return None

    def write_status(self, status: dict[str, Any], durable: bool = False) -> None:
        """Replace status.json (``forensix agent-status``). A running agent's every few seconds is
        a snapshot, rewritten soon: renamed into place, not fsynced (two fsyncs of the file and
        the directory were most of the status thread's ~0.2 ms of CPU a second); ``durable``:
        the stop's. A power loss may leave it empty: agent-status says to wait for the rewrite."""
        data = json.dumps(status, indent=1).encode()
        if durable:
            write_atomic(self.dir / "status.json", data)
            return
        tmp = self.dir / f".status.json.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / "status.json")

    def save_acked(self) -> None:
        with self._save:
            with self.cond:
                if not self._acked_dirty:
                    return
                self._acked_dirty = False
                acked = self.acked
            write_atomic(self.dir / "acked", str(acked).encode())

    def close(self, *, clean: bool) -> None:
        self._acked_dirty = True
        self.save_acked()
        with self.cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if clean:
            write_atomic(self.dir / "clean", b"")
