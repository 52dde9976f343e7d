"""What every view gets: the store's reader and the few results worth keeping between requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.analysis.sessions import Attribution, attribute
from forensix.errors import StoreError
from forensix.store.base import Reader

__all__ = ["Context", "ReopeningReader"]


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
    reader: Reader
    store: str
    _att: tuple[Any, Attribution] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.reader.query(sql, params)

    def attribution(self) -> Attribution:
        """Who leads whom, computed once per state of the process table: a recording adds
        processes, so the key is the table's size and latest image."""
        key = tuple(self.query("SELECT count(*) AS n, max(image_ts) AS t FROM processes").to_pylist()[0].values())
        with self._lock:
            if self._att is not None and self._att[0] == key:
                return self._att[1]
        att = attribute(self.reader)
        with self._lock:
            self._att = (key, att)
        return att
