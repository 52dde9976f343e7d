"""The retro-hunt evaluator: the predicate IR as DuckDB SQL over the store.

``view_sql`` builds the rule view (events plus the derived ``fx_*`` columns, with the
acting process and its parent joined as of the event time from ``processes``);
``where_sql`` turns a rule into a boolean SQL expression over that view. One query
evaluates many rules in a single scan and says which rules each row matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from forensix.rules import fields as F
from forensix.rules.ir import And, CompiledRule, Const, Node, Not, Or, Pred, columns_of, hoist

__all__ = ["KEY_COLUMNS", "hunt_sql", "rule_sql", "view_sql", "where_sql"]

# Columns of every matching row that alerts are built from.
KEY_COLUMNS = (
    "host_id",
    "host_name",
    "boot_id",
    "ts",
    "cpu",
    "seq",
    "event_category",
    "event_action",
    "process_entity_id",
    "process_pid",
    "process_name",
    "target_entity_id",
    "file_path",
    "file_target_path",
    "destination_ip",
    "destination_port",
    "source_ip",
    "source_port",
    "user_id",
    "process_args",
    "process_executable",
    "target_pid",
    "unix_path",
    # a row standing for repeats the kernel counted (re-opens): a finding weighs its count
    # (alerts.alert_count, grouping._counts), in a hunt as in the live engine
    "event_count",
)
SUMMARY_DERIVED = ("fx_image", "fx_command_line", "fx_user")


def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _ident(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def _operand(p: Pred) -> str:
    col = _ident(p.column)
    if p.as_text:
        col = f"CAST({col} AS VARCHAR)"
    if not p.cased and p.op not in ("null", "notnull", "lt", "le", "gt", "ge", "ne", "bits", "colref"):
        col = f"lower({col})"
    return col


_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "<>"}


def _pred(p: Pred) -> str:
    col = _operand(p)
    op, v = p.op, p.value
    if op == "null":
        return f"({col} IS NULL)"
    if op == "notnull":
        return f"({col} IS NOT NULL)"
    if op == "eq":
        expr = f"{col} = {_lit(v)}"
    elif op == "in":
        expr = f"{col} IN ({', '.join(_lit(x) for x in v)})"
    elif op == "prefix":
        expr = f"starts_with({col}, {_lit(v)})"
    elif op == "suffix":
        expr = f"ends_with({col}, {_lit(v)})"
    elif op == "contains":
        expr = f"contains({col}, {_lit(v)})"
    elif op == "regex":
        expr = f"regexp_matches({col}, {_lit(v)})"
    elif op in _CMP:
        expr = f"{col} {_CMP[op]} {_lit(v)}"
    elif op == "bits":
        expr = f"({col} & {int(v)}) <> 0"
    elif op == "colref":
        expr = f"CAST({col} AS VARCHAR) = CAST({_ident(str(v))} AS VARCHAR)"
    else:
        raise ValueError(f"unknown predicate op {op!r}")
    # A predicate on a missing value is false, never NULL: NOT then behaves as in Sigma.
    return f"coalesce({expr}, FALSE)"


def where_sql(node: Node) -> str:
    """A boolean SQL expression over the rule view."""
    if isinstance(node, Const):
        return "TRUE" if node.value else "FALSE"
    if isinstance(node, Pred):
        return _pred(node)
    if isinstance(node, And):
        return "(" + " AND ".join(where_sql(i) for i in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(where_sql(i) for i in node.items) + ")"
    if isinstance(node, Not):
        return f"(NOT {where_sql(node.item)})"
    raise TypeError(f"not a predicate node: {node!r}")


def _needed(columns: Iterable[str]) -> list[str]:
    return [c for c in F.DERIVED if c in set(columns)]


def view_sql(derived: Sequence[str], time_filter: str = "") -> str:
    """SELECT producing the rule view with the named derived columns."""
    ctx = {F.DERIVED[d].context for d in derived}
    if "pp" in ctx:
        ctx.add("p")
    cols = ", ".join(f"{F.DERIVED[d].sql} AS {d}" for d in derived)
    sel = "e.*" + (", " + cols if cols else "")
    where = f" WHERE {time_filter}" if time_filter else ""
    images = (
        "(SELECT entity_id, image_ts, executable, name, parent_entity_id,"
        " array_to_string(args, ' ') AS fx_cmd FROM processes)"
    )
    joins = ""
    if "p" in ctx:
        joins += f" ASOF LEFT JOIN {images} p ON e.process_entity_id = p.entity_id AND e.ts >= p.image_ts"
    if "pp" in ctx:
        joins += f" ASOF LEFT JOIN {images} pp ON p.parent_entity_id = pp.entity_id AND e.ts >= pp.image_ts"
    if "u" in ctx:
        joins += _USER_JOINS
    return f"SELECT {sel} FROM (SELECT * FROM events{where}) e{joins}"


# The event's uid in its host's recorded user database (schema.ACCOUNTS, fields._user_sql):
# u as of the event time; uh the host's first reading (none: the host has no reading);
# uf the uid's first name (an event before the first reading)
_USERS = "(SELECT DISTINCT host_id, uid, valid_from, name FROM accounts WHERE kind = 'user')"
_USER_JOINS = (
    f" ASOF LEFT JOIN {_USERS} u ON e.host_id = u.host_id AND e.user_id = u.uid AND e.ts >= u.valid_from"
    " LEFT JOIN (SELECT host_id, min(valid_from) AS first_from FROM accounts WHERE kind = 'user'"
    " GROUP BY host_id) uh ON e.host_id = uh.host_id"
    " LEFT JOIN (SELECT host_id, uid, arg_min(name, valid_from) AS first_name FROM accounts"
    " WHERE kind = 'user' GROUP BY host_id, uid) uf ON e.host_id = uf.host_id AND e.user_id = uf.uid"
)


def _time_filter(ts_from: int | None, ts_to: int | None) -> str:
    parts = []
    if ts_from is not None:
        parts.append(f"ts >= {int(ts_from)}")
    if ts_to is not None:
        parts.append(f"ts < {int(ts_to)}")
    return " AND ".join(parts)


def rule_sql(rule: CompiledRule, ts_from: int | None = None, ts_to: int | None = None) -> str:
    """One rule as a standalone query over the store (what `rules list --sql` shows)."""
    derived = _needed(columns_of(rule.where))
    view = view_sql(derived, _time_filter(ts_from, ts_to))
    return f"SELECT * FROM ({view}) v WHERE {where_sql(rule.where)} ORDER BY ts"


def hunt_sql(rules: Sequence[CompiledRule], ts_from: int | None = None, ts_to: int | None = None) -> str:
    """One scan for many rules: each matching row with ``fx_rules``, the indices it matched.

    Events are cut down to the rules' raw-column scopes before process images are
    joined, so the ASOF joins run on candidate rows only."""
    cols: set[str] = set(SUMMARY_DERIVED)
    for r in rules:
        cols |= columns_of(r.where)
    scopes = " OR ".join(where_sql(hoist(r.scope, r.body)[0]) for r in rules) or "FALSE"
    time_filter = _time_filter(ts_from, ts_to)
    base = f"({time_filter}) AND ({scopes})" if time_filter else f"({scopes})"
    view = view_sql(_needed(cols), base)
    conds = [where_sql(r.where) for r in rules]
    marks = ", ".join(f"CASE WHEN {c} THEN {i} END" for i, c in enumerate(conds))
    keys = ", ".join(_ident(c) for c in KEY_COLUMNS + SUMMARY_DERIVED)
    return (
        f"SELECT {keys}, list_filter([{marks}], lambda x: x IS NOT NULL) AS fx_rules"
        f" FROM ({view}) v WHERE {' OR '.join(f'({c})' for c in conds)} ORDER BY ts, cpu, seq"
    )
