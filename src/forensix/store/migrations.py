"""Named schema migrations, recorded in the store (``forensix_migrations``).

A migration is applied once, in order, in one transaction. Never edit a migration that
has shipped: add the next one.
"""

from __future__ import annotations

import pyarrow as pa

from forensix.store import codec, schema

__all__ = ["JOURNALED", "KNOWN_FORMATS", "MIGRATIONS", "STORE_FORMAT", "create_table_sql", "duckdb_type"]

# /1: every table appended to DuckDB directly. /3: the bulk tables (JOURNALED) are
# appended through a journal and sealed into DuckDB in large batches (store/journal.py);
# their tables are named NAME_base and read through views that add the journal's rows.
# (/2, Parquet segments, existed only in a development build of 2026-11-26.) /4: the base
# tables are sorted within each row group and events_base keeps ts_boot as a clock offset
# (store/codec.py); a /3 store is read as it is, and migrated to /4 by its next writer.
# /5: a flow edge flushed from the kernel's map is stored once, in flows_base, and the
# events view derives its row from it (schema.FLOWS: in_events); edges of older stores
# stay rows of events_base too, and are shown once. /6: flows carry the uid the kernel saw
# when the edge began (user_id), so the events view's flow rows have one too. /7: file rows
# and edges carry the inode's generation (file_generation), so a reused inode number is
# another file; rows of older stores have NULL there and match any life of their inode.
# /8: file_deleted on events (the object had no name left: deleted while open, memfd).
# /9: raw arguments that copy a named column are sealed XOR it (store/codec.py: args_xor);
# rows sealed before keep theirs as they are. /10: alerts carry their evidence and are one
# per finding (schema.ALERTS: alert_count, last_ts, command lines, object, session).
# /11: terminal bytes (tty), preserved executables (artifacts, artifact_blobs),
# process.hash.sha256 on exec events and process images (NULL on rows of older stores).
# /12: events carry event_module (imported rows: auditd, laurel, sysmon, suricata, system) and
# rule_name (auditd's rule key), and the imports table records what was imported.
# /13: gaps name the process that caused them and say when their size is unknown
# (count_unknown); NULL on gaps of older stores.
# /14 (migration 0015): the host's users and groups as recorded (schema.ACCOUNTS); a store of
# an earlier format has none, and names users as analysis.users says (never silently).
# /15 (migration 0016): a raw path that is its resolved path is stored once (path_raw_same),
# a flow edge's last_ts as its distance from first_ts (last_ts_offset), and a new store's
# path columns are ZSTD-compressed; store/codec.py.
# /16 (migration 0017): the file an events row or a flow edge names (device, inode, generation,
# type, path) stored once per row group in forensix_files, the row pointing at it (file_id);
# rows sealed before keep theirs inline (file_id NULL). store/codec.py.
# /17 (migration 0018): network rows that fill only the columns a socket row has are appended to
# a journal of their own and sealed into events_net_base (codec.NET_TABLE), read as rows of the
# events view; rows sealed before stay in events_base. store/codec.py.
# /18 (migration 0019): what the seal costs per network row cut (keeper CPU per web-conn
# request): the four columns every sensor network row holds the same values in stored NULL under
# events_net_base's ``implied``; rows sealed before have it NULL and are read as stored.
# store/codec.py.
STORE_FORMAT = "forensix-store/18"
KNOWN_FORMATS = frozenset({"forensix-store/1", "forensix-store/3", "forensix-store/4", "forensix-store/5",
                           "forensix-store/6", "forensix-store/7", "forensix-store/8", "forensix-store/9",
                           "forensix-store/10", "forensix-store/11", "forensix-store/12", "forensix-store/13",
                           "forensix-store/14", "forensix-store/15", "forensix-store/16", "forensix-store/17",
                           STORE_FORMAT})
JOURNALED = ("events", "flows", "processes")  # logical tables; their journals: codec.PARTS


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB column type for an Arrow type of the schema."""
    if pa.types.is_list(t):
        return duckdb_type(t.value_type) + "[]"
    simple = {
        pa.uint64(): "UBIGINT",
        pa.int64(): "BIGINT",
        pa.uint32(): "UINTEGER",
        pa.int32(): "INTEGER",
        pa.uint16(): "USMALLINT",
        pa.string(): "VARCHAR",
        pa.bool_(): "BOOLEAN",
        pa.float64(): "DOUBLE",
        pa.binary(): "BLOB",
    }
    try:
        return simple[t]
    except KeyError:
        raise TypeError(f"no DuckDB type for {t}") from None


def create_table_sql(name: str, sch: pa.Schema) -> str:
    """The table as a new store creates it; a column of codec.COMPRESSION with its compression
    (DuckDB cannot change an existing column's: an older store keeps its own)."""
    using = codec.COMPRESSION.get(name, {})
    cols = ",\n  ".join(
        f'"{f.name}" {duckdb_type(f.type)}{"" if f.nullable else " NOT NULL"}'
        + (f" USING COMPRESSION {using[f.name]}" if f.name in using else "")
        for f in sch
    )
    return f'CREATE TABLE IF NOT EXISTS "{name}" (\n  {cols}\n)'


MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_initial", [create_table_sql(n, s) for n, s in schema.TABLES.items()]),
    # summary rows (read-only re-opens counted in the kernel); 0001 of a newer version
    # already has these columns, hence IF NOT EXISTS
    ("0002_event_counts", [
        'ALTER TABLE events ADD COLUMN IF NOT EXISTS "event_count" UBIGINT',
        'ALTER TABLE events ADD COLUMN IF NOT EXISTS "event_start" BIGINT',
        'ALTER TABLE events ADD COLUMN IF NOT EXISTS "event_end" BIGINT',
    ]),
    # the bulk tables become views over NAME_base + their journal (store/journal.py)
    ("0003_segments", [f'ALTER TABLE "{n}" RENAME TO "{n}_base"' for n in JOURNALED]
     + ["UPDATE forensix_meta SET value = 'forensix-store/2' WHERE key = 'format'"]),
    # how far each table's journals are sealed (journal seq, rows of it), written in the sealing transaction
    ("0004_journal", [
        "CREATE TABLE forensix_sealed (table_name VARCHAR PRIMARY KEY, seq UBIGINT NOT NULL, row_offset UBIGINT NOT NULL)",
        "UPDATE forensix_meta SET value = 'forensix-store/3' WHERE key = 'format'",
    ]),
    # store/codec.py: new rows keep ts - ts_boot here and ts_boot NULL; rows sealed before keep ts_boot
    ("0005_codec", [
        'ALTER TABLE "events_base" ADD COLUMN "clock_offset" BIGINT',
        "UPDATE forensix_meta SET value = 'forensix-store/4' WHERE key = 'format'",
    ]),
    # flow edges stored once (schema.FLOWS; 0001 of this version already has its columns, hence
    # IF NOT EXISTS); existing edges keep in_events NULL: also rows of events_base
    ("0006_flow_edges_once", [
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "tid" UINTEGER',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "process_name" VARCHAR',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "ts_boot" BIGINT',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "in_events" BOOLEAN',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "clock_offset" BIGINT',
        "UPDATE forensix_meta SET value = 'forensix-store/5' WHERE key = 'format'",
    ]),
    # the uid the kernel saw when an edge began (NULL for edges of older stores: analyses
    # take the process's uid from the process table then)
    ("0007_flow_uid", [
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "user_id" UINTEGER',
        "UPDATE forensix_meta SET value = 'forensix-store/6' WHERE key = 'format'",
    ]),
    # the inode's generation on file rows and edges (NULL on rows of older stores)
    ("0008_file_generation", [
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "file_generation" UINTEGER',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "file_generation" UINTEGER',
        "UPDATE forensix_meta SET value = 'forensix-store/7' WHERE key = 'format'",
    ]),
    # an object without a name left (NULL: it had one, or the store is older)
    ("0009_file_deleted", [
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "file_deleted" BOOLEAN',
        "UPDATE forensix_meta SET value = 'forensix-store/8' WHERE key = 'format'",
    ]),
    # store/codec.py: raw arguments that copy a named column stored XOR it (NULL: rows sealed before)
    ("0010_args_xor", [
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "args_xor" BOOLEAN',
        "UPDATE forensix_meta SET value = 'forensix-store/9' WHERE key = 'format'",
    ]),
    # one alert per finding, with the evidence an analyst needs (rules/evidence.py); alerts
    # stored before keep NULL there (one matching event each)
    ("0011_alert_evidence", [
        *(f'ALTER TABLE "alerts" ADD COLUMN IF NOT EXISTS "{f.name}" {duckdb_type(f.type)}'
          for f in schema.ALERTS if f.name in schema.ALERT_EVIDENCE),
        "UPDATE forensix_meta SET value = 'forensix-store/10' WHERE key = 'format'",
    ]),
    # terminal bytes and preserved executables (0001 of this version creates them already)
    ("0012_tty_artifacts", [
        create_table_sql("tty", schema.TTY),
        create_table_sql("artifacts", schema.ARTIFACTS),
        create_table_sql("artifact_blobs", schema.ARTIFACT_BLOBS),
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "process_hash_sha256" VARCHAR',
        'ALTER TABLE "processes_base" ADD COLUMN IF NOT EXISTS "hash_sha256" VARCHAR',
        "UPDATE forensix_meta SET value = 'forensix-store/11' WHERE key = 'format'",
    ]),
    # where an event came from (NULL: the kernel sensor) and what was imported from which file
    ("0013_imports", [
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "event_module" VARCHAR',
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "rule_name" VARCHAR',
        create_table_sql("imports", schema.IMPORTS),
        "UPDATE forensix_meta SET value = 'forensix-store/12' WHERE key = 'format'",
    ]),
    # a gap names the process whose records were lost, and says when its size is unknown
    ("0014_gap_process", [
        'ALTER TABLE "gaps" ADD COLUMN IF NOT EXISTS "process_pid" UINTEGER',
        'ALTER TABLE "gaps" ADD COLUMN IF NOT EXISTS "process_entity_id" UBIGINT',
        'ALTER TABLE "gaps" ADD COLUMN IF NOT EXISTS "process_name" VARCHAR',
        'ALTER TABLE "gaps" ADD COLUMN IF NOT EXISTS "count_unknown" BOOLEAN',
        "UPDATE forensix_meta SET value = 'forensix-store/13' WHERE key = 'format'",
    ]),
    # the recorded host's users and groups over time (schema.ACCOUNTS)
    ("0015_accounts", [
        create_table_sql("accounts", schema.ACCOUNTS),
        "UPDATE forensix_meta SET value = 'forensix-store/14' WHERE key = 'format'",
    ]),
    # store/codec.py: a raw path equal to its resolved path stored once; an edge's last_ts, an
    # event's ret and event_end as their distance from first_ts, fd and ts (NULL on rows
    # sealed before: read as stored)
    ("0016_paths_once", [
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "path_raw_same" BOOLEAN',
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "target_path_raw_same" BOOLEAN',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "last_ts_offset" BIGINT',
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "ret_offset" BIGINT',
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "event_end_offset" BIGINT',
        "UPDATE forensix_meta SET value = 'forensix-store/15' WHERE key = 'format'",
    ]),
    # store/codec.py: a row's file stored once per row group in forensix_files (NULL file_id on
    # rows sealed before: their file columns are inline, read as stored)
    ("0017_files_once", [
        codec.files_sql(),
        'ALTER TABLE "events_base" ADD COLUMN IF NOT EXISTS "file_id" UBIGINT',
        'ALTER TABLE "flows_base" ADD COLUMN IF NOT EXISTS "file_id" UBIGINT',
        "UPDATE forensix_meta SET value = 'forensix-store/16' WHERE key = 'format'",
    ]),
    # store/codec.py: network rows journaled and sealed apart, in a table of the columns they fill
    # (rows sealed before stay in events_base: both are read by the events view)
    ("0018_network_rows", [
        create_table_sql(f"{codec.NET_TABLE}_base", codec.NET_SCHEMA),
        f'ALTER TABLE "{codec.NET_TABLE}_base" ADD COLUMN IF NOT EXISTS "clock_offset" BIGINT',
        "UPDATE forensix_meta SET value = 'forensix-store/17' WHERE key = 'format'",
    ]),
    # store/codec.py: the columns a network row can be read back from stored NULL (NET_IMPLIED,
    # under ``implied``; NULL on rows sealed before)
    ("0019_implied_columns", [
        *(f'ALTER TABLE "{codec.NET_TABLE}_base" ALTER COLUMN "{c}" DROP NOT NULL'
          for c in codec.NET_IMPLIED if not codec.NET_SCHEMA.field(c).nullable),
        f'ALTER TABLE "{codec.NET_TABLE}_base" ADD COLUMN IF NOT EXISTS "implied" BOOLEAN',
        "UPDATE forensix_meta SET value = 'forensix-store/18' WHERE key = 'format'",
    ]),
]
