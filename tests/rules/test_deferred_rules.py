"""A cold rule cache does not hold up recording (cli/record_rules.py): batches written
while the rules compile are held, in order, and the engine sees every one of them once it
exists, so the alerts are those of an engine that was there from the start."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
import pytest
from rules_scenario import Scenario

from forensix.cli.record_rules import DeferredRules
from forensix.errors import ForensixError
from forensix.rules import CallbackOutput, default_detectors, load_rules
from forensix.rules.engine import LiveEngine


def _batches(sc: Scenario, rows: int = 7) -> list[tuple[str, pa.Table]]:
    """The scenario as the writer hands it on: processes, then events in small batches."""
    tables = sc.builder.tables()
    ev = tables["events"].sort_by([("ts", "ascending")])
    return [("processes", tables["processes"])] + [("events", ev.slice(i, rows)) for i in range(0, ev.num_rows, rows)]


def _engine(got: list[dict[str, Any]]) -> LiveEngine:
    return LiveEngine(load_rules().ok, detectors=default_detectors(),
                      outputs=[CallbackOutput(lambda t: got.extend(t.to_pylist()))], max_delay=30)


def _ids(alerts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["rule_id"], a["alert_id"]) for a in alerts}


def test_batches_written_while_the_rules_compile_are_all_evaluated(scenario: Scenario) -> None:
    batches = _batches(scenario)
    direct: list[dict[str, Any]] = []
    engine = _engine(direct)
    for table, data in batches:
        engine.write(table, data)
    engine.close()
    assert len(_ids(direct)) > 15

    compiled = threading.Event()
    late: list[dict[str, Any]] = []

    def build() -> LiveEngine:
        assert compiled.wait(30)
        return _engine(late)

    deferred = DeferredRules(build)
    half = len(batches) // 2
    for table, data in batches[:half]:  # recording goes on: none of these waits for the rules
        deferred.write(table, data)
    assert deferred.engine is None and late == [] and deferred.held_peak == half
    compiled.set()
    assert deferred.wait(30)
    for table, data in batches[half:]:
        deferred.write(table, data)
    deferred.close()
    assert _ids(late) == _ids(direct)


class _Record:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, table: str, data: pa.Table) -> None:
        self.rows += [dict(r, table=table) for r in data.to_pylist()]


def test_rules_that_cannot_be_compiled_are_said_in_the_record_and_recording_goes_on(scenario: Scenario) -> None:
    record, said = _Record(), []

    def build() -> LiveEngine:
        raise ForensixError("the rule compiler process failed: killed", "check the rules")

    deferred = DeferredRules(build, echo=said.append, record=record)
    for table, data in _batches(scenario)[:3]:
        deferred.write(table, data)  # never raises: recording goes on
    assert deferred.wait(30)
    deferred.close()
    assert deferred.failed and "live detection is off" in deferred.failed
    assert said == [deferred.failed]
    warned = [r for r in record.rows if r["event_action"] == "warning"]
    assert len(warned) == 1 and "the rule compiler process failed" in warned[0]["message"]


def test_past_the_held_bytes_the_writer_waits_for_the_rules(scenario: Scenario) -> None:
    """Held batches are bounded: past the bound the writer waits (and with it the drain; the
    kernel's rings hold the records), and goes on once the engine has caught up."""
    batches = _batches(scenario)
    compiled = threading.Event()
    got: list[dict[str, Any]] = []
    deferred = DeferredRules(lambda: (compiled.wait(30), _engine(got))[1], held_bytes=1)
    deferred.write(*batches[0])  # under the bound: held at once
    done = threading.Event()

    def writer() -> None:
        deferred.write(*batches[1])
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.5), "the writer did not wait for the rules past the bound"
    compiled.set()
    assert done.wait(30)
    t.join()
    deferred.close()
    assert deferred.held_peak == 1


@pytest.mark.parametrize("cached", [True, False])
def test_record_builds_the_engine_now_only_when_the_rules_are_cached(
        cached: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from forensix.cli import record_rules

    monkeypatch.setattr(record_rules, "cached_rules", lambda paths: load_rules() if cached else None)
    monkeypatch.setattr(record_rules, "load_rules_isolated", lambda paths: load_rules())
    built: list[LiveEngine] = []
    notes: list[str] = []

    def engine(store_sink: Any, store: str, *, rules: Any, **kw: Any) -> LiveEngine:
        return LiveEngine(rules.ok)

    sink = record_rules.rules_for_record(None, str(tmp_path / "s.duckdb"), rule_paths=(), echo=notes.append,
                                         note=notes.append, engine=engine, pids=lambda: [1],
                                         on_engine=built.append)
    if cached:
        assert isinstance(sink, LiveEngine) and built == [sink] and notes == []
    else:
        assert isinstance(sink, DeferredRules) and "compiling the rules" in notes[0]
        assert sink.wait(30) and built == [sink.engine]
    sink.close()
