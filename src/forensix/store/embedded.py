"""The embedded store: one DuckDB file, one writer, many readers.

DuckDB lets one process write a file and no other process open it meanwhile, so the
writer serves read-only queries to other processes over a Unix socket beside the file
(``STORE.sock``, mode 0600). ``open_reader`` opens the file directly when it is free and
goes through that socket when a recorder or server holds it: an investigator queries
while recording runs, with no lock error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import duckdb
import numpy as np
import pyarrow as pa

from forensix.errors import NotAStoreError, StoreBusyError, StoreError
from forensix.nice import SEAL_NICE
from forensix.store import codec, schema
from forensix.store.base import Reader
from forensix.store.journal import JournaledTable, Parts, conform, journal_dir
from forensix.store.migrations import (
    JOURNALED,
    KNOWN_FORMATS,
    MIGRATIONS,
    STORE_FORMAT,
    duckdb_type,
)
from forensix.store.private import FILE_MODE
from forensix.threadname import name_native_thread

__all__ = ["DuckDBStore", "open_reader", "open_writer", "remove_store", "socket_path", "store_files"]

log = logging.getLogger("forensix.store")

_DUCKDB_MAGIC = b"DUCK"


def socket_path(path: str | os.PathLike[str]) -> Path:
    """Where the writer of ``path`` listens for queries."""
    p = Path(path)
    return p.with_name(p.name + ".sock")


def store_files(path: str | os.PathLike[str]) -> list[Path]:
    """Every file that belongs to the store at ``path``: what to copy, hash or measure."""
    p = Path(path)
    out = [f for f in (p, p.with_name(p.name + ".wal")) if f.is_file()]
    jd = journal_dir(p)
    if jd.is_dir():
        out += sorted(f for f in jd.rglob("*") if f.is_file())
    return out


def remove_store(path: str | os.PathLike[str]) -> None:
    """Delete the store at ``path`` and its journals (benchmarks and tests start afresh)."""
    import shutil

    p = Path(path)
    for f in (p, p.with_name(p.name + ".wal"), socket_path(p)):
        f.unlink(missing_ok=True)
    shutil.rmtree(journal_dir(p), ignore_errors=True)


def _query_error(e: duckdb.Error, hint: str) -> StoreError:
    return StoreError(f"query failed: {e}", hint)


def _run(cur: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None) -> pa.Table:
    """One statement's result as Arrow (empty for a statement that returns none)."""
    rel = cur.sql(sql, params=dict(params) if params else None)
    return rel.to_arrow_table() if rel is not None else pa.table({})


def _end(cur: duckdb.DuckDBPyConnection) -> None:
    """Roll back whatever a query changed and close its connection."""
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass
    finally:
        cur.close()


def _check_is_duckdb(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise StoreError(f"cannot read store {path}: {e.strerror}", "check the path and permissions") from e
    if len(head) == 0:
        return  # an empty file: DuckDB refuses it too, reported below
    if head[8:12] != _DUCKDB_MAGIC:
        raise NotAStoreError(
            f"{path} is not a forensix store (not a DuckDB database); it was left untouched",
            "choose another --store path, or move this file away",
        )


# Journals whose rows are not a logical table's whole schema (codec.PARTS)
_SCHEMAS = {codec.NET_TABLE: codec.NET_SCHEMA}


# DuckDB's block, for files it creates. 64 KiB instead of its default 256 KiB: every table,
# however small, and every partly filled segment take whole blocks, and a store has a dozen
# small tables. The same rows copied into each size (COPY FROM DATABASE; bench/notes.md,
# "The store's block size"): a host-wide recording during a build (2.3 M rows) 66.6 -> 61.0
# bytes per event, the synthetic 10^6-event store 46.4 -> 42.8 MB, a 2.5 k-event store
# 3.4 -> 1.1 MB; 32 KiB was larger again (compressed segments cannot span blocks), and the
# analyses at 10^6 events were no slower.
NEW_STORE_BLOCK_SIZE = 64 << 10


class DuckDBStore:
    """A forensix store in a DuckDB file (reader or the single writer)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False, keeper: bool = False,
                 recover_all: bool = True) -> None:
        """``keeper``: the writer in a store keeper process (store/keeper.py): every table's rows
        come through journals that a recorder appends (store/appender.py), sealed by
        ``seal_closed``; ``recover_all``: none is being appended yet, seal them all on opening."""
        self.path = Path(path)
        self.read_only = read_only
        self.keeper = keeper and not read_only
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            _check_is_duckdb(self.path)
        elif read_only:
            raise StoreError(
                f"no store at {self.path}",
                "record first (forensix record --store PATH) or give the right --store",
            )
        try:
            # a new file gets NEW_STORE_BLOCK_SIZE; an existing one keeps the size it was made with
            config: dict[str, str | bool | int | float | list[str]] = (
                {} if exists or read_only else {"default_block_size": str(NEW_STORE_BLOCK_SIZE)})
            self._con = duckdb.connect(str(self.path), read_only=read_only, config=config)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreBusyError(
                    f"{self.path} is held by another process: {e}",
                    "stop the other recorder, or query through it (it serves STORE.sock)",
                ) from e
            raise NotAStoreError(
                f"{self.path} cannot be opened as a forensix store: {e}",
                "choose another --store path",
            ) from e
        self._lock = threading.RLock()  # DuckDB writes, seals and query snapshots
        self._files_lock = threading.Lock()  # a seal's ids in the file table (codec.split_files)
        self._next_file_id: int | None = None  # the next of them: read once, then counted here
        self.format = STORE_FORMAT
        if exists:
            self._check_format()
        self._jlock = -1
        if not read_only and not self.keeper:
            # a recorder appending journals holds them exclusively (store/keeper.py): sealing them
            # from here would take rows it is still writing
            from forensix.store.keeper import lock_journals

            try:
                self._jlock = lock_journals(self.path, exclusive=False)
            except StoreBusyError:
                self._con.close()
                raise
        if not read_only:
            # keystrokes and command lines: root only, whatever the umask (store/private.py). DuckDB
            # creates the file and its WAL itself; the forensix command narrows its umask for them
            for f in (self.path, self.path.with_name(self.path.name + ".wal")):
                if f.exists():
                    os.chmod(f, FILE_MODE)
            self._migrate()
            self.format = STORE_FORMAT
        # stores of format /1 (read-only here) have no journals: their tables are read as they are
        self._journals: dict[str, JournaledTable] = {}
        self._sealing: _SealThread | None = None
        self._views: dict[str, str] = {}  # table -> the SELECT its view reads the base table through
        # a read-only store never changes under its reader: each thread keeps one cursor with
        # its views (setting them up is ~3 ms, half of a small analysis query)
        self._kept = threading.local()
        self._kept_all: list[duckdb.DuckDBPyConnection] = []
        self.recovered: list[str] = []
        self._flow_rows = False  # the events view derives rows from flow edges stored once (/5)
        have = {r[0] for r in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        self._parts = Parts()  # a batch of events split between two journals (/17), resumed after a failure
        if self.format != "forensix-store/1":
            sealed = {t: (int(q), int(o)) for t, q, o in
                      self._con.execute("SELECT table_name, seq, row_offset FROM forensix_sealed").fetchall()}
            for name in JOURNALED:
                # the journals of its parts (codec.PARTS) that this store's format has
                for part in codec.PARTS.get(name, (name,)):
                    if f"{part}_base" not in have:
                        continue
                    self._journals[part] = JournaledTable(
                        journal_dir(self.path), part, _SCHEMAS.get(part, schema.TABLES[name]),
                        sealed=sealed.get(part, (0, 0)), sealer=None if read_only else self._sealer(part),
                        lock=self._lock, encode=functools.partial(codec.encode, part), external=self.keeper,
                        recover_all=recover_all,
                    )
                self._views[name] = self._base_view(name)
            self._flow_rows = "in_events" in self._columns("flows_base")
        # tables of a newer format than a read-only store has (accounts, /14) read as empty, so
        # an analysis can ask for them and learn that the store has none
        self._absent = {n: _empty_sql(s) for n, s in schema.TABLES.items()
                        if n not in have and f"{n}_base" not in have}
        if self.format != "forensix-store/1":
            self._side_journals(sealed, have, recover_all)
        self.recovered = [note for t in self._journals.values() for note in t.recovered]

    def _side_journals(self, sealed: dict[str, tuple[int, int]], have: set[str], recover_all: bool) -> None:
        """Journals of the tables other writers insert directly (gaps, alerts, tty, ...), which a
        recorder appends through journals too (store/appender.py): a keeper seals them; readers
        union what is not sealed yet; any other writer seals what a recorder left, then inserts
        as before."""
        jd = journal_dir(self.path)
        # fetchall: a result left unfinished on the connection (fetchone) makes DuckDB 2 refuse
        # the connection's next relation (.sql) until it is
        catalog = self._con.execute("SELECT current_database()").fetchall()[0]
        for name in schema.TABLES:
            if name in JOURNALED or name not in have:
                continue
            if not self.keeper and not any((jd / name).glob("*.arrows")):
                continue
            j = JournaledTable(jd, name, schema.TABLES[name], sealed=sealed.get(name, (0, 0)),
                               sealer=None if self.read_only else self._sealer(name, base=False), lock=self._lock,
                               external=self.keeper, recover_all=recover_all or not self.keeper)
            if self.read_only or self.keeper:
                self._journals[name] = j
                # the catalog named: an unqualified name would be the temporary view itself
                self._views[name] = f'SELECT * FROM "{catalog[0] if catalog else "main"}".main."{name}"'
            else:
                self.recovered += j.recovered

    # -- format and migrations -------------------------------------------------
    def _check_format(self) -> None:
        tables = {r[0] for r in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "forensix_meta" not in tables:
            self._con.close()
            raise NotAStoreError(
                f"{self.path} is a DuckDB database but not a forensix store; it was left untouched",
                "choose another --store path",
            )
        row = self._con.execute("SELECT value FROM forensix_meta WHERE key = 'format'").fetchone()
        if row is None or row[0] not in KNOWN_FORMATS:
            self._con.close()
            raise NotAStoreError(
                f"{self.path} has store format {row[0] if row else None!r}, expected one of {sorted(KNOWN_FORMATS)}",
                "use the forensix version that wrote it",
            )
        self.format = str(row[0])

    def _migrate(self) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS forensix_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute(
            "CREATE TABLE IF NOT EXISTS forensix_migrations (name VARCHAR PRIMARY KEY, applied_ns BIGINT)"
        )
        con.execute(
            "INSERT INTO forensix_meta VALUES ('format', 'forensix-store/1') ON CONFLICT DO NOTHING"
        )
        done = {r[0] for r in con.execute("SELECT name FROM forensix_migrations").fetchall()}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            con.execute("BEGIN")
            for stmt in statements:
                con.execute(stmt)
            con.execute(
                "INSERT INTO forensix_migrations VALUES ($n, epoch_ns(now()))", {"n": name}
            )
            con.execute("COMMIT")

    def migrations(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT name FROM forensix_migrations ORDER BY name").fetchall()]

    def _columns(self, table: str) -> set[str]:
        return {r[0] for r in self._con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = $t", {"t": table}).fetchall()}

    def _base_view(self, name: str) -> str:
        """How queries read the sealed rows of ``name``: its journals' tables (codec.PARTS),
        decoded, events_base's with NULL for the columns of newer formats (an older store
        opened read-only), the network rows' (/17) with NULL for the columns they lack."""
        sql = self._decoded(name, name)
        for part in codec.PARTS.get(name, (name,))[1:]:
            if part in self._journals:
                sql += f" UNION ALL BY NAME {self._decoded(part, name)}"
        return sql

    def _decoded(self, part: str, name: str) -> str:
        have = self._columns(f"{part}_base")
        extra = set(codec.CODEC_COLUMNS.get(part, {}))
        if extra and "clock_offset" in have:  # format /4 on; args_xor from /9
            sql = codec.decoded_sql(part, f"main.{part}_base", extra & have)
        else:
            sql = f"SELECT * FROM main.{part}_base"
        missing = [f for f in _SCHEMAS.get(part, schema.TABLES[name]) if f.name not in have]
        if not missing:
            return sql
        nulls = ", ".join(f'NULL::{duckdb_type(f.type)} AS "{f.name}"' for f in missing)
        return f"SELECT *, {nulls} FROM ({sql})"

    # -- writing ---------------------------------------------------------------
    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only", "open it as the writer")
        target = schema.TABLES.get(table) or schema.SIDE_TABLES.get(table)
        if target is None:
            raise StoreError(f"unknown table {table!r}", f"one of {sorted(schema.TABLES)}")
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if data.num_rows == 0:
            return 0
        if table in self._journals:
            rows = conform(data, target, table)
            # a writer has migrated the store, so events have their network rows' journal (/17)
            split = codec.NET_TABLE in self._journals
            self._parts.append(data, lambda: codec.parts(table, rows) if split else [(table, rows)],
                               lambda name, part: self._journals[name].append(part))
            return int(rows.num_rows)
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.register("_fx_batch", data)
                cols = ", ".join(f'"{c}"' for c in data.column_names)
                cur.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _fx_batch')
                cur.unregister("_fx_batch")
            finally:
                cur.close()
        return int(data.num_rows)

    def _sealer(self, name: str, base: bool = True) -> Callable[[pa.Table, tuple[int, int], Callable[[], None]], None]:
        target = f"{name}_base" if base else name

        def seal(data: pa.Table, pos: tuple[int, int], flip: Callable[[], None]) -> None:
            """Journal rows and how far they are now sealed, in one transaction: sealed once,
            whatever dies when. The insert runs outside the store's lock (queries pin their own
            snapshot, appends go to the journal); the commit and ``flip`` run under it, so no
            query sees the rows twice or not at all."""
            files = base and "file_id" in data.schema.names  # events and flows (/16): their file table too
            # the file table's ids are taken by one seal at a time, until its commit
            with self._files_lock if files else contextlib.nullcontext():
                cur = self._con.cursor()
                try:
                    cur.execute("BEGIN TRANSACTION")
                    added = 0
                    if data.num_rows and files:
                        data, added = self._store_files(cur, data)
                    if data.num_rows:
                        _insert(cur, target, data)
                    with self._lock:
                        cur.execute(
                            "INSERT INTO forensix_sealed VALUES ($t, $q, $o) ON CONFLICT (table_name) "
                            "DO UPDATE SET seq = excluded.seq, row_offset = excluded.row_offset",
                            {"t": name, "q": pos[0], "o": pos[1]},
                        )
                        cur.execute("COMMIT")
                        flip()
                    if files:
                        self._next_file_id = (self._next_file_id or 0) + added
                finally:
                    cur.close()
        return seal

    def _store_files(self, cur: duckdb.DuckDBPyConnection, data: pa.Table) -> tuple[pa.Table, int]:
        """Encoded rows with their files in FILES_TABLE (codec.split_files): the files a
        recent seal stored already keep their ids, the others are added. Returns the rows as
        stored and how many files were added."""
        if self._next_file_id is None:
            self._next_file_id = int(cur.execute(
                f'SELECT coalesce(max(file_id) + 1, 0) FROM "{codec.FILES_TABLE}"').fetchall()[0][0])
        files = codec.split_files(data)
        known = np.full(files.num_rows, -1, np.int64)
        if files.num_rows and self._next_file_id:
            cur.register("_fx_files", files)
            hit = cur.execute(codec.known_files_sql(f'"{codec.FILES_TABLE}"', "_fx_files"),
                              {"lo": max(0, self._next_file_id - codec.KNOWN_WINDOW)}).fetchnumpy()
            cur.unregister("_fx_files")
            known[hit["local"].astype(np.int64)] = hit["id"].astype(np.int64)
        data, added = codec.store_files(data, files, known, self._next_file_id)
        if added.num_rows:
            _insert(cur, codec.FILES_TABLE, added)
        return data, added.num_rows

    def seal_in_background(self, nice: int = SEAL_NICE, single_threaded: bool = True) -> None:
        """Seal the journals on a thread of their own, at CPU priority ``nice``, instead of
        inside ``append``.

        A seal is the bulk of a store's CPU (DuckDB compresses every column of a row group:
        ~2 µs per event), and none of it is urgent: journal rows are durable and queried
        already. Off the appending thread and at low priority, it yields the CPU to the
        workload being recorded and runs when a core is free; the appending thread never
        waits for it. ``single_threaded`` (a recorder): DuckDB runs on one thread, so that
        the insert runs on the sealing thread itself, at its priority. A log host keeps
        DuckDB's threads for its queries and only takes the seal off its ingest thread."""
        if self.read_only or self._sealing is not None:
            return
        if single_threaded:
            with self._lock:
                self._con.execute("SET threads = 1")
        self._sealing = _SealThread(self._journals, nice)
        for journal in self._journals.values():
            journal.on_due = self._sealing.wanted
        self._sealing.start()

    def sync(self) -> None:
        """Every row appended so far durable (journals fsynced; DuckDB's own commits are)."""
        for journal in self._journals.values():
            journal.sync()

    def limit_threads(self, n: int) -> None:
        with self._lock:
            self._con.execute(f"SET threads = {int(n)}")

    def sealed_seqs(self) -> dict[str, int]:
        """Per journaled table, the first journal number not sealed: where appends continue."""
        return {name: j.sealed[0] for name, j in self._journals.items()}

    def seal_closed(self, everything: bool = False) -> int:
        """A keeper's seal: the journals the recorder closed (all of them once it has stopped,
        ``everything``), then a checkpoint when rows went in. Returns the rows sealed."""
        rows = sum(j.seal_closed(everything) for j in self._journals.values())
        self.recovered = [note for t in self._journals.values() for note in t.recovered]
        if rows:
            with self._lock:
                self._con.execute("CHECKPOINT")
        return rows

    def flush(self) -> None:
        """Seal every journal and checkpoint the DuckDB file: all durable, all compact."""
        if self.keeper:  # the newest journals may be a recorder's, still open
            self.seal_closed()
            return
        # no background seal runs meanwhile (one in progress finishes first)
        with self._sealing.paused() if self._sealing is not None else contextlib.nullcontext():
            for journal in self._journals.values():
                journal.seal()
            with self._lock:
                self._con.execute("CHECKPOINT")

    # -- reading ---------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own, in a transaction, whose ``events``/``flows``/``processes`` are whole.

        Each is a view over the DuckDB table and the journal's rows not sealed yet, taken
        under the writer's lock, so a seal cannot move rows between the two halfway: every
        row in exactly one of them.
        """
        cur = self._con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            with self._lock:
                tails = {name: j.snapshot() for name, j in self._journals.items()}
                cur.execute("SELECT count(*) FROM forensix_meta").fetchall()  # pins DuckDB's snapshot
            # events last: its view reads the flows view (edges stored once, format /5)
            for name in sorted(self._views, key=lambda n: n == "events"):
                parts = codec.PARTS.get(name, (name,))
                if name not in JOURNALED and tails.get(name) is None:
                    continue  # a table inserted directly, with nothing in its journal: the table itself
                sql = self._views[name]
                for part in parts:  # the journals' rows not sealed yet, network rows' too (/17)
                    tail = tails.get(part)
                    if tail is not None:
                        cur.register(f"_fx_tail_{part}", tail)
                        sql += f" UNION ALL BY NAME SELECT * FROM _fx_tail_{part}"
                if name == "events" and self._flow_rows:
                    sql += f" UNION ALL BY NAME {FLOW_EVENTS_SQL}"
                cur.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
            for name, sql in self._absent.items():
                cur.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS {sql}')
        except duckdb.Error as e:
            cur.close()
            raise _query_error(e, "check the store's files") from e
        return cur

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        if self.read_only:
            return self._query_kept(sql, params)
        cur = self._cursor()
        try:
            return _run(cur, sql, params)
        except duckdb.Error as e:
            raise _query_error(e, "check the query and the store") from e
        finally:
            _end(cur)

    def _query_kept(self, sql: str, params: Mapping[str, Any] | None) -> pa.Table:
        """``query`` on this thread's kept cursor (read-only stores). A failed statement
        leaves DuckDB's transaction aborted: that cursor is dropped, the next query makes one."""
        cur = getattr(self._kept, "cur", None)
        if cur is None:
            cur = self._cursor()
            self._kept.cur = cur
            with self._lock:
                self._kept_all.append(cur)
        try:
            return _run(cur, sql, params)
        except duckdb.Error as e:
            self._kept.cur = None
            with self._lock:
                if cur in self._kept_all:  # not after close(), which ended them all
                    self._kept_all.remove(cur)
            _end(cur)
            raise _query_error(e, "check the query and the store") from e

    def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a statement from another process: anything it changes is rolled back."""
        cur = self._cursor()  # in a transaction, rolled back by _end
        try:
            return _run(cur, sql, params)
        except duckdb.Error as e:
            raise _query_error(e, "check the query") from e
        finally:
            _end(cur)

    def close(self) -> None:
        with self._lock:
            kept, self._kept_all = self._kept_all, []
        for cur in kept:
            _end(cur)
        try:
            if self._sealing is not None:
                self._sealing.finish()
                self._sealing = None
            for journal in self._journals.values():
                journal.on_due = None
                journal.close()
        finally:
            try:
                self._con.close()
            except duckdb.Error:
                pass
            if self._jlock >= 0:
                os.close(self._jlock)
                self._jlock = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _insert(cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    # one chunk: DuckDB scans it on one thread into whole row groups
    # (split between threads, the row groups are partly filled: +40% bytes)
    cur.register("_fx_seal", data.combine_chunks())
    cur.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _fx_seal')
    cur.unregister("_fx_seal")


def _empty_sql(sch: pa.Schema) -> str:
    """A SELECT of no rows with the columns of ``sch``."""
    cols = ", ".join(f'NULL::{duckdb_type(f.type)} AS "{f.name}"' for f in sch)
    return f"SELECT {cols} WHERE false"


# The events row of a flow edge stored only in flows (schema.FLOWS: in_events false): the
# columns the recorder gave flow rows when it wrote them to events as well.
FLOW_EVENTS_SQL = (
    "SELECT host_id, host_name, boot_id, last_ts AS ts, ts_boot, 'event' AS event_kind, "
    "'flow' AS event_category, 'flow' AS event_action, entity_id AS process_entity_id, "
    "pid AS process_pid, tid AS process_tid, process_name, user_id, fd, file_inode, file_device, "
    "file_generation, file_type, "
    "file_path, read_count AS flow_read_count, read_bytes AS flow_read_bytes, "
    "write_count AS flow_write_count, write_bytes AS flow_write_bytes, first_ts AS flow_first_ts, "
    "last_ts AS flow_last_ts FROM flows WHERE in_events = false"
)


class _SealThread(threading.Thread):
    """Seals journals when their appends say a seal is due, at low CPU priority."""

    def __init__(self, journals: dict[str, JournaledTable], nice: int) -> None:
        super().__init__(name="fx-seal", daemon=True)
        self.journals = journals
        self.nice = nice
        self._cv = threading.Condition()
        self._due: dict[str, bool] = {}  # table -> seal everything (a quiet table)
        self._busy = False
        self._pause = 0
        self._stopping = False
        self.error: BaseException | None = None

    def wanted(self, journal: JournaledTable, everything: bool) -> None:
        # Called once the rows are in the journal: a seal that failed earlier is not raised
        # here (the append did succeed; raised, it would be retried and stored twice). It is
        # logged, its rows stay in the journal, and it is tried again now.
        with self._cv:
            self._due[journal.name] = self._due.get(journal.name, False) or everything
            self._cv.notify()

    def run(self) -> None:
        name_native_thread()
        try:  # Linux: the nice value of this thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except OSError:
            pass
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopping or (self._due and not self._pause))
                if self._stopping:
                    return
                name, everything = self._due.popitem()
                self._busy = True
            try:
                self.journals[name].seal(everything, keep_open=True)
            except Exception as e:  # noqa: BLE001 - rows stay in the journal, queried there; sealed on a later try
                self.error = e
                log.error("cannot seal the journal of %s (its rows stay in the journal, sealed later): %s", name, e)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._cv:
            self._pause += 1
            self._cv.wait_for(lambda: not self._busy)
        try:
            yield
        finally:
            with self._cv:
                self._pause -= 1
                self._cv.notify_all()

    def finish(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self.join()


def open_writer(path: str | os.PathLike[str]) -> DuckDBStore:
    """Open (creating if needed) the store for writing."""
    return DuckDBStore(path, read_only=False)


def open_reader(path: str | os.PathLike[str]) -> Reader:
    """Open a store for reading: directly, or through its writer's query socket."""
    p = Path(path)
    sock = socket_path(p)
    if sock.exists():
        from forensix.store.remote import SocketReader

        try:
            return SocketReader(sock)
        except StoreError:
            pass  # a stale socket from a writer that died: try the file itself
    try:
        return DuckDBStore(p, read_only=True)
    except StoreBusyError:
        if sock.exists():
            from forensix.store.remote import SocketReader

            return SocketReader(sock)
        raise
