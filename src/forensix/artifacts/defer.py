"""Reading executed files later, at low priority, from descriptors opened at once.

Copying and hashing what an exec ran is most of preservation's cost on a build (cc1 is
33 MB, read again for every fresh store), and the drainer paid it inline, at the
workload's priority, while the build ran. What cannot wait is the opening: an open
descriptor (``/proc/PID/exe``, a ``map_files`` entry, the interpreter's fd on its script)
keeps the inode's content reachable after the process exits or the file is deleted. So the
collector opens at drain time and hands the descriptor to a ``Reader``: one thread at nice
19 that reads, hashes and copies it when a core is free (hashlib and os.pread release the
GIL on big buffers). Bounded: past ``max_jobs`` descriptors or ``max_bytes`` queued the
collector reads inline as before, and counts it.

Certainty is judged as for a read by path (collect.py ``_take``): the descriptor's
``fstat`` at drain time against the one after the read. A file written, truncated or
re-timed in between (mtime, size, or ctime with the link count unchanged: a deletion moves
ctime too, and does not touch the content) is kept as read and marked uncertain, with the
reason.

The rows that carry the hash (the exec events, the processes rows) must not go out without
it, and must not overtake what was emitted after them: ``HeldWriter`` holds a drain tick's
batch, and everything put after it, until its reads are done, in order (the ring space is
given back after the batch is written, as before: a callback is a held item too).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from forensix.artifacts.store import ArtifactStore, Put
from forensix.threadname import name_native_thread

__all__ = ["READ_NICE", "HeldWriter", "Job", "Later", "Reader", "modified_since_exec"]

READ_NICE = 19  # the workload first; the reads when a core is free
_STAT = ("st_mtime_ns", "st_size")


@dataclass(eq=False)
class Job:
    """One descriptor to read: opened at drain time, read by the ``Reader``."""

    fd: int
    st: os.stat_result  # at drain time
    by_path: bool  # opened by its path (the process was gone): the exec's time bounds mtime
    ts: int  # the exec's (or mapping's) time, UTC ns
    path: str | None
    how: str = "read by path after the process exited"  # how a read that is not the process's was made
    queued: float = field(default_factory=time.monotonic)
    put: Put | None = None
    done: threading.Event = field(default_factory=threading.Event)


def judge(job: Job, put: Put, after: os.stat_result) -> Put:
    """``put`` marked uncertain if the file changed between the drain and the read's end."""
    if put.sha256 is None:
        return put
    before = job.st
    changed = [k[3:] for k in _STAT if getattr(before, k) != getattr(after, k)]
    if before.st_ctime_ns != after.st_ctime_ns and before.st_nlink == after.st_nlink:
        changed.append("ctime")
    if changed:
        put.certain = False
        put.reason = (f"{job.path} changed ({', '.join(changed)}) after the exec was seen and before it was read: "
                      "the hash is of what was read")
    elif job.by_path:
        modified_since_exec(put, job.path, after.st_mtime_ns, job.ts, job.how)
    return put


def modified_since_exec(put: Put, path: str | None, mtime_ns: int, exec_ts: int,
                        how: str = "read by path after the process exited") -> Put:
    """A file read by its path after its process was gone, or through the exec-time hold
    (``how``; inline or later), is uncertain when it was written since the exec: what was
    read may not be what ran."""
    if put.sha256 is not None and mtime_ns > exec_ts:
        put.certain = False
        put.reason = f"{how}; {path} was modified after the exec"
    return put


class Reader:
    """The low-priority thread that reads the descriptors the collector opened."""

    def __init__(self, store: ArtifactStore, on_done: Callable[[], None] | None = None, *,
                 max_jobs: int = 256, max_bytes: int = 512 << 20, nice: int = READ_NICE) -> None:
        self.store = store
        self.on_done = on_done
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.nice = nice
        self.queued_bytes = 0
        self.deferred = 0  # files read here
        self.overflow = 0  # files read inline because the queue was full
        self.boosts = 0
        self.cpu_s = 0.0
        self._q: deque[Job] = deque()
        self._cond = threading.Condition()
        self._tid = 0
        self._urgent = False
        self._busy = False  # a job is being read
        self._current: Job | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.gate = threading.Event()  # set: may read (tests hold it to change a file in between)
        self.gate.set()

    def room(self, size: int) -> bool:
        with self._cond:
            ok = len(self._q) < self.max_jobs and self.queued_bytes + size <= self.max_bytes
        if not ok:
            self.overflow += 1
        return ok

    def submit(self, job: Job) -> None:
        with self._cond:
            self._q.append(job)
            self.queued_bytes += job.st.st_size
            self.deferred += 1
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fx-artifacts", daemon=True)
            self._thread.start()

    def waiting(self) -> list[Job]:
        """The jobs not read yet, the one being read first."""
        with self._cond:
            return ([self._current] if self._current is not None else []) + list(self._q)

    def oldest(self) -> float | None:
        """monotonic time the oldest job waiting was queued (None: none waits)."""
        with self._cond:
            return self._q[0].queued if self._q else None

    def hurry(self) -> None:
        """Read at the workload's priority until the queue is empty (a batch held too long)."""
        with self._cond:
            if self._urgent or not (self._q or self._busy):
                return
            self._urgent = True
            tid = self._tid
        self.boosts += 1
        self._set_nice(tid, 0)

    def wait(self, jobs: list[Job]) -> None:
        """Until ``jobs`` are read: those still queued are read here, at once."""
        self.gate.wait()
        for j in jobs:
            with self._cond:
                mine = j in self._q
                if mine:
                    self._q.remove(j)
            if mine:
                self._read(j)
        self.hurry()
        for j in jobs:
            j.done.wait()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for j in list(self._q):  # only if the thread did not end: the descriptors go back
            os.close(j.fd)

    def _set_nice(self, tid: int, nice: int) -> None:
        if not tid:
            return
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # no CAP_SYS_NICE to come back to 0: a waiter reads the queue itself (wait)
            pass

    def _run(self) -> None:
        name_native_thread()
        self._tid = threading.get_native_id()
        self._set_nice(self._tid, self.nice)
        t0 = time.thread_time()
        while True:
            self.gate.wait()  # before taking a job: one held back stays in the queue (waiting, wait)
            with self._cond:
                while not self._q and not self._stop:
                    if self._urgent:
                        self._urgent = False
                        self._set_nice(self._tid, self.nice)
                    self._cond.wait()
                if not self._q:
                    break
                job = self._current = self._q.popleft()
                self._busy = True
            self._read(job)
            with self._cond:
                self._busy = False
                self._current = None
            self.cpu_s = time.thread_time() - t0
            if self.on_done is not None:
                self.on_done()

    def _read(self, job: Job) -> None:
        try:
            put = self.store.put_fd(job.fd)
            job.put = judge(job, put, os.fstat(job.fd))
        except OSError as e:
            job.put = Put(None, job.st.st_size, False, reason=f"reading it failed: {e.strerror}")
        except Exception as e:  # noqa: BLE001 - a bug here must not leave the batch held for ever
            job.put = Put(None, job.st.st_size, False, reason=f"reading it failed: {type(e).__name__}: {e}")
        finally:
            os.close(job.fd)
            with self._cond:
                self.queued_bytes -= job.st.st_size
            job.done.set()


class Later(Protocol):
    """A drain tick's tables, ready once the files its execs ran are read."""

    def ready(self) -> bool: ...

    def wait(self) -> None: ...

    def tables(self) -> dict[str, pa.Table]: ...


@dataclass
class _Held:
    later: Later
    bulk: bool
    rows: int
    since: float = field(default_factory=time.monotonic)


class HeldWriter:
    """The recorder's writer, holding a batch whose hashes are not known yet and everything
    put after it, in order, until the batch's reads are done (``release``, called by the
    reader after each file and by the drainer at each tick). Anything else is the writer's."""

    def __init__(self, writer: Any, count: Callable[[str, pa.Table], None],
                 on_error: Callable[[Exception], None]) -> None:
        self.writer = writer
        self.count = count  # the recorder's statistics, for the rows it puts here
        self.on_error = on_error
        self._lock = threading.RLock()
        self._items: deque[_Held | tuple[str, pa.Table, bool] | Callable[[], None]] = deque()
        self.held_rows = 0
        self.held = 0  # batches held, in all
        self.released_late = 0.0  # the longest hold, s

    def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        with self._lock:
            if self._items:
                self._items.append((table, data, bulk))
                self.held_rows += data.num_rows
                return
            self.writer.put(table, data, bulk=bulk)

    def after_written(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._items:
                self._items.append(fn)
                return
            self.writer.after_written(fn)

    def hold(self, later: Later, bulk: bool, rows: int) -> None:
        with self._lock:
            self._items.append(_Held(later, bulk, rows))
            self.held_rows += rows
            self.held += 1
        self.release()

    def oldest(self) -> float | None:
        with self._lock:
            for it in self._items:
                if isinstance(it, _Held):
                    return it.since
        return None

    def release(self, wait: bool = False) -> None:
        """Hand on what no unread file holds back (``wait``: all of it, reading what is left)."""
        with self._lock:
            while self._items:
                it = self._items[0]
                if isinstance(it, _Held):
                    if not it.later.ready():
                        if not wait:
                            return
                        it.later.wait()
                    self._hand_on(it)
                elif isinstance(it, tuple):
                    self.held_rows -= it[1].num_rows
                    self.writer.put(*it)
                else:
                    self.writer.after_written(it)
                self._items.popleft()

    def _hand_on(self, it: _Held) -> None:
        self.held_rows -= it.rows
        self.released_late = max(self.released_late, time.monotonic() - it.since)
        try:
            tables = it.later.tables()
        except Exception as e:  # noqa: BLE001 - the batch goes on without what the collector adds
            tables = getattr(it.later, "decoded", {})
            self.on_error(e)
        for table, data in tables.items():
            self.count(table, data)
            self.writer.put(table, data, bulk=it.bulk and table != "processes")

    def finish(self) -> None:
        self.release(wait=True)
        self.writer.finish()

    def __getattr__(self, name: str) -> Any:  # room, back-pressure, sinks, errors: the writer's own
        return getattr(self.writer, name)
