"""The recorder tells the live engine when a drain tick's batches are all handed over
(``tick_end``, sensor/recorder.py ``_tick_written``): the engine evaluates them then, not
``max_delay`` after the first batch. With the drain stretched to 1.5 s while few records
arrive (sensor/pacing.py), that wait is what kept an alert inside 2 s. The engines here wait
30 s on their own, so an alert seen within seconds came from ``tick_end``."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
from rules_scenario import Scenario

from forensix.cli.record_rules import DeferredRules
from forensix.rules import CallbackOutput, default_detectors, load_rules
from forensix.rules.engine import LiveEngine


class _Alerts:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.came = threading.Event()

    def __call__(self, t: pa.Table) -> None:
        self.rows += t.to_pylist()
        self.came.set()


def _batches(sc: Scenario) -> list[tuple[str, pa.Table]]:
    tables = sc.builder.tables()
    return [("processes", tables["processes"]), ("events", tables["events"].sort_by([("ts", "ascending")]))]


def _ids(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["rule_id"], a["alert_id"]) for a in rows}


def _engine(out: _Alerts) -> LiveEngine:
    return LiveEngine(load_rules().ok, detectors=default_detectors(), outputs=[CallbackOutput(out)], max_delay=30)


def test_a_tick_end_evaluates_what_waits_at_once(scenario: Scenario) -> None:
    ref = _Alerts()
    engine = _engine(ref)
    for table, data in _batches(scenario):
        engine.write(table, data)
    assert not ref.came.wait(0.5), "the engine evaluated before max_delay without a tick_end"
    engine.tick_end()
    assert ref.came.wait(20), "tick_end did not make the engine evaluate"
    engine.close()
    # the same alerts as an engine that evaluated everything at its close
    late = _Alerts()
    other = _engine(late)
    for table, data in _batches(scenario):
        other.write(table, data)
    other.close()
    assert _ids(ref.rows) == _ids(late.rows) and len(_ids(late.rows)) > 15


def test_a_tick_end_with_nothing_pending_does_nothing(scenario: Scenario) -> None:
    out = _Alerts()
    engine = _engine(out)
    engine.tick_end()  # before any batch: no round, no raise
    for table, data in _batches(scenario):
        engine.write(table, data)
    assert not out.came.wait(0.5)
    engine.close()
    assert out.rows


def test_the_deferred_engine_passes_tick_end_on_once_built(scenario: Scenario) -> None:
    out = _Alerts()
    built = threading.Event()

    def build() -> LiveEngine:
        assert built.wait(30)
        return _engine(out)

    deferred = DeferredRules(build)
    deferred.tick_end()  # no engine yet: nothing to tell
    built.set()
    assert deferred.wait(30)
    for table, data in _batches(scenario):
        deferred.write(table, data)
    assert not out.came.wait(0.5)
    deferred.tick_end()
    assert out.came.wait(20)
    deferred.close()
