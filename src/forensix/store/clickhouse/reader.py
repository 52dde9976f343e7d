"""Per-incident analyses on a ClickHouse store: the slice they read, in an in-memory DuckDB.

The analyses (tree, timeline, sessions, file, backtrack, forward, report, hunt, ps,
events) are DuckDB SQL through ``Reader.query``; ClickHouse 18.16 has no recursive CTEs,
window functions or more than one JOIN per SELECT, so they are not rewritten. Instead
this reader keeps an in-memory DuckDB with the same tables and views as the embedded store
(``events`` shows the flow edges stored only in ``flows``, as ``DuckDBStore`` does), and
before each query pulls into it what the query reads and is not there yet: the tables it
scans, only the columns it reads (``needs``), only the rows of the slice (its hosts, the
time window), columnar. A table no query reads (terminal bytes, artifact blobs) is never
pulled. Fleet questions do not come here: they run in ClickHouse itself
(``store.clickhouse.fleet``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import duckdb
import pyarrow as pa

from forensix.errors import StoreError, UsageError
from forensix.store import schema
from forensix.store.clickhouse.connection import literal
from forensix.store.clickhouse.ddl import KEYS
from forensix.store.clickhouse.follow import ONE_HOST, candidates_sql, hosts_of_sql, peers_sql
from forensix.store.clickhouse.needs import ALL, BASE, PROFILES, reads, set_up
from forensix.store.clickhouse.store import ClickHouseStore

__all__ = ["ClickHouseReader", "Pull"]

log = logging.getLogger("forensix.store")

# tables whose rows are cut to the time window (processes and hosts are kept whole for the
# host: a process tree at a time needs the processes started before it)
_WINDOWED = ("events", "flows", "gaps", "alerts")
_WIDEN_AFTER = 2  # pulls of a table after which a query reading more gets every column


@dataclass(frozen=True)
class Pull:
    """One table pulled into the slice: which columns, how many rows, how long it took."""

    table: str
    columns: tuple[str, ...]
    rows: int
    seconds: float
    hosts: tuple[str, ...] | None  # None: every host of the store


class ClickHouseReader:
    """A ``Reader`` over a slice of a ClickHouse store: ``host`` (name or id), ``since``/``until``
    (UTC ns). ``profile``: the analysis about to run (a command name in ``needs.PROFILES``): the
    first pull of a table takes every column that analysis reads of it, not only the first
    query's, so the table is pulled once instead of again at each query that reads more."""

    def __init__(self, store: ClickHouseStore, host: str | None = None, since: int | None = None,
                 until: int | None = None, own_store: bool = False, profile: str | None = None) -> None:
        self.store = store
        self._prefetch = PROFILES.get(profile or "", {})
        self.host, self.since, self.until = host, since, until
        self._own = own_store
        self._con: duckdb.DuckDBPyConnection | None = None
        self._have: dict[str, frozenset[str]] = {}  # table -> the columns pulled
        self._times: dict[str, int] = {}  # table -> how often it was pulled (wider each time)
        self._tables: set[str] | None = None  # the tables the database has (asked once)
        self._lock = threading.Lock()  # the web UI queries from several threads
        self.rows: dict[str, int] = {}  # table -> rows in the slice (of the tables pulled)
        self.pulls: list[Pull] = []  # every pull, in order (docs and the benchmark show them)
        self.names: list[str] = []  # the host names of the slice (--host may give ids)
        self._following = False  # narrowed to a walk's hosts by ``start_on`` (no --host given)
        self.follow_in_walk = True  # a walk widens the slice as it crosses (analysis.crosshost.follow)
        self._has_summaries: bool | None = None  # the store has 0003_fleet_summaries (asked once)
        self._asked: set[tuple[tuple[str, int], tuple[str, int]]] = set()  # connections whose peers are known
        if host is not None:
            self._check_host(host)

    def _hosts(self) -> list[str]:
        """``host`` may name several hosts, comma-separated (a connection between them is followed)."""
        return [h.strip() for h in (self.host or "").split(",") if h.strip()]

    def _check_host(self, host: str) -> None:
        """Each given host by name (the sort key: the slice is read through the index) or by id."""
        missing = []
        self.names = []
        for one in self._hosts():
            h = literal(one)
            found = self.store.native(f"SELECT host_name FROM events WHERE host_name = {h} LIMIT 1")
            if not found.num_rows:  # an id: its name (a scan, once)
                found = self.store.native(f"SELECT host_name FROM events WHERE host_id = {h} LIMIT 1")
            if found.num_rows:
                self.names.append(str(found.column(0)[0].as_py()))
            else:
                missing.append(one)
        if not missing:
            return
        host = ", ".join(missing)
        names = self.store.native("SELECT DISTINCT host_name FROM events ORDER BY host_name LIMIT 50")
        raise UsageError(f"no host {host!r} in {self.store.url}",
                         f"hosts in this store: {', '.join(map(str, names.column(0).to_pylist())) or 'none'}")

    def _slice_hosts(self) -> tuple[str, ...] | None:
        return tuple(self.names) if self.host is not None or self._following else None

    def _where(self, table: str, names: list[str] | None = None) -> str:
        conds = []
        if self.host is not None or self._following:
            conds.append(f"host_name IN {literal(names if names is not None else self.names)}")
        if table in _WINDOWED:
            t = KEYS[table].time
            if self.since is not None:
                conds.append(f"ifNull({t}, 0) >= {int(self.since)}")
            if self.until is not None:
                conds.append(f"ifNull({t}, 0) <= {int(self.until)}")
        return " AND ".join(conds)

    def load(self, tables: Mapping[str, frozenset[str]] | None = None) -> duckdb.DuckDBPyConnection:
        """Set up the slice (once), and pull ``tables`` into it now (table -> columns, ``ALL``
        for every one) unless they are there already; queries pull what they read themselves."""
        with self._lock:
            if self._con is None:
                con = duckdb.connect(":memory:")
                try:
                    set_up(con)
                except BaseException:
                    con.close()
                    raise
                self._con = con
            for table, cols in (tables or {}).items():
                self._ensure(table, cols)
            return self._con

    def _ensure(self, table: str, cols: frozenset[str]) -> None:
        """``table`` in the slice with at least ``cols``: pulled again, with the columns it
        has and the new ones, when a query reads a column not pulled yet."""
        have = self._have.get(table)
        if have is not None and (have == ALL or (cols != ALL and cols <= have)):
            return
        if have is None:
            cols = ALL if cols == ALL else cols | self._prefetch.get(table, frozenset())
        want = ALL if cols == ALL or have == ALL else cols | (have or frozenset())
        if self._times.get(table, 0) >= _WIDEN_AFTER:
            # a caller with no profile whose queries keep reading more (a hunt's rules, the
            # web UI): the whole table once, not one more pull per query
            want = ALL
        names = list(schema.TABLES[table].names)
        if want != ALL and set(want) >= set(names):
            want = ALL
        if table not in self._stored_tables():
            # a table of a newer forensix than the one whose server made the database: empty
            self._have[table], self.rows[table] = ALL, 0
            return
        t0 = time.monotonic()
        data = self.store.select_table(table, self._where(table), None if want == ALL else
                                       [n for n in names if n in want])
        self._put(table, data, replace=True)
        self._have[table] = want
        self._times[table] = self._times.get(table, 0) + 1
        self.rows[table] = data.num_rows
        pull = Pull(table, tuple(data.column_names), data.num_rows, time.monotonic() - t0, self._slice_hosts())
        self.pulls.append(pull)
        log.debug("slice of %s: pulled %s of %s, %d rows, %.3f s, columns %s", self.store.url, table,
                  ",".join(pull.hosts or ["every host"]), pull.rows, pull.seconds, ",".join(pull.columns))

    def _stored_tables(self) -> set[str]:
        if self._tables is None:
            self._tables = {str(t) for t in self.store.native(
                "SELECT name FROM system.tables WHERE database = currentDatabase()").column(0).to_pylist()}
        return self._tables

    def _put(self, table: str, data: pa.Table, replace: bool) -> None:
        """``data`` (some columns of ``table``) into the slice, in place of what it held or added."""
        assert self._con is not None
        base = BASE.get(table, table)
        # the columns not pulled are NULL (no query reads them): DuckDB stores a constant
        # column for them, where NULL arrays made in Arrow would cost more than the pull
        self._con.register("_fx_pull", data)
        self._con.register("_fx_empty", schema.TABLES[table].empty_table())
        try:
            if replace:
                self._con.execute(f'CREATE OR REPLACE TABLE "{base}" AS SELECT * FROM _fx_empty')
            self._con.execute(f'INSERT INTO "{base}" BY NAME SELECT * FROM _fx_pull')
        finally:
            self._con.unregister("_fx_pull")
            self._con.unregister("_fx_empty")

    # -- a walk that follows connections to other hosts (no --host given) ------------------
    def start_on(self, kind: str, fields: Mapping[str, Any]) -> bool:
        """Narrow a reader of the whole store, before its first query, to the hosts a detection
        point (``Target``'s kind and fields) is recorded on. False when it is not narrowed:
        --host was given, a query ran already, or the point cannot be placed (not recorded,
        or a kind ``follow.hosts_of_sql`` does not know): the slice stays what it was."""
        if self.host is not None or self._have:
            return False
        sqls = hosts_of_sql(kind, fields, self._summarized())
        if sqls is None:
            return False
        hosts: set[str] = set()
        for sql in sqls:
            if sql == ONE_HOST:
                break
            hosts |= {str(h) for h in self.store.native(sql).column(0).to_pylist()}
            if hosts and sqls[-1] == ONE_HOST:
                break
        found = sorted(hosts)
        if not found:
            return False
        self.names, self._following = found, True
        return True

    def _summarized(self) -> bool:
        """The store has the summary tables a walk can place itself with (asked once)."""
        if self._has_summaries is None:
            self._has_summaries = self.store.summarized()
        return self._has_summaries

    def peer_hosts(self, connections: Iterable[tuple[tuple[str, int], tuple[str, int]]]) -> set[str]:
        """The hosts outside the slice with a network event on one of ``connections`` (each
        its two endpoints); none when the slice is not following a walk."""
        # a connection asked about once needs no second scan of the fleet: its peers were added
        new = set(connections) - self._asked
        self._asked |= new
        if not self._following:
            return set()
        among: list[str] | None = None
        if self._summarized():
            cands = candidates_sql(new, self.names)
            among = [] if cands is None else [str(h) for h in self.store.native(cands).column(0).to_pylist()]
            if not among:
                return set()
        sql = peers_sql(new, self.names, among)
        if sql is None:
            return set()
        return {str(h) for h in self.store.native(sql).column(0).to_pylist()}

    def add_hosts(self, hosts: Iterable[str]) -> None:
        """Widen a following slice by ``hosts``: each table pulled so far gets their rows too
        (the same columns); the tables not pulled yet will be pulled for every host."""
        new = sorted(set(hosts) - set(self.names))
        if not new or not self._following:
            return
        with self._lock:
            for table, cols in self._have.items():
                t0 = time.monotonic()
                data = self.store.select_table(table, self._where(table, new), None if cols == ALL else
                                               [n for n in schema.TABLES[table].names if n in cols])
                self._put(table, data, replace=False)
                self.rows[table] = self.rows.get(table, 0) + data.num_rows
                self.pulls.append(Pull(table, tuple(data.column_names), data.num_rows, time.monotonic() - t0,
                                       tuple(new)))
                log.debug("slice of %s: added %s of %s, %d rows", self.store.url, table, ",".join(new), data.num_rows)
            self.names = sorted(self.names + new)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        con = self.load()
        with self._lock:
            for table, cols in reads(sql, params).items():
                self._ensure(table, cols)
        cur = con.cursor()
        try:
            rel = cur.sql(sql, params=dict(params) if params else None)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as e:
            raise StoreError(f"query failed: {e}", "check the query and the store") from e
        finally:
            cur.close()

    def native(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """ClickHouse SQL on the whole store (fleet questions)."""
        return self.store.native(sql, params)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._own:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
