"""A bad rule does not take down live detection: a rule the live engine cannot evaluate
(a text test on the list column process.args) is named at load with the reason and the
fix, in `rules test`/`rules check` (exit 3, as the hunt) and in the record; a rule that
fails on a batch later is disabled with its reason, and every other rule goes on alerting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from rules_scenario import Scenario

from forensix.agent.sink import StoreSink
from forensix.cli.main import cli
from forensix.rules import default_detectors, load_rules
from forensix.rules.compile import CompiledRule
from forensix.rules.engine import LiveEngine
from forensix.store.embedded import open_reader, open_writer

BAD_ID = "5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e001"
ON_ARGS = f"""title: Args mention a pool
id: {BAD_ID}
status: test
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    process.args|contains: {{word}}
  condition: sel
level: high
"""
GOOD_ID = "5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e002"
ON_COMMAND_LINE = f"""title: The command line says the word
id: {GOOD_ID}
status: test
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    CommandLine|contains: {{word}}
  condition: sel
level: high
"""
ON_CWD = """title: Runs in a directory
id: 5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e003
status: test
logsource: {product: linux, category: process_creation}
detection:
  sel:
    process.working_directory|startswith: /
  condition: sel
level: low
"""
WHY = ("the live engine cannot run it: it tests the list column process.args, which the live engine cannot "
       "compare as text (test CommandLine instead)")


def test_rules_test_names_the_rule_it_cannot_run_and_runs_the_others(scenario_store: tuple[Scenario, str],
                                                                     tmp_path: Path) -> None:
    _, store = scenario_store
    bad = tmp_path / "args.yml"
    bad.write_text(ON_ARGS.replace("{word}", "pool"))
    run = CliRunner().invoke
    alone = run(cli, ["rules", "test", "--store", store, "--format", "json"])
    assert alone.exit_code == 0, alone.output
    both = run(cli, ["rules", "test", str(bad), "--store", store, "--format", "json"])
    assert both.exit_code == 3, (both.output, both.exception)
    assert isinstance(both.exception, SystemExit)  # no traceback
    assert f"skipped {BAD_ID} (Args mention a pool): {WHY}" in both.stderr
    assert "utf8_lower" in both.stderr  # Arrow's own reason, as the hunt gives DuckDB's
    assert f"skipped {BAD_ID} (Args mention a pool): the store cannot run it" in both.stderr
    rows = [json.loads(line) for line in both.stdout.splitlines()]
    assert rows == [json.loads(line) for line in alone.stdout.splitlines()]  # every other rule ran, the same
    assert sum(r["live"] for r in rows) > 10 and all(r["agree"] for r in rows)
    assert BAD_ID not in json.dumps(rows)

    check = run(cli, ["rules", "check", str(bad), "--list"])
    assert check.exit_code == 3, check.output
    assert "0 runnable" in check.stdout and WHY in check.stdout + check.stderr


def test_a_rule_failing_on_a_batch_is_disabled_and_the_others_alert(scenario_store: tuple[Scenario, str],
                                                                   tmp_path: Path) -> None:
    """A batch without a column one rule reads (a log host's batch from an older agent)."""
    _, store = scenario_store
    cwd = tmp_path / "cwd.yml"
    cwd.write_text(ON_CWD)
    rd = open_reader(store)
    try:
        events = rd.query("SELECT * FROM events ORDER BY ts, cpu, seq")
        procs = rd.query("SELECT * FROM processes ORDER BY image_ts")
    finally:
        rd.close()
    old = events.drop_columns(["process_working_directory"])
    rules = load_rules([cwd]).ok
    assert sum(r.rule_id == "5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e003" for r in rules) == 1

    def run(rs: list[CompiledRule], record: StoreSink | None) -> tuple[LiveEngine, list[str]]:
        said: list[str] = []
        eng = LiveEngine(rs, detectors=default_detectors(), notify=said.append, record=record)
        eng.observe("processes", procs)
        half = old.num_rows // 2
        found = [eng.observe("events", old.slice(0, half)), eng.observe("events", old.slice(half))]
        return eng, sorted(pa.concat_tables(found).column("alert_id").to_pylist()) + said

    out = tmp_path / "record.duckdb"
    with open_writer(str(out)) as w:
        eng, got = run(rules, StoreSink(w))
        w.flush()
    _, expected = run([r for r in rules if r.rule_id != "5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e003"], None)
    assert [d[0] for d in eng.disabled] == ["5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e003"]
    message = got.pop()
    assert message.startswith("disabled 5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e003 (Runs in a directory): it failed "
                              "on a batch of events, the other rules run on: KeyError")
    assert got == expected and len(got) > 10  # the other rules alerted on both halves, the same
    rd = open_reader(str(out))
    try:
        said = rd.query("SELECT host_name, message FROM events WHERE event_category = 'agent'").to_pylist()
    finally:
        rd.close()
    assert said == [{"host_name": events.column("host_name")[0].as_py(), "message": message}]  # once


@pytest.mark.bpf
def test_the_recorder_names_a_rule_it_cannot_run_and_alerts_with_the_others(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("recording needs root (CI runs as root)")
    word = f"fxlive{uuid.uuid4().hex[:10]}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "args.yml").write_text(ON_ARGS.replace("{word}", word))
    (rules / "good.yml").write_text(ON_COMMAND_LINE.replace("{word}", word))
    store, jsonl = tmp_path / "rec.duckdb", tmp_path / "alerts.jsonl"
    cmd = [sys.executable, "-m", "forensix", "record", "-q", "--no-system-logs", "--no-artifacts",
           "--store", str(store), "--rules", str(rules), "--alerts-jsonl", str(jsonl),
           "--", "sh", "-c", f"sleep 0.3; /bin/echo {word}; sleep 0.5"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert f"skipped {BAD_ID} (Args mention a pool): {WHY}" in res.stderr
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    mine = [a for a in alerts if a["rule.id"] == GOOD_ID]
    assert any(a["process.command_line"] == f"/bin/echo {word}" for a in mine), mine
    assert not [a for a in alerts if a["rule.id"] == BAD_ID]
    rd = open_reader(str(store))
    try:  # the record says which rule was not watching (its own store: only this recorder wrote it)
        said = rd.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'warning' "
                        "AND message LIKE $m", {"m": f"skipped {BAD_ID} %"}).column("message").to_pylist()
    finally:
        rd.close()
    assert len(said) == 1 and WHY in said[0]
