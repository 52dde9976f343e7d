"""The recorder's writer thread: decoded batches to the sinks, in order, with back-pressure."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from forensix.agent.sink import Sink
from forensix.threadname import name_native_thread

__all__ = ["QUEUE_BYTES", "BatchWriter"]

# Bytes of decoded batches that may wait for the writer. Past it the drainer stops taking the
# main and network rings: their records wait in the kernel's ring, ~5-10x smaller there than
# decoded into Arrow columns, and what the ring cannot hold is counted as a gap. Without it,
# ~19k events/s faster than the sinks took them grew the recorder to 500-640 MB.
QUEUE_BYTES = 48 << 20


class BatchWriter(threading.Thread):
    """Hands batches to the sinks, in order.

    Back-pressure applies to bulk batches (the main ring) only: the drainer stops
    taking the main ring while ``depth`` bulk batches, or ``max_bytes`` of batches of
    any kind, wait, so the kernel ring fills and counts its drops. Process lifecycle
    batches are always taken: a storm of file events must not hold the process ring in
    the kernel until it overflows.
    """

    def __init__(self, sinks: Sequence[Sink], depth: int, max_bytes: int = QUEUE_BYTES) -> None:
        super().__init__(name="fx-writer", daemon=True)
        self.sinks = list(sinks)
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
                    for s in self.sinks:
                        s.write(table, data)
                for fn in after:  # e.g. give the kernel's ring space back: the records are stored
                    fn()
            except BaseException as e:  # noqa: BLE001 - surfaced to the recorder
                self.error = e
                return
            finally:
                self.cpu_s = time.thread_time()

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
