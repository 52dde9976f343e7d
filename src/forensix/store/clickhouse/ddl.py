"""ClickHouse tables derived from ``store.schema``, and the named migrations that create them.

The SQL here runs on Debian's ClickHouse 18.16 and on current ClickHouse (the test suite
runs it on both: a real 18.16 server and ``chdb``). Hence:

* times stay ``Int64`` UTC ns (no DateTime64); partitions are days of the table's time
  column, so retention drops whole partitions, never rows;
* ORDER BY (host, time, entity): the questions a fleet asks filter in that order. Key
  columns that are Nullable in the logical schema enter the key through ``ifNull`` (old
  servers refuse Nullable keys);
* arrays cannot be Nullable: a list column ``c`` is kept with ``c__null`` (1 = NULL), so
  an exec with an empty argv stays distinguishable from a row without one;
* ``fx_batch``: a hash of the frame (host/stream/seq) a row came in, 0 for rows without
  one. A frame re-sent to the store after a crash is found by it and stored once;
* LowCardinality for the few repeated strings (needs allow_experimental_low_cardinality_type
  on 18.16, a no-op on current servers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from forensix.store import schema

__all__ = [
    "BATCH_COLUMN",
    "CH_SETTINGS",
    "FORMAT",
    "KEYS",
    "KEY_NOT_NULL",
    "MIGRATIONS",
    "TableKey",
    "ch_type",
    "day_partition",
    "local_name",
    "missing_columns",
    "null_column",
    "stored_columns",
]

FORMAT = "forensix-clickhouse/1"
BATCH_COLUMN = "fx_batch"
# settings every statement of ours may need on 18.16; current servers accept them
CH_SETTINGS = {"allow_experimental_low_cardinality_type": 1}

_LOW_CARDINALITY = frozenset({
    "host_id", "host_name", "boot_id", "event_class", "event_kind", "event_category", "event_action",
    "syscall", "event_outcome", "file_path_resolution", "file_type", "network_transport", "network_type",
    "reason", "source", "rule_id", "rule_level", "rule_title", "process_name", "name",
})

_SIMPLE = {
    pa.uint64(): "UInt64", pa.int64(): "Int64", pa.uint32(): "UInt32", pa.int32(): "Int32",
    pa.uint16(): "UInt16", pa.string(): "String", pa.bool_(): "UInt8", pa.float64(): "Float64",
    pa.binary(): "String",  # bytes as they are (terminal data, artifact chunks); read back through hex()
}


@dataclass(frozen=True)
class TableKey:
    time: str  # the column whose day is the partition, and the key after the host
    entity: str | None  # the key after the time


KEYS: dict[str, TableKey] = {
    "events": TableKey("ts", "process_entity_id"),
    "processes": TableKey("image_ts", "entity_id"),
    "flows": TableKey("last_ts", "entity_id"),
    "gaps": TableKey("ts_from", None),
    "hosts": TableKey("first_seen", None),
    "alerts": TableKey("ts", "process_entity_id"),
    "tty": TableKey("ts", "process_entity_id"),
    "artifacts": TableKey("ts", "process_entity_id"),
    "artifact_blobs": TableKey("ts", "sha256"),
    # by when the rows were read, not valid_from: a reading of an old /etc/passwd is a recent row,
    # and retention drops it with its day (the recorder reads the files again every day)
    "accounts": TableKey("recorded_ts", "uid"),
}


# key columns kept without NULL (sorting keys and the sharding key must not be Nullable on
# current servers, and a wrapped key would not serve `host_name = ...` from the index):
# NULL is stored as '' and read back as NULL
KEY_NOT_NULL = frozenset({"host_name"})


def null_column(name: str) -> str:
    """The companion column that marks NULL in the list column ``name``."""
    return f"{name}__null"


def ch_type(f: pa.Field) -> str:
    """The ClickHouse type of a schema field."""
    if pa.types.is_list(f.type):
        return f"Array({_SIMPLE[f.type.value_type]})"
    base = _SIMPLE[f.type]
    if f.nullable and f.name not in KEY_NOT_NULL:
        base = f"Nullable({base})"
    if f.name in _LOW_CARDINALITY and pa.types.is_string(f.type):
        base = f"LowCardinality({base})"
    return base


def stored_columns(table: str) -> list[tuple[str, str]]:
    """(name, ClickHouse type) of every column the table keeps, in order."""
    cols: list[tuple[str, str]] = []
    for f in schema.TABLES[table]:
        cols.append((f.name, ch_type(f)))
        if pa.types.is_list(f.type):
            # DEFAULT 1: an INSERT that leaves out an all-NULL list column leaves it NULL
            cols.append((null_column(f.name), "UInt8 DEFAULT 1"))
    cols.append((BATCH_COLUMN, "UInt64"))
    return cols


def _keyed(table: str, column: str) -> str:
    f = schema.TABLES[table].field(column)
    if not f.nullable or column in KEY_NOT_NULL:
        return column
    return f"ifNull({column}, '')" if pa.types.is_string(f.type) else f"ifNull({column}, 0)"


def day_partition(table: str) -> str:
    """The partition expression: the UTC day (YYYYMMDD) of the table's time column."""
    return f"toYYYYMMDD(toDateTime(intDiv({_keyed(table, KEYS[table].time)}, 1000000000), 'UTC'))"


def merge_tree_sql(db: str, table: str, name: str) -> str:
    """CREATE of the MergeTree table that holds ``table``'s rows on one server."""
    key = KEYS[table]
    order = ["host_name", _keyed(table, key.time)] + ([_keyed(table, key.entity)] if key.entity else [])
    cols = ",\n  ".join(f"`{c}` {t}" for c, t in stored_columns(table))
    part = day_partition(table)
    return (f"CREATE TABLE IF NOT EXISTS `{db}`.`{name}` (\n  {cols}\n) ENGINE = MergeTree() "
            f"PARTITION BY {part} ORDER BY ({', '.join(order)})")


def distributed_sql(db: str, table: str, cluster: str) -> str:
    """CREATE of the Distributed table over every shard's ``TABLE_local``, sharded by host."""
    cols = ",\n  ".join(f"`{c}` {t}" for c, t in stored_columns(table))
    return (f"CREATE TABLE IF NOT EXISTS `{db}`.`{table}` (\n  {cols}\n) ENGINE = "
            f"Distributed({cluster}, {db}, {table}_local, cityHash64(host_name))")


def local_name(table: str, cluster: str | None) -> str:
    """The name of the table that holds a server's own rows."""
    return f"{table}_local" if cluster else table


# name -> statements per server, given (db, cluster or None). Applied in order on every
# server (each shard records what it applied in its forensix_migrations); never edit one
# that has shipped: add the next.
def _initial(db: str, cluster: str | None) -> list[str]:
    out = [merge_tree_sql(db, t, local_name(t, cluster)) for t in schema.TABLES]
    if cluster:
        out += [distributed_sql(db, t, cluster) for t in schema.TABLES]
    return out


# 0001 creates the tables of the schema.py it runs with; a database made by an earlier
# forensix lacks what came later. 0002 creates the tables added since (terminal bytes,
# artifacts); the columns added since (process_hash_sha256) are added by the store when it
# applies any migration (`missing_columns`: 18.16 has no ADD COLUMN IF NOT EXISTS).
def _summaries(db: str, cluster: str | None) -> list[str]:
    from forensix.store.clickhouse.summaries import migration  # it builds on this module

    return migration(db, cluster)


def _paths(db: str, cluster: str | None) -> list[str]:
    from forensix.store.clickhouse.summaries import PATH_SUMMARIES, migration

    return migration(db, cluster, PATH_SUMMARIES)


def _kinds(db: str, cluster: str | None) -> list[str]:
    from forensix.store.clickhouse.summaries import KIND_SUMMARIES, migration

    return migration(db, cluster, KIND_SUMMARIES)


def _unkeyed(db: str, cluster: str | None) -> list[str]:
    from forensix.store.clickhouse.summaries import UNKEYED_SUMMARIES, migration

    return migration(db, cluster, UNKEYED_SUMMARIES)


def _accounts(db: str, cluster: str | None) -> list[str]:
    """The recorded users and groups of each host (schema.ACCOUNTS, sharded by host like the rest)."""
    out = [merge_tree_sql(db, "accounts", local_name("accounts", cluster))]
    return out + ([distributed_sql(db, "accounts", cluster)] if cluster else [])


# 0003: the fleet questions' summary tables, kept by materialized views, and the backfill
# of the rows stored before (store/clickhouse/summaries.py); 0005: the same by UTC hour,
# cheaper to keep (0003's dropped, everything summarized again); 0006: the paths by day with
# the open's flags and the acting processes, and the distinct paths with their hosts (what the
# hunt's path rules and the path prefix question read); 0007: the kinds of event of each host and
# day, and the execs fleet_exec does not describe whole (what a hunt's rules on rare events and
# on an exec's path or message narrow by); 0008: the hours with an exec fleet_exec cannot count as a
# finding of its own (what lets a hunt count an exec rule's findings from fleet_exec). Each builds the summaries of the
# running version: a store without any runs them once; one with 0005 only builds 0006's.
MIGRATIONS: list[tuple[str, Callable[[str, str | None], list[str]]]] = [
    ("0001_initial", _initial),
    ("0002_tty_artifacts_sha256", _initial),
    ("0003_fleet_summaries", _summaries),
    ("0004_accounts", _accounts),
    ("0005_hourly_summaries", _summaries),
    ("0006_path_names", _paths),
    ("0007_event_kinds", _kinds),
    ("0008_exec_unkeyed", _unkeyed),
]


def missing_columns(db: str, table: str, name: str, have: set[str]) -> list[str]:
    """ALTERs that add to ``name`` (``table``'s local or Distributed table) the stored
    columns of the current schema it lacks (``have``: the columns it has)."""
    return [f"ALTER TABLE `{db}`.`{name}` ADD COLUMN `{c}` {t}"
            for c, t in stored_columns(table) if c not in have]
