"""What one host may cost the log host, and the record of what the log host refused.

A fleet's log host must survive an agent that is broken or in an intruder's hands: one
host may hold only so many connections and streams, keep only so many evidence bytes, and
the disk keeps a floor of free space. Each refusal is logged, counted in the metrics, and
written into the evidence (``EVIDENCE/refusals.jsonl``, one line per refusal naming the host,
append-only, fsynced: a host directory would need the host's seal key) and the
store (an ``alerts`` row, rule ``forensix-host-refused``), so an investigator sees that a
host was cut off, and why, beside its record. A host that repeats the same offence is
written once per ``interval_s`` with the count of repeats, never once per attempt: a
refusal must not become the way to fill the disk.

A *frame* refused for good is the exception: each distinct one gets its own line, naming
its stream, sequence, hash and previous hash, so ``forensix verify`` can report it as what it
is (a completeness fact, not a break of the chain). Those lines count against the host's
evidence quota; a host over its quota gets them coalesced like any other refusal. A line
that names a frame is signed with the checkpoint key (``refusal_message``), as checkpoints
are: whoever edits the file to pass a deleted frame off as refused needs that key.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent.frame import Frame, frame_hash
from forensix.store import schema

__all__ = ["REFUSED_RULE", "Broadcast", "HostLimits", "RefusalLog", "evidence_bytes", "free_bytes",
           "read_refusals", "refusal_message"]

log = logging.getLogger("forensix.server")

REFUSED_RULE = "forensix-host-refused"

# How serious each kind of refusal is, for the alert: a revoked or forging host is an
# incident; a host over its limits may just be busy or misconfigured.
_LEVEL = {"revoked": "high", "identity": "high", "frame": "high", "protocol": "medium",
          "connections": "medium", "streams": "medium", "quota": "medium", "disk": "high",
          "clock": "medium", "refusals": "high", "evidence": "high"}


@dataclass
class HostLimits:
    """Per-host caps (and the disk's floor); 0 means no limit."""

    connections: int = 4  # concurrent connections of one host (a new one on the same stream replaces the old)
    streams: int = 32  # streams (spool directories) one host may have on the log host
    evidence_bytes: int = 50 << 30  # bytes of evidence one host may keep on the log host
    min_free_bytes: int = 1 << 30  # refuse frames when the evidence file system has less free
    refused_frames: int = 64  # refused frames on one connection before it is closed
    evidence_attempts: int = 3  # failed evidence writes of one frame before it is refused for good


def evidence_bytes(host_dir: Path) -> int:
    total = 0
    for seg in host_dir.glob("*/seg-*.fxe"):
        try:
            total += seg.stat().st_size
        except FileNotFoundError:
            continue
    return total


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def refusal_message(line: dict[str, Any]) -> bytes:
    """What the log host signs of a refusal line: every field but the signature, canonically."""
    body = {k: v for k, v in line.items() if k != "sig"}
    return b"forensix-refusal/1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def read_refusals(evidence: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(line number, record or None when unreadable) of ``EVIDENCE/refusals.jsonl``."""
    path = evidence / "refusals.jsonl"
    if not path.exists():
        return []
    out: list[tuple[int, dict[str, Any] | None]] = []
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            rec = json.loads(text)
            out.append((n, rec if isinstance(rec, dict) else None))
        except ValueError:
            out.append((n, None))
    return out


class RefusalLog:
    """Writes refusals into the evidence and the store, coalescing repeats."""

    def __init__(self, evidence: Path, store_alert: Any, interval_s: float = 10.0,
                 key: ed25519.Ed25519PrivateKey | None = None) -> None:
        self.evidence = evidence
        self.store_alert = store_alert  # Ingestor.batch-like: (table, pa.Table) -> None
        self.interval_s = interval_s
        self.key = key
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (host, kind) -> (written at, repeats since)
        self._frames: set[tuple[str, str, int]] = set()  # (host, stream, seq) written since start
        # Bytes of per-frame lines per host: they count against the host's evidence quota.
        self.host_bytes: dict[str, int] = {}
        for _, rec in read_refusals(evidence):
            if rec and rec.get("each") and isinstance(rec.get("host"), str):
                self.host_bytes[rec["host"]] = self.host_bytes.get(rec["host"], 0) + len(json.dumps(rec)) + 1

    def record(self, host: str, kind: str, reason: str, peer: str, *, stream: str = "",
               seq: int | None = None, info: dict[str, Any] | None = None, frame: Frame | None = None,
               final: bool = False, each: bool = False) -> bool:
        """Returns whether a line was written (False: counted as a repeat of the last one).

        ``frame``: the frame refused (or on its way); ``final``: refused for good (``R``, never
        re-sent), else the agent keeps it and sends it again; ``each``: write a line for this
        frame even if the same kind was written a moment ago (once per frame).
        """
        now = time.monotonic()
        if frame is not None:
            seq = frame.seq
        each = each and frame is not None and (host, stream, frame.seq) not in self._frames \
            and len(self._frames) < 100_000
        with self._lock:
            last, repeats = self._last.get((host, kind), (-1e18, 0))
            coalesced = now - last < self.interval_s
            if coalesced:  # the alert row waits for the interval; a frame's own line does not
                self._last[(host, kind)] = (last, repeats + 1)
                if not each:
                    return False
            else:
                self._last[(host, kind)] = (now, 0)
        ts = time.time_ns()
        line: dict[str, Any] = {"ts": ts, "host": host, "kind": kind, "reason": reason, "peer": peer,
                                "stream": stream, "seq": seq, "repeats_before": repeats}
        if frame is not None:
            line.update(final=final, each=each, hash=frame_hash(frame.raw).hex(), prev=frame.prev.hex(),
                        epoch=frame.epoch, seal_ns=frame.seal_ns, table=frame.table, rows=frame.rows,
                        bytes=len(frame.raw))
            if self.key is not None:
                line["sig"] = base64.b64encode(self.key.sign(refusal_message(line))).decode()
        try:
            n = self._append(line)
            if each:
                with self._lock:
                    self._frames.add((host, stream, seq or 0))
                    self.host_bytes[host] = self.host_bytes.get(host, 0) + n
        except OSError as e:  # the disk may be the very problem: the log line and metrics remain
            log.error("cannot write the refusal of %s into the evidence: %s", host, e)
        if coalesced:
            return True
        self._alert(host, kind, reason, peer, ts, repeats, info or {})
        return True

    def _append(self, line: dict[str, Any]) -> int:
        data = (json.dumps(line) + "\n").encode()
        fd = os.open(self.evidence / "refusals.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(data)

    def _alert(self, host: str, kind: str, reason: str, peer: str, ts: int, repeats: int,
               info: dict[str, Any]) -> None:
        more = f" ({repeats} more since the last record)" if repeats else ""
        row = {
            "host_id": str(info.get("host_id") or host), "host_name": host,
            "boot_id": str(info.get("boot_id") or "unknown"), "alert_id": uuid.uuid4().hex,
            "ts": ts, "detected_ts": ts, "rule_id": REFUSED_RULE,
            "rule_title": f"Log host refused {host}: {kind}", "rule_level": _LEVEL.get(kind, "medium"),
            "tags": ["forensix.agent", f"forensix.refused.{kind}"],
            "summary": f"{reason} (from {peer}){more}", "source": "builtin",
        }
        try:
            self.store_alert("alerts", pa.Table.from_pylist([row], schema=schema.ALERTS))
        except Exception as e:  # noqa: BLE001 - the store is derived data; the evidence line stands
            log.error("cannot store the refusal alert of %s: %s", host, e)


class Broadcast:
    """Wakes every connection thread waiting in ``select`` at once, with one pipe for all.

    A thread takes ``fd()`` *before* it checks whether it has been told to stop, then waits
    on its socket and that fd. ``fire()`` (after marking the threads it concerns) writes to
    the current pipe and leaves it readable, so every wait on it ends, and puts a new pipe
    in its place for the waits that follow. Old pipes are closed a few seconds later, when
    no thread can still be about to wait on them. No thread polls: an idle connection costs
    nothing until its host speaks, is revoked, or the log host stops.
    """

    GRACE_S = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = os.pipe()
        self._retired: list[tuple[float, tuple[int, int]]] = []
        self._closed = False

    def fd(self) -> int:
        return self._current[0]

    def fire(self) -> None:
        with self._lock:
            if self._closed:
                return
            old, self._current = self._current, os.pipe()
            os.write(old[1], b"!")
            now = time.monotonic()
            keep = []
            for t, (r, w) in self._retired:
                if now - t > self.GRACE_S:
                    os.close(r)
                    os.close(w)
                else:
                    keep.append((t, (r, w)))
            self._retired = [*keep, (now, old)]

    def close(self) -> None:
        """After the threads that wait have ended (the log host's stop). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _, (r, w) in [*self._retired, (0.0, self._current)]:
                os.close(r)
                os.close(w)
            self._retired = []
