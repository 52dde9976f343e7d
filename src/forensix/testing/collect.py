"""A writer that keeps what is appended to it, per table, in the stored form (a fake at our
own ``Writer`` seam): the generators write through it, and a test then stores the tables
in several engines, or shifted, as it needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from forensix.store import schema
from forensix.store.journal import conform

__all__ = ["CollectingWriter"]


class CollectingWriter:
    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}

    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        t = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        self.tables.setdefault(table, []).append(conform(t, schema.TABLES[table], table))
        return int(t.num_rows)

    def flush(self) -> None:
        pass

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        raise AssertionError("the collecting writer answers no queries: store its tables and read them there")

    def close(self) -> None:
        pass
