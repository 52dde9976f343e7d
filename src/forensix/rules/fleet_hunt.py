"""The retro-hunt over a ClickHouse store, in ClickHouse: every host at once.

Sigma rules run as ClickHouse SQL (``clickhouse_sql``) on every shard, over the shard's
own tables (hosts are sharded whole, so a process and its parent are on the event's
shard), the shards at once (a thread and a connection each). A hunt does not scan what
cannot match: each rule's candidate (host, UTC day) pairs come first, from a summary table
that covers it (``candidates``) or else from a probe of the events' own columns (one query
per rule, no joins), and the exact rules (many per scan) then read only those hosts and
days, or nothing. What comes back is only the matching rows, and of them only the columns
the grouping into findings reads (``_narrow``); they become findings by the same code as
the DuckDB hunt's (``grouping.findings_of``: grouped in bulk), and the whole rows of each
finding's first match, which its alert is built from, are fetched in one more scan per
shard (``_complete``). The findings' evidence (executable, parent, session) comes from the
processes of their acting processes and those's ancestors, pulled by entity id, not the
whole process table.

The built-in detectors keep per-process state in time order (a copy then its exec, a
write then an exec of the same file), so they are replayed in Python as in the DuckDB
hunt, over only the rows their ``hunt_filter`` names, pulled from every shard at once
(``fleet_replay``). The findings of a broad exec rule are counted from ``fleet_exec`` where it
decides them exactly, without scanning its matches (``summed``).

A rule the ClickHouse dialect cannot express is hunted the old way, over each host's
slice pulled into DuckDB, and reported (``FleetHunt.fallback``: rule and reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from forensix.analysis.sessions import SSHD
from forensix.errors import StoreError
from forensix.rules import objects as objects_module
from forensix.rules.alerts import empty_alerts
from forensix.rules.candidates import (
    MAX_PATHS_SQL,
    MAX_SLICE_SQL,
    SUMMARY_VIEWS,
    Plan,
    by_path,
    by_rule,
    candidates_sql,
    files_sql,
    plan,
    slices_sql,
    summary_columns,
    totals_sql,
    unsure,
    values_of,
)
from forensix.rules.clickhouse_sql import (
    COUNTED as _COUNTED,
)
from forensix.rules.clickhouse_sql import (
    NotExpressible,
    Slice,
    Tables,
    check_rule,
    hunt_sql_ch,
    probe_sql_ch,
)
from forensix.rules.detectors import Detector
from forensix.rules.evidence import GROUP_WINDOW_NS, SessionContext, object_free
from forensix.rules.fleet_replay import replay_detectors
from forensix.rules.grouping import HEADS, Complete, found_of, rule_matches
from forensix.rules.hunt import RULES_PER_SCAN, hunt_rules
from forensix.rules.ir import CompiledRule, Node
from forensix.rules.live import ProcessContext
from forensix.rules.sql import KEY_COLUMNS, SUMMARY_DERIVED
from forensix.rules.summed import SUMMED, can_sum, first_bound, summed_shard
from forensix.store.clickhouse.connection import Server, literal
from forensix.store.clickhouse.ddl import KEY_NOT_NULL, null_column
from forensix.store.clickhouse.store import ClickHouseStore
from forensix.store.schema import EVENTS

__all__ = ["FleetHunt", "fleet_hunt", "shard_servers"]

T = TypeVar("T")
_IN_CHUNK = 5_000  # entity ids per IN list (a query stays under the server's 256 KiB max_query_size)
_MAX_DEPTH = 256  # ancestors followed (as evidence._session does)
# rows a built-in detector may pull for its replay (a few GB of Python objects at most)
MAX_REPLAY_ROWS = 2_000_000
# a rule whose candidates are more than this share of its summary's hosts and days gains
# little from narrowing: it joins the whole scan, which reads everything once for all such rules
BROAD = 0.5


# a roll-up's findings counted in ClickHouse, per rule and host (the first match's host name, else its id)
_COUNTS = pa.schema([pa.field("rule_id", pa.string()), pa.field("rule_title", pa.string()),
                     pa.field("rule_level", pa.string()), pa.field("host_name", pa.string()),
                     pa.field("findings", pa.uint64()), pa.field("matches", pa.uint64()),
                     pa.field("ts", pa.int64()), pa.field("last_ts", pa.int64())])


@dataclass
class FleetHunt:
    """What a fleet hunt found, and how."""

    alerts: pa.Table  # the first ``limit`` findings (all without one), in full
    heads: pa.Table = field(default_factory=HEADS.empty_table)  # the findings (grouping.HEADS), in order
    # with ``limit=0``: the findings of the rules counted in ClickHouse (``_COUNTS``: per rule and
    # host), which have no head; every other finding has one
    counted: pa.Table = field(default_factory=lambda: _COUNTS.empty_table())
    in_clickhouse: list[str] = field(default_factory=list)  # rule ids hunted as ClickHouse SQL
    fallback: list[tuple[str, str]] = field(default_factory=list)  # (rule id, why) hunted over slices
    failed: list[tuple[str, str]] = field(default_factory=list)  # (rule id, error) of fallbacks that failed too
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (detector's rules, why) not replayed
    shards: int = 0
    matched_rows: int = 0  # matches the shards sent back (a row per rule it matched), and (rule, host) counts
    candidates: int = 0  # (host, day) pairs read by the narrowed scans, all shards
    scans: int = 0  # scans of the events (or flows) run, all shards
    replayed_rows: int = 0  # rows pulled for the built-in detectors
    # of the rules in ClickHouse: (rule id, summary) whose candidate hosts and days came from
    # a summary on every shard, and (rule id, why not) probed on the events' own columns instead
    narrowed: list[tuple[str, str]] = field(default_factory=list)
    probed: list[tuple[str, str]] = field(default_factory=list)
    # (rule id, hosts, hosts scanned): the rules whose findings were counted from fleet_exec on
    # those hosts (``rules.summed``: no scan of their matches there), the others scanned for it
    summed: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def findings(self) -> int:
        """How many findings the hunt has (built into alerts or not)."""
        return int(self.heads.num_rows) + int(sum(self.counted.column("findings").to_pylist()))


def shard_servers(store: ClickHouseStore) -> list[tuple[Server, Tables]]:
    """One server per shard (its first replica) and the names of its own tables; a store
    without a cluster: its one server and the plain tables."""
    db = f"`{store.db}`"
    if not store.cluster:
        return [(Server(store.url.host, store.url.port, database=store.db),
                 Tables(f"{db}.events", f"{db}.processes", f"{db}.flows", f"{db}.accounts"))]
    rows = store.entry.execute(
        f"SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = {literal(store.cluster)} "
        "ORDER BY shard_num, replica_num")
    first: dict[int, tuple[str, int]] = {}
    for num, host, port in rows:
        first.setdefault(int(num), (str(host), int(port)))
    local = Tables(f"{db}.events_local", f"{db}.processes_local", f"{db}.flows_local", f"{db}.accounts_local")
    return [(Server(h, p, database=store.db), local) for h, p in first.values()]


def _each(servers: Sequence[tuple[Server, Tables]], job: Callable[[Server, Tables], T]) -> list[T]:
    """``job`` on every shard at once (clickhouse-driver waits on the socket without the GIL)."""
    if len(servers) == 1:
        return [job(*servers[0])]
    with ThreadPoolExecutor(max_workers=len(servers), thread_name_prefix="fx-hunt") as pool:
        return list(pool.map(lambda st: job(*st), servers))


_KEY_TYPES = {f.name: f.type for f in EVENTS}


def _as_view(t: pa.Table) -> pa.Table:
    """Rows of ``hunt_sql_ch`` (or the columns of them ``_narrow`` keeps) typed as DuckDB's
    hunt returns them (the logical schema)."""
    cols, names = [], []
    for c in (*KEY_COLUMNS, *SUMMARY_DERIVED):
        if c not in t.column_names:
            continue
        col = t.column(c)
        if c in _KEY_TYPES and pa.types.is_list(_KEY_TYPES[c]):
            mask = pc.equal(t.column(null_column(c)), pa.scalar(1, pa.uint8()))
            col = pc.if_else(mask, pa.nulls(len(col), _KEY_TYPES[c]), col.cast(_KEY_TYPES[c]))
        elif c in _KEY_TYPES:
            col = col.cast(_KEY_TYPES[c])
            if c in KEY_NOT_NULL:
                col = pc.if_else(pc.equal(col, ""), pa.nulls(len(col), col.type), col)
        else:
            col = col.cast(pa.string())
        cols.append(col)
        names.append(c)
    cols.append(t.column("fx_rules").cast(pa.list_(pa.int32())))
    names.append("fx_rules")
    return pa.Table.from_arrays(cols, names=names)


# what the grouping of matches into findings reads of a row (grouping._KEY), the object's
# columns too for a rule naming an object (grouping._OBJECT; ``syscall`` is no rule-view key)
_GROUP_COLUMNS = ("host_name", "host_id", "boot_id", "ts", "cpu", "seq", "process_entity_id", "process_pid",
                  "event_count")
_OBJECT_COLUMNS = ("event_action", "process_executable", "file_path", "file_target_path", "unix_path", "source_ip",
                   "source_port", "destination_ip", "destination_port", "target_pid", "process_args",
                   "process_args__null")
# a first match is found again by these (flow edges have no cpu and seq)
_FIND = ("host_id", "boot_id", "ts", "cpu", "seq", "process_entity_id", "file_path", "destination_ip",
         "destination_port", "source_port")


def _narrow(sql: str, rules: Sequence[CompiledRule]) -> str:
    """Only the columns the grouping reads of ``sql``'s rows: a rule matching a million rows
    sends back a million of these, and the whole row of each finding's first match only
    (``_complete``). ClickHouse then leaves out what only the other columns need (the
    command lines, the user names)."""
    named = any(r.rule_id not in object_free([r]) for r in rules)  # a rule grouping by object
    cols = _GROUP_COLUMNS + (_OBJECT_COLUMNS if named else ())
    # one row per (row, rule) it matched: clickhouse-driver reads a number column many times
    # faster than an array column
    return f"SELECT {', '.join(cols)}, fx_rule FROM ({sql}) ARRAY JOIN fx_rules AS fx_rule"


def _tagged(t: pa.Table, src: int) -> pa.Table:
    """``_narrow``'s rows typed as the rule view's, with ``fx_rules`` (one each) and their
    source (0: events, 1: flows)."""
    n = t.num_rows
    one = t.column("fx_rule").combine_chunks().cast(pa.int32())
    rules = pa.ListArray.from_arrays(pa.array(range(n + 1), pa.int32()), one)
    t = _as_view(t.drop_columns(["fx_rule"]).append_column("fx_rules", rules))
    return t.append_column("fx_src", pa.array([src] * n, pa.uint8()))


def _keys(t: pa.Table, rule: pa.Array, cols: Sequence[str]) -> pa.Array:
    """A text per (rule, row) of ``cols`` that finds a matching row again."""
    parts = [rule.cast(pa.string())] + [pc.fill_null(t.column(c).cast(pa.string()), "\x01") for c in cols]
    return pc.binary_join_element_wise(*parts, "\0")


def _complete(servers: Sequence[tuple[Server, Tables]], rules: Sequence[CompiledRule], ts_from: int | None,
              ts_to: int | None) -> Complete:
    """What fetches the whole rows of some matching rows (narrow, with ``fx_shard`` and
    ``fx_src``) from their shards: per shard and source one exact scan of the rules that
    have them, over only their (host, time) pairs (sent as an external table: the events are
    ordered by host and time, so ClickHouse reads the granules holding them)."""
    index = {id(r): i for i, r in enumerate(rules)}

    def fetch(entries: Sequence[tuple[CompiledRule, pa.Table]]) -> list[pa.Table]:
        want: dict[tuple[int, int], tuple[set[int], set[tuple[str, int]]]] = {}
        for rule, rows in entries:
            for sh, src, host, ts in zip(*(rows.column(c).to_pylist() for c in ("fx_shard", "fx_src", "host_name",
                                                                                  "ts")), strict=True):
                ids, pairs = want.setdefault((sh, src), (set(), set()))
                ids.add(index[id(rule)])
                pairs.add((host or "", ts))

        def one(shard: int) -> list[pa.Table]:
            srv, tables = servers[shard]
            got = []
            for src, source in enumerate(("events", "flows")):
                ids, pairs = want.get((shard, src), (set(), set()))
                if not pairs:
                    continue
                ext = [{"name": "fx_first", "structure": [("host_name", "String"), ("ts", "Int64")],
                        "data": sorted(pairs)}]
                hosts = tuple(sorted({h for h, _ in pairs}))
                # the hosts spelled out too: 18.16 narrows a read by a literal set, not by the
                # external table inside the scan's subqueries
                part = Slice(f"host_name IN ({', '.join(literal(h) for h in hosts)}) AND (host_name, ts) IN fx_first",
                             hosts)
                todo = sorted(ids)
                for start in range(0, len(todo), RULES_PER_SCAN):
                    chunk = todo[start:start + RULES_PER_SCAN]
                    sql = hunt_sql_ch([rules[i] for i in chunk], tables, source, ts_from, ts_to, chunk, part)
                    got.append(_as_view(srv.table(sql, external=ext)))
            return got

        parts = [t for ts in _each_index(len(servers), one) for t in ts if t.num_rows]
        whole = pa.concat_tables(parts) if parts else None
        out = []
        known: dict[tuple[str, ...], tuple[pa.Array, pa.Array]] = {}
        for rule, rows in entries:
            if rows.num_rows == 0:
                out.append(rows)
                continue
            if whole is None:
                raise _gone(rule)
            cols = tuple(c for c in _FIND if c in rows.column_names)
            if cols not in known:  # (rule, row) of every row fetched, as text
                matched = whole.column("fx_rules").combine_chunks()
                parents = pc.list_parent_indices(matched)
                known[cols] = parents, _keys(whole.take(parents), pc.list_flatten(matched), cols)
            parents, have = known[cols]
            at = pc.index_in(_keys(rows, pa.array([index[id(rule)]] * rows.num_rows, pa.int32()), cols),
                             value_set=have)
            if at.null_count:
                raise _gone(rule)
            out.append(whole.take(parents.take(at)))
        return out

    return fetch


def _gone(rule: CompiledRule) -> StoreError:
    return StoreError(f"rows matching {rule.rule_id} were not found again in the store",
                      "the store changed during the hunt (retention, a replay?): hunt again")


def _each_index(n: int, job: Callable[[int], T]) -> list[T]:
    if n == 1:
        return [job(0)]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="fx-hunt") as pool:
        return list(pool.map(job, range(n)))


def _scan(servers: Sequence[tuple[Server, Tables]], chunk: Sequence[CompiledRule], ts_from: int | None,
          ts_to: int | None) -> pa.Table:
    """Whole scans of ``chunk`` on every shard (rows of both sources, in time order)."""
    def one(srv: Server, tables: Tables) -> list[pa.Table]:
        return [_as_view(srv.table(hunt_sql_ch(chunk, tables, src, ts_from, ts_to))) for src in ("events", "flows")]

    return _sorted([t for ts in _each(servers, one) for t in ts])


def _sorted(parts: Sequence[pa.Table]) -> pa.Table:
    parts = [t for t in parts if t.num_rows]
    if not parts:
        return pa.table({})
    rows = pa.concat_tables(parts)
    return rows.sort_by([("ts", "ascending"), ("cpu", "ascending"), ("seq", "ascending")])


# the actions whose object is the event's path (or its call): objects.object_of's last branches
_ON_OTHER = frozenset({"exec", "flow", "connect", "accept", "bind", "listen", "sendto", "recvfrom", "kill", "ptrace"})
_OBJECT_COLS = ("event_action", "file_path", "file_target_path", "syscall")  # what _object_sql reads
_SIDE = objects_module._SIDE.pattern  # objects.group_object's, as grouping._grouped_objects runs it
# a name this cannot group as objects.group_object does (RE2 reads _SIDE as Python's re only on
# ASCII without a newline: grouping._grouped_objects)
_ODD = r"[^\x01-\x7f]|\n"


def _object_sql() -> tuple[str, str]:
    """(kind, name) of an event whose action is none of ``_ON_OTHER``, as
    ``objects.object_of`` names it: a pipe, a file (``path -> target`` of a rename), else
    the call itself."""
    path, tgt = "ifNull(toString(file_path), '')", "ifNull(toString(file_target_path), '')"
    call = "if(ifNull(toString(syscall), '') != '', toString(syscall), ifNull(toString(event_action), ''))"
    pipe = f"(startsWith({path}, 'fifo:[') OR startsWith({path}, 'pipe:['))"
    kind = f"multiIf({path} != '' AND {pipe}, 'pipe', {path} != '', 'file', {call} != '', 'syscall', '')"
    name = (f"multiIf({path} != '' AND {pipe}, {path}, {path} != '' AND {tgt} != '', concat({path}, ' -> ', {tgt}), "
            f"{path} != '', {path}, {call})")
    return kind, name


def _counts_objects(rule: CompiledRule) -> bool:
    """The rule's matches are events whose object ``_object_sql`` names (its actions bound)."""
    acts = values_of(rule.where, "event_action", fold=True)
    return acts is not None and not acts & _ON_OTHER


# a match's weight in a roll-up's matches: the re-opens (or other repeats) its row stands for,
# else one (grouping._counts: ``event_count or 1``; a flow edge has none)
_WEIGHT = "sum(if(ifNull(event_count, 0) = 0, toUInt64(1), toUInt64(event_count)))"


def _counted_sql(sql: str, named: Sequence[int] = ()) -> str:
    """The findings of ``hunt_sql_ch(..., counted=True)``'s matches per (rule, host), counted as
    ``grouping.finding_index`` does where that is a GROUP BY: a key (host, boot, process) whose
    matches all lie within one grouping window is one finding. The rules ``named`` (indices)
    group by their matches' object too (``_object_sql``, grouped as ``objects.group_object``).
    ``fx_bad`` marks a rule whose count this cannot be sure of on this shard: a key spanning
    more than the window (it splits into findings one window after another), a match without
    cpu or seq (its event key may be another's, and ``_firsts`` then leaves the grouping to
    ``group_alerts``), an object name RE2 does not read as Python's re does."""
    kind, name = _object_sql() if named else ("''", "''")
    mine = f"has([{', '.join(str(int(i)) for i in named)}], fx_rule)" if named else "0"
    objects = (f"if({mine}, {kind}, '') AS fx_ok, if({mine}, replaceRegexpOne({name}, {literal(_SIDE)}, ''), '') AS fx_on, "
               f"{mine} AND match({name}, {literal(_ODD)}) AS fx_odd")
    pk = "if(ifNull(process_entity_id, 0) != 0, toUInt64(process_entity_id), toUInt64(ifNull(process_pid, 0)))"
    pnull = "ifNull(process_entity_id, 0) = 0 AND isNull(process_pid)"
    # (18.16: ``*`` leaves an ARRAY JOIN's alias out, and a ``*`` between a column and its use
    # may lose the column: every column named)
    cols = ", ".join((*_COUNTED, *(_OBJECT_COLS if named else ())))
    rows = f"SELECT {cols}, fx_rule, {objects} FROM ({sql}) ARRAY JOIN fx_rules AS fx_rule"
    per_key = (f"SELECT fx_rule, argMin(ifNull(toString(host_name), ''), ts) AS fx_hn, "
               f"ifNull(toString(host_id), '') AS fx_hid, ifNull(toString(boot_id), '') AS fx_bid, "
               f"toUInt8({pnull}) AS fx_pn, {pk} AS fx_pk, {_WEIGHT} AS fx_n, min(ts) AS fx_first, max(ts) AS fx_last, "
               f"toUInt8(max(ts) - min(ts) > {GROUP_WINDOW_NS} OR max(isNull(cpu) OR isNull(seq)) OR max(fx_odd)) "
               f"AS fx_bad FROM ({rows}) GROUP BY fx_rule, fx_hid, fx_bid, fx_pn, fx_pk, fx_ok, fx_on")
    return (f"SELECT fx_rule, if(fx_hn != '', fx_hn, fx_hid) AS host_name, toUInt64(count()) AS findings, "
            f"toUInt64(sum(fx_n)) AS matches, toInt64(min(fx_first)) AS ts, toInt64(max(fx_last)) AS last_ts, "
            f"max(fx_bad) AS fx_bad FROM ({per_key}) GROUP BY fx_rule, host_name")


@dataclass
class ShardHunt:
    """What one shard did with the Sigma rules: its matching rows (``fx_rules``: indices into
    the rule list), each rule's plan there, and what it read."""

    rows: list[pa.Table]
    plans: list[Plan]
    candidates: int = 0
    scans: int = 0
    counted: list[pa.Table] = field(default_factory=list)  # ``_counted_sql``'s rows (fx_rule: the index)
    # the rows of the rules counted from fleet_exec (their first findings, their other hosts' matches):
    # apart, being of one rule each (``_narrow`` sends a rule naming no object fewer columns)
    own_rows: list[pa.Table] = field(default_factory=list)
    # rule index -> (hosts whose findings fleet_exec counted, hosts scanned for it): ``rules.summed``
    summed: dict[int, tuple[int, int]] = field(default_factory=dict)


def _summaries(srv: Server, tables: Tables) -> dict[str, frozenset[str]]:
    """The summary tables this server has, with their columns (none on a store made before them)."""
    have: dict[str, frozenset[str]] = {}
    for name in dict.fromkeys([*(v.name for view in SUMMARY_VIEWS for v in view.views()), *SUMMED]):
        try:
            cols = summary_columns(srv.table(f"DESCRIBE TABLE {tables.named(name)}"))
        except StoreError:
            continue
        if cols is not None:
            have[name] = cols
    return have


def _total(srv: Server, tables: Tables, ts_from: int | None, ts_to: int | None) -> int | None:
    """How many (host, day) pairs the shard holds in the window, from ``fleet_hosts`` (a row
    per host and hour: small at any scale); None on a store without it."""
    try:
        return int(srv.table(totals_sql(tables.named("fleet_hosts"), ts_from, ts_to)).column(0)[0].as_py() or 0)
    except StoreError:
        return None


def _candidates(srv: Server, tables: Tables, rules: Sequence[CompiledRule], plans: Sequence[Plan],
                ts_from: int | None, ts_to: int | None,
                total: int | None,
                every: dict[int, set[tuple[str, int]]] | None = None) -> tuple[dict[int, set[tuple[str, int]]],
                                                                                list[int]]:
    """(rule index -> its candidate (host, day) pairs, indices of rules too broad to narrow:
    more than ``BROAD`` of the shard's ``total`` pairs) of the rules ``plans`` narrows, one
    query per summary (without ``total``, one more for the summary's size). A broad rule the
    summary is sure of on each of its hosts and days keeps them (a probe would find the same).
    ``every``: filled with every rule's pairs, the broad ones' too."""
    found: dict[int, set[tuple[str, int]]] = {}
    broad: list[int] = []
    for view in SUMMARY_VIEWS:
        mine = [(i, r.where) for i, (r, p) in enumerate(zip(rules, plans, strict=True)) if p.view is view]
        if not mine:
            continue
        if view.by_path:
            rows = srv.table(candidates_sql(view, tables.named(view.name), mine, ts_from, ts_to))
            got, doubt = _by_path(srv, tables, view.by_path, mine, rows, ts_from, ts_to), None
        else:  # (with the summary of the rows this one does not describe: the union)
            got, doubt = {}, set()
            for v in view.views():
                rows = srv.table(candidates_sql(v, tables.named(v.name), mine, ts_from, ts_to))
                for i, pairs in by_rule(rows).items():
                    got.setdefault(i, set()).update(pairs)
                doubt |= unsure(rows)
        if total is None:
            total = int(srv.table(totals_sql(tables.named(view.name), ts_from, ts_to)).column(0)[0].as_py() or 0)
        for i, _ in mine:
            pairs = got.get(i, set())
            if every is not None:
                every[i] = pairs
            if len(pairs) > BROAD * total and (doubt is None or i in doubt):
                broad.append(i)  # most of the fleet: scanned whole with the rules that must be
            elif pairs:
                found[i] = pairs
    return found, broad


def _by_path(srv: Server, tables: Tables, files: str, mine: Sequence[tuple[int, Node]], paths: pa.Table,
             ts_from: int | None, ts_to: int | None) -> dict[int, set[tuple[str, int]]]:
    """The candidate (host, day) pairs of rules whose paths came from a summary of paths alone
    (fleet_names): none for a rule no path of which may match (no more query), else asked of
    ``files`` (fleet_files, sorted by path) for those paths, with the acting image where a
    rule tests it (``candidates.files_sql``), one query for all such rules."""
    wanted = by_path(paths)
    rules = [(i, node) for i, node in mine if wanted.get(i)]
    if not rules:
        return {}
    union = sorted({p for i, _ in rules for p in wanted[i]})
    named = union if sum(len(p) + 4 for p in union) <= MAX_PATHS_SQL else None  # else every path, tested
    return by_rule(srv.table(files_sql(tables.named(files), tables.processes, rules, named, ts_from, ts_to)))


def _firsts_of(srv: Server, tables: Tables, rules: Sequence[CompiledRule], i: int, first: Mapping[str, int],
               ts_from: int | None, ts_to: int | None, n: int, out: ShardHunt) -> None:
    """The matches of rule ``i`` on the hosts of ``first`` (counted from fleet_exec: each match
    a finding; host -> its first match) up to a time by which ``n`` of them happened
    (``summed.first_bound``), on the hosts with a match by then, into ``out.own_rows``: its
    first ``n`` findings there, to build alerts of."""
    bound = first_bound(srv, tables, rules[i], first, ts_from, ts_to, n)
    until = ts_to if bound is None else bound + 1 if ts_to is None else min(ts_to, bound + 1)
    chosen = sorted(h for h, t in first.items() if bound is None or t <= bound)
    if not chosen:
        return
    part = Slice(f"host_name IN ({', '.join(literal(h) for h in chosen)})", tuple(chosen),
                 None if until is None else until - 1)
    out.own_rows.append(_tagged(srv.table(_narrow(hunt_sql_ch([rules[i]], tables, "events", ts_from, until, [i],
                                                              part), [rules[i]])), 0))
    out.scans += 1


def _hunt_shard(srv: Server, tables: Tables, rules: Sequence[CompiledRule], ts_from: int | None,
                ts_to: int | None, count: frozenset[int] = frozenset(), summed: frozenset[int] = frozenset(),
                first: int = 0) -> ShardHunt:
    """The Sigma rules on one shard. Candidate (host, day) pairs first: from the summaries
    for the rules one covers, else from a probe of the events' own columns (no joins); then
    the exact rules over only those hosts and days, none at all where there are none. The
    rules ``count`` names (indices) have their findings counted in ClickHouse where it can
    (``_counted_sql``), not sent back match by match; those ``summed`` names from fleet_exec
    itself on the hosts it decides (``rules.summed``), each scanned alone over the others, and
    with ``first``, the matches of that many of their first findings there sent back.""" 
    have = _summaries(srv, tables)
    plans = [plan(r, have) for r in rules]
    total = _total(srv, tables, ts_from, ts_to)
    every: dict[int, set[tuple[str, int]]] = {}
    found, broad = _candidates(srv, tables, rules, plans, ts_from, ts_to, total, every)
    out = ShardHunt([], plans)
    # only a broad rule: over a few candidate days the exact scan costs less than the summary's count
    broadly = [i for i in sorted(summed) if can_sum(plans[i], have) and total is not None
               and len(every.get(i, ())) > BROAD * total]
    sums = summed_shard(srv, tables, rules, broadly, ts_from, ts_to, every)
    own, out.summed = sums.own, sums.stats
    out.counted += [sums.counted] if sums.counted.num_rows else []
    out.scans += sums.scans  # (a scan of the hours a window cuts; the summary's queries are none)
    if first:  # the first findings of the hosts counted, to show: their matches up to a bound
        for i, hosts in sums.first.items():
            if hosts:
                _firsts_of(srv, tables, rules, i, hosts, ts_from, ts_to, first, out)
    for i in own:
        found.pop(i, None)
    broad = [i for i in broad if i not in own]
    for i in broad:
        plans[i] = Plan(rules[i], None, f"{plans[i].summary}: candidates on more than {BROAD:.0%} of its hosts and days")
    probed = [i for i, p in enumerate(plans) if p.summary is None]
    flows: list[int] = []
    for i in probed:
        # one probe per rule: each reads only the rows its own cheap tests let through, and
        # tests strings on those alone (one probe for many would test every rule's strings
        # on the rows any of them lets through: 18.16 does not short-circuit)
        found.update(by_rule(srv.table(probe_sql_ch([rules[i]], [i], tables, "events", ts_from, ts_to))))
        out.scans += 1
        if _matches_flows(rules[i]):  # the flow edges only for the rules that can match one
            flows += by_rule(srv.table(probe_sql_ch([rules[i]], [i], tables, "flows", ts_from, ts_to)))
            out.scans += 1
    for start in range(0, len(flows), RULES_PER_SCAN):  # few: the flows have no host order to narrow by
        ids = flows[start:start + RULES_PER_SCAN]
        chunk = [rules[i] for i in ids]
        out.rows.append(_tagged(srv.table(_narrow(hunt_sql_ch(chunk, tables, "flows", ts_from, ts_to, ids), chunk)),
                                1))
        out.scans += 1
    union = sorted({pair for pairs in found.values() for pair in pairs})
    where = slices_sql(union)
    part: Slice | None = Slice(where, tuple(sorted({h for h, _ in union})))
    if len(where) > MAX_SLICE_SQL or (total is not None and len(union) > BROAD * total):
        part = None  # too many to name in one query, or most of the shard: read it all (a slice costs more)
    out.candidates = len(union)
    hit = sorted(found)
    counted = [i for i in hit if i in count and i not in flows]  # a key's matches all in the events
    again = _count_shard(srv, tables, rules, counted, ts_from, ts_to, part, out)
    hit = sorted((set(hit) - set(counted)) | again)
    for start in range(0, len(hit), RULES_PER_SCAN):
        ids = hit[start:start + RULES_PER_SCAN]
        chunk = [rules[i] for i in ids]
        out.rows.append(_tagged(srv.table(_narrow(hunt_sql_ch(chunk, tables, "events", ts_from, ts_to, ids, part),
                                                  chunk)), 0))
        out.scans += 1
    for i, pairs in own.items():  # a summed rule over the hosts the summary did not decide: alone
        if not pairs:
            continue
        mine = Slice(slices_sql(sorted(pairs)), tuple(sorted({h for h, _ in pairs})))
        out.candidates += len(pairs)
        alone = ShardHunt([], [])  # (its summed counts stay whatever this count decides)
        bad = i in count and _count_shard(srv, tables, rules, [i], ts_from, ts_to, mine, alone)
        out.counted += alone.counted
        out.scans += alone.scans
        if i not in count or bad:
            out.own_rows.append(_tagged(srv.table(_narrow(hunt_sql_ch([rules[i]], tables, "events", ts_from, ts_to, [i],
                                                                  mine), [rules[i]])), 0))
            out.scans += 1
    return out


def _count_shard(srv: Server, tables: Tables, rules: Sequence[CompiledRule], ids: Sequence[int],
                 ts_from: int | None, ts_to: int | None, part: Slice | None, out: ShardHunt) -> set[int]:
    """The findings of the rules ``ids`` counted in ClickHouse, into ``out.counted``; the
    rules it cannot be sure of (``fx_bad``) are returned, to be hunted match by match."""
    bad: set[int] = set()
    for start in range(0, len(ids), RULES_PER_SCAN):
        chunk = list(ids[start:start + RULES_PER_SCAN])
        free = object_free(rules[i] for i in chunk)
        named = [i for i in chunk if rules[i].rule_id not in free]
        sql = hunt_sql_ch([rules[i] for i in chunk], tables, "events", ts_from, ts_to, chunk, part, counted=True,
                          also=_OBJECT_COLS if named else ())
        got = srv.table(_counted_sql(sql, named))
        out.scans += 1
        if got.num_rows:
            bad |= set(got.filter(pc.equal(got.column("fx_bad"), 1)).column("fx_rule").to_pylist())
            out.counted.append(got)
    out.counted = [t.filter(pc.invert(pc.is_in(t.column("fx_rule"), pa.array(sorted(bad), t.column("fx_rule").type))))
                   for t in out.counted]
    return {int(i) for i in bad}


def _matches_flows(rule: CompiledRule) -> bool:
    vals = values_of(rule.where, "event_action", fold=True)
    return vals is None or "flow" in vals


def _whole_shard(srv: Server, tables: Tables, rules: Sequence[CompiledRule], ts_from: int | None,
                 ts_to: int | None) -> ShardHunt:
    """The Sigma rules on one shard by whole scans of the events and flows, many rules per
    scan (the hunt before candidates: for benchmarks and comparisons)."""
    out = ShardHunt([], [Plan(r, None, "whole scans asked for") for r in rules])
    for start in range(0, len(rules), RULES_PER_SCAN):
        ids = list(range(start, min(start + RULES_PER_SCAN, len(rules))))
        chunk = [rules[i] for i in ids]
        for n, src in enumerate(("events", "flows")):
            out.rows.append(_tagged(srv.table(_narrow(hunt_sql_ch(chunk, tables, src, ts_from, ts_to, ids), chunk)), n))
            out.scans += 1
    return out


def _sigma(servers: Sequence[tuple[Server, Tables]], rules: Sequence[CompiledRule], ts_from: int | None,
           ts_to: int | None, out: FleetHunt, narrow: bool = True, count: frozenset[int] = frozenset(),
           summed: frozenset[int] = frozenset(), first: int = 0) -> list[pa.Table]:
    """The rows matching the Sigma rules on every shard at once, in no order (``fx_rules``:
    indices into ``rules``), the summed rules' apart (a rule's rows all in one table); the findings of the rules ``count`` names (indices) counted in
    ClickHouse where it can, into ``out.counted`` (those ``summed`` names from fleet_exec where
    it decides them)."""
    if narrow:
        shards = _each(servers, lambda srv, tables: _hunt_shard(srv, tables, rules, ts_from, ts_to, count, summed,
                                                                first))
    else:
        shards = _each(servers, lambda srv, tables: _whole_shard(srv, tables, rules, ts_from, ts_to))
    counted = [_counts_of(t) for sh in shards for t in sh.counted if t.num_rows]
    for i in sorted({i for sh in shards for i in sh.summed}):
        got = [sh.summed.get(i, (0, 0)) for sh in shards]
        out.summed.append((rules[i].rule_id, sum(g for g, _ in got), sum(o for _, o in got)))
    if counted:
        t = pa.concat_tables(counted)
        which = [rules[i] for i in t.column("fx_rule").to_pylist()]
        meta = [pa.array([getattr(r, a) for r in which], pa.string()) for a in ("rule_id", "title", "level")]
        out.counted = pa.table([*meta, *(t.column(c) for c in _COUNTS.names[3:])], schema=_COUNTS)
    for i, r in enumerate(rules if narrow else ()):
        whole = [sh.plans[i] for sh in shards if sh.plans[i].summary is None]
        if whole:
            out.probed.append((r.rule_id, whole[0].why))
        else:
            out.narrowed.append((r.rule_id, str(shards[0].plans[i].summary)))
    out.candidates = sum(sh.candidates for sh in shards)
    out.scans = sum(sh.scans for sh in shards)
    # in no order: the findings are sorted, and a finding's matches taken in time order
    parts = [t.append_column("fx_shard", pa.array([n] * t.num_rows, pa.uint16()))
             for n, sh in enumerate(shards) for t in sh.rows if t.num_rows]
    rows = pa.concat_tables(parts) if parts else pa.table({})
    own = [t.append_column("fx_shard", pa.array([n] * t.num_rows, pa.uint16()))
           for n, sh in enumerate(shards) for t in sh.own_rows if t.num_rows]
    mine = pa.concat_tables(own) if own else pa.table({})
    out.matched_rows = rows.num_rows + mine.num_rows + out.counted.num_rows  # (rule, host) counts: rows sent back too
    return [rows, mine]


def _uncounted(heads: pa.Table, counted: pa.Table) -> pa.Table:
    """The heads of the findings ``counted`` does not count already (with a limit, the first
    findings of a rule counted from fleet_exec have heads too, to be chosen among the first)."""
    if not counted.num_rows or not heads.num_rows:
        return heads
    label = pc.if_else(pc.fill_null(pc.not_equal(heads.column("host_name"), ""), False), heads.column("host_name"),
                       heads.column("host_id"))
    pairs = pc.binary_join_element_wise(heads.column("rule_id"), label, "\0")
    known = pc.binary_join_element_wise(counted.column("rule_id"), counted.column("host_name"), "\0")
    return heads.filter(pc.invert(pc.is_in(pairs, value_set=known.combine_chunks())))


def _counts_of(t: pa.Table) -> pa.Table:
    """A shard's counted rows (``_counted_sql``'s, ``summed.COUNTED``) in one schema."""
    return pa.table([t.column("fx_rule").cast(pa.int64()),
                     *(t.column(c).cast(_COUNTS.field(c).type) for c in _COUNTS.names[3:])],
                    names=["fx_rule", *_COUNTS.names[3:]])


def _split(rules: Sequence[CompiledRule]) -> tuple[list[CompiledRule], list[tuple[CompiledRule, str]]]:
    ok: list[CompiledRule] = []
    other: list[tuple[CompiledRule, str]] = []
    for r in rules:
        if not r.ok:
            continue
        try:
            check_rule(r)
            ok.append(r)
        except NotExpressible as e:
            other.append((r, str(e)))
    return ok, other


def _hunt_slices(store: ClickHouseStore, rules: Sequence[CompiledRule], ts_from: int | None, ts_to: int | None,
                 failed: list[tuple[str, str]]) -> pa.Table:
    """The DuckDB hunt of ``rules`` over each host's slice (rules ClickHouse SQL cannot say).
    A rule that fails there too is added to ``failed`` (rule id, error); the others go on."""
    from forensix.store.clickhouse.reader import ClickHouseReader

    hosts = store.native("SELECT DISTINCT host_name FROM events ORDER BY host_name").column(0).to_pylist()
    found = []
    live = list(rules)
    for h in hosts:
        with ClickHouseReader(store, host=str(h), since=ts_from, until=ts_to) as rd:
            for r in list(live):
                try:
                    found.append(hunt_rules(rd, [r], ts_from, ts_to))
                except StoreError as e:
                    failed.append((r.rule_id, e.message))
                    live.remove(r)
    found = [f for f in found if f.num_rows]
    return pa.concat_tables(found) if found else empty_alerts()


def _context(store: ClickHouseStore, alerts: pa.Table) -> tuple[ProcessContext, SessionContext]:
    """The process context of the alerts' processes and their ancestors (what the evidence
    reads: images, parents, the ssh accepts of a session's daemons), pulled by entity id."""
    ctx = ProcessContext(max_entities=1 << 62)
    sess = SessionContext(max_entities=1 << 62)
    seen: set[int] = set()
    frontier = {int(e) for e in alerts.column("process_entity_id").to_pylist() if e}
    procs: list[pa.Table] = []
    for _ in range(_MAX_DEPTH):
        frontier -= seen
        if not frontier:
            break
        seen |= frontier
        got = _by_entity(store, "processes", "entity_id", sorted(frontier),
                         "entity_id, image_ts, executable, name, parent_entity_id, args, args__null")
        procs.append(got)
        frontier = {int(p) for p in got.column("parent_entity_id").to_pylist() if p}
    procs = [p for p in procs if p.num_rows]
    if not procs:
        return ctx, sess
    every = pa.concat_tables(procs).sort_by([("image_ts", "ascending")])
    ctx.add_processes(every)
    # a session's source address is read from the accepts of the ssh daemons above it only
    # (evidence._session): the processes with an ssh daemon's image, not every one of the alerts'
    base = pc.replace_substring_regex(pc.fill_null(every.column("executable"), ""), r"(?s)^.*/", "")
    daemons = every.filter(pc.is_in(base, pa.array(sorted(SSHD))))
    ids = sorted({int(e) for e in daemons.column("entity_id").to_pylist()})
    if ids:
        acc = _by_entity(store, "events", "process_entity_id", ids,
                         "process_entity_id, ts, destination_ip, network_transport, event_action",
                         "event_action = 'accept'")
        sess.add_events(acc.sort_by([("ts", "ascending")]))
    return ctx, sess


def _by_entity(store: ClickHouseStore, table: str, key: str, ids: list[int], cols: str, cond: str = "1") -> pa.Table:
    parts = []
    for i in range(0, len(ids), _IN_CHUNK):
        part = ", ".join(str(x) for x in ids[i:i + _IN_CHUNK])
        parts.append(store.native(f"SELECT {cols} FROM {table} WHERE {cond} AND {key} IN ({part})"))
    t = pa.concat_tables(parts)
    if "args" in t.column_names:  # the list column's NULL back (args__null), as the logical schema has it
        mask = pc.equal(t.column("args__null"), pa.scalar(1, pa.uint8()))
        args = pc.if_else(mask, pa.nulls(t.num_rows, pa.list_(pa.string())), t.column("args").cast(pa.list_(pa.string())))
        t = t.drop_columns(["args", "args__null"]).append_column("args", args)
    return t


def fleet_hunt(store: ClickHouseStore, rules: Sequence[CompiledRule], detectors: Sequence[Detector] = (),
               ts_from: int | None = None, ts_to: int | None = None,
               max_replay_rows: int = MAX_REPLAY_ROWS, narrow: bool = True, limit: int | None = None,
               count: bool = True, summed: bool = True) -> FleetHunt:
    """Everything a hunt finds on every host of a ClickHouse store, one alert per finding
    with its evidence, sorted by time: the same alerts as ``hunt.hunt`` on a DuckDB store
    with the same history. ``narrow=False``: whole scans only, no candidates (to compare).
    ``limit``: alerts for the first ``limit`` findings only (0: none; every finding's head
    is in ``heads`` or counted in ``counted``): a noisy rule's other findings cost their
    grouping alone, done in ClickHouse where it can (``count=False``: never, to compare), and
    for an exec rule from fleet_exec where it decides it (``rules.summed``; ``summed=False``:
    never, to compare)."""
    ok, other = _split(rules)
    servers = shard_servers(store)
    out = FleetHunt(empty_alerts(), in_clickhouse=[r.rule_id for r in ok],
                    fallback=[(r.rule_id, why) for r, why in other], shards=len(servers))
    try:
        # a roll-up alone: the findings of the rules grouped by process alone, or by a path or call,
        # that no detector or slice hunt shares an id with (grouping.found_of groups those apart)
        # are counted in ClickHouse
        shared = {r.rule_id for r, _ in other} | {m.rule_id for d in detectors for m in getattr(d, "rules", ())}
        free = object_free(ok)  # (a rule naming an object groups by it too: by its path here, else in Python)
        countable = frozenset(i for i, r in enumerate(ok) if (r.rule_id in free or _counts_objects(r))
                              and r.rule_id not in shared) if limit is not None and count else frozenset()
        counted = countable if limit == 0 else frozenset()
        # with a limit, an exec rule's findings on the hosts fleet_exec decides are counted there
        # too, and only the matches of its first ``limit`` findings scanned (their alerts may show)
        matches = [m for rows in _sigma(servers, ok, ts_from, ts_to, out, narrow, counted,
                                        countable if summed else frozenset(), limit or 0)
                   for m in rule_matches(ok, rows)]
        parts: list[pa.Table] = []
        if other:
            parts.append(_hunt_slices(store, [r for r, _ in other], ts_from, ts_to, out.failed))
        found, out.replayed_rows = replay_detectors(store, detectors, ts_from, ts_to, out.skipped, max_replay_rows)
        parts = [p for p in (*parts, found) if p.num_rows]
        alerts = pa.concat_tables(parts) if parts else empty_alerts()
        found = found_of(matches, alerts, lambda a: _context(store, a), object_free(rules),
                         complete=_complete(servers, ok, ts_from, ts_to), limit=limit)
        out.alerts, out.heads = found.alerts, _uncounted(found.heads, out.counted)
    finally:
        for srv, _ in servers:
            srv.close()
    return out
