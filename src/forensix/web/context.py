"""What every view gets: the store's reader and the few results worth keeping between requests."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.analysis.graph import Graph
from forensix.analysis.sessions import Attribution, attribute, sessions
from forensix.errors import StoreError
from forensix.store.base import Reader

__all__ = ["Context", "ReopeningReader", "at_once"]

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fx-web-part")


def at_once(**parts: Callable[[], Any]) -> dict[str, Any]:
    """Run a view's independent queries side by side (DuckDB works outside the GIL; each
    thread has its own cursor) and return their results by name."""
    futures = {name: _POOL.submit(fn) for name, fn in parts.items()}
    return {name: f.result() for name, f in futures.items()}


class ReopeningReader:
    """A reader that opens the store again when a query fails for want of it.

    A UI started while ``forensix record`` runs reads through the recorder's query
    socket; when the recording ends the socket goes, and the file itself is free: the
    next query opens it (``open_reader`` decides how) and is tried once more."""

    def __init__(self, opener: Callable[[], Reader]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._reader = opener()

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        reader = self._reader
        try:
            return reader.query(sql, params)
        except StoreError:
            if not self._gone(reader):
                raise
        with self._lock:
            if self._reader is reader:
                self._reader = self._opener()
                reader.close()
        return self._reader.query(sql, params)

    @staticmethod
    def _gone(reader: Reader) -> bool:
        inner = getattr(reader, "inner", reader)  # a HostReader's store
        path = getattr(inner, "path", None)
        return path is not None and str(path).endswith(".sock") and not path.exists()

    def close(self) -> None:
        self._reader.close()


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
