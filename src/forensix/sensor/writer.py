"""The recorder's writer thread: decoded batches to the sinks, in order, with back-pressure."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from forensix.agent.sink import Sink, is_evidence, sink_name
from forensix.errors import ForensixError, SensorError
from forensix.threadname import name_native_thread

__all__ = ["EVIDENCE_RETRY_S", "QUEUE_BYTES", "BatchWriter"]

log = logging.getLogger("forensix.recorder")

# How long an evidence sink (the store, the spool) may refuse a batch before the recorder
# stops with the cause. Meanwhile the batch is kept and retried, the drainer holds off and
# the kernel's ring holds the records (what it cannot hold is a counted gap): a full disk
# freed within this loses nothing. Past it, recording on would only count everything lost.
EVIDENCE_RETRY_S = 300.0
_BACKOFF_MAX_S = 2.0

# Bytes of decoded batches that may wait for the writer. Past it the drainer stops taking the
# main ring: its records wait in the kernel's ring, ~5-10x smaller there than decoded into
# Arrow columns, and what the ring cannot hold is counted as a gap (the network ring's go to
# the agent's bounded hold meanwhile, raw: sensor/hold.py). Without it, ~19k events/s faster
# than the sinks took them grew the recorder to 500-640 MB.
QUEUE_BYTES = 48 << 20


class BatchWriter(threading.Thread):
    """Hands batches to the sinks, in order.

    Back-pressure applies to bulk batches (the main ring) only: the drainer stops
    taking the main ring while ``depth`` bulk batches, or ``max_bytes`` of batches of
    any kind, wait, so the kernel ring fills and counts its drops. Process lifecycle
    batches are always taken: a storm of file events must not hold the process ring in
    the kernel until it overflows.
    """

    def __init__(self, sinks: Sequence[Sink], depth: int, max_bytes: int = QUEUE_BYTES,
                 on_warning: Callable[[str], None] = lambda msg: None,
                 evidence_retry_s: float = EVIDENCE_RETRY_S) -> None:
        """``on_warning``: puts a warning into the record (an agent event); called on this
        thread, once per failing sink or cause. ``evidence_retry_s``: see EVIDENCE_RETRY_S."""
        super().__init__(name="fx-writer", daemon=True)
        self.sinks = list(sinks)
        self.disabled: dict[str, str] = {}  # sink name -> why: non-evidence sinks that raised
        self.on_warning = on_warning
        self.evidence_retry_s = evidence_retry_s
        self.evidence_stalls = 0  # times an evidence sink refused a batch that was then kept
        self._said: set[str] = set()
        # (table, rows, bulk), or ("", callback, False): run once everything before it is written
        self.q: queue.Queue[tuple[str, Any, bool, int] | None] = queue.Queue()
        self.depth = depth
        self.max_bytes = max_bytes
        self._bulk = 0
        self._bytes = 0  # of the batches queued
        self.peak_bytes = 0
        self.largest_put = 0  # bytes of the largest single batch
        self.full_waits = 0  # times the drainer found no room (back-pressure, for tests and stats)
        self._room = threading.Condition()
        self.error: BaseException | None = None
        self.coalesce_rows = 200_000
        self.cpu_s = 0.0  # this thread's CPU time, updated after every batch

    def backlog(self) -> float:
        """How full the queue is, as a fraction of the room the drainer waits at."""
        return max(self._bulk / self.depth if self.depth else 0.0, self._bytes / self.max_bytes if self.max_bytes else 0.0)

    def has_room(self) -> bool:
        return self._bulk < self.depth and self._bytes < self.max_bytes

    def wait_for_room(self, timeout: float) -> bool:
        with self._room:
            if not self.has_room():
                self.full_waits += 1
            return self._room.wait_for(self.has_room, timeout)

    def _taken(self, bulk: bool, nbytes: int) -> None:
        with self._room:
            self._bulk -= bulk
            self._bytes -= nbytes
            self._room.notify_all()

    def run(self) -> None:
        name_native_thread()
        done = False
        while not done:
            item = self.q.get()
            if item is None:
                return
            # Under load, coalesce what is already queued: one large append is much
            # cheaper than many small ones. When idle, a batch goes out at once.
            pending: dict[str, list[pa.Table]] = {}
            after: list[Callable[[], None]] = []
            rows = 0
            while True:
                if item[0]:
                    pending.setdefault(item[0], []).append(item[1])
                    rows += item[1].num_rows
                else:
                    after.append(item[1])
                self._taken(item[2], item[3])
                if rows >= self.coalesce_rows:
                    break
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                item = nxt
            try:
                for table, parts in pending.items():
                    data = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                    for s in self.live_sinks():
                        self._write(s, table, data)
                for fn in after:  # e.g. give the kernel's ring space back: the records are stored
                    self._when_durable(fn)
            except BaseException as e:  # noqa: BLE001 - surfaced to the recorder
                self.error = e
                return
            finally:
                self.cpu_s = time.thread_time()

    def _when_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every live sink holds what it was given: at once, or, for a sink
        that joins batches before it writes them (the agent's spool, ``when_durable``), once
        it wrote them. Ring space given back earlier was lost with a killed agent."""
        waits = [s for s in self.live_sinks() if hasattr(s, "when_durable")]
        if not waits:
            fn()
            return
        left = [len(waits)]
        lock = threading.Lock()

        def one() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                fn()

        for s in waits:
            s.when_durable(one)

    def live_sinks(self) -> list[Sink]:
        """The sinks still written to (a non-evidence sink that raised is not)."""
        return [s for s in self.sinks if sink_name(s) not in self.disabled]

    def end_sinks(self) -> None:
        """Flush, then close, the live sinks (after ``finish``): the store's failure is the
        recording's; another's is only logged (the record is closed by then)."""
        live = self.live_sinks()
        for step in ("flush", "close"):
            for s in live:
                if is_evidence(s):
                    getattr(s, step)()
                    continue
                try:
                    getattr(s, step)()
                except Exception as e:  # a metrics or rules sink must not keep the store open
                    log.error("sink %s failed to %s: %s", sink_name(s), step, e)
                    log.debug("the sink's traceback", exc_info=e)

    def _write(self, s: Sink, table: str, data: pa.Table) -> None:
        if is_evidence(s):
            self._write_evidence(s, table, data)
            return
        try:
            s.write(table, data)
        except Exception as e:  # one consumer's bug must not stop the recording
            name = sink_name(s)
            why = _cause(e)
            self.disabled[name] = why
            msg = (f"sink {name} failed on a {table} batch and is disabled; recording goes on "
                   f"without it: {why}; fix: restart the recorder to use it again (--log-level debug logs "
                   "the traceback, for a bug report)")
            log.error("%s", msg)
            log.debug("the sink's traceback", exc_info=e)  # the user sees the cause, a bug report the trace
            self.on_warning(msg)

    def _write_evidence(self, s: Sink, table: str, data: pa.Table) -> None:
        """Keep the batch and retry with back-off: the rings wait meanwhile, and the records
        they held are released only once written. Stop the recording past the bound."""
        first = 0.0
        pause = 0.05
        why = ""
        while True:
            try:
                s.write(table, data)
            except Exception as e:  # kept and retried, or the recording stops naming it
                now = time.monotonic()
                why = _cause(e)
                if not first:
                    first = now
                    self.evidence_stalls += 1
                    log.error("%s cannot take a %s batch; kept, retrying, the kernel ring holds new records "
                              "meanwhile (recording stops if this lasts %.0f s): %s",
                              sink_name(s), table, self.evidence_retry_s, why)
                if now - first >= self.evidence_retry_s:
                    raise SensorError(
                        f"recording stopped: {sink_name(s)} refused batches for {now - first:.0f} s: {why}",
                        _hint(e) or "fix the cause above and record again; everything before it is stored") from e
                time.sleep(pause)
                pause = min(pause * 2, _BACKOFF_MAX_S)
                continue
            if first:
                took = time.monotonic() - first
                msg = (f"{sink_name(s)} refused batches for {took:.1f} s ({why}); they were kept and "
                       f"retried, nothing was lost but what gap records count")
                log.warning("%s", msg)
                if why not in self._said:  # a disk that fills again and again: said once per cause
                    self._said.add(why)
                    self.on_warning(msg)
            return

    def after_written(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the writer thread once every batch put before it is written."""
        if self.error is not None:
            raise self.error
        self.q.put(("", fn, False, 0))

    def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        """Queue a batch; never blocks (the drainer asks ``has_room`` before it takes a bulk ring)."""
        if self.error is not None:
            raise self.error
        nbytes = int(data.nbytes)
        with self._room:
            self._bulk += bulk
            self._bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self.largest_put = max(self.largest_put, nbytes)
        self.q.put((table, data, bulk, nbytes))

    def finish(self) -> None:
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def _cause(e: BaseException) -> str:
    """The error's own words with its fix (a ForensixError's hint), on one line."""
    if isinstance(e, ForensixError):
        return f"{e.message} (fix: {e.hint})" if e.hint else e.message
    return f"{type(e).__name__}: {e}"


def _hint(e: BaseException) -> str | None:
    return e.hint if isinstance(e, ForensixError) else None
