"""A rule DuckDB cannot run (a string test on the list column process.args) is named with
why, the other rules of its scan run, and the hunt's exit status says rules were skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rules_scenario import Scenario

from forensix.cli.main import cli
from forensix.errors import StoreError
from forensix.rules import hunt, load_rules
from forensix.rules.detectors import default_detectors
from forensix.store.embedded import open_reader

ON_ARGS = """title: Args mention a pool
id: 5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e001
status: test
logsource: {product: linux, category: process_creation}
detection:
  sel:
    process.args|contains: pool
  condition: sel
level: high
"""


def _alerts(out: str) -> list[str]:
    return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "event.created"}, sort_keys=True)
                  for line in out.splitlines() if line.strip())


def test_a_rule_the_store_cannot_run_is_named_and_the_others_run(scenario_store: tuple[Scenario, str],
                                                                  tmp_path: Path) -> None:
    _, store = scenario_store
    bad = tmp_path / "args.yml"
    bad.write_text(ON_ARGS)
    run = CliRunner().invoke
    alone = run(cli, ["hunt", "--store", store, "--format", "json"])
    assert alone.exit_code == 0, alone.output
    assert alone.stdout.count("\n") > 10
    # the curated set and the bad rule in one many-rule scan
    both = run(cli, ["hunt", str(bad), "--store", store, "--format", "json"])
    assert both.exit_code == 3, (both.output, both.exception)
    assert ("skipped 5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e001 (Args mention a pool): the store cannot run it: "
            "it tests the list column process.args") in both.stderr
    assert "lower(VARCHAR[])" in both.stderr
    assert "(1 skipped)" in both.stderr
    assert _alerts(both.stdout) == _alerts(alone.stdout)  # every other rule ran, and found the same


def test_without_a_list_the_error_is_raised(scenario_store: tuple[Scenario, str], tmp_path: Path) -> None:
    """The library call without ``skipped`` keeps failing loudly (the fleet hunt relies on it)."""
    _, store = scenario_store
    bad = tmp_path / "args.yml"
    bad.write_text(ON_ARGS)
    rules = load_rules([bad]).ok
    rd = open_reader(store)
    try:
        with pytest.raises(StoreError):
            hunt(rd, rules)
        skipped: list[tuple[str, str]] = []
        found = hunt(rd, rules, skipped=skipped)
    finally:
        rd.close()
    assert [s[0] for s in skipped] == ["5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e001"]
    assert found.num_rows > 10  # the curated rules loaded beside it ran


def test_no_detectors_runs_the_sigma_rules_alone(scenario_store: tuple[Scenario, str]) -> None:
    """``--no-detectors`` leaves out exactly the built-in detectors' findings (the fleet hunt
    spends seconds replaying their rows) and keeps every Sigma rule's."""
    _, store = scenario_store
    run = CliRunner().invoke
    every = run(cli, ["hunt", "--store", store, "--format", "json"])
    sigma = run(cli, ["hunt", "--store", store, "--format", "json", "--no-detectors"])
    assert every.exit_code == 0 and sigma.exit_code == 0, (every.output, sigma.output)
    detector_ids = {m.rule_id for d in default_detectors() for m in d.rules}
    found = [json.loads(line) for line in every.stdout.splitlines() if line.strip()]
    by_detector = [f for f in found if f["rule.id"] in detector_ids]
    assert by_detector, "the scenario raises detector findings (else this test proves nothing)"
    assert sigma.stdout.count("\n") > 10
    kept = "\n".join(line for line in every.stdout.splitlines()
                      if line.strip() and json.loads(line)["rule.id"] not in detector_ids)
    assert _alerts(sigma.stdout) == _alerts(kept)
