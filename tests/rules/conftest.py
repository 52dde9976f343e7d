"""Fixtures of the rules tests (the scenario itself is in rules_scenario.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_scenario import Scenario, build_scenario, gaps_table

from forensix.store.embedded import open_writer


@pytest.fixture
def scenario() -> Scenario:
    return build_scenario()


@pytest.fixture
def scenario_store(tmp_path: Path, scenario: Scenario) -> tuple[Scenario, str]:
    path = str(tmp_path / "scenario.duckdb")
    with open_writer(path) as w:
        scenario.builder.write(w)
        w.append("gaps", gaps_table(scenario.builder))
        w.flush()
    return scenario, path


