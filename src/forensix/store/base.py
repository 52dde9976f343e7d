"""What every store offers: Arrow in, Arrow out.

Analyses and rules are written against ``Reader.query`` (SQL in DuckDB's dialect, named
``$params``) and get ``pyarrow.Table`` back, so the same analysis runs on a local DuckDB
file, on a store that a recorder holds open (through its query socket), or on ClickHouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

__all__ = ["Reader", "Writer"]


@runtime_checkable
class Reader(Protocol):
    """Read access to a store."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run one read-only SQL statement and return its result."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Writer(Reader, Protocol):
    """Read and append access; there is one writer per store."""

    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        """Append a batch to ``table`` (a name from ``schema.TABLES``); returns rows added."""
        ...

    def flush(self) -> None:
        """Make everything appended so far durable."""
        ...
