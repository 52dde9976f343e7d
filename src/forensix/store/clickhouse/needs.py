"""Which store tables, and which of their columns, a DuckDB query reads.

A per-host analysis on ClickHouse runs its DuckDB SQL over a slice pulled into memory;
pulling the whole slice (every table, every column) costs far more than the analysis
(at 10^8 events over 1,000 hosts, 1.15 s to pull one host against 0.02 s for its tree).
So the slice is pulled lazily: before a query runs, DuckDB plans it over empty tables of
the same schema, and the table scans of that plan say what the query reads (projection
pushdown names every column a scan must produce, through views, CTEs and ``SELECT *``).
Only those tables and columns are pulled.

The planning connection has the optimizers that reason from the (empty) data turned off:
statistics propagation and empty-result pull-up would prove an empty table's scan useless
and drop it, and filter pushdown would move a column that is only filtered on out of a
scan's projections into its ``Filters`` (read too, as a safety net).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import duckdb

from forensix.store import schema
from forensix.store.embedded import FLOW_EVENTS_SQL

__all__ = ["ALL", "BASE", "Needs", "plan_connection", "reads", "set_up"]

# tables a view stands over in the slice (as in DuckDBStore: ``events`` shows the flow
# edges stored only in ``flows``)
BASE = {"events": "events_base", "flows": "flows_base"}
_LOGICAL = {v: k for k, v in BASE.items()}
ALL: frozenset[str] = frozenset({"*"})  # every column of a table
Needs = dict[str, frozenset[str]]

_DATA_OPTIMIZERS = ("statistics_propagation", "empty_result_pullup", "filter_pushdown", "join_filter_pushdown",
                    "row_group_pruner", "late_materialization")


def set_up(con: duckdb.DuckDBPyConnection) -> None:
    """Every store table, empty, under its slice name, and the views the analyses read."""
    for name, sch in schema.TABLES.items():
        con.register("_fx_empty", sch.empty_table())
        con.execute(f'CREATE TABLE "{BASE.get(name, name)}" AS SELECT * FROM _fx_empty')
        con.unregister("_fx_empty")
    con.execute("CREATE VIEW flows AS SELECT * FROM flows_base")
    con.execute(f"CREATE VIEW events AS SELECT * FROM events_base UNION ALL BY NAME {FLOW_EVENTS_SQL}")


def plan_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the slice's schema and no data, for planning only."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET disabled_optimizers = '{','.join(_DATA_OPTIMIZERS)}'")
    set_up(con)
    return con


def _scans(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    info = node.get("extra_info") or {}
    if "Table" in info:
        yield info
    for child in node.get("children") or ():
        yield from _scans(child)


def _names(v: Any) -> list[str]:
    if isinstance(v, list):
        return [str(x) for x in v]
    return [x for x in str(v or "").splitlines() if x.strip()]


def reads(plan: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None) -> Needs:
    """The store tables ``sql`` reads, each with the columns it reads (``ALL``: every one)."""
    try:
        rows = plan.execute("EXPLAIN (FORMAT json) " + sql, dict(params) if params else None).fetchall()
    except duckdb.Error:
        # the query itself will say what is wrong with it; if it is right after all (a
        # statement EXPLAIN does not take), every table it names is there whole
        return {t: ALL for t in schema.TABLES if re.search(rf"\b{t}\b", sql)}
    out: dict[str, set[str]] = {}
    for _, text in rows:
        for root in json.loads(text):
            for info in _scans(root):
                base = str(info["Table"]).rsplit(".", 1)[-1]
                table = _LOGICAL.get(base, base)
                if table not in schema.TABLES:
                    continue
                out.setdefault(table, set()).update(_columns(table, info))
    return {t: (ALL if "*" in c else frozenset(c)) for t, c in out.items()}


def _columns(table: str, info: Mapping[str, Any]) -> set[str]:
    known = set(schema.TABLES[table].names)
    cols = set(_names(info.get("Projections"))) & known
    if not cols:  # a scan that names no column (seen with a recursive CTE beside it): all
        return {"*"}
    filters = " ".join(_names(info.get("Filters")))
    cols |= {w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", filters) if w in known}
    return cols
