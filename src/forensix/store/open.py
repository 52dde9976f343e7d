"""Open a store by what the user gave: a DuckDB file path or a ``clickhouse://`` URL."""

from __future__ import annotations

import os

from forensix.store.base import Reader, Writer

__all__ = ["is_remote", "open_reader", "open_writer"]


def is_remote(store: str | os.PathLike[str]) -> bool:
    """True for a ClickHouse store URL (no file beside it: no socket, no evidence default)."""
    return str(store).startswith("clickhouse://")


def open_reader(store: str | os.PathLike[str], host: str | None = None, profile: str | None = None) -> Reader:
    """A reader of ``store``; on ClickHouse, over the slice of ``host`` when one is given, pulled
    as the analysis ``profile`` (a command name) reads it."""
    if is_remote(store):
        from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore

        return ClickHouseReader(ClickHouseStore(str(store)), host=host, own_store=True, profile=profile)
    from forensix.store.embedded import open_reader as open_duckdb

    return open_duckdb(store)


def open_writer(store: str | os.PathLike[str], *, retry: bool = False) -> Writer:
    """The writer of ``store`` (created if needed); ``retry``: a ClickHouse append waits out a
    shard that is down instead of raising (a log host)."""
    if is_remote(store):
        from forensix.store.clickhouse import ClickHouseStore

        return ClickHouseStore(str(store), write=True, retry=retry)
    from forensix.store.embedded import open_writer as open_duckdb

    return open_duckdb(store)
