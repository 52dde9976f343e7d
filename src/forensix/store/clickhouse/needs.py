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
and drop it (join filter pushdown, row-group pruning and late materialization likewise
depend on data). Filter pushdown stays on: it drops what no data can reach (the flow
edges of the ``events`` view under ``event_action = 'exit'``), and the columns it moves
out of a scan's projections into its ``Filters`` are read from there.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import duckdb

from forensix.store import schema
from forensix.store.embedded import FLOW_EVENTS_SQL

__all__ = ["ALL", "BASE", "PROFILES", "Needs", "plan_connection", "reads", "scan_filters", "set_up"]

# tables a view stands over in the slice (as in DuckDBStore: ``events`` shows the flow
# edges stored only in ``flows``)
BASE = {"events": "events_base", "flows": "flows_base"}
_LOGICAL = {v: k for k, v in BASE.items()}
ALL: frozenset[str] = frozenset({"*"})  # every column of a table
Needs = dict[str, frozenset[str]]

_DATA_OPTIMIZERS = ("statistics_propagation", "empty_result_pullup", "join_filter_pushdown", "row_group_pruner",
                    "late_materialization")


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


_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+\b")
_LIST = re.compile(r"0(?:\s*,\s*0)+")
_CACHE_SIZE = 1024


class _Planner:
    """One planning connection for the process, and the answers it gave: the columns a query
    reads do not depend on its literals or parameters, and a walk sends the same few
    statements again and again with other entity ids in them (planning one costs 10-20 ms)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.known: dict[str, Needs] = {}

    def reads(self, sql: str, params: Mapping[str, Any] | None) -> Needs:
        key = _LIST.sub("0", _LITERAL.sub("0", sql))
        with self.lock:
            hit = self.known.get(key)
            if hit is not None:
                return hit
            if self.con is None:
                self.con = plan_connection()
            out = _explain(self.con, sql, params)
            if len(self.known) >= _CACHE_SIZE:
                self.known.clear()
            self.known[key] = out
            return out


    def filters(self, sql: str, params: Mapping[str, Any] | None) -> dict[str, list[list[str]]] | None:
        """Each store table's scans in the plan of ``sql``, each as the filters pushed into it
        (not cached: they hold the query's literals); None when DuckDB cannot plan it."""
        with self.lock:
            if self.con is None:
                self.con = plan_connection()
            try:
                rows = self.con.execute("EXPLAIN (FORMAT json) " + sql, dict(params) if params else None).fetchall()
            except duckdb.Error:
                return None
        out: dict[str, list[list[str]]] = {}
        for _, text in rows:
            for root in json.loads(text):
                for info in _scans(root):
                    base = str(info["Table"]).rsplit(".", 1)[-1]
                    table = _LOGICAL.get(base, base)
                    if table in schema.TABLES:
                        out.setdefault(table, []).append(_names(info.get("Filters")))
        return out


_PLANNER = _Planner()


def scan_filters(sql: str, params: Mapping[str, Any] | None = None) -> dict[str, list[list[str]]] | None:
    """The filters DuckDB pushes into each scan of each store table ``sql`` reads (one list
    per scan, ANDed; an empty list: the scan reads every row). None: it cannot be planned."""
    return _PLANNER.filters(sql, params)


def reads(sql: str, params: Mapping[str, Any] | None = None) -> Needs:
    """The store tables ``sql`` reads, each with the columns it reads (``ALL``: every one)."""
    return _PLANNER.reads(sql, params)


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


def _explain(plan: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None) -> Needs:
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
    filters = " ".join(_names(info.get("Filters")))
    cols |= {w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", filters) if w in known}
    if not cols:  # a scan that names no column (seen with a recursive CTE beside it): all
        return {"*"}
    return cols


# What each deep analysis reads of each table over all its queries (command name -> table
# -> columns): the first pull of a table takes them all, so a command that runs many
# queries pulls each table once. Never needed for a right answer (a column missing here
# is pulled when a query reads it, at the cost of pulling that table again); kept
# complete by tests/fleet/test_fleet_slice.py, which fails naming what to add.
def _cols(names: str) -> frozenset[str]:
    return frozenset(names.split())


PROFILES: dict[str, Needs] = {
    "tree": {
        # host_id, event_category, process_pid: the agent events that name forensix's own processes
        "events": _cols("host_id ts event_category event_action process_entity_id process_pid process_exit_code"),
        "processes": _cols("host_id entity_id image_seq pid parent_entity_id start_ts image_ts executable "
                           "args working_directory user_id user_effective_id user_audit_id "
                           "session_id tty ns_pid"),
    },
    "sessions": {
        "processes": _cols("host_id entity_id image_seq pid parent_entity_id start_ts executable user_id "
                           "user_audit_id session_id tty ns_pid"),
        "events": _cols("ts event_action process_entity_id process_pid process_exit_code "
                        "process_exit_signal network_transport source_ip source_port "
                        "destination_ip destination_port message event_module"),
        "flows": _cols("entity_id pid last_ts in_events"),
        "tty": _cols("process_entity_id"),
    },
    "session": {
        "processes": _cols("host_id entity_id image_seq pid parent_entity_id start_ts image_ts executable "
                           "args working_directory name user_id user_effective_id user_audit_id "
                           "session_id tty ns_pid"),
        "events": _cols("host_id ts cpu seq event_category event_action ret process_entity_id process_pid "
                        "process_name user_id user_effective_id process_executable process_args "
                        "process_exit_code process_exit_signal file_path file_path_raw file_inode "
                        "file_device file_type file_flags file_mode file_uid file_gid "
                        "file_target_path file_target_path_raw network_transport source_ip "
                        "source_port destination_ip destination_port unix_path target_pid signal "
                        "mem_prot flow_read_bytes flow_write_bytes a0 message event_module"),
        "flows": _cols("host_id entity_id pid file_inode file_device file_type file_path last_ts "
                       "read_bytes write_bytes process_name in_events user_id"),
        "tty": _cols("process_entity_id"),
    },
    "timeline": {
        "processes": _cols("entity_id image_seq pid parent_entity_id start_ts image_ts executable name "
                           "user_id user_audit_id session_id tty ns_pid"),
        "events": _cols("host_id ts cpu seq event_category event_action ret process_entity_id process_pid "
                        "process_name user_id user_effective_id process_executable process_args "
                        "process_exit_code process_exit_signal file_path file_path_raw file_inode "
                        "file_device file_type file_flags file_mode file_uid file_gid "
                        "file_target_path file_target_path_raw network_transport source_ip "
                        "source_port destination_ip destination_port unix_path target_pid signal "
                        "mem_prot flow_read_bytes flow_write_bytes a0 message"),
        "flows": _cols("host_id entity_id pid file_inode file_device file_type file_path last_ts "
                       "read_bytes write_bytes process_name in_events user_id"),
    },
    "file": {
        "events": _cols("host_id ts cpu seq event_category event_action process_entity_id "
                        "process_pid process_name user_id file_path file_inode file_device "
                        "file_generation file_flags file_mode file_target_path mem_prot "
                        "flow_read_bytes flow_write_bytes"),
        "flows": _cols("host_id entity_id pid file_inode file_device file_path last_ts read_bytes "
                       "write_bytes process_name in_events user_id file_generation"),
        "processes": _cols("entity_id image_seq image_ts executable user_id"),
    },
    "backtrack": {
        "events": _cols("host_id host_name ts event_category event_action ret process_entity_id "
                        "process_pid file_path file_inode file_device file_generation file_flags "
                        "file_target_path network_transport source_ip source_port destination_ip "
                        "destination_port unix_path unix_peer_inode target_entity_id "
                        "file_target_inode"),  # a socketpair's two ends (analysis.graph_rows)
        "flows": _cols("host_id host_name entity_id pid file_inode file_device file_type "
                       "file_path first_ts last_ts read_bytes write_bytes in_events "
                       "file_generation"),
        "processes": _cols("host_id host_name entity_id image_seq pid parent_entity_id start_ts image_ts "
                           "executable args user_id"),
        "hosts": _cols("host_id host_name"),  # a node's host by name (analysis.crosshost)
    },
    "forward": {
        "hosts": _cols("host_id host_name"),
        "processes": _cols("host_id host_name entity_id image_seq pid parent_entity_id start_ts image_ts "
                           "executable args user_id user_audit_id session_id tty ns_pid"),
        "events": _cols("host_id host_name ts event_category event_action ret process_entity_id "
                        "process_pid file_path file_path_resolution file_inode file_device "
                        "file_generation file_flags file_target_path network_transport source_ip "
                        "source_port destination_ip destination_port unix_path unix_peer_inode "
                        "target_entity_id file_target_inode"),
        "flows": _cols("host_id host_name entity_id pid file_inode file_device file_type "
                       "file_path first_ts last_ts read_bytes write_bytes in_events "
                       "file_generation"),
    },
    "report": {
        "processes": _cols("host_id host_name entity_id image_seq pid parent_entity_id start_ts image_ts "
                           "executable args working_directory name user_id user_effective_id "
                           "user_audit_id session_id tty ns_pid"),
        "events": _cols("host_id host_name ts cpu seq event_category event_action ret "
                        "process_entity_id process_pid process_name user_id user_effective_id "
                        "process_executable process_args process_exit_code process_exit_signal "
                        "file_path file_path_raw file_path_resolution file_inode file_device "
                        "file_generation file_type file_flags file_mode file_uid file_gid "
                        "file_mtime file_target_path file_target_path_raw network_transport "
                        "source_ip source_port destination_ip destination_port unix_path "
                        "unix_peer_inode target_pid target_entity_id signal mem_prot file_target_inode "
                        "flow_read_bytes flow_write_bytes a0 message event_module"),
        "flows": _cols("host_id host_name entity_id pid file_inode file_device file_type "
                       "file_path first_ts last_ts read_bytes write_bytes process_name in_events "
                       "user_id file_generation"),
        "tty": _cols("process_entity_id"),
        "hosts": _cols("host_id host_name"),
    },
}
