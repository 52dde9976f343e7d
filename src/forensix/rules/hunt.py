"""The retro-hunt: rules over the recorded history, through ``Reader.query`` only.

Sigma rules run as SQL (many rules per scan, see ``forensix.rules.sql``); the built-in
detectors replay the few store rows they care about, in time order, through the same
``observe`` code the live engine uses.

A rule the store cannot run (DuckDB refuses its SQL, e.g. a string test on the list column
``process.args``) does not fail the hunt: the scan it was in is split until the rule is
alone, the rule is named with DuckDB's reason in ``skipped``, and the others run. The fleet
hunt (``rules.fleet_hunt``) does the same over ClickHouse.

Matches become findings in bulk (``rules.grouping``): the grouping is decided from the
matching rows' columns, and only each finding's first match is built into an alert and
given its evidence, so a rule matching millions of events costs about its scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from forensix.analysis.users import store_book
from forensix.errors import StoreError
from forensix.rules.alerts import build_alerts, empty_alerts
from forensix.rules.detectors import Detector
from forensix.rules.engine import meta_of
from forensix.rules.evidence import GROUP_WINDOW_NS, SessionContext, object_free
from forensix.rules.grouping import findings_of, rule_matches
from forensix.rules.ir import CompiledRule, Node, columns_of
from forensix.rules.live import ProcessContext
from forensix.rules.sql import hunt_sql, where_sql
from forensix.store.base import Reader
from forensix.store.schema import EVENTS, ecs_name

__all__ = ["findings", "group_findings", "hunt", "hunt_detectors", "hunt_rules", "match_alerts", "prelude",
           "store_context"]

RULES_PER_SCAN = 40
_LISTS = frozenset(f.name for f in EVENTS if pa.types.is_list(f.type) or pa.types.is_binary(f.type))
# the time column detectors replay a table's rows in (and the window applies to)
REPLAY_TIME = {"gaps": "ts_from", "flows": "first_ts"}


def _time_sql(col: str, ts_from: int | None, ts_to: int | None) -> str:
    parts = ["TRUE"]
    if ts_from is not None:
        parts.append(f"{col} >= {int(ts_from)}")
    if ts_to is not None:
        parts.append(f"{col} < {int(ts_to)}")
    return " AND ".join(parts)


def hunt_rules(
    reader: Reader, rules: Sequence[CompiledRule], ts_from: int | None = None, ts_to: int | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> pa.Table:
    """Alerts of Sigma rules over the store, one per (rule, matching event).

    ``skipped``: where a rule the store cannot run goes, as (rule id, reason), while the
    others run; without it, such a rule's error is raised (``StoreError``)."""
    found = [match_alerts(chunk, rows) for chunk, rows in _matches(reader, rules, ts_from, ts_to, skipped)]
    found = [f for f in found if f.num_rows]
    return pa.concat_tables(found) if found else empty_alerts()


def _matches(reader: Reader, rules: Sequence[CompiledRule], ts_from: int | None, ts_to: int | None,
             skipped: list[tuple[str, str]] | None) -> list[tuple[Sequence[CompiledRule], pa.Table]]:
    """The matching rows of every scan (``fx_rules``: indices into the scan's rules)."""
    ok = [r for r in rules if r.ok]
    found = []
    for start in range(0, len(ok), RULES_PER_SCAN):
        found += _scan(reader, ok[start : start + RULES_PER_SCAN], ts_from, ts_to, skipped)
    return found


def _scan(reader: Reader, chunk: Sequence[CompiledRule], ts_from: int | None, ts_to: int | None,
          skipped: list[tuple[str, str]] | None) -> list[tuple[Sequence[CompiledRule], pa.Table]]:
    """One scan for ``chunk``; when the store refuses it, each half on its own (a few more
    scans, only on failure), down to the rule that cannot run."""
    try:
        return [(chunk, reader.query(hunt_sql(chunk, ts_from, ts_to)))]
    except StoreError as e:
        if skipped is None:
            raise
        if len(chunk) == 1:
            skipped.append((chunk[0].rule_id, _why(chunk[0], e)))
            return []
    mid = len(chunk) // 2
    return _scan(reader, chunk[:mid], ts_from, ts_to, skipped) + _scan(reader, chunk[mid:], ts_from, ts_to, skipped)


def match_alerts(chunk: Sequence[CompiledRule], rows: pa.Table) -> pa.Table:
    """Alerts from the rows of one many-rule scan (``fx_rules``: the indices into ``chunk``
    each row matched), rule by rule, one per match."""
    found = [build_alerts(meta_of(rule), part if idx is None else part.take(pa.array(idx)), "hunt")
             for rule, part, idx in rule_matches(chunk, rows)]
    return pa.concat_tables(found) if found else empty_alerts()


def hunt_detectors(
    reader: Reader, detectors: Sequence[Detector], ts_from: int | None = None, ts_to: int | None = None
) -> pa.Table:
    """Alerts of the built-in detectors, replaying the store rows they watch."""
    found = []
    for d in detectors:
        for table, where in prelude(d).items():  # learnt from, never alerting
            col = REPLAY_TIME.get(table, "ts")
            sql = f"SELECT * FROM {table} WHERE {where_sql(where)} AND {_time_sql(col, ts_from, ts_to)} ORDER BY {col}"
            d.observe(table, reader.query(sql), "hunt")
        for table, where in d.hunt_filter().items():
            col = REPLAY_TIME.get(table, "ts")
            sql = f"SELECT * FROM {table} WHERE {where_sql(where)} AND {_time_sql(col, ts_from, ts_to)} ORDER BY {col}"
            data = reader.query(sql)
            if data.num_rows:
                found.append(d.observe(table, _named(reader, data), "hunt"))
    found = [f for f in found if f.num_rows]
    return pa.concat_tables(found) if found else empty_alerts()


def _why(rule: CompiledRule, err: StoreError) -> str:
    """The store's reason (its first line), and the likely cause in the rule's own terms."""
    first = err.message.splitlines()[0] if err.message else str(err)
    lists = sorted(ecs_name(c) for c in columns_of(rule.where) & _LISTS)
    if lists:
        return (f"it tests the list column {', '.join(lists)}, which the hunt cannot compare as text "
                f"(test CommandLine instead) ({first})")
    return first


def prelude(d: Detector) -> dict[str, Node]:
    """The rows a detector learns from before its ``hunt_filter`` is asked (``hunt_prelude``,
    optional): what it learns there may narrow the rows it needs."""
    fn = getattr(d, "hunt_prelude", None)
    return dict(fn()) if fn is not None else {}


def _named(reader: Reader, rows: pa.Table) -> pa.Table:
    """Rows with ``fx_user`` as the rule view has it (their host's recorded names as of then):
    what a detector's alert names the user by."""
    if not {"host_id", "user_id", "ts"} <= set(rows.column_names):
        return rows
    hosts = rows.column("host_id").to_pylist()
    names, _ = store_book(reader, set(hosts)).names(hosts, rows.column("user_id").to_pylist(),
                                                    rows.column("ts").to_pylist())
    return rows.append_column("fx_user", pa.array(names, pa.string()))


def hunt(
    reader: Reader,
    rules: Sequence[CompiledRule],
    detectors: Sequence[Detector] = (),
    ts_from: int | None = None,
    ts_to: int | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> pa.Table:
    """Everything a hunt finds, one alert per finding with its evidence, sorted by time.

    ``skipped``: see ``hunt_rules`` (rules the store cannot run, named; the others run)."""
    matches = [m for chunk, rows in _matches(reader, rules, ts_from, ts_to, skipped) for m in rule_matches(chunk, rows)]
    found = hunt_detectors(reader, detectors, ts_from, ts_to)
    return findings_of(matches, found, lambda _: store_context(reader), object_free(rules))


def store_context(reader: Reader) -> tuple[ProcessContext, SessionContext]:
    """The process images, parents and ssh accepts of a store, as the live engine learns them."""
    ctx = ProcessContext(max_entities=1 << 62)
    procs = reader.query(
        "SELECT entity_id, image_ts, executable, name, parent_entity_id, args FROM processes ORDER BY image_ts"
    )
    if procs.num_rows:
        ctx.add_processes(procs)
    sess = SessionContext(max_entities=1 << 62)
    sess.add_events(reader.query(
        "SELECT process_entity_id, ts, destination_ip, network_transport, event_action FROM events"
        " WHERE event_action = 'accept' ORDER BY ts"
    ))
    return ctx, sess


def findings(reader: Reader, alerts: pa.Table, window_ns: int = GROUP_WINDOW_NS,
             object_free: frozenset[str] = frozenset()) -> pa.Table:
    """One alert per match -> one per finding (as ``evidence.group_alerts`` groups them) with its evidence."""
    return findings_of([], alerts, lambda _: store_context(reader), object_free, window_ns)


def group_findings(ctx: ProcessContext, sess: SessionContext, alerts: pa.Table, window_ns: int = GROUP_WINDOW_NS,
                   object_free: frozenset[str] = frozenset()) -> pa.Table:
    """``findings`` with the process and session context given."""
    return findings_of([], alerts, lambda _: (ctx, sess), object_free, window_ns)
