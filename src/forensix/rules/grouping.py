"""A hunt's matches into findings, in bulk: ``evidence.group_alerts`` over Arrow columns.

``evidence.Grouper`` takes one match at a time, a dict each (the live engine needs that).
A hunt has all its matches at once, and a noisy rule has millions: building an alert (its
id's hash, its summary, its evidence) for each and grouping them as dicts cost minutes
where the scan took seconds. Here the grouping is decided first, from the columns it
depends on alone: the key (rule, host, boot, process, and the object unless the rule names
none: ``evidence._key``), the time and the event key (the order matches are taken in),
and each match's count. Only the match that opens each finding is then built into an
alert and given its evidence; 1.25 million matches of one rule on 25,000 processes build
25,000 alerts.

The findings are ``group_alerts``' (tests/rules/test_rules_grouping.py compares the two on
generated matches), and they come sorted by (time, rule, event key, host, boot), a total
order where ``group_alerts`` leaves ties (two hosts, one time and event key) in the order
the store returned them. Where the bulk path and ``group_alerts`` could differ, the rows
go through ``group_alerts`` itself: two findings of one rule with one alert id (only a
store holding an event twice has those), and times too far apart to subtract in 64 bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules import objects as _objects
from forensix.rules.alerts import RuleMeta, build_alerts, empty_alerts
from forensix.rules.evidence import GROUP_WINDOW_NS, SessionContext, add_evidence, group_alerts
from forensix.rules.ir import CompiledRule
from forensix.rules.live import ProcessContext
from forensix.rules.objects import ACCOUNT_TOOLS, account_of, group_object
from forensix.store.schema import ALERTS

__all__ = ["HEADS", "Complete", "Context", "Found", "Match", "finding_index", "findings_of", "found_of", "group_alert_table", "objects",
           "rule_matches"]

# what gives the findings their evidence: the process and session context of these alerts
Context = Callable[[pa.Table], "tuple[ProcessContext, SessionContext]"]

_NET = ("connect", "accept", "bind", "listen", "sendto", "recvfrom")  # objects._NET
_ON_PROCESS = ("kill", "ptrace")
_SIDE = _objects._SIDE.pattern  # RE2 reads it as Python's re does on ASCII text without a newline
_LIMIT = 1 << 62  # times further apart than this: ``group_alerts`` (numpy subtracts in 64 bits)


_STR = pa.string()


def _col(t: pa.Table, name: str, typ: pa.DataType = _STR) -> pa.Array:
    if name in t.column_names:
        return t.column(name).combine_chunks()
    return pa.nulls(t.num_rows, typ)


def _truthy(a: pa.Array) -> pa.Array:
    """Python's truth of each value: neither NULL nor empty (a string) nor 0 (a number)."""
    zero = "" if pa.types.is_string(a.type) or pa.types.is_large_string(a.type) else 0
    return pc.fill_null(pc.not_equal(a, pa.scalar(zero, a.type)), False)


def _text(a: pa.Array) -> pa.Array:
    return a if pa.types.is_string(a.type) else pc.cast(a, pa.string())


def objects(rows: pa.Table) -> tuple[pa.Array, pa.Array]:
    """``objects.object_of`` of every row, as (kind, name) columns: what ``build_alerts``
    would name each match's object (the rows of a rule scan, or a detector's)."""
    n = rows.num_rows
    none = pa.nulls(n, pa.string())
    act = pc.fill_null(_col(rows, "event_action"), "")
    path = _col(rows, "file_path")
    exe_own = _col(rows, "process_executable")
    exe = pc.if_else(_truthy(exe_own), exe_own, path)
    is_exec = pc.equal(act, "exec")
    net = pc.is_in(act, pa.array(_NET))
    unix = _text(_col(rows, "unix_path"))
    sock = pc.and_(net, _truthy(unix))
    listen = pc.is_in(act, pa.array(["bind", "listen"]))
    ip = _text(pc.if_else(listen, _col(rows, "source_ip"), _col(rows, "destination_ip")))
    port = pc.if_else(listen, _col(rows, "source_port", pa.uint16()), _col(rows, "destination_port", pa.uint16()))
    has_addr = pc.or_(_truthy(ip), pc.is_valid(port))
    addr = pc.binary_join_element_wise(pc.if_else(_truthy(ip), ip, ""), pc.fill_null(pc.cast(port, pa.string()), ""),
                                       ":")
    tpid = _col(rows, "target_pid", pa.uint32())
    on_proc = pc.and_(pc.is_in(act, pa.array(_ON_PROCESS)), pc.is_valid(tpid))
    has_path = _truthy(path)
    pipe = pc.and_(has_path, pc.or_(pc.starts_with(pc.fill_null(path, ""), "fifo:["),
                                    pc.starts_with(pc.fill_null(path, ""), "pipe:[")))
    tgt = _col(rows, "file_target_path")
    file_name = pc.if_else(_truthy(tgt), pc.binary_join_element_wise(path, tgt, " -> "), path)
    sysc = _text(_col(rows, "syscall"))
    call = pc.if_else(_truthy(sysc), sysc, act)
    has_call = pc.or_(_truthy(sysc), _truthy(act))

    def pick(exec_v: Any, sock_v: Any, addr_v: Any, proc_v: Any, pipe_v: Any, file_v: Any, call_v: Any) -> pa.Array:
        # objects.object_of's branches, first that applies wins
        out = pc.if_else(has_call, call_v, none)
        out = pc.if_else(has_path, pc.if_else(pipe, pipe_v, file_v), out)
        out = pc.if_else(on_proc, proc_v, out)
        out = pc.if_else(net, pc.if_else(sock, sock_v, pc.if_else(has_addr, addr_v, none)), out)
        return pc.if_else(is_exec, pc.if_else(_truthy(exe), exec_v, none), out)

    def const(s: str) -> pa.Scalar:
        return pa.scalar(s, pa.string())

    kind = pick(const("file"), const("socket"), const("address"), const("process"), const("pipe"), const("file"),
                const("syscall"))
    name = pick(exe, unix, addr, _text(tpid), path, file_name, call)
    # an account tool's exec names the account (its last operand): few rows, as object_of does
    tool = pc.replace_substring_regex(pc.fill_null(exe, ""), r"(?s)^.*/", "")
    acct = np.flatnonzero(pc.fill_null(pc.and_(is_exec, pc.is_in(tool, pa.array(sorted(ACCOUNT_TOOLS)))),
                                       False).to_numpy(zero_copy_only=False))
    if len(acct):
        args = _col(rows, "process_args", pa.list_(pa.string())).take(pa.array(acct)).to_pylist()
        kinds, names = kind.to_pylist(), name.to_pylist()
        for i, a in zip(acct.tolist(), args, strict=True):
            who = account_of(a)
            if who:
                kinds[i], names[i] = "account", who
        kind, name = pa.array(kinds, pa.string()), pa.array(names, pa.string())
    return kind.cast(pa.string()), name.cast(pa.string())


def _grouped_objects(names: pa.Array) -> pa.Array:
    """``objects.group_object`` of each name: RE2 where it reads the pattern as Python's re
    does (ASCII, no newline: Python's ``$`` also matches before a final newline, its ``\\d``
    any Unicode digit), Python's re elsewhere."""
    plain = pc.fill_null(pc.and_(pc.string_is_ascii(names), pc.invert(pc.match_substring(names, "\n"))), True)
    out = pc.replace_substring_regex(names, _SIDE, "")
    odd = np.flatnonzero(pc.invert(plain).to_numpy(zero_copy_only=False))
    if not len(odd):
        return out
    vals = out.to_pylist()
    for i, v in zip(odd.tolist(), names.take(pa.array(odd)).to_pylist(), strict=True):
        vals[i] = group_object(v)
    return pa.array(vals, pa.string())


def _codes(a: pa.Array) -> np.ndarray:
    """An integer per distinct value (NULL one of them): equal values, equal codes."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    enc = pc.dictionary_encode(a, null_encoding="encode")
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _process(eid: pa.Array, pid: pa.Array) -> list[np.ndarray]:
    """``process_entity_id or process_pid`` as key columns: (is NULL, value)."""
    e = np.asarray(pc.fill_null(eid, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    p = np.asarray(pc.fill_null(pid, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    own = e != 0
    return [~own & np.asarray(pc.is_null(pid).to_numpy(zero_copy_only=False)), np.where(own, e, p)]


def _event_key(rows: pa.Table) -> pa.Array:
    """``alerts.event_key`` of each row: "cpu:seq:ts", a missing part empty."""
    parts = [pc.fill_null(pc.cast(_col(rows, c, pa.int64()), pa.string()), "") for c in ("cpu", "seq")]
    return pc.binary_join_element_wise(*parts, pc.cast(rows.column("ts"), pa.string()), ":")


def _first_keys(keys: pa.Array) -> pa.Array:
    """The first event key of each alert ("" for none), as ``Grouper.add`` sorts by."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    n = len(keys)
    lens = np.asarray(pc.fill_null(pc.list_value_length(keys), 0).to_numpy(zero_copy_only=False))
    has = np.flatnonzero(lens > 0)
    out = np.full(n, "", dtype=object)
    if len(has):
        starts = np.asarray(keys.offsets.to_numpy(zero_copy_only=False))[:-1][has]
        out[has] = keys.values.take(pa.array(starts)).to_numpy(zero_copy_only=False)
    return pa.array(out, pa.string())


def finding_index(keys: Sequence[np.ndarray], ts: np.ndarray, event_key: pa.Array, counts: np.ndarray,
                  window_ns: int = GROUP_WINDOW_NS) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Which matches open a finding: (their row indices, each finding's count, its last
    time), as ``Grouper.add`` decides over the rows sorted by (time, event key): a match
    joins the open finding of its key when it is at most ``window_ns`` after the finding's
    first match, else it opens the next. None: times too far apart for 64 bits."""
    n = len(ts)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    if int(ts.max()) - int(ts.min()) >= _LIMIT:
        return None
    rank = np.asarray(pc.rank(event_key, sort_keys="ascending", tiebreaker="dense").to_numpy())
    order = np.lexsort((np.arange(n), rank, ts, *reversed(list(keys))))  # the first key sorts first
    t = ts[order]
    opens = np.zeros(n, dtype=bool)
    opens[0] = True
    for k in keys:
        kk = k[order]
        opens[1:] |= kk[1:] != kk[:-1]
    # a match more than the window after the one before it is past its finding's window too
    opens[1:] |= (t[1:] - t[:-1]) > window_ns
    runs = np.flatnonzero(opens)
    ends = np.append(runs[1:], n)
    long = (t[ends - 1] - t[runs]) > window_ns
    starts = [runs[~long]]  # a run within one window: one finding
    for s, e in zip(runs[long].tolist(), ends[long].tolist(), strict=True):
        more = []
        while s < e:  # a run longer than the window: findings one window after another
            more.append(s)
            s += int(np.searchsorted(t[s:e], t[s] + window_ns, side="right"))
        starts.append(np.asarray(more, dtype=np.int64))
    at = np.sort(np.concatenate(starts))
    count = np.add.reduceat(np.asarray(counts, dtype=np.uint64)[order], at)
    last = np.maximum.reduceat(t, at)
    return order[at], count, last


def _counts(a: pa.Array) -> np.ndarray:
    """``x or 1`` of each count: a summary row's repeats, else one."""
    c = np.asarray(pc.fill_null(a, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    return np.where(c == 0, np.uint64(1), c)


def _with_counts(alerts: pa.Table, count: np.ndarray, last: np.ndarray) -> pa.Table:
    alerts = alerts.set_column(alerts.schema.get_field_index("alert_count"), ALERTS.field("alert_count"),
                               pa.array(count, pa.uint64()))
    return alerts.set_column(alerts.schema.get_field_index("last_ts"), ALERTS.field("last_ts"),
                             pa.array(last, pa.int64()))


def _unique_ids(alerts: pa.Table) -> bool:
    """No two findings of one rule share an alert id (``group_alerts`` keeps one of them)."""
    pairs = pc.binary_join_element_wise(alerts.column("rule_id"), alerts.column("alert_id"), "\0")
    return bool(pc.count_distinct(pairs).as_py() == alerts.num_rows)


# the columns of a matching row the grouping reads (the object's only for a rule naming one)
_KEY = ("host_id", "boot_id", "process_entity_id", "process_pid", "ts", "cpu", "seq", "event_count")
_OBJECT = ("event_action", "process_executable", "file_path", "file_target_path", "unix_path", "source_ip",
           "source_port", "destination_ip", "destination_port", "target_pid", "syscall", "process_args")


def _firsts(rows: pa.Table, object_free: bool, window_ns: int,
            idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Which of one rule's matching rows (``idx`` of ``rows``; None: all) open a finding:
    (their indices in ``rows``, the findings' counts, their last times). Only the columns
    the grouping reads are taken. None: ``group_alerts`` must decide (see the module doc)."""
    want = [c for c in (*_KEY, *(() if object_free else _OBJECT)) if c in rows.column_names]
    mine = rows.select(want) if idx is None else rows.select(want).take(pa.array(idx))
    host = pc.fill_null(_col(mine, "host_id"), "")
    boot = pc.fill_null(_col(mine, "boot_id"), "")
    key = [_codes(host), _codes(boot)]
    key += _process(_col(mine, "process_entity_id", pa.uint64()), _col(mine, "process_pid", pa.uint32()))
    if not object_free:
        kind, name = objects(mine)
        key += [_codes(kind), _codes(_grouped_objects(name))]
    ts = np.asarray(mine.column("ts").to_numpy(), dtype=np.int64)
    ek = _event_key(mine)
    got = finding_index(key, ts, ek, _counts(_col(mine, "event_count", pa.uint64())), window_ns)
    if got is None:
        return None
    first, count, last = got
    # an alert id is (rule, host, boot, event key): two findings with one would be one alert
    at = pa.array(first)
    ids = pc.binary_join_element_wise(host.take(at), boot.take(at), ek.take(at), "\0")
    if pc.count_distinct(ids).as_py() != len(first):
        return None
    return (first if idx is None else np.asarray(idx)[first]), count, last


def _built(meta: RuleMeta, object_free: bool, window_ns: int, got: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
           whole: pa.Table) -> pa.Table:
    """The alerts of ``_firsts``' answer ``got``, built from ``whole`` (the full rows of the
    first matches, in order; or of all the rule's matches when ``got`` is None)."""
    if got is not None:
        _, count, last = got
        return _with_counts(build_alerts(meta, whole, "hunt"), count, last)
    # group_alerts itself (see the module doc)
    return group_alert_table(build_alerts(meta, whole, "hunt"), frozenset([meta.rule_id]) if object_free
                             else frozenset(), window_ns)


def _reference(alerts: pa.Table, window_ns: int, object_free: frozenset[str]) -> pa.Table:
    out = group_alerts(alerts.to_pylist(), window_ns, object_free)
    return pa.Table.from_pylist(out, schema=ALERTS) if out else empty_alerts()


def group_alert_table(alerts: pa.Table, object_free: frozenset[str] = frozenset(),
                      window_ns: int = GROUP_WINDOW_NS) -> pa.Table:
    """Alerts of one match each (a detector's, a rule's over a slice) grouped into findings
    as ``group_alerts`` groups them, without their evidence."""
    if alerts.num_rows == 0:
        return empty_alerts()
    rule = alerts.column("rule_id").combine_chunks()
    key = [_codes(rule), _codes(alerts.column("host_id")), _codes(alerts.column("boot_id"))]
    key += _process(_col(alerts, "process_entity_id", pa.uint64()), _col(alerts, "process_pid", pa.uint32()))
    free = pc.is_in(rule, pa.array(sorted(object_free), pa.string()))
    blank = pa.nulls(alerts.num_rows, pa.string())
    key += [_codes(pc.if_else(free, blank, _col(alerts, "object_kind"))),
            _codes(pc.if_else(free, blank, _grouped_objects(_col(alerts, "object_name"))))]
    ts = np.asarray(alerts.column("ts").to_numpy(), dtype=np.int64)
    got = finding_index(key, ts, _first_keys(alerts.column("event_keys")), _counts(_col(alerts, "alert_count",
                                                                                         pa.uint64())), window_ns)
    if got is not None:
        first, count, last = got
        out = _with_counts(alerts.take(pa.array(first)), count, last)
        if _unique_ids(out):
            return out
    return _reference(alerts, window_ns, object_free)


# a rule's matching rows: (the rule, the rows of its scan, which of them are its; None: all)
Match = tuple[CompiledRule, pa.Table, "np.ndarray | None"]


def rule_matches(rules: Sequence[CompiledRule], rows: pa.Table) -> list[Match]:
    """The rows of one many-rule scan split by rule (``fx_rules``: the indices into ``rules``
    each row matched), as indices: a noisy rule's rows are not copied."""
    if rows.num_rows == 0:
        return []
    matched = rows.column("fx_rules").combine_chunks()
    flat = np.asarray(pc.list_flatten(matched).to_numpy(zero_copy_only=False))
    parents = np.asarray(pc.list_parent_indices(matched).to_numpy())
    out: list[Match] = []
    for i, rule in enumerate(rules):
        idx = parents[flat == i]
        if len(idx):
            out.append((rule, rows, None if len(idx) == rows.num_rows else idx))
    return out


# the full rows of some matching rows, in their order: each (rule, rows) of a list
Complete = Callable[[Sequence[tuple[CompiledRule, pa.Table]]], "list[pa.Table]"]


# what every finding is known by before its alert is built: enough for a roll-up per rule
# (rollup.rollup) and for the findings' order
HEADS = pa.schema([
    pa.field("rule_id", pa.string()), pa.field("rule_title", pa.string()), pa.field("rule_level", pa.string()),
    pa.field("host_id", pa.string()), pa.field("host_name", pa.string()), pa.field("boot_id", pa.string()),
    pa.field("ts", pa.int64()), pa.field("last_ts", pa.int64()), pa.field("alert_count", pa.uint64()),
    pa.field("fx_key", pa.string()),  # the first event key ("cpu:seq:ts")
])
_ORDER = [("ts", "ascending"), ("rule_id", "ascending"), ("fx_key", "ascending"), ("host_id", "ascending"),
          ("boot_id", "ascending")]


@dataclass
class Found:
    """Every finding by its head (``HEADS``, in order), and the alerts of the first ``limit``
    of them (all when no limit), with their evidence."""

    heads: pa.Table
    alerts: pa.Table


def _heads_of(meta: RuleMeta, rows: pa.Table, count: np.ndarray, last: np.ndarray) -> pa.Table:
    """The heads of one rule's findings from their first matches' (narrow) rows."""
    n = rows.num_rows
    return pa.table({
        "rule_id": pa.array([meta.rule_id] * n, pa.string()), "rule_title": pa.array([meta.title] * n, pa.string()),
        "rule_level": pa.array([meta.level] * n, pa.string()),
        "host_id": pc.fill_null(_col(rows, "host_id"), ""), "host_name": _col(rows, "host_name"),
        "boot_id": pc.fill_null(_col(rows, "boot_id"), ""), "ts": rows.column("ts").cast(pa.int64()),
        "last_ts": pa.array(last, pa.int64()), "alert_count": pa.array(count, pa.uint64()),
        "fx_key": _event_key(rows),
    }, schema=HEADS)


def _heads_of_alerts(alerts: pa.Table) -> pa.Table:
    cols = {c: alerts.column(c) for c in HEADS.names if c != "fx_key"}
    cols["alert_count"] = pa.array(_counts(_col(alerts, "alert_count", pa.uint64())), pa.uint64())
    cols["fx_key"] = _first_keys(alerts.column("event_keys"))
    return pa.table(cols).cast(HEADS)


# a rule's findings to build: (rule, its meta, object-free, _firsts' answer, the rows of its first matches)
_Entry = tuple[CompiledRule, RuleMeta, bool, "tuple[np.ndarray, np.ndarray, np.ndarray] | None", pa.Table]


def found_of(matches: Sequence[Match], alerts: pa.Table, context: Context,
             object_free: frozenset[str] = frozenset(), window_ns: int = GROUP_WINDOW_NS,
             complete: Complete | None = None, limit: int | None = None) -> Found:
    """``findings_of``, with every finding's head, and alerts built only for the first
    ``limit`` findings (a roll-up needs the heads alone: ``limit=0`` builds no alert). The
    whole rows, the alerts and the evidence of the others are never fetched nor built."""
    others = set(alerts.column("rule_id").to_pylist()) if alerts.num_rows else set()
    single = [alerts]
    lazy: list[_Entry] = []
    eager: list[_Entry] = []
    for rule, rows, idx in matches:
        free = rule.rule_id in object_free
        meta = RuleMeta(rule.rule_id, rule.title, rule.level, tuple(rule.tags))
        # grouped with the alerts of the same id, as group_alerts would
        got = None if rule.rule_id in others else _firsts(rows, free, window_ns, idx)
        every = np.arange(rows.num_rows) if idx is None else np.asarray(idx)
        entry = (rule, meta, free, got, rows.take(pa.array(every if got is None else got[0])))
        (eager if got is None else lazy).append(entry)
    # rules the bulk grouping cannot decide (see the module doc) and the other alerts: built now
    wholes = complete([(e[0], e[4]) for e in eager]) if complete and eager else [e[4] for e in eager]
    built = []
    for (rule, meta, free, got, _), whole in zip(eager, wholes, strict=True):
        if rule.rule_id in others:
            single.append(build_alerts(meta, whole, "hunt"))
        else:
            built.append(_built(meta, free, window_ns, got, whole))
    single = [a for a in single if a.num_rows]
    if single:
        built.append(group_alert_table(pa.concat_tables(single), object_free, window_ns))
    built = [b for b in built if b.num_rows]
    ready = pa.concat_tables(built).combine_chunks() if built else empty_alerts()
    # every finding's head, with where it comes from: (-1, row of ready) or (lazy entry, row)
    parts = [_heads_of_alerts(ready).append_column("fx_from", pa.array([-1] * ready.num_rows, pa.int32()))
             .append_column("fx_row", pa.array(range(ready.num_rows), pa.int64()))]
    for i, (_, meta, _, got, first) in enumerate(lazy):
        assert got is not None
        h = _heads_of(meta, first, got[1], got[2])
        parts.append(h.append_column("fx_from", pa.array([i] * h.num_rows, pa.int32()))
                     .append_column("fx_row", pa.array(range(h.num_rows), pa.int64())))
    heads = pa.concat_tables(parts).combine_chunks().sort_by(_ORDER)
    chosen = heads if limit is None else heads.slice(0, limit)
    src = np.asarray(chosen.column("fx_from").to_numpy())
    at = np.asarray(chosen.column("fx_row").to_numpy())
    picked = [(e, np.sort(at[src == i])) for i, e in enumerate(lazy) if (src == i).any()]
    firsts = [(e[0], e[4].take(pa.array(rows))) for e, rows in picked]
    wholes = complete(firsts) if complete and firsts else [f for _, f in firsts]
    out = [ready.take(pa.array(np.sort(at[src == -1])))]
    for ((_, meta, _, got, _), rows), whole in zip(picked, wholes, strict=True):
        assert got is not None
        out.append(_with_counts(build_alerts(meta, whole, "hunt"), got[1][rows], got[2][rows]))
    heads = heads.drop_columns(["fx_from", "fx_row"])
    out = [p for p in out if p.num_rows]
    if not out:
        return Found(heads, empty_alerts())
    found = pa.concat_tables(out).combine_chunks()
    found = found.append_column("fx_key", _first_keys(found.column("event_keys")))
    found = found.sort_by(_ORDER).drop_columns(["fx_key"])
    ctx, sess = context(found)
    rows_ = found.to_pylist()
    add_evidence(rows_, ctx, sess)
    return Found(heads, pa.Table.from_pylist(rows_, schema=ALERTS))


def findings_of(matches: Sequence[Match], alerts: pa.Table, context: Context,
                object_free: frozenset[str] = frozenset(), window_ns: int = GROUP_WINDOW_NS,
                complete: Complete | None = None) -> pa.Table:
    """One alert per finding, with its evidence, sorted by (time, rule, event key, host,
    boot): of the rules' matching rows (``rule_matches``; a rule's rows all in one entry)
    and of ``alerts``, one per match (a detector's, a rule's hunted over slices).
    ``context``: the process and session context of the findings' processes. ``complete``:
    when the rows hold only what the grouping reads, what fetches the whole rows of the
    matches alerts are built from (the first of each finding), all at once."""
    return found_of(matches, alerts, context, object_free, window_ns, complete).alerts
