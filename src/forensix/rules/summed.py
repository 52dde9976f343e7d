"""A roll-up's findings counted from ``fleet_exec``, not from the rule's matches.

A rule that matches every exec of a fleet (a pool's ``--job=`` flag on 10^8 events: two
million matches on a thousand hosts) costs its exact scan, with the process images joined,
however the findings are counted afterwards. Its findings per host can instead be read off
the exec summary, exactly, when the summary decides each of that host's execs:

* every ``fleet_exec`` row of the host the rule may match (as ``candidates`` evaluates it, the
  ordinary exec's knowledge: ``Image``, ``CommandLine``, ``Hashes``, category ``process``, a
  path that is the executable or none) it surely matches (every test it makes is known on the
  row and true): ``execs`` of the row are matches, ``processes`` their processes;
* the host has no exec the ordinary knowledge misdescribes (``fleet_exec_other``, 0007) and
  none ``fleet_exec_unkeyed`` (0008) names (an exec without cpu or seq, without an entity id,
  or standing for several events) on a day of the window, and it has a name;
* its matches are as many as their distinct processes: each process then has one match, so
  each match is a finding of its own (the grouping's key is host, boot and process; one match
  is inside any window), and the findings are the matches, from the first to the last time.

The hours a ``--from/--to`` window cuts are not read from the summary: the exact rule scans
them (for the hosts with a row there), and their matches' processes join the summary's as
aggregate states (``uniqExactMergeState``), so the one-match-per-process test covers both.
A host the summary cannot decide is hunted as before, over its own candidate days only
(``fleet_hunt``). What this returns is what the whole scan's count returns for those hosts
(``fleet_hunt._counted_sql``), and what DuckDB's hunt groups (tests/fleet/test_fleet_hunt_summed.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from forensix.rules.candidates import (
    MAX_SLICE_SQL,
    SUMMARY_VIEWS,
    Plan,
    SummaryView,
    day_window,
    slices_sql,
)
from forensix.rules.clickhouse_sql import Tables, before_join, maybe
from forensix.rules.ir import CompiledRule
from forensix.store.clickhouse.connection import Server, literal

__all__ = [
    "COUNTED",
    "SUMMED",
    "Hours",
    "ShardSum",
    "Summed",
    "can_sum",
    "combined_sql",
    "count_shard",
    "first_bound",
    "first_sql",
    "hours",
    "summed_shard",
    "summed_sql",
]

# the summaries a host's findings are counted from, and those that say when they cannot be
SUMMED = ("fleet_exec", "fleet_exec_other", "fleet_exec_unkeyed")
_HOUR_NS = 3_600 * 10**9
# the exec rows as a count knows them: fleet_exec's with 0007's ordinary exec (fleet_exec_other
# names the hosts and days where that is not so; they are not counted from here)
_VIEW: SummaryView = SUMMARY_VIEWS[0]
assert _VIEW.name == "fleet_exec" and _VIEW.also is not None


def can_sum(p: Plan, have: Mapping[str, frozenset[str]]) -> bool:
    """The rule's findings may be counted from fleet_exec: it matches execs only (its plan
    takes fleet_exec) and the store has the summaries that say where that is exact."""
    return p.view is not None and p.view.name == "fleet_exec" and all(s in have for s in SUMMED) \
        and _VIEW.columns <= have["fleet_exec"]


@dataclass(frozen=True)
class Hours:
    """A window as the hourly summary reads it: the whole UTC hours inside it (``day * 100 +
    hour`` from ``lo`` to before ``hi``; None: unbounded), and the parts of hours it cuts
    (``cuts``: [from, to) ranges of ns, scanned) with the hours they are in (``cut``)."""

    lo: int | None
    hi: int | None
    cuts: tuple[tuple[int | None, int | None], ...]
    cut: tuple[int, ...]
    empty: bool = False  # no whole hour inside the window


def _dh(ns: int) -> int:
    d = datetime.fromtimestamp(ns // 10**9, UTC)
    return ((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour


def hours(ts_from: int | None, ts_to: int | None) -> Hours:
    lo = None if ts_from is None else -(-ts_from // _HOUR_NS) * _HOUR_NS  # the first whole hour's start
    hi = None if ts_to is None else ts_to // _HOUR_NS * _HOUR_NS  # the end of the last whole hour
    if lo is not None and hi is not None and lo >= hi:  # inside one or two hours: no whole hour
        assert ts_from is not None and ts_to is not None
        span = range(ts_from // _HOUR_NS, (ts_to - 1) // _HOUR_NS + 1) if ts_to > ts_from else range(0)
        return Hours(None, None, ((ts_from, ts_to),) if span else (), tuple(_dh(h * _HOUR_NS) for h in span), True)
    cuts: list[tuple[int | None, int | None]] = []
    cut: list[int] = []
    if ts_from is not None and lo is not None and lo != ts_from:
        cuts.append((ts_from, lo))
        cut.append(_dh(ts_from))
    if ts_to is not None and hi is not None and hi != ts_to:
        cuts.append((hi, ts_to))
        cut.append(_dh(hi))
    return Hours(None if lo is None else _dh(lo), None if hi is None else _dh(hi), tuple(cuts), tuple(cut))


_DH = "(toUInt64(day) * 100 + hour)"


def _whole(h: Hours) -> str:
    if h.empty:
        return "0"
    parts = ([f"{_DH} >= {h.lo}"] if h.lo is not None else []) + ([f"{_DH} < {h.hi}"] if h.hi is not None else [])
    return " AND ".join(parts) or "1"


def _marks(rules: Sequence[tuple[int, CompiledRule]]) -> str:
    # (rule index * 2 + whether the row surely matches): the rows a rule may match, one array
    return ", ".join(f"if({maybe(r.where, _VIEW.knows)}, {2 * i} + (NOT {maybe(r.where, _VIEW.knows, False)}), -1)"
                     for i, r in rules)


def summed_sql(tables: Tables, rules: Sequence[tuple[int, CompiledRule]], ts_from: int | None,
               ts_to: int | None) -> str:
    """Per (rule index, host, whether in an hour the window cuts) of the fleet_exec rows each
    rule may match in the window: matches, their distinct processes, first and last time,
    whether every such row surely matches (``fx_sure``), and whether the host has execs the
    summary cannot count on a day of the window (``fx_odd``: fleet_exec_other, fleet_exec_unkeyed).
    One query for many rules, on one shard's own tables."""
    h = hours(ts_from, ts_to)
    days = " AND ".join(day_window(ts_from, ts_to)) or "1"
    cut = f"{_DH} IN ({', '.join(str(c) for c in h.cut)})" if h.cut else "0"
    odd = " OR ".join(f"host_name IN (SELECT host_name FROM {tables.named(s)} WHERE {days})"
                      for s in ("fleet_exec_other", "fleet_exec_unkeyed"))
    return (f"SELECT toInt32(intDiv(fx_m, 2)) AS fx_rule, toString(host_name) AS host_name, toUInt8({cut}) AS fx_cut, "
            f"countMerge(execs) AS fx_n, uniqExactMerge(processes) AS fx_u, minMerge(min_ts) AS fx_mn, "
            f"maxMerge(max_ts) AS fx_mx, toUInt8(min(fx_m % 2)) AS fx_sure, toUInt8(max({odd})) AS fx_odd "
            f"FROM {tables.named('fleet_exec')} ARRAY JOIN arrayFilter(x -> x >= 0, [{_marks(rules)}]) AS fx_m "
            f"WHERE {days} AND (({_whole(h)}) OR {cut}) GROUP BY fx_rule, host_name, fx_cut")


def combined_sql(tables: Tables, rules: Sequence[tuple[int, CompiledRule]], ts_from: int | None,
                 ts_to: int | None, hosts: Sequence[str]) -> str:
    """Per (rule index, host) of ``hosts`` (those with rows in hours the window cuts): the
    whole hours' matches from fleet_exec and the cut hours' from a scan of their execs, their
    processes merged as aggregate states: fx_rule, host_name, fx_n, fx_u, fx_mn, fx_mx, and
    ``fx_sure`` 0 where an exec of the cut hours may match but its own columns cannot say (its
    argv or executable is the process image's: the host is then hunted as before). The scan
    joins no process image: an exec carries its own, where it has one."""
    h = hours(ts_from, ts_to)
    names = ", ".join(literal(x) for x in hosts)
    days = " AND ".join(day_window(ts_from, ts_to)) or "1"
    summary = (f"SELECT toInt32(intDiv(fx_m, 2)) AS fx_rule, toString(host_name) AS host_name, "
               f"countMerge(execs) AS fx_n, uniqExactMergeState(processes) AS fx_p, minMerge(min_ts) AS fx_mn, "
               f"maxMerge(max_ts) AS fx_mx, toUInt8(min(fx_m % 2)) AS fx_sure FROM {tables.named('fleet_exec')} "
               f"ARRAY JOIN arrayFilter(x -> x >= 0, [{_marks(rules)}]) AS fx_m "
               f"WHERE {days} AND ({_whole(h)}) AND host_name IN ({names}) GROUP BY fx_rule, host_name")
    ranges = " OR ".join("(" + " AND ".join([*([f"ts >= {a}"] if a is not None else []),
                                             *([f"ts < {b}"] if b is not None else [])]) + ")" for a, b in h.cuts)
    marks = ", ".join(f"if({before_join(r.where)}, {2 * i} + (NOT {before_join(r.where, False)}), -1)"
                      for i, r in rules)
    execs = (f"SELECT host_name, process_entity_id, ts, arrayFilter(x -> x >= 0, [{marks}]) AS fx_ms "
             f"FROM {tables.events} PREWHERE host_name IN ({names}) AND ({ranges or '0'}) AND event_action = 'exec'")
    # (18.16: every column named around an ARRAY JOIN, as fleet_hunt._counted_sql)
    matched = (f"SELECT toInt32(intDiv(fx_m, 2)) AS fx_rule, toString(host_name) AS host_name, count() AS fx_n, "
               f"uniqExactState(process_entity_id) AS fx_p, min(ts) AS fx_mn, max(ts) AS fx_mx, "
               f"toUInt8(min(fx_m % 2)) AS fx_sure FROM (SELECT host_name, process_entity_id, ts, fx_m FROM ({execs}) "
               f"ARRAY JOIN fx_ms AS fx_m) GROUP BY fx_rule, host_name")
    return (f"SELECT fx_rule, host_name, toUInt64(sum(fx_n)) AS fx_n, toUInt64(uniqExactMerge(fx_p)) AS fx_u, "
            f"toInt64(min(fx_mn)) AS fx_mn, toInt64(max(fx_mx)) AS fx_mx, toUInt8(min(fx_sure)) AS fx_sure "
            f"FROM ({summary} UNION ALL {matched}) GROUP BY fx_rule, host_name")


# the findings counted per (rule, host), as fleet_hunt._counted_sql's rows
COUNTED = pa.schema([pa.field("fx_rule", pa.int64()), pa.field("host_name", pa.string()),
                     pa.field("findings", pa.uint64()), pa.field("matches", pa.uint64()), pa.field("ts", pa.int64()),
                     pa.field("last_ts", pa.int64())])


@dataclass
class Summed:
    """What the summary counted on one shard: the findings of the hosts it decides
    (``COUNTED``), and per rule index those hosts, and the hosts it could not decide (hunted
    as before)."""

    counted: pa.Table
    good: dict[int, set[str]]
    undecided: dict[int, set[str]]
    queries: int = 0
    first: dict[int, dict[str, int]] = field(default_factory=dict)  # rule index -> host counted -> its first match


def count_shard(srv: Server, tables: Tables, rules: Sequence[CompiledRule], ids: Sequence[int],
                ts_from: int | None, ts_to: int | None) -> Summed:
    """The findings of the rules ``ids`` (indices into ``rules``) counted from the summary on
    one shard, for every host it decides (see the module doc)."""
    chosen = [(i, rules[i]) for i in ids]
    summary = srv.table(summed_sql(tables, chosen, ts_from, ts_to)).to_pylist()
    whole: dict[tuple[int, str], dict[str, int]] = {}
    cut: set[tuple[int, str]] = set()
    bad: set[tuple[int, str]] = set()
    for r in summary:
        key = (int(r["fx_rule"]), str(r["host_name"]))
        if r["fx_odd"] or not key[1]:
            bad.add(key)  # execs the summary misdescribes or cannot key, or a host without a name
        if r["fx_cut"]:
            cut.add(key)
        elif not r["fx_sure"]:
            bad.add(key)  # a row the rule may or may not match
        else:
            whole[key] = r
    queries = 1
    counts = {k: (int(r["fx_n"]), int(r["fx_u"]), int(r["fx_mn"]), int(r["fx_mx"])) for k, r in whole.items()}
    scan = sorted({h for k in cut - bad for h in (k[1],)})
    if scan:
        # the hours the window cuts: scanned for those hosts, their processes merged with the summary's
        for k in [k for k in counts if k[1] in scan]:
            del counts[k]
        for r in srv.table(combined_sql(tables, chosen, ts_from, ts_to, scan)).to_pylist():
            key = (int(r["fx_rule"]), str(r["host_name"]))
            counts[key] = (int(r["fx_n"]), int(r["fx_u"]), int(r["fx_mn"]), int(r["fx_mx"]))
            if not r["fx_sure"]:
                bad.add(key)  # an exec of a cut hour the summary's columns cannot decide
        queries += 1
    good: dict[int, set[str]] = {i: set() for i in ids}
    undecided: dict[int, set[str]] = {i: set() for i in ids}
    rows: dict[str, list[object]] = {f.name: [] for f in COUNTED}
    for (i, host), (n, u, mn, mx) in sorted(counts.items()):
        if (i, host) in bad:
            continue
        if n != u:  # a process with more than one match: its findings depend on their times
            bad.add((i, host))
            continue
        good[i].add(host)
        for c, v in zip(COUNTED.names, (i, host, n, n, mn, mx), strict=True):
            rows[c].append(v)
    for i, host in bad:
        undecided[i].add(host)
    firsts: dict[int, dict[str, int]] = {i: {} for i in ids}
    for (i, host), (_, _, mn, _) in counts.items():
        if host in good[i]:
            firsts[i][host] = mn
    return Summed(pa.table(rows, schema=COUNTED), good, undecided, queries, firsts)


@dataclass
class ShardSum:
    """``summed_shard``'s answer on one shard."""

    own: dict[int, set[tuple[str, int]]]  # rule index -> the candidate pairs of its other hosts
    counted: pa.Table  # the findings counted (``COUNTED``)
    good: dict[int, set[str]]  # rule index -> the hosts counted
    stats: dict[int, tuple[int, int]]  # rule index -> (hosts counted, hosts left to scan)
    scans: int = 0  # scans of the events made (of the hours a window cuts)
    first: dict[int, dict[str, int]] = field(default_factory=dict)  # rule index -> host counted -> its first match


def summed_shard(srv: Server, tables: Tables, rules: Sequence[CompiledRule], ids: Sequence[int],
                 ts_from: int | None, ts_to: int | None, every: Mapping[int, set[tuple[str, int]]]) -> ShardSum:
    """The rules ``ids`` counted from fleet_exec on one shard, on the hosts it decides; per
    rule so counted, the candidate (host, day) pairs of its other hosts (``every``: each
    rule's), to scan for it alone. A rule whose other hosts are too many to name in a query
    is left out (hunted as before)."""
    if not ids:
        return ShardSum({}, COUNTED.empty_table(), {}, {})
    got = count_shard(srv, tables, rules, ids, ts_from, ts_to)
    out = ShardSum({}, COUNTED.empty_table(), {}, {}, got.queries - 1)
    for i in ids:
        rest = {(h, d) for h, d in every.get(i, set()) if h not in got.good[i]}
        if len(slices_sql(sorted(rest))) <= MAX_SLICE_SQL:
            out.own[i], out.good[i], out.first[i] = rest, got.good[i], got.first[i]
            out.stats[i] = (len(got.good[i]), len({h for h, _ in rest}))
    keep = [i in out.own for i in got.counted.column("fx_rule").to_pylist()]
    out.counted = got.counted.filter(pa.array(keep, pa.bool_()))
    return out


def first_sql(tables: Tables, rule: CompiledRule, hosts: Sequence[str], ts_from: int | None, ts_to: int | None,
              n: int) -> str:
    """The ``n`` earliest fleet_exec rows of the rule in the window's whole hours on ``hosts``
    (hosts it surely matches on): their host and first time. Each stored row stands for execs
    no other row holds, so by the last of those times ``n`` matches happened (``first_bound``)."""
    h = hours(ts_from, ts_to)
    days = " AND ".join(day_window(ts_from, ts_to)) or "1"
    names = ", ".join(literal(x) for x in hosts)
    # (a stored row as it is, merged or not: each holds execs of its own; no GROUP BY of strings)
    return (f"SELECT toString(host_name) AS host_name, toInt64(finalizeAggregation(min_ts)) AS fx_mn "
            f"FROM {tables.named('fleet_exec')} WHERE {days} AND ({_whole(h)}) AND host_name IN ({names}) "
            f"AND {maybe(rule.where, _VIEW.knows)} ORDER BY fx_mn LIMIT {int(n)}")


def first_bound(srv: Server, tables: Tables, rule: CompiledRule, first: Mapping[str, int], ts_from: int | None,
                ts_to: int | None, n: int) -> int | None:
    """A time by which at least ``n`` matches of the rule on the hosts of ``first`` (host ->
    its first match) happened, or None (fewer): the earlier of the ``n``-th host's first match
    and the last first time of the ``n`` earliest stored rows in the whole hours."""
    if n <= 0:
        return None
    firsts = sorted(first.values())
    bound = firsts[n - 1] if len(firsts) >= n else None
    rows = srv.table(first_sql(tables, rule, sorted(first), ts_from, ts_to, n))
    if rows.num_rows >= n:
        last = int(rows.column("fx_mn")[n - 1].as_py())
        bound = last if bound is None else min(bound, last)
    return bound
