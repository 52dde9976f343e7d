"""Every curated rule and built-in detector fires on its attack, and on nothing benign."""

from __future__ import annotations

from rules_scenario import Scenario, feed, gaps_table

from forensix.rules import default_detectors, load_rules
from forensix.rules.detectors import DETECTOR_RULES
from forensix.rules.engine import LiveEngine


def _by_rule(sc: Scenario) -> dict[str, set[int]]:
    rules = load_rules().ok
    names = {r.rule_id: r.name for r in rules} | {m.rule_id: m.rule_id for m in DETECTOR_RULES}
    tables = sc.builder.tables() | {"gaps": gaps_table(sc.builder)}
    alerts = feed(LiveEngine(rules, detectors=default_detectors()), tables)
    out: dict[str, set[int]] = {}
    for r in alerts.to_pylist():
        out.setdefault(names[r["rule_id"]], set()).add(r["process_pid"])
    return out


def test_every_curated_rule_has_a_name_and_attack_tags() -> None:
    rs = load_rules()
    assert not rs.problems, [(r.source, r.reason) for r in rs.problems]
    for r in rs.ok:
        assert r.name.startswith("fx_"), r.source
        assert any(t.startswith("attack.t") for t in r.tags), r.source


def test_each_attack_raises_its_alert_and_benign_work_none(scenario: Scenario) -> None:
    got = _by_rule(scenario)
    gap = got.pop("forensix-ring-buffer-gap")
    assert gap == {None}
    assert got == scenario.expected


def test_every_curated_rule_is_exercised(scenario: Scenario) -> None:
    names = {r.name for r in load_rules().ok} | {m.rule_id for m in DETECTOR_RULES}
    names.discard("forensix-ring-buffer-gap")
    assert names == set(scenario.expected)
