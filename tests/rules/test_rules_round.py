"""One rules round per drain tick evaluates the tick's events once (rules/engine.py ``_drain``),
and tables no rule or detector reads start no round at all (``LiveEngine.write``).

A flow-map flush tick hands the live engine its decoded batch (events, processes), then the
flush's edges (flows) and re-open counts (events again): the Sigma rules and every detector
were run on each events table apart, each at a fixed cost of ~0.2-1.5 ms whatever its length
(bench/tick_cost.py). Counted here, not timed: evaluations of the Sigma rules and the tables
the detectors are handed; the alerts must be those of an engine given everything at once."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
from rules_scenario import Scenario

from forensix.rules import CallbackOutput, default_detectors, load_rules
from forensix.rules.alerts import empty_alerts
from forensix.rules.engine import LiveEngine
from forensix.rules.ir import Const, Node


class _Spy:
    """A detector that reads events (its hunt_filter says so) and notes what it is handed."""

    rules: tuple[Any, ...] = ()

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def hunt_filter(self) -> dict[str, Node]:
        return {"events": Const(True)}

    def observe(self, table: str, data: pa.Table, source: str) -> pa.Table:
        self.seen.append((table, data.num_rows))
        return empty_alerts()


class _Alerts:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.came = threading.Event()

    def __call__(self, t: pa.Table) -> None:
        self.rows += t.to_pylist()
        self.came.set()


def _engine(out: _Alerts, spy: _Spy) -> LiveEngine:
    return LiveEngine(load_rules().ok, detectors=[*default_detectors(), spy], outputs=[CallbackOutput(out)],
                      max_delay=30)


def _evaluations(engine: LiveEngine) -> list[int]:
    """Rows of each Sigma evaluation (counted by a wrapper: the same on a tree without counters)."""
    rows: list[int] = []
    plain = engine.evaluate

    def counted(events: pa.Table) -> pa.Table:
        rows.append(events.num_rows)
        return plain(events)

    engine.evaluate = counted  # type: ignore[method-assign]
    return rows


def _tick(sc: Scenario) -> list[tuple[str, pa.Table]]:
    """The scenario's rows as a flush tick brings them: a decoded batch (events, processes),
    then the flush's flows and its re-open events."""
    tables = sc.builder.tables()
    ev = tables["events"].sort_by([("ts", "ascending")])
    half = ev.num_rows // 2
    return [("events", ev.slice(0, half)), ("processes", tables["processes"]), ("flows", tables["flows"]),
            ("events", ev.slice(half))]


def _ids(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["rule_id"], a["alert_id"]) for a in rows}


def test_a_ticks_events_are_evaluated_once_with_the_same_alerts(scenario: Scenario) -> None:
    out, spy = _Alerts(), _Spy()
    engine = _engine(out, spy)
    evaluated = _evaluations(engine)
    tick = _tick(scenario)
    for table, data in tick:
        engine.write(table, data)
    engine.tick_end()
    assert out.came.wait(20), "tick_end did not make the engine evaluate"
    engine.close()
    events = sum(d.num_rows for t, d in tick if t == "events")
    assert evaluated == [events], f"the Sigma rules ran on {evaluated} rows, not once on the tick's {events}"
    assert [s for s in spy.seen if s[0] == "events"] == [("events", events)]
    # the same alerts as an engine handed every table at once, in one batch each
    ref, ref_spy = _Alerts(), _Spy()
    other = _engine(ref, ref_spy)
    tables = scenario.builder.tables()
    for table in ("processes", "flows", "events"):
        other.write(table, tables[table])
    other.close()
    assert _ids(out.rows) == _ids(ref.rows) and len(_ids(ref.rows)) > 15


def test_tables_no_rule_reads_start_no_round(scenario: Scenario) -> None:
    out, spy = _Alerts(), _Spy()
    engine = _engine(out, spy)
    evaluated = _evaluations(engine)
    rounds = []
    plain = engine._drain

    def drain(final: bool = False) -> None:
        rounds.append(final)
        plain(final)

    engine._drain = drain  # type: ignore[method-assign]
    unread = {name: scenario.builder.tables()["events"].slice(0, 0) for name in ("hosts", "artifacts", "tty")}
    for name, data in unread.items():
        engine.write(name, data)
    engine.tick_end()
    assert not out.came.wait(0.5)
    assert rounds == [], "a round ran for tables no rule or detector reads"
    assert engine.stats.ignored == len(unread)
    # what is read still is: a tick's events wake a round as before
    for table, data in _tick(scenario):
        engine.write(table, data)
    engine.tick_end()
    assert out.came.wait(20)
    engine.close()
    assert len(evaluated) == 1 and not [s for s in spy.seen if s[0] in unread]
