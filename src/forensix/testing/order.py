"""A reader that returns each unordered result in another order: what SQL promises.

A query without ORDER BY may return its rows in any order, and does: DuckDB's parallel
scans and a ClickHouse cluster's shards answer in whatever order they finish. An analysis
whose output follows that order draws the same graph differently run to run.
``ShuffledReader`` wraps a real reader and shuffles (with its own seed) every result whose
SQL has no ORDER BY, so a test can show an output does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.store.base import Reader

__all__ = ["ShuffledReader"]


class ShuffledReader:
    """``reader`` with the rows of each unordered result in a random order (``seed``)."""

    def __init__(self, reader: Reader, seed: int) -> None:
        self.reader = reader
        self.rng = np.random.default_rng(seed)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        t = self.reader.query(sql, params)
        if "ORDER BY" in sql.upper() or t.num_rows < 2:
            return t  # an order asked for is kept (also one inside: a window, a subquery)
        return t.take(pa.array(self.rng.permutation(t.num_rows)))

    def close(self) -> None:
        self.reader.close()
