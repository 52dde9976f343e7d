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
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

import duckdb
import pyarrow as pa

from forensix.errors import StoreError, UsageError
from forensix.store import schema
from forensix.store.clickhouse.connection import Server, literal
from forensix.store.clickhouse.ddl import KEYS
from forensix.store.clickhouse.follow import ONE_HOST, candidates_sql, hosts_of_sql, peers_sql
from forensix.store.clickhouse.needs import ALL, BASE, PROFILES, reads, scan_filters, set_up
from forensix.store.clickhouse.store import ClickHouseStore, from_stored, select_sql
from forensix.store.clickhouse.window import Keys, Window, keys_sql, scan_keys

__all__ = ["ClickHouseReader", "Pull"]

log = logging.getLogger("forensix.store")

# tables whose rows are cut to the time window (processes and hosts are kept whole for the
# host: a process tree at a time needs the processes started before it)
_WINDOWED = ("events", "flows", "gaps", "alerts")
_WIDEN_AFTER = 2  # pulls of a table after which a query reading more gets every column
# keys topped up outside a windowed table's windows after which the rest of its windowed
# hosts is pulled at once (every later top-up's condition excludes them all)
_TOP_UPS = 5000
# commands that read every event of each host of the slice in the end (the report's session,
# timeline and tree tables): a window would only add the top-ups' round trips (measured)
_WHOLE_HOSTS = frozenset({"report"})
_PULLERS = 3  # connections pulling tables at once (events, flows, processes of a step)


@dataclass(frozen=True)
class Pull:
    """One table pulled into the slice: which columns, how many rows, how long it took."""

    table: str
    columns: tuple[str, ...]
    rows: int
    seconds: float
    hosts: tuple[str, ...] | None  # None: every host of the store
    part: str = "slice"  # slice: the hosts' rows (in their windows); outside: a window's top-up


@dataclass(frozen=True)
class _Job:
    """A SELECT of one table's rows for the slice, and what to do with its answer."""

    table: str
    where: str
    columns: tuple[str, ...] | None  # None: every column
    replace: bool  # the table's rows in the slice are these (else: added to them)
    hosts: tuple[str, ...] | None
    part: str = "slice"


class ClickHouseReader:
    """A ``Reader`` over a slice of a ClickHouse store: ``host`` (name or id), ``since``/``until``
    (UTC ns). ``profile``: the analysis about to run (a command name in ``needs.PROFILES``): the
    first pull of a table takes every column that analysis reads of it, not only the first
    query's, so the table is pulled once instead of again at each query that reads more."""

    # events of a host a walk crosses into from which its rows are pulled in a time window
    # (store.clickhouse.window); a smaller host joins whole, cheaper than the top-ups
    window_from = 20_000

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
        # hosts a walk crossed into, kept in bulk only inside a time window (store.clickhouse.window)
        self.windows: dict[str, Window] = {}
        self._outside: dict[str, dict[str, set[str]]] = {}  # table -> the keys topped up outside the windows
        self._whole: set[tuple[str, str]] = set()  # (table, windowed host) pulled whole after all
        self._pullers: list[Server] = []  # connections of the concurrent pulls (one per thread)
        if profile in _WHOLE_HOSTS:
            self.window_from = 2**62
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
            hosts = names if names is not None else self.names
            windowed = [h for h in hosts if h in self._windowed(table)]
            plain = [h for h in hosts if h not in windowed]
            parts = [f"host_name IN {literal(plain)}"] if plain else []
            if windowed:
                # a windowed host: its rows in the window, and those topped up outside it so far
                inside = " OR ".join(f"(host_name = {literal(h)} AND {self.windows[h].sql(table)})" for h in windowed)
                got = keys_sql(self._outside.get(table, {}))
                parts.append(f"(host_name IN {literal(windowed)} AND ({inside} OR {got}))")
            conds.append(f"({' OR '.join(parts) or '0'})")
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
            self._run([j for table, cols in (tables or {}).items() if (j := self._ensure(table, cols))])
            return self._con

    def _ensure(self, table: str, cols: frozenset[str]) -> _Job | None:
        """The pull that gives the slice ``table`` with at least ``cols`` (None: it has them):
        pulled again, with the columns it has and the new ones, when a query reads a column
        not pulled yet."""
        have = self._have.get(table)
        if have is not None and (have == ALL or (cols != ALL and cols <= have)):
            return None
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
            return None
        self._have[table] = want
        self._times[table] = self._times.get(table, 0) + 1
        return _Job(table, self._where(table), None if want == ALL else tuple(n for n in names if n in want),
                    True, self._slice_hosts())

    def _columns(self, table: str) -> tuple[str, ...] | None:
        have = self._have[table]
        return None if have == ALL else tuple(n for n in schema.TABLES[table].names if n in have)

    def _run(self, jobs: Sequence[_Job]) -> None:
        """The pulls, at once (a connection each), into the slice in order."""
        if not jobs:
            return
        if len(jobs) == 1:
            results = [self._fetch(jobs[0], None)]
        else:
            while len(self._pullers) < min(len(jobs), _PULLERS):
                self._pullers.append(Server(self.store.url.host, self.store.url.port, database=self.store.db))
            free: queue.SimpleQueue[Server] = queue.SimpleQueue()
            for srv in self._pullers:
                free.put(srv)

            def fetch(job: _Job) -> tuple[pa.Table, float]:
                srv = free.get()  # a connection runs one query at a time
                try:
                    return self._fetch(job, srv)
                finally:
                    free.put(srv)

            with ThreadPoolExecutor(max_workers=len(self._pullers), thread_name_prefix="fx-pull") as pool:
                results = list(pool.map(fetch, jobs))
        for job, (data, seconds) in zip(jobs, results, strict=True):
            if job.replace or data.num_rows:  # a top-up that found nothing costs DuckDB nothing
                self._put(job.table, data, replace=job.replace)
            self.rows[job.table] = (0 if job.replace else self.rows.get(job.table, 0)) + data.num_rows
            pull = Pull(job.table, tuple(data.column_names), data.num_rows, seconds, job.hosts, job.part)
            self.pulls.append(pull)
            what = "pulled" if job.replace else "added" if job.part == "slice" else "topped up"
            log.debug("slice of %s: %s %s of %s, %d rows, %.3f s, columns %s", self.store.url, what, job.table,
                      ",".join(pull.hosts or ["every host"]), pull.rows, pull.seconds, ",".join(pull.columns))

    def _fetch(self, job: _Job, server: Server | None) -> tuple[pa.Table, float]:
        t0 = time.monotonic()
        if server is None:
            data = self.store.select_table(job.table, job.where, job.columns)
        else:
            data = from_stored(job.table, server.arrow(select_sql(job.table, job.where, job.columns)))
        return data, time.monotonic() - t0

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

    def add_hosts(self, hosts: Iterable[str], window: Window | None = None) -> None:
        """Widen a following slice by ``hosts``: each table pulled so far gets their rows too
        (the same columns); the tables not pulled yet will be pulled for every host.
        ``window``: of their events and flows only those of that time (a walk's crossing),
        the rest topped up as queries reach it (store.clickhouse.window)."""
        new = sorted(set(hosts) - set(self.names))
        if not new or not self._following:
            return
        with self._lock:
            if window is not None and (window.lo is not None or window.hi is not None):
                self.windows.update(dict.fromkeys(self._large(new), window))
            self._run([_Job(table, self._where(table, new), self._columns(table), False, tuple(new))
                       for table in self._have if table in self._stored_tables()])
            self.names = sorted(self.names + new)

    def _large(self, hosts: list[str]) -> list[str]:
        """The hosts with enough events that a window pays for the top-ups it costs (one
        round trip each time a query reaches keys outside it)."""
        t = self.store.native(f"SELECT host_name, count() AS n FROM events WHERE host_name IN {literal(hosts)} "
                              "GROUP BY host_name")
        return sorted(str(h) for h, n in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True)
                      if int(n) >= self.window_from)

    def _windowed(self, table: str) -> list[str]:
        """The hosts of the slice kept in a window in ``table``."""
        if table not in _WINDOWED:
            return []
        return sorted(h for h in self.windows if (table, h) not in self._whole)

    def _top_up(self, sql: str, params: Mapping[str, Any] | None, tables: Iterable[str]) -> list[_Job]:
        """The rows outside the windows that ``sql``'s scans of ``tables`` can reach (see
        store.clickhouse.window): one pull per table, of the keys no earlier top-up took."""
        names = set(self.names)
        tables = [t for t in tables if t in self._have and t in self._stored_tables()
                  and any(h in names for h in self._windowed(t))]
        if not tables:
            return []
        scans = scan_filters(sql, params)
        jobs = []
        for table in tables:
            hosts = [h for h in self._windowed(table) if h in names]
            want: Keys | None = {}
            for filters in (scans or {}).get(table, [[]]) if scans is not None else [[]]:
                keys = scan_keys(table, filters)
                if keys is None or want is None:  # a scan that may read any row: the rest of the hosts
                    want = None
                    break
                want = {c: want.get(c, frozenset()) | keys.get(c, frozenset()) for c in {*want, *keys}}
            got = self._outside.setdefault(table, {})
            new = {c: set(v) - got.get(c, set()) for c, v in want.items()} if want is not None else None
            if new is not None and not any(new.values()):
                continue  # every key asked was topped up before: no round trip
            outside = " OR ".join(f"(host_name = {literal(h)} AND {self.windows[h].outside_sql(table)})" for h in hosts)
            # disjoint from what the slice holds: outside the windows, none of the keys taken
            where = [f"host_name IN {literal(hosts)}", f"({outside})", f"NOT {keys_sql(got)}"]
            if new is None or sum(len(v) for v in got.values()) > _TOP_UPS:
                self._whole.update((table, h) for h in hosts)  # from now on whole in this table
            else:
                where.append(keys_sql(new))
                for c, v in new.items():
                    got.setdefault(c, set()).update(v)
            if self.since is not None:
                where.append(f"ifNull({KEYS[table].time}, 0) >= {int(self.since)}")
            if self.until is not None:
                where.append(f"ifNull({KEYS[table].time}, 0) <= {int(self.until)}")
            jobs.append(_Job(table, " AND ".join(where), self._columns(table), False, tuple(hosts), "outside"))
        return jobs

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        con = self.load()
        with self._lock:
            needs = reads(sql, params)
            jobs = [j for table, cols in needs.items() if (j := self._ensure(table, cols))]
            # after a re-pull of a table (more columns), its top-up: disjoint from what it holds
            jobs += self._top_up(sql, params, list(needs))
            self._run(jobs)
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
        for srv in self._pullers:
            srv.close()
        self._pullers = []
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._own:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
