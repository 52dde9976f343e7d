"""From verified frames to the store: batches, agent start/stop events, silence alerts."""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from forensix.agent.frame import FrameError
from forensix.agent.sink import Sink
from forensix.server.ledger import SHARED_TABLES, IngestLedger
from forensix.server.quarantine import is_transient
from forensix.server.rawdecode import Decoded
from forensix.store import schema
from forensix.store.base import Writer

__all__ = ["SILENT_RULE", "Ingestor", "frame_key"]

SILENT_RULE = "forensix-agent-silent"


def _one(sch: pa.Schema, row: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([row], schema=sch)


class Mark(Protocol):
    def set_ingested(self, seq: int) -> None: ...


class _NoMark:
    """Rows that belong to no frame (agent start/stop, gaps, silence alerts)."""

    def set_ingested(self, seq: int) -> None:
        pass


_NO_MARK = _NoMark()


def frame_key(mark: object, seq: int) -> str | None:
    """``host/stream/seq``: the identity of a frame, for stores that de-duplicate by it."""
    host, stream = getattr(mark, "host", None), getattr(mark, "stream", None)
    return f"{host}/{stream}/{seq}" if host is not None and stream is not None else None


# A store append has a fixed cost (about 11 ms in DuckDB here) whatever its size, so the
# ingest thread joins the frames that are waiting into appends of up to this many rows.
COALESCE_ROWS = 20_000
# a failed append is retried after 0.1 s, then after twice as long each time, up to 5 s
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


# A test seam (forensix.testing.crash): the server dies as by kill -9 right after the store
# commit of its N-th group of frames, before the ingested marks move.
_CRASH_AFTER_STORE: int | None = (int(os.environ["FORENSIX_TEST_CRASH_AFTER_STORE"])
                                  if os.environ.get("FORENSIX_TEST_CRASH_AFTER_STORE") else None)
_stored_groups = 0


def _crash_after_store() -> None:
    global _stored_groups
    _stored_groups += 1
    if _stored_groups >= (_CRASH_AFTER_STORE or 0):
        os._exit(CRASH_EXIT)


CRASH_EXIT = 86

# A test seam (forensix.testing.crash): the ingest thread stops for good between two tables of
# one raw frame (the first appended and synced), and writes this file to say so: the test then
# kills the server with SIGKILL, half of the frame's tables in the store.
_PAUSE_BETWEEN_TABLES: str | None = os.environ.get("FORENSIX_TEST_PAUSE_BETWEEN_TABLES") or None


def _pause_between_tables(store: Writer) -> None:
    sync = getattr(store, "sync", None)
    if sync is not None:
        sync()
    assert _PAUSE_BETWEEN_TABLES is not None
    with open(_PAUSE_BETWEEN_TABLES, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(3600)


# (table, rows or a raw frame's decoded tables, the stream's mark, the frame's seq)
_Item = tuple[str, "pa.Table | Decoded", Mark, int]


def _expanded(items: list[_Item]) -> list[_Item]:
    """A raw frame's item (its ``Decoded`` tables, server/rawdecode.py) as one item per table:
    they are appended in the same group, so its mark moves once all of them are stored."""
    out: list[_Item] = []
    for table, data, mark, seq in items:
        if isinstance(data, Decoded):
            out += [(t, d, mark, seq) for t, d in data.joined()]
        else:
            out.append((table, data, mark, seq))
    return out


class Ingestor:
    """Appends to the store on one thread, coalescing waiting batches into larger appends.

    Frames reach it after their durable write to evidence (and their ack): the store is
    derived data, rebuilt from evidence after a crash (``ingested`` marks per stream). The
    bounded queue is the back-pressure point: when it is full, connections stop reading
    and agents keep spooling.
    """

    def __init__(self, store: Writer, depth: int = 64, live: Sink | None = None, attempts: int = 3) -> None:
        self.store = store
        # a frame the store refuses this many times (not a transient failure) is quarantined
        # (0: retried for ever); ``on_quarantine(table, mark, seq, error, attempts)`` records it
        self.attempts = attempts
        self.on_quarantine: Callable[[str, Mark, int, BaseException, int], None] | None = None
        self.on_error: Callable[[BaseException, bool], None] | None = None  # (error, transient): metrics
        self.ledger: IngestLedger | None = None  # a store without frame keys (DuckDB): intents, see ledger
        self.live = live  # the live rule engine: sees every batch once it is stored
        self.lock = threading.Lock()
        self.rows = 0
        self.error: BaseException | None = None  # the last failed append (the server logs it)
        self.failures = 0  # failed appends, each retried
        self._closing = threading.Event()
        self._given_up = False  # a group failed while closing: the rest waits for the next start
        self.on_append: Callable[[str, int, float], None] | None = None  # (table, rows, seconds): metrics
        # a store may ask for larger appends than COALESCE_ROWS, and to wait for them a
        # little (ClickHouse: each INSERT writes a part of every column and merges it later)
        self.coalesce_rows = int(getattr(store, "coalesce_rows", COALESCE_ROWS))
        self.coalesce_wait_s = float(getattr(store, "coalesce_wait_s", 0.0))
        self._q: queue.Queue[_Item | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="fx-ingest", daemon=True)
        self._thread.start()

    def submit(self, table: str, data: pa.Table | Decoded, mark: Mark, seq: int) -> None:
        self._q.put((table, data, mark, seq))

    def queued(self) -> int:
        return self._q.qsize()

    def flush(self) -> None:
        """Wait until every submitted batch is in the store."""
        self._q.join()

    def close(self) -> None:
        """Append what is queued; a group that fails now is not retried (evidence keeps it)."""
        self._closing.set()
        self._q.put(None)
        self._thread.join()
        if self.ledger is not None:
            self.ledger.close()
        if self.live is not None:
            self.live.flush()
            self.live.close()

    def _run(self) -> None:
        done = False
        while not done:
            item = self._q.get()
            if item is None:
                return
            items = [item]
            rows = item[1].num_rows
            until = time.monotonic() + self.coalesce_wait_s
            while rows < self.coalesce_rows:
                try:
                    wait = until - time.monotonic()
                    nxt = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                items.append(nxt)
                rows += nxt[1].num_rows
            try:
                if not self._given_up:
                    self._append_until_stored(items)
            finally:
                for _ in items:
                    self._q.task_done()

    def _append_until_stored(self, items: list[_Item]) -> None:
        """Append a group, retrying it (with back-off) until it is stored, quarantined, or the
        ingestor closes.

        The ``ingested`` marks advance only over frames that are in the store or quarantined
        (recorded as set aside, in the evidence): a failed group is never skipped for the next
        one (that would move a stream's mark past frames the store lacks, which no start would
        re-ingest). A transient failure (the store away) is retried for ever: every host's rows
        would fail alike, the queue fills and agents keep spooling. A failure the store will
        repeat (it refuses these rows) splits the group into its frames, so that one bad frame
        does not keep the others out, and a frame refused ``attempts`` times is quarantined:
        the other hosts' ingest goes on. Once a group fails while closing, nothing after it is
        appended either, so each mark stays below every frame missing from the store: they
        are all re-ingested from evidence at the next start.
        """
        stored: set[str] = set()  # tables of the group already appended: a retry does not append them twice
        wait = RETRY_FIRST_S
        refused = 0  # failures that are not transient
        while True:
            try:
                self._append_group(items, stored)
                return
            except Exception as e:  # noqa: BLE001 - kept in evidence, logged by the server, retried
                self.error = e
                self.failures += 1
                transient = is_transient(e)
                if self.on_error is not None:
                    self.on_error(e, transient)
                if not transient:
                    if len(items) > 1:
                        self._one_by_one(items, stored)
                        return
                    refused += 1
                    if self.attempts and refused >= self.attempts and self._set_aside(items[0], e, refused):
                        return
                if self._closing.wait(wait):
                    self._given_up = True
                    return
                wait = min(wait * 2, RETRY_MAX_S)

    def _set_aside(self, item: _Item, err: BaseException, attempts: int) -> bool:
        """Quarantine one frame and move its stream's mark past it; False when it could not be
        recorded (then it is retried, and its mark waits)."""
        table, _, mark, seq = item
        if self.on_quarantine is not None:
            try:
                self.on_quarantine(table, mark, seq, err, attempts)
            except Exception:  # noqa: BLE001 - logged by on_quarantine; retried like the append
                return False
        mark.set_ingested(seq)
        return True

    def _one_by_one(self, items: list[_Item], stored: set[str]) -> None:
        """Each frame of a group on its own, in order (a stream's mark never passes a frame the
        store lacks); frames whose table the group already appended are marked only."""
        for item in items:
            if self._given_up:
                return
            if item[0] in stored:
                self._append_group([item], {item[0]})
            else:
                self._append_until_stored([item])

    def _append_group(self, items: list[_Item], stored: set[str]) -> None:
        marked = items
        items = _expanded(items)
        by_table: dict[str, list[tuple[str | None, pa.Table]]] = {}
        for table, data, mark, seq in items:
            by_table.setdefault(table, []).append((frame_key(mark, seq), data))
        framed = [(str(getattr(m, "host", "")), str(getattr(m, "stream", "")), seq, table) for table, _, m, seq in items
                  if frame_key(m, seq) is not None]
        if self.ledger is not None and framed:
            adds = {t: sum(d.num_rows for _, d in parts) for t, parts in by_table.items()}
            with self.lock:
                self.ledger.before(framed, adds, stored, {t: [d for _, d in by_table[t]] for t in
                                                          by_table.keys() & SHARED_TABLES})
        halves = [{n for n, _ in d.tables} for _, d, _, _ in marked if isinstance(d, Decoded)] \
            if _PAUSE_BETWEEN_TABLES else []
        for table, parts in by_table.items():
            if table not in stored:
                self._append(table, parts)
                stored.add(table)
                if any(h & stored and h - stored for h in halves):
                    _pause_between_tables(self.store)
        sync = getattr(self.store, "sync", None)  # DuckDB's journals: durable before the marks move
        if sync is not None:
            with self.lock:
                sync()
        if _CRASH_AFTER_STORE is not None and any(m is not _NO_MARK for _, _, m, _ in items):
            _crash_after_store()
        marks: dict[int, tuple[Mark, int]] = {}
        for _, _, mark, seq in marked:  # a raw frame that decoded to no rows is marked too
            marks[id(mark)] = (mark, seq)
        for mark, seq in marks.values():
            mark.set_ingested(seq)
        if self.ledger is not None and framed:
            self.ledger.done()

    def check_origin(self, host: str, data: pa.Table) -> None:
        """Each host writes only its own rows (the certificate's name in ``host_name``)."""
        if "host_name" not in data.column_names or data.num_rows == 0:
            return
        col = data.column("host_name")
        ok = pc.all(pc.fill_null(pc.equal(col, pa.scalar(host)), False)).as_py()
        if not ok:
            others = pc.unique(col).to_pylist()[:3]
            raise FrameError(f"batch carries rows of other hosts {others} (certificate is for {host!r})")

    def batch(self, table: str, data: pa.Table, key: str | None = None) -> None:
        self._append(table, [(key, data)])

    def _append(self, table: str, parts: list[tuple[str | None, pa.Table]]) -> None:
        # a store that de-duplicates by frame (ClickHouse) gets each frame's key: a frame
        # re-ingested after a crash is stored once
        keyed = getattr(self.store, "append_frames", None)
        with self.lock:
            t0 = time.perf_counter()
            if keyed is not None:
                n = keyed(table, parts)
            else:
                datas = [d for _, d in parts]
                n = self.store.append(table, pa.concat_tables(datas) if len(datas) > 1 else datas[0])
            self.rows += n
            if self.ledger is not None:
                self.ledger.appended(table, n)
        if self.on_append is not None:
            self.on_append(table, n, time.perf_counter() - t0)
        if self.live is not None:
            for _, data in parts:
                self.live.write(table, data)

    def agent_event(self, host: str, hello: dict[str, Any], action: str, ts: int, message: str) -> None:
        row = {
            "host_id": str(hello.get("host_id") or host),
            "host_name": host,
            "boot_id": str(hello.get("boot_id") or "unknown"),
            "ts": ts,
            "event_kind": "state",
            "event_category": "agent",
            "event_action": action,
            "process_pid": int(hello["pid"]) if isinstance(hello.get("pid"), int) else None,
            "process_name": "forensix-agent",
            "message": message,
        }
        self.later("events", _one(schema.EVENTS, row))

    def later(self, table: str, data: pa.Table) -> None:
        # through the ingest queue, not on the caller's (connection) thread: a store that
        # waits for a shard to come back must not hold up an agent's hello or its acks
        self._q.put((table, data, _NO_MARK, 0))

    def gap(self, host: str, hello: dict[str, Any], ts_from: int, ts_to: int, count: int, reason: str,
            event_class: str) -> None:
        row = {
            "host_id": str(hello.get("host_id") or host), "host_name": host,
            "boot_id": str(hello.get("boot_id") or "unknown"), "ts_from": ts_from, "ts_to": ts_to,
            "cpu": -1, "event_class": event_class, "count": count, "reason": reason,
        }
        self.later("gaps", _one(schema.GAPS, row))

    def silent_alert(self, host: str, info: dict[str, Any], last_seen: int, silence_s: float,
                     clean_stop: bool = False) -> None:
        # A clean stop is alerted too (with a milder level): an intruder can stop an agent cleanly.
        now = time.time_ns()
        how = "after a clean stop" if clean_stop else "without a clean stop"
        row = {
            "host_id": str(info.get("host_id") or host), "host_name": host,
            "boot_id": str(info.get("boot_id") or "unknown"),
            "alert_id": uuid.uuid4().hex, "ts": last_seen, "detected_ts": now,
            "rule_id": SILENT_RULE, "rule_title": "Agent silent",
            "rule_level": "medium" if clean_stop else "high",
            "tags": ["forensix.agent"],
            "summary": (f"no message from {host} for {(now - last_seen) / 1e9:.0f} s {how} "
                        f"(limit {silence_s:g} s)"),
            "source": "builtin",
        }
        self.later("alerts", _one(schema.ALERTS, row))
