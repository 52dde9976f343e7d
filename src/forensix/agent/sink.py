"""Where recorded batches go: the local store, the log-host transport, the live rules.

The recorder hands every decoded batch to each of its sinks in order. A batch is an
Arrow table for one store table (``events``, ``processes``, ``flows``, ``gaps``,
``hosts``, ``alerts``) with exactly that table's schema (``forensix.store.schema``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa

from forensix.store.base import Writer

__all__ = ["Sink", "StoreSink", "is_evidence", "sink_name"]


@runtime_checkable
class Sink(Protocol):
    def write(self, table: str, data: pa.Table) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def is_evidence(sink: object) -> bool:
    """An evidence sink is where the record goes (the store, the agent's spool): a batch it
    refuses is kept and retried, never passed over (sensor/writer.py). Any other sink
    (metrics, live rules, alert outputs) that raises is disabled and recording goes on."""
    return bool(getattr(sink, "evidence", False))


def sink_name(sink: object) -> str:
    return str(getattr(sink, "sink_name", None) or type(sink).__name__)


class StoreSink:
    """Appends batches to a store (DuckDB by default)."""

    evidence = True
    sink_name = "the store"

    def __init__(self, store: Writer) -> None:
        self.store = store
        self.rows = 0

    def write(self, table: str, data: pa.Table) -> None:
        self.rows += self.store.append(table, data)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.flush()
