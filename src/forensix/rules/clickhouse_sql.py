"""The retro-hunt evaluator for a ClickHouse store: the predicate IR as ClickHouse SQL.

The twin of ``forensix.rules.sql`` (DuckDB): the same rule view (events plus the derived
``fx_*`` columns, with the acting process and its parent as of the event time), the same
predicates, one scan for many rules that says which rules each row matched. It is written
for Debian's ClickHouse 18.16 and current servers alike (the tests run it on both):

* no ``ASOF JOIN`` on 18.16: a process's images are grouped per entity id (unique per
  process life) into one sorted array of tuples, joined with ``ANY LEFT JOIN`` (one row
  per event), and the image as of the event time is the last element whose ``image_ts``
  is not after it (``arrayFilter``): what DuckDB's ``ASOF LEFT JOIN ... e.ts >= image_ts``
  picks. One JOIN per SELECT: the parent's images are joined one SELECT further out;
* the query reads a shard's own tables (``events_local``, ``processes_local``): the
  store shards by host, so a process, its parent and its events are on one shard and the
  joins never cross shards. The caller runs it on every shard and concatenates;
* the ``events`` of a DuckDB store include the flow edges kept only in ``flows``
  (``in_events = 0``); here they are a second query of the same view over ``flows``;
* case-insensitive tests compare ``lowerUTF8(column)`` (DuckDB's ``lower`` is Unicode-aware
  too) with the lowered value; a predicate on a missing value is false (``ifNull(.., 0)``);
* 18.16's ``match()`` checks a literal it finds in the pattern case-sensitively before
  running RE2, even under ``(?i)``: such patterns get an alternative that never matches
  (``|\\b\\B``), which turns that shortcut off and changes nothing else.

A rule this dialect cannot express raises ``NotExpressible`` naming the reason; the fleet
hunt reports it and hunts that rule over pulled slices instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from forensix.analysis.users import this_host_id
from forensix.rules import fields as F
from forensix.rules.ir import (
    And,
    CompiledRule,
    Const,
    Node,
    Not,
    Or,
    Pred,
    columns_of,
    necessary,
)
from forensix.rules.sql import KEY_COLUMNS, SUMMARY_DERIVED
from forensix.store.clickhouse.connection import literal
from forensix.store.clickhouse.ddl import ch_type
from forensix.store.schema import EVENTS

__all__ = [
    "COUNTED",
    "DERIVED_CH",
    "Known",
    "NotExpressible",
    "Slice",
    "Tables",
    "before_join",
    "check_rule",
    "hunt_sql_ch",
    "maybe",
    "probe_sql_ch",
    "where_ch",
]


class NotExpressible(ValueError):
    """A rule (or a part of it) the ClickHouse dialect cannot say; ``str()`` is the reason."""


# -- predicates ---------------------------------------------------------------------------

_LISTS = frozenset(f.name for f in EVENTS if pa.types.is_list(f.type))
_BINARY = frozenset(f.name for f in EVENTS if pa.types.is_binary(f.type))
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "!="}
_CASELESS = re.compile(r"\(\?[a-zA-Z]*i[a-zA-Z]*[:)]")
_UNLOWERED = ("null", "notnull", "lt", "le", "gt", "ge", "ne", "bits", "colref")


def _ident(col: str) -> str:
    return "`" + col.replace("`", "") + "`"


def _lit(v: Any) -> str:
    return literal(v)


def _regex(pattern: str) -> str:
    """A pattern as 18.16's ``match()`` evaluates it like RE2 does (see the module doc)."""
    if _CASELESS.search(pattern):
        return pattern + r"|\b\B"
    return pattern


def _operand(p: Pred, expr: str | None = None) -> str:
    if p.column in _LISTS or p.column in _BINARY:
        raise NotExpressible(f"a test on the list/binary column {p.column} (ClickHouse keeps it as an array)")
    col = expr or _ident(p.column)
    if p.as_text:
        col = f"toString({col})"
    if not p.cased and p.op not in _UNLOWERED:
        col = f"lowerUTF8({col})"
    return col


def _floats(v: Any) -> bool:
    vals = v if isinstance(v, (tuple, list)) else (v,)
    return any(isinstance(x, float) for x in vals)


def _pred(p: Pred, expr: str | None = None) -> str:
    """``p`` as SQL; ``expr`` stands for the column (a derived column's expression)."""
    col = _operand(p, expr)
    op, v = p.op, p.value
    if op in ("eq", "in", *_CMP) and not p.as_text and _floats(v):
        # DuckDB compares an integer column with a DOUBLE as a DOUBLE (pySigma gives numbers
        # above 2^53 as floats: -100 as a 64-bit register); ClickHouse would compare exactly
        col = f"toFloat64({col})"
    if op == "null":
        return f"isNull({col})"
    if op == "notnull":
        return f"isNotNull({col})"
    if op == "eq":
        sql = f"{col} = {_lit(v)}"
    elif op == "in":
        sql = f"{col} IN ({', '.join(_lit(x) for x in v)})"
    elif op == "prefix":
        sql = f"startsWith({col}, {_lit(v)})"
    elif op == "suffix":
        sql = f"endsWith({col}, {_lit(v)})"
    elif op == "contains":
        sql = f"position({col}, {_lit(v)}) > 0"
    elif op == "regex":
        sql = f"match({col}, {_lit(_regex(str(v)))})"
    elif op in _CMP:
        sql = f"{col} {_CMP[op]} {_lit(v)}"
    elif op == "bits":
        sql = f"bitAnd({col}, {int(v)}) != 0"
    elif op == "colref":
        other = str(v)
        if other in _LISTS or other in _BINARY:
            raise NotExpressible(f"a field reference to the list/binary column {other}")
        sql = f"toString({col}) = toString({_ident(other)})"
    else:
        raise NotExpressible(f"the predicate {op!r} has no ClickHouse form")
    # a predicate on a missing value is false, never NULL: NOT then behaves as in Sigma
    return f"ifNull({sql}, 0)"


def where_ch(node: Node) -> str:
    """A boolean (UInt8) ClickHouse expression over the rule view."""
    if isinstance(node, Const):
        return "1" if node.value else "0"
    if isinstance(node, Pred):
        return _pred(node)
    if isinstance(node, And):
        return "(" + " AND ".join(where_ch(i) for i in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(where_ch(i) for i in node.items) + ")"
    if isinstance(node, Not):
        return f"(NOT {where_ch(node.item)})"
    raise NotExpressible(f"not a predicate node: {node!r}")


# what the acting process's image columns are when the event itself carries them (an exec)
_KNOWN_BEFORE_JOIN = {
    "fx_image": ("isNotNull(process_executable)", "process_executable"),
    "fx_command_line": ("process_args__null = 0", "arrayStringConcat(process_args, ' ')"),
}


def _column_sql(col: str) -> tuple[str, str] | None:
    """(when known, expression) of a view column before the process images are joined."""
    if col in F.EVENTS_COLUMNS:
        return "1", _ident(col)
    if col in _KNOWN_BEFORE_JOIN:
        return _KNOWN_BEFORE_JOIN[col]
    d = DERIVED_CH.get(col)
    if d is not None and not d.context:
        return "1", f"({d.sql})"
    return None


# what a test's column is on a row of some table: (when it is known there, expression), or None
# (the expression may be several: the value is one of them on each event of the row)
Known = Callable[[Pred], "tuple[str, str | tuple[str, ...]] | None"]


def maybe(node: Node, known: Known, positive: bool = True) -> str:
    """A condition over the rows ``known`` describes that every row where ``node`` is true
    (``positive``) or false meets: a test whose column is not known there becomes "maybe"
    (true), one known only on some rows is tested on those (``if(when, test, 1)``), one known
    to be one of several values on each event is tested on each (true if any may hold)."""
    if isinstance(node, Const):
        return "1" if node.value == positive else "0"
    if isinstance(node, Not):
        return maybe(node.item, known, not positive)
    if isinstance(node, (And, Or)):
        conj = isinstance(node, And) == positive
        parts = [maybe(i, known, positive) for i in node.items]
        return "(" + (" AND " if conj else " OR ").join(parts) + ")"
    if not isinstance(node, Pred):
        raise NotExpressible(f"not a predicate node: {node!r}")
    got = known(node)
    if got is None:
        return "1"
    when, expr = got
    tests = [_pred(node, e) if positive else f"(NOT {_pred(node, e)})"
             for e in (expr if isinstance(expr, tuple) else (expr,))]
    test = tests[0] if len(tests) == 1 else "(" + " OR ".join(tests) + ")"
    return test if when == "1" else f"if({when}, {test}, 1)"


def _before_join_known(p: Pred) -> tuple[str, str] | None:
    if p.op == "colref" and str(p.value) not in F.EVENTS_COLUMNS:
        return None
    return _column_sql(p.column)


def before_join(node: Node, positive: bool = True) -> str:
    """A condition over the event's own columns that every row where ``node`` is true
    (``positive``) or false meets: tests of the process images become "maybe" (true),
    except where the event carries the value itself. Rows failing it are dropped before
    the images are joined; the rule itself is evaluated after."""
    return maybe(node, _before_join_known, positive)


def check_rule(rule: CompiledRule) -> None:
    """Raise ``NotExpressible`` when the rule cannot run as ClickHouse SQL."""
    where_ch(rule.where)
    for c in columns_of(rule.where):
        if c not in F.EVENTS_COLUMNS and c not in DERIVED_CH:
            raise NotExpressible(f"the view column {c} has no ClickHouse form")


# -- the derived columns ------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedCH:
    """``fields.Derived`` in ClickHouse: ``sql`` over the event's columns (``raw``) and the
    image columns ``fx_p_*`` (the acting process) / ``fx_pp_*`` (its parent)."""

    sql: str
    raw: tuple[str, ...]
    context: str = ""


_NULL_S = "CAST(NULL AS Nullable(String))"


def _user_ch() -> str:
    """``fields._user_sql``: the host's recorded name of the uid as of the event time
    (``fx_u_all``: the (host, uid)'s readings, sorted), before the host's first reading
    (``fx_u_first``) the uid's earliest name; a host without readings (``fx_u_has`` 0): this
    machine's names if it is this machine, else NULL."""
    names = F.user_names()
    local = _NULL_S
    if names:
        arms = ", ".join(f"user_id = {uid}, {literal(name)}" for uid, name in sorted(names.items()))
        local = f"if(toString(host_id) = {literal(this_host_id())}, multiIf({arms}, {_NULL_S}), {_NULL_S})"
    at = "arrayFilter(t -> ifNull(t.1 <= ts, 0), fx_u_all)"
    return (f"multiIf(fx_u_has = 0, {local}, notEmpty({at}), ({at}[-1]).2, "
            f"ts < fx_u_first AND notEmpty(fx_u_all), (fx_u_all[1]).2, {_NULL_S})")


def _flags_ch() -> str:
    # the access mode is always there: each flag after it brings its own separator (no
    # array per row: this runs on every candidate row)
    ff = "ifNull(file_flags, 0)"
    parts = [f"multiIf(bitAnd({ff}, 3) = 0, 'O_RDONLY', bitAnd({ff}, 3) = 1, 'O_WRONLY', 'O_RDWR')"]
    parts += [f"if(bitAnd({ff}, {bit}) != 0, '|{name}', '')" for bit, name in F.OPEN_FLAG_NAMES]
    return f"if(isNull(file_flags), {_NULL_S}, concat({', '.join(parts)}))"


def _mode_ch() -> str:
    m = "bitAnd(ifNull(file_mode, 0), 4095)"
    digits = ", ".join(f"toString(intDiv({m}, {8 ** k}) % 8)" for k in (3, 2, 1, 0))
    return f"if(isNull(file_mode), {_NULL_S}, concat({digits}))"


def _arg_ch(i: int) -> str:
    return f"if(process_args__null = 0 AND length(process_args) > {i}, process_args[{i + 1}], {_NULL_S})"


def _audit_arg_ch(i: int) -> str:
    if i > 3:
        return f"if(event_action = 'exec', {_arg_ch(i)}, {_NULL_S})"
    # DuckDB's hex() of a number has no leading zero; ClickHouse's prints whole bytes
    hx = f"replaceRegexpOne(lower(hex(a{i})), '^0([0-9a-f])', '\\\\1')"
    return f"if(event_action = 'exec', {_arg_ch(i)}, {hx})"


def _time_back_ch() -> str:
    # DuckDB's coalesce(3-valued (A AND B) OR (C AND D), false): each comparison's NULL as false
    now = ("(ifNull(syscall IN ('utimensat', 'futimesat'), 0) AND ifNull(a2 = 0, 0))"
           " OR (ifNull(syscall IN ('utimes', 'utime'), 0) AND ifNull(a1 = 0, 0))")
    m = "if(ifNull(file_mtime NOT IN (0, -1), 0), ts - file_mtime, CAST(NULL AS Nullable(Int64)))"
    a = "if(ifNull(file_atime NOT IN (0, -1), 0), ts - file_atime, CAST(NULL AS Nullable(Int64)))"
    # DuckDB's greatest() skips NULLs
    most = (f"multiIf(isNull({m}), {a}, isNull({a}), {m}, "
            f"CAST(greatest(ifNull({m}, 0), ifNull({a}, 0)) AS Nullable(Int64)))")
    return f"if(event_action = 'utimes' AND NOT ({now}), {most}, CAST(NULL AS Nullable(Int64)))"


def _derived_ch() -> dict[str, DerivedCH]:
    d: dict[str, DerivedCH] = {
        "fx_image": DerivedCH("ifNull(process_executable, fx_p_exe)", ("process_executable",), "p"),
        "fx_command_line": DerivedCH(
            "if(process_args__null = 1, fx_p_cmd, toNullable(arrayStringConcat(process_args, ' ')))",
            ("process_args",), "p"),
        "fx_parent_image": DerivedCH("fx_pp_exe", (), "pp"),
        "fx_parent_command_line": DerivedCH("fx_pp_cmd", (), "pp"),
        "fx_parent_name": DerivedCH("fx_pp_name", (), "pp"),
        "fx_user": DerivedCH(_user_ch(), ("user_id", "host_id", "ts"), "u"),
        "fx_target_filename": DerivedCH(
            "if(event_action IN ('rename', 'link'), file_target_path, file_path)",
            ("event_action", "file_target_path", "file_path")),
        "fx_initiated": DerivedCH(
            f"multiIf(event_action = 'connect', 'true', event_action = 'accept', 'false', {_NULL_S})",
            ("event_action",)),
        "fx_flags": DerivedCH(_flags_ch(), ("file_flags",)),
        "fx_mode": DerivedCH(_mode_ch(), ("file_mode",)),
        "fx_nametype": DerivedCH(
            f"multiIf(isNull(file_path), {_NULL_S}, event_action IN ('unlink', 'rmdir'), 'DELETE', "
            f"event_action IN ('mkdir', 'symlink', 'link', 'memfd_create') OR (event_action = 'open' "
            f"AND bitAnd(ifNull(file_flags, 0), {F.O_CREAT}) != 0), 'CREATE', 'NORMAL')",
            ("file_path", "event_action", "file_flags")),
        "fx_success": DerivedCH(
            f"multiIf(event_outcome = 'success', 'yes', event_outcome = 'failure', 'no', {_NULL_S})",
            ("event_outcome",)),
        "fx_hashes": DerivedCH("concat('SHA256=', upper(process_hash_sha256))", ("process_hash_sha256",)),
        "fx_time_back": DerivedCH(
            _time_back_ch(), ("event_action", "syscall", "a1", "a2", "file_mtime", "file_atime", "ts")),
        "fx_sudo_user": DerivedCH(
            f"if(event_action = 'sudo', nullIf(extract(ifNull(message, ''), {literal(F.SUDO_USER_RE)}), ''), "
            f"{_NULL_S})", ("event_action", "message")),
    }
    for i in range(10):
        d[f"fx_audit_a{i}"] = DerivedCH(
            _audit_arg_ch(i), ("event_action", "process_args") + ((f"a{i}",) if i <= 3 else ()))
    return d


DERIVED_CH: dict[str, DerivedCH] = _derived_ch()


# -- the scan -----------------------------------------------------------------------------

# the flow edges kept only in ``flows``, as the DuckDB store's ``events`` view shows them
_FLOW_AS_EVENT = {
    "host_id": "host_id", "host_name": "host_name", "boot_id": "boot_id", "ts": "last_ts",
    "ts_boot": "ts_boot", "event_kind": "'event'", "event_category": "'flow'", "event_action": "'flow'",
    "process_entity_id": "entity_id", "process_pid": "pid", "process_tid": "tid",
    "process_name": "process_name", "user_id": "user_id", "fd": "fd", "file_inode": "file_inode",
    "file_device": "file_device", "file_generation": "file_generation", "file_type": "file_type",
    "file_path": "file_path", "flow_read_count": "read_count", "flow_read_bytes": "read_bytes",
    "flow_write_count": "write_count", "flow_write_bytes": "write_bytes", "flow_first_ts": "first_ts",
    "flow_last_ts": "last_ts",
}
# columns cheap to test on every row: numbers and LowCardinality strings (a dictionary each)
# (and event_module: a short word, the log source of imported and system-log rows)
_CHEAP = frozenset(f.name for f in EVENTS if pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)
                   or "LowCardinality" in ch_type(f)) | {"event_module"}
_CH_TYPES = {
    pa.uint64(): "UInt64", pa.int64(): "Int64", pa.uint32(): "UInt32", pa.int32(): "Int32",
    pa.uint16(): "UInt16", pa.string(): "String", pa.bool_(): "UInt8", pa.float64(): "Float64",
}


def _flow_column(col: str) -> list[str]:
    """``col`` of the events view (and its NULL mark for a list) as a flows SELECT gives it."""
    if col in _LISTS:
        return ["emptyArrayString() AS " + _ident(col), f"toUInt8(1) AS {_ident(col + '__null')}"]
    src = _FLOW_AS_EVENT.get(col)
    t = EVENTS.field(col).type
    if src is None:
        return [f"CAST(NULL AS Nullable({_CH_TYPES[t]})) AS {_ident(col)}"]
    if src.startswith("'"):
        return [f"{src} AS {_ident(col)}"]
    if col == "host_name" or not EVENTS.field(col).nullable:
        return [f"{_ident(src)} AS {_ident(col)}"]
    # the flows column may be typed otherwise (a LowCardinality, a bool): the events type
    return [f"CAST({_ident(src)} AS Nullable({_CH_TYPES[t]})) AS {_ident(col)}"]


def _event_columns(cols: Iterable[str]) -> list[str]:
    out = []
    for c in cols:
        out.append(_ident(c))
        if c in _LISTS:
            out.append(_ident(c + "__null"))
    return out


def _images(key: str, name: str, table: str, where: str = "1") -> str:
    """One row per process: its images (time, seq, then executable, command line and name each
    as (value or '', is NULL), parent), sorted. (No Nullable inside the tuples: 18.16 breaks a
    block taking a Nullable element of a tuple array with no element at all, as when none of
    the block's events has a process: a recorder's stop record.)"""
    cmd = "if(args__null = 1, CAST(NULL AS Nullable(String)), toNullable(arrayStringConcat(args, ' ')))"
    parts = [f"ifNull({c}, ''), isNull({c})" for c in ("executable", cmd, "CAST(name AS Nullable(String))")]
    return (f"(SELECT entity_id AS {key}, arraySort(groupArray(tuple(image_ts, image_seq, {', '.join(parts)}, "
            f"ifNull(parent_entity_id, 0)))) AS {name} FROM {table} WHERE {where} GROUP BY entity_id)")


def _as_of(images: str, prefix: str) -> list[str]:
    """The image as of the event time, from the sorted images array ``images``: the last whose
    time is not after the event's (those are a prefix of the array: its count is the index)."""
    n = f"{prefix}n"

    def element(k: int) -> str:  # (index 0, no image: the type's default)
        return f"arrayMap(t -> t.{k}, {images})[{n}]"

    def text(k: int) -> str:
        return f"if({n} = 0 OR {element(k + 1)} = 1, {_NULL_S}, toNullable({element(k)}))"

    return [
        f"arrayCount(t -> ifNull(t.1 <= ts, 0), {images}) AS {n}",
        f"{text(3)} AS {prefix}exe",
        f"{text(5)} AS {prefix}cmd",
        f"{text(7)} AS {prefix}name",
        f"{element(9)} AS {prefix}parent",
    ]


@dataclass(frozen=True)
class Tables:
    """The names of a server's own tables (``events_local`` ... on a cluster's shard)."""

    events: str = "events"
    processes: str = "processes"
    flows: str = "flows"
    accounts: str = "accounts"

    def named(self, table: str) -> str:
        """Another of the server's own tables (a summary), named as ``events`` is."""
        head, _, tail = self.events.rpartition("events")
        return f"{head}{table}{tail}"


def _time(col: str, ts_from: int | None, ts_to: int | None) -> list[str]:
    out = []
    if ts_from is not None:
        out.append(f"{col} >= {int(ts_from)}")
    if ts_to is not None:
        out.append(f"{col} < {int(ts_to)}")
    return out


def _user_stages(stage: str, keep: list[str], accounts: str) -> str:
    """The host's first reading of its user database, then the uid's readings (two joins,
    one per SELECT; keys as plain String and Int64: a NULL uid matches nothing)."""
    users = f"FROM {accounts} WHERE kind = 'user'"
    first = (f"(SELECT toString(host_id) AS fx_uhk, toUInt8(1) AS fx_u_has, min(valid_from) AS fx_u_first "
             f"{users} GROUP BY fx_uhk)")
    stage = (f"SELECT {', '.join(keep)}, fx_u_has, fx_u_first FROM (SELECT *, toString(host_id) AS fx_uhk FROM "
             f"({stage})) AS fx_eu ANY LEFT JOIN {first} AS fx_uh USING fx_uhk")
    readings = (f"(SELECT toString(host_id) AS fx_uhk, toInt64(uid) AS fx_uid, arraySort(groupArray(tuple(valid_from, "
                f"name))) AS fx_u_all {users} AND isNotNull(uid) GROUP BY fx_uhk, fx_uid)")
    return (f"SELECT {', '.join(keep)}, fx_u_has, fx_u_first, fx_u_all FROM (SELECT *, toString(host_id) AS fx_uhk, "
            f"ifNull(toInt64(user_id), toInt64(-1)) AS fx_uid FROM ({stage})) AS fx_eu2 "
            f"ANY LEFT JOIN {readings} AS fx_uu USING (fx_uhk, fx_uid)")


@dataclass(frozen=True)
class Slice:
    """The part of a server's events a scan reads: ``where``, a condition over ``host_name``
    and ``ts`` (the events are ordered by host, then time, and partitioned by day: a narrow
    read), and the ``hosts`` it names (the only ones whose process images are joined).
    ``before``: the slice ends at this time (ns, inclusive), so only images begun by then are
    joined (an event's image is the last one begun by its time)."""

    where: str
    hosts: tuple[str, ...]
    before: int | None = None


def _prewhere(rules: Sequence[CompiledRule], ts_from: int | None, ts_to: int | None, part: Slice | None) -> str:
    # the cheap columns' part of every rule, so that only the rows it lets through are read
    # whole and tested on strings (18.16 does not short-circuit AND)
    cheap = " OR ".join(where_ch(necessary(r.where, _CHEAP)) for r in rules) or "0"
    return " AND ".join([*_time("ts", ts_from, ts_to), *([part.where] if part else []), f"({cheap})"])


def _view_columns(rules: Sequence[CompiledRule], alerts: bool = True) -> tuple[list[str], set[str], list[str]]:
    """(derived columns, their contexts, raw event columns) the rules' view needs (and every
    alert's own, unless not ``alerts``)."""
    cols: set[str] = set(SUMMARY_DERIVED if alerts else ())
    for r in rules:
        cols |= columns_of(r.where)
    derived = [d for d in F.DERIVED if d in cols]
    missing = [d for d in derived if d not in DERIVED_CH]
    if missing:
        raise NotExpressible(f"the view column(s) {', '.join(missing)} have no ClickHouse form")
    ctx = {DERIVED_CH[d].context for d in derived}
    raw = set(KEY_COLUMNS) | {c for c in cols if c in F.EVENTS_COLUMNS} | {"ts", "process_entity_id"}
    for d in derived:
        raw |= set(DERIVED_CH[d].raw)
    return derived, ctx, [f.name for f in EVENTS if f.name in raw]


def _base_sql(rules: Sequence[CompiledRule], raw_cols: list[str], tables: Tables, source: str,
              ts_from: int | None, ts_to: int | None, part: Slice | None) -> str:
    """The rows of ``source`` any rule may match, judged by their own columns (no joins yet)."""
    scopes = " OR ".join(before_join(r.where) for r in rules) or "0"
    if source == "events":
        pre = _prewhere(rules, ts_from, ts_to, part)
        return (f"SELECT {', '.join(_event_columns(raw_cols))} FROM {tables.events} PREWHERE {pre} "
                f"WHERE {scopes}")
    flow_cols = [x for c in raw_cols for x in _flow_column(c)]
    inner = f"SELECT {', '.join(flow_cols)} FROM {tables.flows} WHERE in_events = 0"
    # (the flows have no host order: a slice is a filter here, for the rows of the flows it names)
    conds = [*_time("ts", ts_from, ts_to), *([part.where] if part else []), f"({scopes})"]
    return f"SELECT * FROM ({inner}) WHERE {' AND '.join(conds)}"


_DAY = "toUInt32(toYYYYMMDD(toDateTime(intDiv(ts, 1000000000), 'UTC')))"  # as the summaries' day


def probe_sql_ch(rules: Sequence[CompiledRule], ids: Sequence[int], tables: Tables = Tables(),
                 source: str = "events", ts_from: int | None = None, ts_to: int | None = None) -> str:
    """(rule id, host_name, day) of every host and UTC day where a rule may match a row of
    ``source``, judged by the row's own columns only (``before_join``: no process images
    joined): a scan of the cheap and string tests that returns a few rows, before the exact
    scan of only those hosts and days."""
    _, _, raw_cols = _view_columns(rules)
    base = _base_sql(rules, raw_cols, tables, source, ts_from, ts_to, None)
    marks = ", ".join(f"if({before_join(r.where)}, {i}, -1)" for i, r in zip(ids, rules, strict=True))
    return (f"SELECT fx_rule, toString(host_name) AS host_name, day FROM (SELECT host_name, {_DAY} AS day, "
            f"arrayFilter(x -> x >= 0, [{marks}]) AS fx_rules FROM ({base})) "
            f"ARRAY JOIN fx_rules AS fx_rule GROUP BY fx_rule, host_name, day")


# what a finding is counted by (grouping._KEY; a match stands for its row's event_count, the
# repeats the kernel counted, as grouping._counts weighs it): all a roll-up's scan returns of a row
COUNTED = ("host_id", "host_name", "boot_id", "ts", "cpu", "seq", "process_entity_id", "process_pid", "event_count")


def hunt_sql_ch(rules: Sequence[CompiledRule], tables: Tables = Tables(), source: str = "events",
                ts_from: int | None = None, ts_to: int | None = None, ids: Sequence[int] | None = None,
                part: Slice | None = None, counted: bool = False, also: Sequence[str] = ()) -> str:
    """One scan of one server's ``source`` (``events``, or the flow edges of ``flows``) for
    many rules: every matching row's key columns, ``fx_image``, ``fx_command_line`` and
    ``fx_rules``, the indices of the rules it matched (in ``rules``, or their ``ids``). ``part``: only these
    hosts and times. ``counted``: only what findings are counted by (``COUNTED``, and the
    event columns ``also``), and the acting process's images joined only when a rule tests
    them. Raises ``NotExpressible``."""
    derived, ctx, raw_cols = _view_columns(rules, alerts=not counted)
    raw_cols = [f.name for f in EVENTS if f.name in {*raw_cols, *also, *(COUNTED if counted else ())}]
    base = _base_sql(rules, raw_cols, tables, source, ts_from, ts_to, part)
    keep = _event_columns(raw_cols)
    procs = f"host_name IN ({', '.join(literal(h) for h in part.hosts)})" if part else "1"
    if part and part.before is not None:
        procs += f" AND image_ts <= {int(part.before)}"
    # the acting process as of the event time (always for alerts: fx_image and fx_command_line
    # are in every one)
    p_cols = ["fx_p_exe", "fx_p_cmd", "fx_p_name", "fx_p_parent"]
    stage = base
    if not counted or ctx & {"p", "pp"}:
        # (current servers want an alias on every joined subquery; 18.16 takes them too)
        stage = (f"SELECT {', '.join(keep + _as_of('fx_p_imgs', 'fx_p_'))} FROM "
                 f"(SELECT *, ifNull(process_entity_id, toUInt64(0)) AS fx_pk FROM ({base})) AS fx_e "
                 f"ANY LEFT JOIN {_images('fx_pk', 'fx_p_imgs', tables.processes, procs)} AS fx_p USING fx_pk")
        keep = keep + p_cols
    pp_cols = ["fx_pp_exe", "fx_pp_cmd", "fx_pp_name", "fx_pp_parent"]
    if "pp" in ctx:
        stage = (f"SELECT {', '.join(keep + _as_of('fx_pp_imgs', 'fx_pp_'))} FROM "
                 f"(SELECT *, fx_p_parent AS fx_ppk FROM ({stage})) AS fx_ep "
                 f"ANY LEFT JOIN {_images('fx_ppk', 'fx_pp_imgs', tables.processes, procs)} AS fx_pp USING fx_ppk")
        keep = keep + pp_cols
    if "u" in ctx:
        stage = _user_stages(stage, keep, tables.accounts)
    view = [f"{DERIVED_CH[d].sql} AS {d}" for d in derived]
    idx = list(ids) if ids is not None else list(range(len(rules)))
    marks = ", ".join(f"if({where_ch(r.where)}, {i}, -1)" for i, r in zip(idx, rules, strict=True))
    keys = [*COUNTED, *also] if counted else _event_columns(c for c in KEY_COLUMNS) + list(SUMMARY_DERIVED)
    view_sql = f"SELECT *, {', '.join(view)} FROM ({stage})" if view else stage
    return (f"SELECT {', '.join(keys)}, arrayFilter(x -> x >= 0, [{marks}]) AS fx_rules FROM ("
            f"{view_sql}) WHERE notEmpty(fx_rules)")
