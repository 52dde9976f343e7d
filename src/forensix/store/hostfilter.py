"""A reader that sees one host of a many-host store (a log host's fleet store).

Every query is run with each store table shadowed by a common table expression that
keeps only that host's rows, so analyses written for one host run unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from forensix.store.base import Reader
from forensix.store.schema import TABLES

__all__ = ["HostReader"]

_WITH = re.compile(r"^\s*WITH(\s+RECURSIVE)?\s+", re.IGNORECASE)


class HostReader:
    def __init__(self, inner: Reader, host: str) -> None:
        self.inner = inner
        self.host = host

    def _rewrite(self, sql: str) -> str:
        ctes = ", ".join(
            f'"{t}" AS (SELECT * FROM main."{t}" WHERE host_name = $__fx_host OR host_id = $__fx_host)'
            for t in TABLES
        )
        m = _WITH.match(sql)
        if m:
            return f"WITH{m.group(1) or ''} {ctes}, {sql[m.end():]}"
        return f"WITH {ctes} {sql}"

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        p = dict(params or {})
        p["__fx_host"] = self.host
        return self.inner.query(self._rewrite(sql), p)

    def close(self) -> None:
        self.inner.close()
