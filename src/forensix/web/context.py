"""What every view gets: the store's reader and the few results worth keeping between requests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from forensix.analysis.sessions import Attribution, attribute
from forensix.store.base import Reader

__all__ = ["Context"]


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
