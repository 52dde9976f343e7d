"""The fleet store: ClickHouse (one server, or shards behind Distributed tables sharded by host).

``clickhouse://HOST:PORT/DATABASE[?cluster=NAME]``: the native protocol (clickhouse-driver),
the same logical schema as the embedded DuckDB store (``store.schema``), named migrations
recorded in the database, columnar batch inserts de-duplicated by frame.
"""

from forensix.store.clickhouse.connection import (
    ClickHouseUnavailable,
    StoreURL,
    is_clickhouse_url,
    parse_url,
)
from forensix.store.clickhouse.reader import ClickHouseReader
from forensix.store.clickhouse.store import ClickHouseStore, SchemaTooNewError, frame_hash

__all__ = [
    "ClickHouseReader",
    "ClickHouseStore",
    "ClickHouseUnavailable",
    "SchemaTooNewError",
    "StoreURL",
    "frame_hash",
    "is_clickhouse_url",
    "parse_url",
]
