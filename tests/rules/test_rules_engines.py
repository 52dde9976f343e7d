"""The live engine and the retro-hunt give the same alerts on the same events."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute
from rules_scenario import Scenario, feed, gaps_table

from forensix.rules import default_detectors, hunt, load_rules
from forensix.rules.engine import LiveEngine
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import generate


def _pairs(alerts) -> set[tuple[str, str]]:
    return set(zip(alerts.column("rule_id").to_pylist(), alerts.column("alert_id").to_pylist()))


def test_live_and_hunt_agree_on_the_scenario(scenario_store: tuple[Scenario, str]) -> None:
    sc, path = scenario_store
    rules = load_rules().ok
    tables = sc.builder.tables() | {"gaps": gaps_table(sc.builder)}
    live = feed(LiveEngine(rules, detectors=default_detectors()), tables)
    rd = open_reader(path)
    try:
        hunted = hunt(rd, rules, default_detectors())
    finally:
        rd.close()
    assert live.num_rows > 15
    assert _pairs(live) == _pairs(hunted)
    # the same alert rows, field for field (apart from when they were raised and by whom)
    cols = [c for c in live.column_names if c not in ("detected_ts", "source")]
    key = [("alert_id", "ascending")]
    assert live.select(cols).sort_by(key).to_pylist() == hunted.select(cols).sort_by(key).to_pylist()


def test_batch_size_does_not_change_live_results(scenario: Scenario) -> None:
    rules = load_rules().ok
    tables = scenario.builder.tables()
    one = feed(LiveEngine(rules, detectors=default_detectors()), tables, batch=1)
    big = feed(LiveEngine(rules, detectors=default_detectors()), tables, batch=10_000)
    assert _pairs(one) == _pairs(big)


def test_live_and_hunt_agree_on_a_realistic_history(tmp_path: Path) -> None:
    """20k generated events (daemons, logins, cron, pid reuse, a planted intrusion) and a
    rule set exercising every operator, including parent fields and derived columns."""
    path = tmp_path / "gen.duckdb"
    with open_writer(path) as w:
        generate(w, events=20_000, seed=3)
    rules = load_rules([Path(__file__).parent / "fixtures" / "ops"]).ok
    assert len(rules) > 20
    rd = open_reader(path)
    try:
        hunted = hunt(rd, rules)
        engine = LiveEngine(rules)
        from forensix.cli.rules import replay

        live = replay(rd, engine, None, None, batch=3000)
    finally:
        rd.close()
    assert hunted.num_rows > 100
    assert _pairs(live) == _pairs(hunted)
    fired = set(hunted.column("rule_id").to_pylist())
    assert len(fired) >= 10, fired


def test_every_derived_column_has_both_implementations() -> None:
    from forensix.rules.fields import DERIVED
    from forensix.rules.live import DERIVED_ARROW

    assert set(DERIVED) == set(DERIVED_ARROW)


def test_pending_batches_are_evaluated_by_the_timer(scenario: Scenario) -> None:
    """A batch that is not followed by another still alerts within max_delay."""
    import threading

    from forensix.rules import CallbackOutput

    got = threading.Event()
    engine = LiveEngine(load_rules().ok, outputs=[CallbackOutput(lambda t: got.set())], max_delay=0.2)
    tables = scenario.builder.tables()
    engine.write("processes", tables["processes"])
    engine.write("events", tables["events"])
    try:
        assert got.wait(2.0), "no alert within 2 s without a further batch"
    finally:
        engine.close()
    assert engine.stats.alerts > 15


def test_file_events_arriving_before_their_exec_are_held_back(scenario: Scenario) -> None:
    """The recorder drains the process ring and the file ring apart: a new process's
    opens can come before its exec. unix_chkpwd reading /etc/shadow must still be known
    as unix_chkpwd (no alert), and cat must still be named in its alert."""
    from forensix.rules import CallbackOutput

    got: list[dict] = []
    engine = LiveEngine(load_rules().ok, outputs=[CallbackOutput(lambda t: got.extend(t.to_pylist()))],
                        max_rows=1, max_delay=30)
    ev = scenario.builder.tables()["events"]
    lifecycle = ev.filter(pa.compute.is_in(ev.column("event_action"), pa.array(["fork", "exec", "exit"])))
    rest = ev.filter(pa.compute.invert(pa.compute.is_in(ev.column("event_action"), pa.array(["fork", "exec", "exit"]))))
    engine.write("events", rest)  # the file ring first...
    engine.write("events", lifecycle)  # ...then the process ring
    engine.close()
    pids = {a["process_pid"] for a in got if a["rule_title"].startswith("Shadow password")}
    assert pids == {1001, 1002}
    assert any("/usr/bin/cat" in a["summary"] for a in got if a["process_pid"] == 1001)
