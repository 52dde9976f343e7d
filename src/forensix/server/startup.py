"""The log host's start (frames in the evidence but not in the store go in) and the frames the
store refuses for good (quarantine.py): what ``LogServer`` does at start and when the ingest
thread gives up on a frame. Kept apart from the listener, which serves connections."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa

from forensix.agent.frame import (
    HEADER,
    RAW_FLAG,
    RAW_TABLE,
    SEED_FLAG,
    Frame,
    FrameError,
    decode_body,
)
from forensix.server.evidence import StreamLog, read_frame, walk_segment
from forensix.server.ingest import frame_key
from forensix.server.ledger import IngestLedger, committed_frames
from forensix.server.quarantine import (
    QUARANTINE_RULE,
    Quarantined,
    add_quarantine,
    is_transient,
    read_quarantine,
    store_fix,
    write_quarantine,
)
from forensix.server.rawdecode import StreamDecoder, checkpoint_seq
from forensix.store import schema

if TYPE_CHECKING:
    from forensix.server.listener import LogServer

__all__ = ["replay_and_load", "set_aside"]

log = logging.getLogger("forensix.server")


def replay_and_load(self: LogServer) -> None:
    """Frames durably written but not yet in the store (a crash between the two) go in now;
    with ``reingest``, the quarantined frames too. A frame the store refuses is quarantined
    (the start goes on); a store that is away fails the start."""
    from forensix.server.listener import _HostState  # the listener imports this module

    now = time.time_ns()
    store = self.ingest.store
    already: dict[tuple[str, str], dict[int, set[str]]] = {}
    if getattr(store, "append_frames", None) is None and hasattr(store, "query"):
        # DuckDB: a group committed just before a crash is not ingested twice (ledger)
        already = committed_frames(store, self.config.evidence)
        self.ingest.ledger = IngestLedger(store, self.config.evidence)
    for s in self.evidence.open_all():
        done = s.ingested()
        held = read_quarantine(s.dir)
        skip = already.get((s.host, s.stream), {})
        again = set(held) if self.config.reingest else set()
        raw = self.raw.get(s.host, s.stream)
        # the decoder as it was after frame ck: frames up to it are not decoded again. Usable only
        # if none of them is still to be stored (their rows need the state from before them):
        # the listener writes a checkpoint once the store holds its frame, but the ingested mark
        # is not fsynced, so after a power loss it may lag; then the stream is decoded from its start
        ck = checkpoint_seq(s.dir)
        # a seed (re)starts the decoder whatever came before it: the stored frames before the
        # newest stored seed need no decoding at all (an agent restarted on the same spool, or
        # a log host restarted after many, would otherwise decode the stream's whole history)
        seed = _newest_seed(s, done)
        if any(q < seed for q in again):  # those need the state from before them
            seed = -1
        if seed > ck:
            ck = -1
        else:
            ck = raw.restore(s.dir) if 0 <= ck <= done and not any(q <= ck for q in again) else -1
        upto = max(ck, seed - 1)  # frames up to it are passed over
        for seg in s.segments():
            with seg.open("rb") as heads:  # raw-ness of the frames passed over, read from their headers
                for off, seq, length in walk_segment(seg):
                    if seq <= upto and seq <= done and seq not in again:
                        continue
                    stored = seq <= done and seq not in again
                    part = skip.get(seq) if seq > done else None  # its tables an interrupted group stored
                    if stored or (seq in held and seq not in again) or (part is not None and not _is_raw(heads, off)):
                        # a raw frame already stored (or set aside) is decoded again without
                        # storing: the stream's decoder needs the state it left (rawdecode.py)
                        _dry_feed(raw, heads, seg, off, length, seq)
                        if not stored:
                            done = max(done, seq)
                        continue
                    try:
                        fr = read_frame(seg, off, length)
                        _batch(self, raw, fr, frame_key(s, seq), part or set())
                        if seq > s.ingested():  # each frame's mark at once: a crash now re-ingests none twice
                            s.set_ingested(seq)
                        if seq in held:
                            del held[seq]
                            log.info("quarantined frame %d of %s/%s re-ingested", seq, s.host, s.stream)
                    except FrameError as e:
                        log.error("cannot re-ingest %s offset %d: %s", seg, off, e.message)
                    except Exception as e:
                        if is_transient(e):
                            raise
                        if seq not in held:
                            self._quarantine(fr.table, s, seq, e, 1)
                        else:
                            log.error("quarantined frame %d of %s/%s still refused by the store: %s", seq,
                                      s.host, s.stream, e)
                    done = max(done, seq)
        if raw.rebuilt or raw.replayed or ck >= 0:
            log.info("decoder of %s/%s rebuilt from the evidence: %s, %d raw frame(s) decoded again without "
                     "storing, %d decoded and stored now (%.2f s of CPU)", s.host, s.stream,
                     f"checkpoint after frame {ck}" if ck >= 0 else
                     f"from the seed in frame {seed}" if seed >= 0 else "no checkpoint", raw.rebuilt, raw.replayed,
                     raw.cpu_s)
        if again:
            write_quarantine(s.dir, held)
        if done != s.ingested():
            s.set_ingested(done)
        self._held[(s.host, s.stream)] = len(held)
        s.checkpointed = s.last_seq  # what was there at start is covered by earlier checkpoints
    for hdir in self.config.evidence.iterdir():
        info_path = hdir / "agent.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            self.hosts[hdir.name] = _HostState(info=info, last_seen=now)


def _newest_seed(s: StreamLog, upto: int) -> int:
    """The last frame up to ``upto`` that carries a seed (read from the headers alone), or -1."""
    seed = -1
    for seg in s.segments():
        with seg.open("rb") as heads:
            for off, seq, _ in walk_segment(seg):
                if seq > upto:
                    return seed
                heads.seek(off)
                head = heads.read(HEADER.size)
                if len(head) == HEADER.size and HEADER.unpack(head)[7] & SEED_FLAG:
                    seed = seq
    return seed


def _is_raw(heads: BinaryIO, off: int) -> bool:
    """Whether the frame at ``off`` carries raw records (its header's flags, read alone)."""
    heads.seek(off)
    head = heads.read(HEADER.size)
    return len(head) == HEADER.size and bool(HEADER.unpack(head)[7] & RAW_FLAG)


def _dry_feed(raw: StreamDecoder, heads: BinaryIO, seg: Path, off: int, length: int, seq: int) -> None:
    if not _is_raw(heads, off):
        return
    try:
        raw.feed(decode_body(read_frame(seg, off, length)), seq)
        raw.rebuilt += 1
    except FrameError as e:  # was refused on receipt too, and never decoded
        log.error("cannot decode %s offset %d again: %s", seg, off, e.message)


def _batch(self: LogServer, raw: StreamDecoder, fr: Frame, key: str | None, held: set[str]) -> None:
    """Store a frame from the evidence; of a raw frame, the tables the store does not hold
    (``held``: a crash came between its tables, server/ledger.py)."""
    data = decode_body(fr)
    if fr.table != RAW_TABLE:
        self.ingest.batch(fr.table, data, key=key)
        return
    tables = raw.feed(data, fr.seq).joined()
    if held:
        log.info("raw frame %d of %s/%s was half in the store (%s): storing its %s", fr.seq, fr.host, raw.stream,
                 ", ".join(sorted(held)), ", ".join(t for t, _ in tables if t not in held) or "nothing more")
    raw.replayed += 1
    for table, t in tables:
        if table not in held:
            self.ingest.batch(table, t, key=key)


def set_aside(self: LogServer, table: str, mark: object, seq: int, err: BaseException, attempts: int) -> None:
    """A frame the store refuses for good: recorded beside its stream (before its mark moves
    past it), logged with the cause and the fix, counted, and alerted in the store."""
    cause = f"{type(err).__name__}: {err}"
    fix = store_fix(err)
    if not isinstance(mark, StreamLog):  # the log host's own rows (start, stop, gap, alert)
        log.error("the store refuses a %s row of the log host's own after %d attempt(s), dropped: %s. Fix: %s",
                  table, attempts, cause, fix)
        self.metrics.quarantined.labels("", table).inc()
        return
    host = mark.host
    try:
        add_quarantine(mark.dir, Quarantined(seq, table, cause, fix, time.time_ns(), attempts))
    except OSError as e:  # then the mark must not pass it either: kept for the next start
        log.error("cannot record quarantined frame %d of %s/%s: %s", seq, host, mark.stream, e)
        raise
    with self.hosts_lock:
        self._held[(host, mark.stream)] = self._held.get((host, mark.stream), 0) + 1
        info = dict(self.hosts[host].info) if host in self.hosts else {}
    self.metrics.quarantined.labels(host, table).inc()
    log.error("frame %d of %s (stream %s, table %s) not ingested after %d attempt(s), quarantined: %s; the "
              "evidence keeps it, the other hosts' ingest goes on. Fix: %s", seq, host, mark.stream, table,
              attempts, cause, fix)
    row = {
        "host_id": str(info.get("host_id") or host), "host_name": host,
        "boot_id": str(info.get("boot_id") or "unknown"), "alert_id": uuid.uuid4().hex,
        "ts": time.time_ns(), "detected_ts": time.time_ns(), "rule_id": QUARANTINE_RULE,
        "rule_title": f"Frame of {host} not ingested", "rule_level": "high",
        "tags": ["forensix.agent", "forensix.quarantine"],
        "summary": f"frame {seq} of {host} ({table}) not ingested: {cause}", "source": "builtin",
    }
    self.ingest.later("alerts", pa.Table.from_pylist([row], schema=schema.ALERTS))

