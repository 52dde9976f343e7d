"""Per-incident analyses on a ClickHouse store: the slice they need, in an in-memory DuckDB.

The analyses (tree, timeline, sessions, file, backtrack, forward, report, hunt, ps,
events) are DuckDB SQL through ``Reader.query``; ClickHouse 18.16 has no recursive CTEs,
window functions or more than one JOIN per SELECT, so they are not rewritten. Instead
this reader pulls one slice of the store (a host, a time window) into an in-memory
DuckDB on its first query, with the same tables and views as the embedded store
(``events`` shows the flow edges stored only in ``flows``, as ``DuckDBStore`` does), and
runs every analysis there unchanged. Fleet questions do not come here: they run in
ClickHouse itself (``store.clickhouse.fleet``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import duckdb
import pyarrow as pa

from forensix.errors import StoreError, UsageError
from forensix.store import schema
from forensix.store.clickhouse.connection import literal
from forensix.store.clickhouse.ddl import KEYS
from forensix.store.clickhouse.store import ClickHouseStore
from forensix.store.embedded import FLOW_EVENTS_SQL

__all__ = ["ClickHouseReader"]

# tables whose rows are cut to the time window (processes and hosts are kept whole for the
# host: a process tree at a time needs the processes started before it)
_WINDOWED = ("events", "flows", "gaps", "alerts")


class ClickHouseReader:
    """A ``Reader`` over a slice of a ClickHouse store: ``host`` (name or id), ``since``/``until`` (UTC ns)."""

    def __init__(self, store: ClickHouseStore, host: str | None = None, since: int | None = None,
                 until: int | None = None, own_store: bool = False) -> None:
        self.store = store
        self.host, self.since, self.until = host, since, until
        self._own = own_store
        self._con: duckdb.DuckDBPyConnection | None = None
        self.rows: dict[str, int] = {}
        self.names: list[str] = []  # the host names of the slice (--host may give ids)
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

    def _where(self, table: str) -> str:
        conds = []
        if self.host is not None:
            conds.append(f"host_name IN {literal(self.names)}")
        if table in _WINDOWED:
            t = KEYS[table].time
            if self.since is not None:
                conds.append(f"ifNull({t}, 0) >= {int(self.since)}")
            if self.until is not None:
                conds.append(f"ifNull({t}, 0) <= {int(self.until)}")
        return " AND ".join(conds)

    def load(self) -> duckdb.DuckDBPyConnection:
        """Pull the slice (once) and set up the tables and views the analyses read."""
        if self._con is not None:
            return self._con
        con = duckdb.connect(":memory:")
        try:
            # a table of a newer forensix than the one whose server made the database: empty
            have = set(self.store.native("SELECT name FROM system.tables WHERE database = currentDatabase()")
                       .column(0).to_pylist())
            for name in schema.TABLES:
                data = (self.store.select_table(name, self._where(name)) if name in have
                        else schema.TABLES[name].empty_table())
                self.rows[name] = data.num_rows
                base = f"{name}_base" if name in ("events", "flows") else name
                con.register("_fx_pull", data)
                con.execute(f'CREATE TABLE "{base}" AS SELECT * FROM _fx_pull')
                con.unregister("_fx_pull")
            con.execute("CREATE VIEW flows AS SELECT * FROM flows_base")
            con.execute(f"CREATE VIEW events AS SELECT * FROM events_base UNION ALL BY NAME {FLOW_EVENTS_SQL}")
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        con = self.load()
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
