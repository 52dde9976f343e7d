"""The fleet store: a ClickHouse server, or a cluster of shards behind Distributed tables.

Writing: every append is one columnar INSERT (clickhouse-driver's native protocol) per
shard, straight into the shard's local table (the store routes each host's rows as the
Distributed table's ``cityHash64(host_name)`` would; Distributed tables are for reads), so
a batch counted as stored is on disk on its shard. A cluster with replicas or shard
weights gets the INSERT through the Distributed table with ``insert_distributed_sync``. Rows of a
frame carry the frame's hash (``fx_batch``); before an INSERT, the days of frames already
present are left out, so a frame re-sent after a crash, or after an INSERT that reached one
shard (or one day's partition) and not another, is stored once.

A server or shard that does not answer: with ``retry`` (``forensix server``), the append
logs which one, keeps the batch and tries again until it is stored or the store is
closed; the ingest thread waits meanwhile, its queue fills, agents keep spooling, and
nothing acknowledged is lost (the frames are in the log host's evidence too, re-ingested
at its next start if it stops first). Without ``retry`` the error is raised.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc

from forensix.errors import NotAStoreError, StoreError
from forensix.store import schema
from forensix.store.clickhouse import summaries
from forensix.store.clickhouse.connection import (
    ClickHouseUnavailable,
    Server,
    StoreURL,
    literal,
    parse_url,
)
from forensix.store.clickhouse.ddl import (
    BATCH_COLUMN,
    FORMAT,
    KEY_NOT_NULL,
    KEYS,
    MIGRATIONS,
    ch_type,
    local_name,
    missing_columns,
    null_column,
)
from forensix.store.clickhouse.native import ArrowData
from forensix.store.clickhouse.summaries import (
    HOURLY,
    PATHS,
    SUMMARIZING,
    summary_tables,
)
from forensix.store.journal import conform

__all__ = ["ClickHouseStore", "SchemaTooNewError", "frame_hash", "from_stored", "present_sql", "select_sql", "stored_table"]

log = logging.getLogger("forensix.store")


class SchemaTooNewError(NotAStoreError):
    """The database was migrated by a newer forensix than this one."""


def frame_hash(key: str) -> int:
    """The ``fx_batch`` of a frame key (``host/stream/seq``): never 0, which means no frame."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") or 1


def stored_table(table: str, data: pa.Table, batch: pa.Array) -> pa.Table:
    """``data`` (the logical schema) as ClickHouse keeps it: list columns with their NULL
    marks (``c__null``), booleans as UInt8, the frame hash of every row (``fx_batch``).
    Columns ``data`` lacks are left out (an INSERT leaves them to their defaults)."""
    names: list[str] = []
    cols: list[pa.Array | pa.ChunkedArray] = []
    have = set(data.column_names)
    for f in schema.TABLES[table]:
        if f.name not in have:
            continue
        col = data.column(f.name)
        if pa.types.is_list(f.type):
            isnull = pc.is_null(col)
            names += [f.name, null_column(f.name)]
            cols += [pc.if_else(isnull, pa.scalar([], f.type), col), isnull.cast(pa.uint8())]
            continue
        if pa.types.is_boolean(f.type):
            col = col.cast(pa.uint8())
        if f.name in KEY_NOT_NULL:
            col = pc.fill_null(col, "")
        names.append(f.name)
        cols.append(col)
    names.append(BATCH_COLUMN)
    cols.append(batch)
    return pa.Table.from_arrays(cols, names=names)


def _without_empty(table: str, data: pa.Table) -> pa.Table:
    """Leave out the columns that are NULL in every row: most of a batch's columns are (an
    open has no address, a connect no path), and the server fills NULL for them (a list
    column's NULL mark defaults to 1) at no cost to the log host. Done on the logical
    table, before ``stored_table``, so no work is spent on columns that are not sent."""
    n = data.num_rows
    drop = [f.name for f in schema.TABLES[table]
            if f.nullable and f.name not in KEY_NOT_NULL and data.column(f.name).null_count == n]
    return data.drop_columns(drop) if drop and n else data


# A MergeTree INSERT is atomic per partition (a day), not as a whole: 18.16 writes and commits
# one part per partition of the block, so a server that dies in between keeps some days of
# a frame that spans midnight and not the others. De-duplication therefore works per frame
# and day: a day of a frame is either all stored or not at all. The day as both engines and
# Arrow compute it alike (integer division truncates); it is never coarser than the partition.
DAY_NS = 86_400 * 10**9
# frames asked about in one de-duplication query (20 bytes of SQL each, and their hosts')
PRESENT_FRAMES = 2000


def _day(table: str) -> str:
    return f"intDiv(ifNull({KEYS[table].time}, 0), {DAY_NS})"


def present_sql(table_ref: str, table: str, hosts: Sequence[str], lo: int, hi: int, hashes: Sequence[int]) -> str:
    """The (frame, day) pairs among ``hashes`` whose rows a table holds already (hosts and
    time narrow the scan)."""
    t = KEYS[table].time
    host_list = ", ".join(literal(h) for h in hosts)
    return (f"SELECT DISTINCT {BATCH_COLUMN}, {_day(table)} AS fx_day FROM {table_ref} "
            f"WHERE host_name IN ({host_list}) AND ifNull({t}, 0) BETWEEN {int(lo)} AND {int(hi)} "
            f"AND {BATCH_COLUMN} IN ({', '.join(str(int(h)) for h in hashes)})")


def _days(table: str, data: pa.Table) -> pa.Array:
    """Each row's day as ``_day`` computes it in ClickHouse."""
    t = pc.fill_null(data.column(KEYS[table].time).cast(pa.int64()), 0)
    return pc.divide(t, pa.scalar(DAY_NS, pa.int64())).combine_chunks()


def _missing(table: str, keyed: list[tuple[int, pa.Table]], present: set[tuple[int, int]]) -> list[tuple[int, pa.Table]]:
    """The rows of ``keyed`` whose (frame, day) is not in the store: whole frames, or the
    days of a frame an interrupted INSERT did not store."""
    frames = {h for h, _ in present}
    out = []
    for h, d in keyed:
        if h == 0 or h not in frames:
            out.append((h, d))
            continue
        done = pa.array(sorted(day for f, day in present if f == h), pa.int64())
        rest = d.filter(pc.invert(pc.is_in(_days(table, d), value_set=done)))
        if rest.num_rows:
            out.append((h, rest))
    return out


def select_sql(table: str, where: str = "", columns: Sequence[str] | None = None) -> str:
    """The columns of a table a reader needs to rebuild the logical schema (``from_stored``);
    ``columns``: only these of the logical schema (a slice pulls what its queries read)."""
    target = [f for f in schema.TABLES[table] if columns is None or f.name in columns]
    names = [f"hex(`{f.name}`) AS `{f.name}`" if pa.types.is_binary(f.type) else _plain(f) for f in target]
    nulls = [f"`{null_column(f.name)}`" for f in target if pa.types.is_list(f.type)]
    if not where:
        return f"SELECT {', '.join(names + nulls)} FROM `{table}`"
    # ``where`` is read in a subquery, over the stored columns: an alias of the outer SELECT
    # (``CAST(host_name AS String) AS host_name``) would shadow the column there, and a
    # condition on the alias cannot use the sort key (every row of the table was read to
    # pull a host's 19 events)
    inner = ", ".join([f"`{f.name}`" for f in target] + nulls)
    return f"SELECT {', '.join(names + nulls)} FROM (SELECT {inner} FROM `{table}` WHERE {where})"


def _plain(f: pa.Field) -> str:
    """A column as read: LowCardinality sent as its plain type, which the driver's NumPy reader
    turns into Arrow buffers (a LowCardinality with NULLs goes through pandas and fails)."""
    ty = ch_type(f)
    if ty.startswith("LowCardinality("):
        return f"CAST(`{f.name}` AS {ty[len('LowCardinality('):-1]}) AS `{f.name}`"
    return f"`{f.name}`"


def from_stored(table: str, t: pa.Table) -> pa.Table:
    """Rows read with ``select_sql`` as the logical schema (NULL lists restored, types cast);
    the columns ``select_sql`` was not asked for are left out."""
    target = pa.schema([f for f in schema.TABLES[table] if f.name in t.column_names])
    out = []
    for f in target:
        col = t.column(f.name)
        if pa.types.is_list(f.type):
            mask = pc.equal(t.column(null_column(f.name)), pa.scalar(1, pa.uint8()))
            col = pc.if_else(mask, pa.nulls(len(col), f.type), col.cast(f.type))
        elif pa.types.is_binary(f.type):  # read as hex(): the driver decodes String as UTF-8
            col = pa.array([None if x is None else bytes.fromhex(x) for x in col.to_pylist()], pa.binary())
        elif col.type != f.type:
            col = col.cast(f.type)
        if f.name in KEY_NOT_NULL:
            col = pc.if_else(pc.equal(col, ""), pa.nulls(len(col), f.type), col)
        out.append(col)
    return pa.Table.from_arrays(out, schema=target)


class ClickHouseStore:
    """Reader and writer of a forensix store in ClickHouse (``clickhouse://HOST:PORT/DB[?cluster=C]``)."""

    # The log host's ingest thread joins waiting frames into appends of up to this many
    # rows, waiting up to this long for them (server.ingest). An INSERT costs the shard
    # about 15-20 ms of CPU whatever its size (a part of every column, merged later) plus
    # 1-2 us per row: at 200k events/s, 100k-row INSERTs cost it a third of 20k-row ones'
    # fixed share. Frames are acknowledged once in evidence, so the wait delays only the
    # store (and live rules), by at most coalesce_wait_s.
    coalesce_rows = 200_000
    coalesce_wait_s = 0.5

    def __init__(self, url: str | StoreURL, *, write: bool = False, retry: bool = False,
                 retry_max_s: float = 5.0) -> None:
        self.url = parse_url(url) if isinstance(url, str) else url
        self.db = self.url.database
        self.cluster = self.url.cluster
        self.retry = retry
        self.retry_max_s = retry_max_s
        self.read_only = not write
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.entry = Server(self.url.host, self.url.port)
        self._direct = False
        self._host_shard: dict[str, int] = {}
        self.shards = self._shards()
        if write:
            self._migrate()
        self._check_format()
        # queries name tables without their database: a connection of their own, in it
        self._reads = Server(self.url.host, self.url.port, database=self.db)
        self._shard_reads: list[Server] = []  # a connection per shard, in the database (``native_each``)

    # -- servers -----------------------------------------------------------------
    def _shards(self) -> list[Server]:
        if not self.cluster:
            return [self.entry]
        rows = self.entry.execute(
            f"SELECT host_address, port, shard_num, shard_weight FROM system.clusters WHERE cluster = '{self.cluster}' "
            "ORDER BY shard_num, replica_num")
        if not rows:
            known = sorted({r[0] for r in self.entry.execute("SELECT cluster FROM system.clusters")})
            raise StoreError(f"ClickHouse at {self.entry.where} has no cluster {self.cluster!r}",
                             f"clusters in its remote_servers: {', '.join(known) or 'none'}")
        # rows go straight to their shard's local table when the Distributed table would pick
        # the shard as cityHash64(host_name) % shards: one replica each, every weight 1
        shard_nums = [int(r[2]) for r in rows]
        self._direct = len(set(shard_nums)) == len(rows) and all(int(r[3]) == 1 for r in rows)
        return [self.entry if (h, p) == (self.url.host, self.url.port) else Server(h, p) for h, p, _, _ in rows]

    def _shard_of(self, hosts: Sequence[str]) -> dict[str, int]:
        """The shard (index into ``shards``) of each host, as the Distributed table's
        sharding key ``cityHash64(host_name)`` picks it: asked of the server once per host."""
        new = sorted({h for h in hosts if h not in self._host_shard})
        if new:
            rows = self.entry.execute(
                f"SELECT h, cityHash64(h) % {len(self.shards)} FROM "
                f"(SELECT arrayJoin([{', '.join(literal(h) for h in new)}]) AS h)")
            self._host_shard.update({str(h): int(i) for h, i in rows})
        return {h: self._host_shard[h] for h in hosts}

    def down_shards(self) -> list[str]:
        """The servers of the store that do not answer now (``host:port``)."""
        with self._lock:  # one client is not safe for two threads at once
            return [s.where for s in self.shards if not s.ping()]

    def _table(self, table: str) -> str:
        return f"`{self.db}`.`{table}`"

    # -- format and migrations -------------------------------------------------------
    def _migrate(self) -> None:
        """Apply on every server the migrations it has not recorded (each shard records its
        own), under the server's migration lock: two log hosts starting at once apply and
        record each migration once; the one that waits finds them recorded."""
        for srv in self.shards:
            srv.execute(f"CREATE DATABASE IF NOT EXISTS `{self.db}`")
            srv.execute(f"CREATE TABLE IF NOT EXISTS `{self.db}`.forensix_migrations "
                        "(name String, applied_ns Int64) ENGINE = Log")
            srv.execute(f"CREATE TABLE IF NOT EXISTS `{self.db}`.forensix_meta "
                        "(key String, value String) ENGINE = Log")
            if not self._pending(srv):
                continue  # the usual start: nothing to do, no lock taken
            self._lock_server(srv)
            try:
                self._migrate_locked(srv)
            finally:
                srv.execute(summaries.unlock_sql(self.db))

    def _pending(self, srv: Server) -> list[str]:
        done = {r[0] for r in srv.execute(f"SELECT name FROM `{self.db}`.forensix_migrations")}
        self._refuse_newer(done, srv.where)
        return [n for n, _ in MIGRATIONS if n not in done]

    def _migrate_locked(self, srv: Server) -> None:
        pending = self._pending(srv)  # again: another writer may have applied them meanwhile
        if not pending:
            return
        if not srv.execute(f"SELECT value FROM `{self.db}`.forensix_meta WHERE key = 'format'"):
            srv.execute(f"INSERT INTO `{self.db}`.forensix_meta (key, value) VALUES", [["format"], [FORMAT]])
        summarized = False
        for name, statements in MIGRATIONS:
            if name not in pending:
                continue
            if name in SUMMARIZING:
                if not summarized:  # 0003, 0005, 0006 and 0007 all build this version's summaries: once
                    self._add_columns(srv)  # the views read columns added since 0001
                    # a store with 0005's summaries gets 0006's and 0007's tables only (the
                    # others are this version's already): no second summary of every row
                    self._summarize(srv, summaries.built_by(pending))
                    summarized = True
                self._record(srv, name)
                continue
            for stmt in statements(self.db, self.cluster):
                srv.execute(stmt)
            if name == pending[-1]:
                self._add_columns(srv)
            self._record(srv, name)

    def _record(self, srv: Server, name: str) -> None:
        srv.execute(f"INSERT INTO `{self.db}`.forensix_migrations (name, applied_ns) VALUES",
                    [[name], [time.time_ns()]])

    MIGRATION_WAIT_S = 300.0  # how long a writer waits for another one's migrations on a server
    BACKFILL_TIMEOUT_S = 6 * 3600.0  # how long one backfill statement may take (a shard of 10^8 events: minutes)

    def _lock_server(self, srv: Server) -> None:
        """Take the server's migration lock (create its lock table), waiting while another
        writer holds it; one that died holding it is named, with what to do."""
        db, wait_s = self.db, self.MIGRATION_WAIT_S
        deadline = time.monotonic() + wait_s
        while True:
            try:
                srv.execute(summaries.lock_sql(db))
                return
            except StoreError as e:
                if "already exists" not in e.message:
                    raise
            if time.monotonic() > deadline:
                raise StoreError(f"another writer has been migrating {db} on {srv.where} for "
                                 f"{wait_s:.0f} s (table {db}.{summaries.LOCK} exists)",
                                 f"if no forensix server is starting, DROP TABLE {db}.{summaries.LOCK} there")
            time.sleep(0.2)

    def _summarize(self, srv: Server, only: Sequence[str] | None = None) -> None:
        """The summaries of this version (``0003_fleet_summaries``, ``0005_hourly_summaries``)
        on one server, with its migration lock held: an earlier layout or a failed attempt
        dropped, every stored row summarized (the lock table lists the parts), and merges
        never left stopped."""
        db, cl = self.db, self.cluster
        # the backfill's INSERT ... SELECT reads every stored row: minutes on a big shard, far
        # past the 30 s a query may take otherwise (the driver would give up, the server not)
        long = Server(srv.host, srv.port, timeout=self.BACKFILL_TIMEOUT_S)
        try:
            for stmt in summaries.reset_sql(db, cl, only) + summaries.backfill_sql(db, cl, only):
                long.execute(stmt)
        finally:
            long.close()
            for stmt in summaries.restart_merges(db, cl):
                srv.execute(stmt)

    def _add_columns(self, srv: Server) -> None:
        """Columns of the current schema a table created by an earlier forensix lacks."""
        have: dict[str, set[str]] = {}
        for t, c in srv.execute(f"SELECT table, name FROM system.columns WHERE database = '{self.db}'"):
            have.setdefault(str(t), set()).add(str(c))
        for table in schema.TABLES:
            names = [local_name(table, self.cluster)] + ([table] if self.cluster else [])
            for name in names:
                for stmt in missing_columns(self.db, table, name, have.get(name, set())):
                    srv.execute(stmt)

    def _refuse_newer(self, done: set[str], where: str) -> None:
        ours = {n for n, _ in MIGRATIONS}
        newer = sorted(done - ours)
        if newer:
            raise SchemaTooNewError(
                f"database {self.db!r} on {where} has migrations {newer} from a newer forensix",
                "use the forensix version that wrote it (or newer)")

    def _check_format(self) -> None:
        dbs = {r[0] for r in self.entry.execute("SELECT name FROM system.databases")}
        if self.db not in dbs:
            raise StoreError(f"ClickHouse at {self.entry.where} has no database {self.db!r}",
                             f"databases there: {', '.join(sorted(dbs))}; `forensix server --store` creates one")
        tables = {r[0] for r in self.entry.execute(
            f"SELECT name FROM system.tables WHERE database = '{self.db}'")}
        if "forensix_meta" not in tables:
            raise NotAStoreError(f"database {self.db!r} on {self.entry.where} is not a forensix store",
                                 "give the database forensix server writes to")
        rows = self.entry.execute(f"SELECT value FROM `{self.db}`.forensix_meta WHERE key = 'format'")
        done = {r[0] for r in self.entry.execute(f"SELECT name FROM `{self.db}`.forensix_migrations")}
        self._refuse_newer(done, self.entry.where)
        if not rows or rows[0][0] != FORMAT:
            raise SchemaTooNewError(
                f"database {self.db!r} on {self.entry.where} has store format {rows[0][0] if rows else None!r}, "
                f"this forensix knows {FORMAT!r}", "use the forensix version that wrote it")

    def summarized(self) -> bool:
        """Whether the fleet questions' summary tables are there in this version's layout
        (``0005_hourly_summaries`` applied on the server the store reads through; a store
        with 0003's only is scanned until a log host of this version migrates it)."""
        return HOURLY in self.migrations()

    def paths_summarized(self) -> bool:
        """Whether the path summaries by day (``0006_path_names``: ``fleet_files``,
        ``fleet_names``) are there: the path question reads whole days from them."""
        return PATHS in self.migrations()

    def migrations(self) -> list[str]:
        return sorted({r[0] for r in self.entry.execute(f"SELECT name FROM `{self.db}`.forensix_migrations")})

    # -- writing -------------------------------------------------------------------
    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        """Append rows that belong to no frame (agent start/stop, gaps, alerts): never de-duplicated."""
        return self.append_frames(table, [(None, data)])

    def append_frames(self, table: str, parts: Sequence[tuple[str | None, pa.Table | pa.RecordBatch]]) -> int:
        """Append the rows of several frames (key ``host/stream/seq``) in one INSERT; a frame
        whose rows are stored already is left out. Returns the rows added."""
        if self.read_only:
            raise StoreError(f"{self.url} is open read-only", "open it as the writer")
        target = schema.TABLES.get(table)
        if target is None:
            raise StoreError(f"unknown table {table!r}", f"one of {sorted(schema.TABLES)}")
        keyed: list[tuple[int, pa.Table]] = []
        for key, data in parts:
            if isinstance(data, pa.RecordBatch):
                data = pa.Table.from_batches([data])
            if data.num_rows:
                keyed.append((frame_hash(key) if key else 0, conform(data, target, table)))
        if not keyed:
            return 0
        delay = 0.2
        while True:
            try:
                return self._insert(table, keyed)
            except ClickHouseUnavailable as e:
                if not self.retry or self._closing.is_set():
                    raise
                down = self.down_shards()
                which = f" (down: {', '.join(down)})" if down else ""
                log.error("%s%s; the batch (%d rows of %s) is kept and retried in %.1f s",
                          e.message, which, sum(d.num_rows for _, d in keyed), table, delay)
                if self._closing.wait(delay):
                    raise
                delay = min(delay * 2, self.retry_max_s)

    def _insert(self, table: str, keyed: list[tuple[int, pa.Table]]) -> int:
        todo = _missing(table, keyed, self._present(table, keyed))
        if not todo:
            return 0
        data = pa.concat_tables([d for _, d in todo]) if len(todo) > 1 else todo[0][1]
        batch = pa.concat_arrays([pa.array([h] * d.num_rows, pa.uint64()) for h, d in todo])
        stored = stored_table(table, _without_empty(table, data), batch)
        if not (self.cluster and self._direct):
            self._insert_into(self.entry, self._table(table), stored, {"insert_distributed_sync": 1})
            return int(data.num_rows)
        # each shard's rows into its local table: no wait on 18.16's synchronous Distributed
        # insert, no second hop. Frames are per host and a host is on one shard, so an insert
        # that reached one shard and not the next is completed by the retry (``_present``).
        hosts = pc.unique(stored.column("host_name")).to_pylist()
        where = self._shard_of([str(h) for h in hosts])
        local = f"`{self.db}`.`{local_name(table, self.cluster)}`"
        for i, srv in enumerate(self.shards):
            mine = [h for h, j in where.items() if j == i]
            if not mine:
                continue
            part = stored if len(mine) == len(hosts) else stored.filter(
                pc.is_in(stored.column("host_name"), value_set=pa.array(mine, pa.string())))
            self._insert_into(srv, local, part, {})
        return int(data.num_rows)

    def _insert_into(self, srv: Server, ref: str, stored: pa.Table, settings: dict[str, int]) -> None:
        sql = f"INSERT INTO {ref} ({', '.join(f'`{n}`' for n in stored.column_names)}) VALUES"
        with self._lock:  # the columns go as Native blocks built from Arrow's buffers (native.py)
            srv.execute(sql, ArrowData.of(stored), settings=settings)

    def _present(self, table: str, keyed: list[tuple[int, pa.Table]]) -> set[tuple[int, int]]:
        """The (frame, day) pairs of ``keyed`` whose rows are in the store already (a crash,
        an INSERT that reached one shard or one day and not the next). Asked PRESENT_FRAMES
        frames at a time: a group of many small frames (many hosts, each sending little)
        would make one query longer than a server takes (max_query_size: 256 KiB)."""
        framed = [(h, d) for h, d in keyed if h]
        out: set[tuple[int, int]] = set()
        for i in range(0, len(framed), PRESENT_FRAMES):
            chunk = framed[i:i + PRESENT_FRAMES]
            hashes = sorted({h for h, _ in chunk})
            hosts = sorted({h for _, d in chunk for h in pc.unique(d.column("host_name")).to_pylist()})
            t = KEYS[table].time
            # a NULL time is 0 to the query (ifNull), and so to the range
            lo = min(pc.min(pc.fill_null(d.column(t), 0)).as_py() or 0 for _, d in chunk)
            hi = max(pc.max(pc.fill_null(d.column(t), 0)).as_py() or 0 for _, d in chunk)
            with self._lock:
                rows = self.entry.execute(present_sql(self._table(table), table, hosts, lo, hi, hashes))
            out |= {(int(h), int(day)) for h, day in rows}
        return out

    def flush(self) -> None:
        """Every append is durable on its shard when it returns (synchronous Distributed INSERT)."""

    # -- reading ---------------------------------------------------------------------
    def native(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run ClickHouse SQL (``{name}`` placeholders, tables by their plain names in the
        store's database) and return Arrow."""
        with self._lock:
            return self._reads.table(sql, params)

    def native_each(self, sql: str, params: Mapping[str, Any] | None = None) -> list[pa.Table] | None:
        """Run ClickHouse SQL on every shard at once, each over its own tables (``{local}``
        suffix: ``_local`` on a cluster), a thread and a connection each; one result per
        shard. None for a cluster whose shards have replicas or weights (ask ``native``).
        Only for a query whose every group has one host (a host lives on one shard)."""
        if not self._direct:
            return None
        sql = sql.replace("{local}", "_local" if self.cluster else "")
        with self._lock:
            if not self._shard_reads:
                self._shard_reads = [Server(s.host, s.port, database=self.db) for s in self.shards]
            servers = list(self._shard_reads)
            if len(servers) == 1:
                return [servers[0].table(sql, params)]
            with ThreadPoolExecutor(max_workers=len(servers), thread_name_prefix="fx-fleet") as pool:
                return list(pool.map(lambda srv: srv.table(sql, params), servers))

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """DuckDB SQL, as every analysis writes it: run over the store pulled into memory."""
        from forensix.store.clickhouse.reader import ClickHouseReader

        with ClickHouseReader(self) as r:
            return r.query(sql, params)

    def select_table(self, table: str, where: str = "", columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of a store table as the logical schema (arrays with NULL restored), filtered by
        ``where``; ``columns``: only these columns of it. Decoded by the driver's Arrow reader:
        a slice's pull of 100,000 events is values by the million, each a Python object on the
        driver's row path (``native``)."""
        with self._lock:
            data = self._reads.arrow(select_sql(table, where, columns))
        return from_stored(table, data)

    # -- retention -----------------------------------------------------------------
    def partitions(self) -> list[tuple[str, str, str, int]]:
        """(server, table, partition YYYYMMDD, rows) of every day partition on every server,
        the fleet questions' summaries included (partitioned by the same days)."""
        out = []
        for srv in self.shards:
            tables = [local_name(t, self.cluster) for t in schema.TABLES] + summary_tables(self.cluster)
            names = ", ".join(f"'{t}'" for t in tables)
            rows = srv.execute(
                f"SELECT table, partition, sum(rows) FROM system.parts WHERE database = '{self.db}' "
                f"AND table IN ({names}) AND active GROUP BY table, partition ORDER BY table, partition")
            out += [(srv.where, str(t), str(p), int(n)) for t, p, n in rows]
        return out

    def drop_partition(self, server: str, table: str, partition: str) -> None:
        srv = next(s for s in self.shards if s.where == server)
        srv.execute(f"ALTER TABLE `{self.db}`.`{table}` DROP PARTITION {int(partition)}")

    def close(self) -> None:
        """Stop retrying (an append waiting for a shard raises) and disconnect."""
        self._closing.set()
        with self._lock:
            for s in {id(s): s for s in [self.entry, self._reads, *self.shards, *self._shard_reads]}.values():
                s.close()

    def abort(self) -> None:
        """Make a waiting append give up now (its frames stay in evidence, re-ingested at start)."""
        self._closing.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
