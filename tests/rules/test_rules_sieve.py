"""The live engine's first pass (rules/sieve.py) only skips rows no rule can match: with
it and without it, the same alerts on the same rows.

Rules: the curated set and the twelve SigmaHQ Linux rules of fixtures/sigmahq (SigmaHQ
commit 8eaafff, DRL 1.1, see its README). Events: the rules scenario, and batches made of
the very paths the rules name, with their case changed, bytes added around them, and
non-ASCII letters that lower() turns into ASCII ones (``İ`` -> ``i``, the Kelvin sign ->
``k``): the values a pass that ignores case could wrongly drop. The real-kernel version
(a recording of attacks.sh) is in test_rules_record_bpf.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_scenario import Scenario, feed

from forensix.rules import default_detectors, load_rules
from forensix.rules.engine import LiveEngine
from forensix.rules.sieve import required_literals
from forensix.store.schema import EVENTS

SIGMAHQ = Path(__file__).parent / "fixtures" / "sigmahq"


@pytest.fixture(scope="module")
def rules() -> list[Any]:
    return load_rules([SIGMAHQ]).ok


@pytest.fixture(scope="module")
def engines(rules: list[Any]) -> tuple[LiveEngine, LiveEngine]:
    """With and without the first pass (``evaluate`` keeps no state between batches)."""
    return LiveEngine(rules), LiveEngine(rules, sieve=False)


def _rows(alerts: pa.Table) -> list[dict[str, Any]]:
    cols = [c for c in alerts.column_names if c != "detected_ts"]
    return sorted(alerts.select(cols).to_pylist(), key=lambda r: (r["alert_id"], r["rule_id"], r["ts"]))


def test_required_literals_of_a_regex() -> None:
    assert required_literals(r"/\.ssh/id_[A-Za-z0-9_]+$|^/etc/ssh/ssh_host_[a-z0-9]+_key$") == [
        ("contains", "/.ssh/id_"), ("prefix", "/etc/ssh/ssh_host_")]
    assert required_literals(r"(?s)^/etc/x\.y$") == [("suffix", "/etc/x.y")]
    assert required_literals("abc?def") == [("contains", "def")]  # (c may be absent)
    assert required_literals("ab|cdef") is None  # one alternative without a literal worth a pass
    assert required_literals(r"\s-(e\s*0|D)(\s|$)") is None
    assert required_literals("[a-z]+foo(bar") is None  # (unbalanced: not read)


def test_the_curated_file_rules_get_a_first_pass(rules: list[Any]) -> None:
    """Most rules over file events name paths: their groups are sieved (a first pass that
    never applies would make the other tests here vacuous)."""
    engine = LiveEngine(rules)
    hooked = [g for g, h in zip(engine._groups, engine._sieve.hooked) if h]
    assert len(hooked) >= 8


def test_scenario_alerts_are_the_same_with_and_without_the_first_pass(scenario: Scenario, rules: list[Any]) -> None:
    tables = scenario.builder.tables()
    with_pass = feed(LiveEngine(rules, detectors=default_detectors()), tables)
    without = feed(LiveEngine(rules, detectors=default_detectors(), sieve=False), tables)
    assert with_pass.num_rows > 15
    assert _rows(with_pass) == _rows(without)


_ACTIONS = ["open", "open", "open", "rename", "link", "unlink", "rmdir", "chmod", "truncate", "mkdir", "symlink",
            "utimes"]
_TWISTS = ["", "/x", "x", "/", "~", ".bak", "\u0130", "\u212a", "\u00df", "\u00e9"]


def _twist(lit: str, how: int, before: str, after: str) -> str:
    if how == 0:
        s = lit.upper()
    elif how == 1:
        s = lit.swapcase()
    elif how == 2:  # a non-ASCII letter that lower() makes the literal's ASCII one
        s = lit.replace("i", "\u0130", 1).replace("k", "\u212a", 1)
    else:
        s = lit
    return before + s + after


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_twisted_literal_paths_raise_the_same_alerts(engines: tuple[LiveEngine, LiveEngine],
                                                     data: st.DataObject) -> None:
    sieved, plain = engines
    pool = sorted({lit for h in sieved._sieve.hooks for _, _, lit in h or ()})
    rows = []
    for i in range(data.draw(st.integers(1, 40))):
        lit = data.draw(st.sampled_from(pool))
        path = _twist(lit, data.draw(st.integers(0, 4)), data.draw(st.sampled_from(["", "/", "/home/u", "/etc", "x"])),
                      data.draw(st.sampled_from(_TWISTS)))
        action = data.draw(st.sampled_from(_ACTIONS))
        rows.append({
            "host_id": "h", "boot_id": "b", "ts": 10**18 + i * 1000, "seq": i, "event_action": action,
            "event_category": "file", "event_outcome": "success", "syscall": action, "process_pid": 100 + i,
            "process_entity_id": 5000 + i, "process_name": "evil", "file_path": path,
            "file_target_path": path if action in ("rename", "link") else None,
            "file_flags": data.draw(st.sampled_from([0, 1, 0o1101, 2])), "file_mode": 0o4755,
            "file_mtime": 1, "file_atime": 1, "file_inode": 7 + i, "message": path if i % 5 == 0 else None,
        })
    batch = pa.Table.from_pylist(rows, schema=EVENTS)
    with_pass, without = sieved.evaluate(batch), plain.evaluate(batch)
    assert _rows(with_pass) == _rows(without)


def test_many_groups_are_sieved_block_by_block(scenario: Scenario, rules: list[Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """More rule groups than one bit mask holds (64; here 2 a block): the same alerts."""
    from forensix.rules.sieve import Sieve

    monkeypatch.setattr(Sieve, "BLOCK", 2)
    tables = scenario.builder.tables()
    small = feed(LiveEngine(rules, detectors=default_detectors()), tables)
    without = feed(LiveEngine(rules, detectors=default_detectors(), sieve=False), tables)
    assert _rows(small) == _rows(without)
