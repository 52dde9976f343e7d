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

__all__ = ["BatchWriter"]


class BatchWriter(threading.Thread):
    """Hands batches to the sinks, in order.

    Back-pressure applies to bulk batches (the main ring) only: the drainer stops
    taking the main ring while ``depth`` bulk batches wait, so the kernel ring fills
    and counts its drops. Process lifecycle batches are always taken: a storm of file
    events must not hold the process ring in the kernel until it overflows.
    """

    def __init__(self, sinks: Sequence[Sink], depth: int) -> None:
        super().__init__(name="fx-writer", daemon=True)
        self.sinks = list(sinks)
        # (table, rows, bulk), or ("", callback, False): run once everything before it is written
        self.q: queue.Queue[tuple[str, Any, bool] | None] = queue.Queue()
        self.depth = depth
        self._bulk = 0
        self._room = threading.Condition()
        self.error: BaseException | None = None
        self.coalesce_rows = 200_000
        self.cpu_s = 0.0  # this thread's CPU time, updated after every batch

    def has_room(self) -> bool:
        return self._bulk < self.depth

    def wait_for_room(self, timeout: float) -> bool:
        with self._room:
            return self._room.wait_for(self.has_room, timeout)

    def _taken(self, bulk: bool) -> None:
        if bulk:
            with self._room:
                self._bulk -= 1
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
                self._taken(item[2])
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
        self.q.put(("", fn, False))

    def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        if self.error is not None:
            raise self.error
        if bulk:
            with self._room:
                self._bulk += 1
        self.q.put((table, data, bulk))

    def finish(self) -> None:
        self.q.put(None)
        self.join()
        if self.error is not None:
            raise self.error
