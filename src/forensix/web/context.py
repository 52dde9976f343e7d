"""What every view gets: the store's reader and the few results worth keeping between requests."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix.analysis.graph import Graph
from forensix.analysis.sessions import Attribution, attribute, sessions
from forensix.errors import StoreError
from forensix.store.base import Reader

__all__ = ["IDLE_S", "Context", "ReopeningReader", "at_once"]

IDLE_S = 2.0  # a DuckDB file read directly is let go after this long without a query

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fx-web-part")
_IDLERS: weakref.WeakSet[ReopeningReader] = weakref.WeakSet()


@atexit.register
def _stop_idlers() -> None:
    """Stop every reader's idle watch before the interpreter is torn down: a daemon thread
    still closing a DuckDB file then is cut off inside DuckDB's C++ and aborts the process
    ("FATAL: exception not rethrown") after everything else went well."""
    for r in list(_IDLERS):
        r.stop_watch()


def at_once(**parts: Callable[[], Any]) -> dict[str, Any]:
    """Run a view's independent queries side by side (DuckDB works outside the GIL; each
    thread has its own cursor) and return their results by name."""
    futures = {name: _POOL.submit(fn) for name, fn in parts.items()}
    return {name: f.result() for name, f in futures.items()}


class ReopeningReader:
    """A reader that opens the store again when a query fails for want of it, and lets a
    DuckDB file go while nobody asks.

    A UI started while ``forensix record`` runs reads through the recorder's query
    socket; when the recording ends the socket goes, and the file itself is free: the
    next query opens it (``open_reader`` decides how) and is tried once more. A UI that
    reads the file itself holds DuckDB's lock on it, which would keep a later ``forensix
    record`` from opening it: after ``idle_s`` without a query the file is closed, and
    the next query opens it again (through the recorder's socket if one started)."""

    def __init__(self, opener: Callable[[], Reader], watch: Path | None = None, idle_s: float = IDLE_S) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._reader: Reader | None = opener()
        self._busy = 0
        self._last = time.monotonic()
        self._watch = watch
        self._idle_s = idle_s
        self._seen: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch is not None:
            self._watcher = threading.Thread(target=self._idler, name="fx-web-idle", daemon=True)
            self._watcher.start()
            _IDLERS.add(self)

    def stop_watch(self) -> None:
        """End the idle watch, waiting for a close it is in the middle of."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(10)

    def _acquire(self) -> Reader:
        with self._lock:
            if self._reader is None:
                self._reader = self._opener()
            self._busy += 1
            return self._reader

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = time.monotonic()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        reader = self._acquire()
        try:
            try:
                return reader.query(sql, params)
            except StoreError:
                if not self._gone(reader):
                    raise
            with self._lock:
                if self._reader is reader or self._reader is None:
                    self._reader = self._opener()
                    reader.close()
                fresh = self._reader
            return fresh.query(sql, params)
        finally:
            self._release()

    @staticmethod
    def _gone(reader: Reader) -> bool:
        inner = getattr(reader, "inner", reader)  # a HostReader's store
        path = getattr(inner, "path", None)
        return path is not None and str(path).endswith(".sock") and not path.exists()

    @staticmethod
    def _holds_file(reader: Reader) -> bool:
        from forensix.store.embedded import DuckDBStore

        inner = getattr(reader, "inner", reader)
        return isinstance(inner, DuckDBStore) and inner.read_only

    def _stamp(self) -> tuple[Any, ...]:
        """What a writer of the store would change: the file, its WAL, its query socket."""
        from forensix.store.embedded import socket_path

        assert self._watch is not None
        out: list[Any] = []
        for p in (self._watch, self._watch.with_name(self._watch.name + ".wal"), socket_path(self._watch)):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _idler(self) -> None:
        while not self._stop.wait(self._idle_s / 4):
            with self._lock:
                r = self._reader
                if (r is None or self._busy or time.monotonic() - self._last < self._idle_s
                        or not self._holds_file(r)):
                    continue
                self._reader = None
                self._seen = self._stamp()
            r.close()

    def unchanged(self) -> bool:
        """True when the store cannot have changed since the file was let go: nobody wrote
        it or started serving it (the live stream then spares a query and a reopen)."""
        with self._lock:
            return self._reader is None and self._seen is not None and self._stamp() == self._seen

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            r, self._reader = self._reader, None
        if r is not None:
            r.close()


@dataclass
class Context:
    """The reader, and what is worth keeping between requests while the store stays as it is:
    the session attribution and table (every process of the store), and recent graphs."""

    reader: Reader
    store: str
    _att: tuple[Any, Attribution, pa.Table | None] | None = None
    _graphs: OrderedDict[Any, Any] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self.reader.query(sql, params)

    def unchanged(self) -> bool:
        """The store cannot have changed since it was last read (see ``ReopeningReader``)."""
        check = getattr(self.reader, "unchanged", None)
        return bool(check()) if check is not None else False

    def state(self) -> tuple[Any, ...]:
        """Changes when processes are added (a recording runs): the key of what is kept."""
        return tuple(self.query("SELECT count(*) AS n, max(image_ts) AS t FROM processes").to_pylist()[0].values())

    def attribution(self) -> Attribution:
        key = self.state()
        with self._lock:
            if self._att is not None and self._att[0] == key:
                return self._att[1]
        att = attribute(self.reader)
        with self._lock:
            self._att = (key, att, None)
        return att

    def sessions(self) -> pa.Table:
        """Every session (``analysis.sessions.sessions``), computed once per state."""
        att = self.attribution()
        with self._lock:
            kept = self._att
        if kept is not None and kept[1] is att and kept[2] is not None:
            return kept[2]
        t = sessions(self.reader, att)
        with self._lock:
            if self._att is not None and self._att[1] is att:
                self._att = (self._att[0], att, t)
        return t

    def graph(self, key: tuple[Any, ...], build: Callable[[], Graph]) -> Graph:
        """A dependency graph, kept for the incident view's next requests (its parts)."""
        return self.kept(key, build)  # type: ignore[no-any-return]

    def kept(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """A result kept while the store stays as it is (the 16 latest): graphs, trees."""
        k = (self.state(), *key)
        with self._lock:
            g = self._graphs.get(k)
            if g is not None:
                self._graphs.move_to_end(k)
                return g
        g = build()
        with self._lock:
            self._graphs[k] = g
            while len(self._graphs) > 16:
                self._graphs.popitem(last=False)
        return g
