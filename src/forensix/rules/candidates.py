"""Which hosts and days a Sigma rule can match, from the fleet's summary tables.

The summary tables (``store/clickhouse/summaries.py``) keep, per host and UTC day, the
distinct values of the fields most rules test: the executable and command line of every
exec (``fleet_exec``), every path an event names (``fleet_path``), every address of a
connect or accept (``fleet_ip``). They hold far fewer rows than the events. A rule is
evaluated on them first, with every test the summary cannot answer taken as "maybe"
(``clickhouse_sql.maybe``): the (host, day) pairs of the rows it may match are a superset
of the (host, day) of the events it matches, so the exact rule run over only those hosts
and days (the events are ordered by host, partitioned by day) finds every alert a whole
scan finds. A rule with no candidate costs one summary query.

A rule takes a summary only when every event it can match has a row there (its
*coverage*), decided from the rule's own tests, never assumed:

* ``fleet_exec``: the rule matches only ``exec`` events (``event_action``);
* ``fleet_path``: it matches only events that are not flow edges and whose ``file_path``
  or ``file_target_path`` is non-empty (a test on them that fails on "" and NULL);
* ``fleet_ip``: only ``connect``/``accept`` events of category ``network`` with a
  non-empty destination or source address.

It must also test something the summary knows (beyond the action): a rule on the
executable narrows, a rule on ``file.deleted`` of an exec would not. Any other rule is
scanned whole, and the plan says why.

What a summary row knows is declared once per summary (``SummaryView.known``): the column
a view column is there, and when (a command line is known where it is non-empty: a NULL
argv is stored as ``[]``, as ``store.stored_table`` writes it). Only the key columns the
summaries promise are read (plus ``key_is_target``/``file_path`` of ``fleet_path``); a
store whose summaries lack one is scanned whole, named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules.clickhouse_sql import DERIVED_CH, maybe
from forensix.rules.ir import And, CompiledRule, Const, Node, Or, Pred, columns_of
from forensix.store.clickhouse.connection import literal

__all__ = [
    "IMAGE_TESTS",
    "MAX_PATHS_SQL",
    "MAX_SLICE_SQL",
    "SUMMARY_VIEWS",
    "Plan",
    "SummaryView",
    "by_path",
    "by_rule",
    "candidates_sql",
    "day_of",
    "files_sql",
    "plan",
    "slices_sql",
    "summary_columns",
    "totals_sql",
    "unsure",
]

_NULL_S = "CAST(NULL AS Nullable(String))"
_FLOW = "flow"  # the event_action of the flow edges (a second scan, over ``flows``)


@dataclass(frozen=True)
class SummaryView:
    """A summary table as a rule sees it: which view columns its rows know, and which rules
    it covers."""

    name: str
    columns: frozenset[str]  # the summary's columns this reads (all must exist)
    # view column -> (when known on a row, expression, or expressions: one of them is the value)
    known: Mapping[str, tuple[str, str | tuple[str, ...]]]
    cased_only: frozenset[str]  # view columns known only up to case (tests of them must be caseless)
    covers: Callable[[Node], str | None]  # None: every event the rule can match has a row; else why not
    # a table of paths alone (no host): its rows give the paths a rule may match, and the
    # candidates are asked of this table by those paths (``files_sql``)
    by_path: str | None = None
    # a second summary asked the same (both must be there): the rows this one does not describe
    also: SummaryView | None = None
    # tests that say nothing about which values a rule wants (every row of the summary has them)
    unnarrowing: frozenset[str] = frozenset({"event_action", "event_category", "host_name"})

    def knows(self, p: Pred) -> tuple[str, str | tuple[str, ...]] | None:
        if p.op == "colref" or p.column not in self.known:
            return None
        if p.column in self.cased_only and p.cased:
            return None
        return self.known[p.column]

    def views(self) -> tuple[SummaryView, ...]:
        """The summaries whose candidates this view's are (their union)."""
        return (self,) + ((self.also,) if self.also else ())


# -- what a rule's tests imply --------------------------------------------------------------


def values_of(node: Node, column: str, fold: bool = False) -> frozenset[str] | None:
    """The values of ``column`` outside which ``node`` is false, or None (any value).
    ``fold``: caseless tests count too, their values lowered (compare lowered values)."""
    if isinstance(node, Const):
        return None if node.value else frozenset()
    if isinstance(node, Pred):
        if node.column != column or node.as_text or (not node.cased and not fold):
            return None
        vals = (node.value,) if node.op == "eq" else tuple(node.value) if node.op == "in" else None
        if vals is None or not all(isinstance(v, str) for v in vals):
            return None
        return frozenset(v.lower() for v in vals) if fold else frozenset(vals)
    if isinstance(node, And):
        out: frozenset[str] | None = None
        for it in node.items:
            v = values_of(it, column, fold)
            if v is not None:
                out = v if out is None else out & v
        return out
    if isinstance(node, Or):
        acc: frozenset[str] = frozenset()
        for it in node.items:
            v = values_of(it, column, fold)
            if v is None:
                return None
            acc |= v
        return acc
    return None  # a negation bounds nothing


def _false_on_empty(p: Pred) -> bool:
    """The test is false on "" (and, as every test but ``null``, on NULL)."""
    v = p.value
    if p.op in ("eq", "in"):
        vals = (v,) if p.op == "eq" else tuple(v)
        return all(isinstance(x, str) and x != "" for x in vals)
    if p.op in ("prefix", "suffix", "contains"):
        return isinstance(v, str) and v != ""
    if p.op == "regex":  # the rule's RE2 (Arrow's, as DuckDB's and ClickHouse's) on ""
        return not pc.match_substring_regex(pa.array([""], pa.string()), str(v))[0].as_py()
    return False


def needs_text(node: Node, columns: frozenset[str]) -> bool:
    """Every event where ``node`` is true has a non-empty value in one of ``columns``."""
    if isinstance(node, Const):
        return not node.value
    if isinstance(node, Pred):
        return node.column in columns and _false_on_empty(node)
    if isinstance(node, And):
        return any(needs_text(i, columns) for i in node.items)
    if isinstance(node, Or):
        return all(needs_text(i, columns) for i in node.items)
    return False


def _only(node: Node, column: str, allowed: frozenset[str]) -> str | None:
    vals = values_of(node, column)
    if vals is None:
        return f"it does not bound {column}"
    if not vals <= allowed:
        return f"it can match {column} {', '.join(sorted(vals - allowed))}"
    return None


def _no_flows(node: Node) -> str | None:
    # the flow edges' action is exactly "flow": a caseless test of another word never matches it
    vals = values_of(node, "event_action", fold=True)
    if vals is None or _FLOW in vals:
        return "it can match flow edges"
    return None


# -- the summaries --------------------------------------------------------------------------

_RENAMES = "action IN ('rename', 'link')"
_LISTENS = "action IN ('listen', 'bind')"
_PATHS = frozenset({"file_path", "file_target_path", "fx_target_filename"})


def _exec_covers(node: Node) -> str | None:
    return _only(node, "event_action", frozenset({"exec"}))


def _path_covers(node: Node) -> str | None:
    if (why := _no_flows(node)) is not None:
        return why
    if not needs_text(node, _PATHS):
        return "it can match an event without a path"
    return None


def _ip_covers(node: Node) -> str | None:
    why = _only(node, "event_action", frozenset({"connect", "accept"})) or _only(
        node, "event_category", frozenset({"network"}))
    if why is None and not needs_text(node, frozenset({"destination_ip", "source_ip"})):
        why = "it can match a connection without an address"
    return why


def _kinds_covers(node: Node) -> str | None:
    # every event has a row (its kind, host and day); the flow edges stored only in flows have none
    return _no_flows(node)


_EXEC_KNOWN: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "event_action": ("1", "'exec'"),
    "process_executable": ("1", "executable"),
    # the event's own executable when it has one, else the process image's
    "fx_image": ("isNotNull(executable)", "executable"),
    # "" is an empty argv or none (then the process image's command line)
    "fx_command_line": ("command_line != ''", "command_line"),
    "process_hash_sha256": ("1", "sha256"),  # lowered by the summary
    "fx_hashes": ("1", "concat('SHA256=', upper(sha256))"),
    "host_name": ("1", "host_name"),
}
_S = "CAST(NULL AS Nullable(String))"
_EXEC_COLUMNS = frozenset({"executable", "command_line", "sha256", "host_name", "day"})
# 0007: an exec fleet_exec_other does not hold is of category process, has no target and no
# message, and its path is its executable or none (both tested: one of them is the event's)
_ORDINARY_EXEC: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "event_category": ("1", "'process'"),
    "file_path": ("1", ("executable", _S)),
    "fx_target_filename": ("1", ("executable", _S)),  # an exec is no rename or link
    "file_target_path": ("1", _S),
    "message": ("1", _S),
}
_EXEC_OTHER = SummaryView(
    "fleet_exec_other",
    _EXEC_COLUMNS | {"file_path", "file_target_path", "message", "category"},
    {**_EXEC_KNOWN, "event_category": ("1", "category"), "file_path": ("1", "file_path"),
     "fx_target_filename": ("1", "file_path"), "file_target_path": ("1", "file_target_path"),
     "message": ("1", "message")},
    frozenset({"process_hash_sha256"}),
    _exec_covers,
)


SUMMARY_VIEWS: tuple[SummaryView, ...] = (
    # 0007: fleet_exec with the execs' category, path, target and message, and the execs
    # fleet_exec does not describe whole from fleet_exec_other (its candidates added): what a
    # keyword rule tests on an exec beside its image and command line
    SummaryView(
        "fleet_exec",
        _EXEC_COLUMNS,
        {**_EXEC_KNOWN, **_ORDINARY_EXEC},
        frozenset({"process_hash_sha256"}),
        _exec_covers,
        also=_EXEC_OTHER,
    ),
    SummaryView(
        "fleet_exec",
        _EXEC_COLUMNS,
        _EXEC_KNOWN,
        frozenset({"process_hash_sha256"}),
        _exec_covers,
    ),
    # 0006: the distinct paths (with action, open flags, mode and day), no host: first for the
    # path rules, being small; the hosts, days and acting images are asked after (``files_sql``)
    SummaryView(
        "fleet_names",
        frozenset({"key_path", "key_is_target", "action", "source_path", "file_flags", "file_mode", "day"}),
        {
            # (a rename's or link's path row is there only when it has no target row)
            "event_action": ("1", "action"),
            "file_path": ("1", "if(key_is_target = 1, source_path, toNullable(key_path))"),
            "file_target_path": ("key_is_target = 1", "toNullable(key_path)"),
            # a rename's or link's target is its target row's path, any other event's its own path
            "fx_target_filename": (f"(key_is_target = 1) = ({_RENAMES})", "toNullable(key_path)"),
            "file_flags": ("1", "file_flags"),
            "fx_flags": ("1", DERIVED_CH["fx_flags"].sql),
            "file_mode": ("1", "file_mode"),
            "fx_mode": ("1", DERIVED_CH["fx_mode"].sql),
        },
        frozenset(),
        _path_covers,
        by_path="fleet_files",
    ),
    SummaryView(
        "fleet_path",
        frozenset({"key_path", "key_is_target", "file_path", "action", "host_name", "day"}),
        {
            # a row per event under its file_path (key_is_target 0), one more under its target (1);
            # rows of flow edges (action read/write) only add candidates: these rules match no flow
            "event_action": ("1", "action"),
            "file_path": ("1", "file_path"),
            "file_target_path": ("key_is_target = 1", "toNullable(key_path)"),
            "fx_target_filename": (f"key_is_target = 1 OR NOT ({_RENAMES})",
                                   f"if({_RENAMES}, toNullable(key_path), file_path)"),
            "host_name": ("1", "host_name"),
        },
        frozenset(),
        _path_covers,
    ),
    SummaryView(
        "fleet_ip",
        frozenset({"ip", "action", "destination_ip", "destination_port", "host_name", "day"}),
        {
            "event_action": ("1", "action"),
            "event_category": ("1", "'network'"),
            "destination_ip": ("1", "destination_ip"),
            "destination_port": ("1", "destination_port"),
            # a row per address: one other than the destination is the source
            "source_ip": ("ip != ifNull(destination_ip, '')", "toNullable(ip)"),
            "host_name": ("1", "host_name"),
        },
        frozenset(),
        _ip_covers,
    ),
    # 0007: the kinds of event of each host and day (a rule on a rare kind: a module load, a
    # listener, an exec of a deleted file), after the summaries that know more of an event
    SummaryView(
        "fleet_kinds",
        frozenset({"host_name", "day", "category", "action", "outcome", "transport", "module", "deleted", "port",
                   "ip"}),
        {
            "event_category": ("1", "category"),
            "event_action": ("1", "action"),
            "event_outcome": ("1", "outcome"),
            "network_transport": ("1", "transport"),
            "event_module": ("1", "module"),
            "file_deleted": ("1", "deleted"),
            # a listening socket's own address (the summary keeps it for listen and bind only)
            "source_port": (f"{_LISTENS}", "port"),
            "source_ip": (f"{_LISTENS}", "ip"),
            "host_name": ("1", "host_name"),
        },
        frozenset(),
        _kinds_covers,
        unnarrowing=frozenset({"host_name"}),  # here the kind is what narrows
    ),
)


@dataclass(frozen=True)
class Plan:
    """How one rule is hunted: over the candidates of ``summary``, or (None) a whole scan, ``why``."""

    rule: CompiledRule
    summary: str | None
    why: str
    view: SummaryView | None = None  # the summary's view (``summary`` is its name)


def plan(rule: CompiledRule, have: Mapping[str, frozenset[str]]) -> Plan:
    """The summary a rule is hunted through, if any covers it; ``have``: each summary table
    there is and its columns."""
    node = rule.where
    why = []
    for view in SUMMARY_VIEWS:
        cover = view.covers(node)
        if cover is not None:
            why.append(f"{view.name}: {cover}")
            continue
        used = {c for c in columns_of(node) if c in view.known} - view.unnarrowing
        if not used:
            why.append(f"{view.name}: it tests nothing {view.name} holds")
            continue
        absent = [v.name for v in view.views() if v.name not in have]
        if absent:
            why.append(f"{view.name}: the store has no such summary" if view.name in absent else
                       f"{view.name}: the store has no {', '.join(absent)} (it tests {', '.join(sorted(used))})")
            continue
        lacking = {c for v in view.views() for c in v.columns - have[v.name]}
        if lacking:
            why.append(f"{view.name}: the summary lacks {', '.join(sorted(lacking))}")
            continue
        return Plan(rule, view.name, f"narrowed by {view.name} ({', '.join(sorted(used))})", view)
    return Plan(rule, None, "; ".join(why))


# -- the candidates -------------------------------------------------------------------------


def day_of(ts: int) -> int:
    """The UTC day (YYYYMMDD) of a time in ns, as the summaries' ``day``."""
    d = datetime.fromtimestamp(ts // 1_000_000_000, UTC)
    return d.year * 10000 + d.month * 100 + d.day


def day_window(ts_from: int | None, ts_to: int | None) -> list[str]:
    """The days a window touches, whole or in part (the exact scan cuts the partial ones)."""
    out = []
    if ts_from is not None:
        out.append(f"day >= {day_of(ts_from)}")
    if ts_to is not None:
        out.append(f"day <= {day_of(ts_to - 1)}")
    return out


def candidates_sql(view: SummaryView, table: str, rules: Iterable[tuple[int, Node]], ts_from: int | None,
                   ts_to: int | None) -> str:
    """(rule index, host_name, day, fx_sure) of every host and day where a rule may match,
    one query for many rules over ``table`` (a shard's own summary table, or ``view.table``'s
    rows). ``fx_sure`` 1: a row of that host and day says the rule matches an event there
    (every test it makes is known on the row and true), so no probe can rule the day out."""
    where = " AND ".join(day_window(ts_from, ts_to)) or "1"
    if view.by_path:  # a row per path, action, flags, mode and day: the paths first
        marks = ", ".join(f"if({maybe(node, view.knows)}, {i}, -1)" for i, node in rules)
        return (f"SELECT DISTINCT fx_rule, key_path FROM {table} "
                f"ARRAY JOIN arrayFilter(x -> x >= 0, [{marks}]) AS fx_rule WHERE {where}")
    # (rule index * 2 + whether it is sure there): one array, one ARRAY JOIN
    marks = ", ".join(f"if({maybe(node, view.knows)}, {2 * i} + (NOT {maybe(node, view.knows, False)}), -1)"
                      for i, node in rules)
    return (f"SELECT intDiv(fx_m, 2) AS fx_rule, toString(host_name) AS host_name, toUInt32(day) AS day, "
            f"toUInt8(max(fx_m % 2)) AS fx_sure FROM {table} "
            f"ARRAY JOIN arrayFilter(x -> x >= 0, [{marks}]) AS fx_m WHERE {where} "
            f"GROUP BY fx_rule, host_name, day")


def totals_sql(table: str, ts_from: int | None, ts_to: int | None) -> str:
    """How many (host, day) pairs the summary holds in the window."""
    where = " AND ".join(day_window(ts_from, ts_to)) or "1"
    return f"SELECT toUInt64(uniqExact(host_name, day)) AS n FROM {table} WHERE {where}"


def by_rule(rows: pa.Table) -> dict[int, set[tuple[str, int]]]:
    """``candidates_sql``'s rows as rule index -> {(host, day)}."""
    out: dict[int, set[tuple[str, int]]] = {}
    for r, h, d in zip(*(rows.column(c).to_pylist() for c in ("fx_rule", "host_name", "day")), strict=True):
        out.setdefault(int(r), set()).add((str(h), int(d)))
    return out


def unsure(rows: pa.Table) -> set[int]:
    """The rules of ``candidates_sql``'s rows with a host and day the summary is not sure of."""
    if "fx_sure" not in rows.column_names:
        return {int(r) for r in rows.column("fx_rule").to_pylist()}
    return {int(r) for r, s in zip(rows.column("fx_rule").to_pylist(), rows.column("fx_sure").to_pylist(),
                                   strict=True) if not s}


def summary_columns(describe: pa.Table) -> frozenset[str] | None:
    """The columns of a summary table from its DESCRIBE, or None when its ``day`` is not the
    YYYYMMDD number this reads."""
    cols = dict(zip(describe.column(0).to_pylist(), describe.column(1).to_pylist(), strict=True))
    if "UInt32" not in str(cols.get("day", "")):
        return None
    return frozenset(str(c) for c in cols)


def slices_sql(pairs: Sequence[tuple[str, int]], ts_col: str = "ts") -> str:
    """A condition over ``host_name`` and ``ts_col`` true on exactly the events of these
    (host, day) pairs: hosts with the same days share one IN list, consecutive days one range."""
    days_of: dict[str, list[int]] = {}
    for h, d in sorted(set(pairs)):
        days_of.setdefault(h, []).append(d)
    groups: dict[tuple[int, ...], list[str]] = {}
    for h, ds in days_of.items():
        groups.setdefault(tuple(ds), []).append(h)
    parts = []
    for days, hosts in sorted(groups.items()):
        ranges = " OR ".join(f"({ts_col} >= {lo} AND {ts_col} < {hi})" for lo, hi in _ranges(days))
        names = ", ".join(literal(h) for h in hosts)
        parts.append(f"(host_name IN ({names}) AND ({ranges}))")
    return "(" + (" OR ".join(parts) or "0") + ")"


_DAY_NS = 86_400 * 1_000_000_000


def _start(day: int) -> int:
    return int(datetime(day // 10000, day // 100 % 100, day % 100, tzinfo=UTC).timestamp()) * 1_000_000_000


def _ranges(days: Sequence[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for d in sorted(days):
        s = _start(d)
        if out and out[-1][1] == s:
            out[-1][1] = s + _DAY_NS
        else:
            out.append([s, s + _DAY_NS])
    return [(a, b) for a, b in out]


# -- the hosts and acting images of the paths, from 0006's fleet_files and the processes -------

IMAGE_TESTS = frozenset({"fx_image"})  # what ``files_sql`` decides with the processes' images
_FILES_COLS = "host_name, day, key_path, key_is_target, action, file_path, file_flags, file_mode"
MAX_PATHS_SQL = 100_000  # characters of the paths named in one query (max_query_size is 256 KiB)
MAX_SLICE_SQL = 100_000  # characters of a hosts-and-days condition (``slices_sql``) in one query


def by_path(rows: pa.Table) -> dict[int, set[str]]:
    """``candidates_sql``'s rows of a by-path summary as rule index -> {path}."""
    out: dict[int, set[str]] = {}
    for r, k in zip(rows.column("fx_rule").to_pylist(), rows.column("key_path").to_pylist(), strict=True):
        out.setdefault(int(r), set()).add(str(k))
    return out


def _files_known(p: Pred) -> tuple[str, str] | None:
    """What a row of ``files_sql`` knows: a fleet_files row (its path, target, flags, mode,
    host) and one image its process may have had then (``fx_img``; not for an exec, whose
    event names its own new image)."""
    known = {
        "event_action": ("1", "action"),
        "file_path": ("1", "file_path"),
        "file_target_path": ("key_is_target = 1", "toNullable(key_path)"),
        "fx_target_filename": (f"key_is_target = 1 OR NOT ({_RENAMES})",
                               f"if({_RENAMES}, toNullable(key_path), file_path)"),
        "file_flags": ("1", "file_flags"),
        "fx_flags": ("1", DERIVED_CH["fx_flags"].sql),
        "file_mode": ("1", "file_mode"),
        "fx_mode": ("1", DERIVED_CH["fx_mode"].sql),
        "host_name": ("1", "host_name"),
        "fx_image": ("fx_img_known", "fx_img"),
    }
    if p.op == "colref" or p.column not in known:
        return None
    return known[p.column]


def _no_image(p: Pred) -> tuple[str, str] | None:
    return None if p.column in IMAGE_TESTS else _files_known(p)


def files_sql(files: str, processes: str, rules: Sequence[tuple[int, Node]], paths: Iterable[str] | None,
              ts_from: int | None, ts_to: int | None) -> str:
    """(rule index, host_name, day) where a path rule may match, from fleet_files rows of
    ``paths`` (None: every path; the table is sorted by path, so a list is a narrow read).
    A rule that tests the acting image (``NOT Image``) is tested on every image each process
    of a row (``procs``, joined with ``processes`` by entity id) can have had between the
    row's first and last time, as of the event time as the exact rule joins it (NULL when an
    event can precede the first image): a write by an excluded program is then no candidate,
    and no scan."""
    where = [*day_window(ts_from, ts_to)]
    if paths is not None:
        where.append(f"key_path IN ({', '.join(literal(p) for p in sorted(paths)) or chr(39) * 2})")
    where.append("(" + (" OR ".join(maybe(node, _no_image) for _, node in rules) or "0") + ")")
    marks = ", ".join(f"if({maybe(node, _files_known)}, {i}, -1)" for i, node in rules)
    out = "SELECT fx_rule, toString(host_name) AS host_name, toUInt32(day) AS day FROM ({}) " \
          f"ARRAY JOIN arrayFilter(x -> x >= 0, [{marks}]) AS fx_rule GROUP BY fx_rule, host_name, day"
    grouped = f"SELECT {_FILES_COLS}, {{}} FROM {files} WHERE {' AND '.join(where)} GROUP BY {_FILES_COLS}"
    if not any(columns_of(node) & IMAGE_TESTS for _, node in rules):
        return out.format(f"SELECT {_FILES_COLS}, toUInt8(0) AS fx_img_known, {_NULL_S} AS fx_img FROM (" +
                          grouped.format("count() AS fx_n") + ")")
    rows = (f"SELECT {_FILES_COLS}, fx_pk, fx_mn, fx_mx FROM ("
            + grouped.format("minMerge(min_ts) AS fx_mn, maxMerge(max_ts) AS fx_mx, groupUniqArrayMerge(procs) AS fx_ids")
            + ") ARRAY JOIN fx_ids AS fx_pk")
    hosts = f"SELECT DISTINCT host_name FROM {files} WHERE {' AND '.join(where)}"
    # only the rows' processes are grouped (their hosts' are read: sorted by host)
    images = (f"(SELECT entity_id AS fx_pk, arraySort(groupArray(tuple(image_ts, image_seq, executable))) AS fx_pimgs "
              f"FROM {processes} WHERE host_name IN ({hosts}) AND entity_id IN (SELECT fx_pk FROM ({rows})) "
              f"GROUP BY entity_id)")
    # (18.16 loses a subquery's column that only a lambda reads: no lambda here reads one,
    # the row's times come in as arrays of the images' length) the images begun by the row's
    # last time; of those the ones still current at its first time or begun after it, and NULL
    # when an event may precede the first image
    joined = (f"SELECT {_FILES_COLS}, fx_mn, fx_mx, fx_pimgs FROM ({rows}) AS fx_f "
              f"ANY LEFT JOIN {images} AS fx_p USING fx_pk")
    upto = (f"SELECT {_FILES_COLS}, fx_mn, arrayFilter((t, m) -> ifNull(t.1 <= m, 0), fx_pimgs, "
            f"replicate(fx_mx, fx_pimgs)) AS fx_up FROM ({joined})")
    starts = "arrayMap(t -> t.1, fx_up)"
    nexts = f"arrayPushBack(arrayPopFront({starts}), toInt64({2**63 - 1}))"
    null = "[CAST(NULL AS Nullable(String))]"
    opts = (f"arrayConcat(if(empty(fx_up) OR fx_up[1].1 > fx_mn, {null}, arrayFilter(x -> 0, {null})), "
            f"arrayMap(t -> t.3, arrayFilter((t, n, m) -> n > m, fx_up, {nexts}, replicate(fx_mn, fx_up))))")
    joined = f"SELECT {_FILES_COLS}, toUInt8(action != 'exec') AS fx_img_known, {opts} AS fx_opts FROM ({upto})"
    return out.format(f"SELECT {_FILES_COLS}, fx_img_known, fx_img FROM ({joined}) ARRAY JOIN fx_opts AS fx_img")
