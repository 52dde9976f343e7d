"""A rule that names an integer beyond 2**53 (an inode, a 64-bit id) compares with that integer
exactly: pySigma alone would turn 2**60 + 1 into the float 2**60, which also equals the
inodes 2**60 and 2**60 + 2. Both engines, on the same history."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_scenario import feed

from forensix.rules import hunt, load_rules
from forensix.rules.engine import LiveEngine
from forensix.rules.numbers import stand_ins
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder

BASE = 2**60
INODES = {"/opt/a": BASE, "/opt/b": BASE + 1, "/opt/c": BASE + 2, "/opt/d": 2**64 - 1}

RULES = f"""title: inode equals
id: 0b1e0000-0000-4000-8000-000000000001
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    file.inode: {BASE + 1}
  condition: sel
---
title: inode above
id: 0b1e0000-0000-4000-8000-000000000002
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    file.inode|gt: {BASE + 1}
  condition: sel
---
title: inode one of
id: 0b1e0000-0000-4000-8000-000000000003
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    file.inode:
      - {BASE + 1}
      - {2**64 - 1}
  condition: sel
---
title: inode not
id: 0b1e0000-0000-4000-8000-000000000004
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    file.inode|gte: {BASE}
  other:
    file.inode: {BASE}
  condition: sel and not other
"""

WANT = {
    "inode equals": {"/opt/b"},
    "inode above": {"/opt/c", "/opt/d"},
    "inode one of": {"/opt/b", "/opt/d"},
    "inode not": {"/opt/b", "/opt/c", "/opt/d"},
}


@pytest.fixture
def history(tmp_path: Path) -> tuple[StoreBuilder, str]:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    for i, (path, ino) in enumerate(INODES.items()):
        b._inodes[path] = ino  # the builder's inode table: the file's inode number
        b.spawn(init, 100 + i, 1 + i, path)
    store = tmp_path / "s.duckdb"
    with open_writer(store) as w:
        b.write(w)
    return b, str(store)


def _by_rule(alerts: object) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in alerts.to_pylist():  # type: ignore[attr-defined]
        out.setdefault(r["rule_title"], set()).add(r["process_executable"])
    return out


def test_integers_beyond_2_53_compare_exactly_in_both_engines(tmp_path: Path,
                                                               history: tuple[StoreBuilder, str]) -> None:
    b, store = history
    path = tmp_path / "big.yml"
    path.write_text(RULES)
    rules = load_rules([path], builtin=False).ok
    assert len(rules) == 4
    assert "value=1152921504606846977," in repr(rules[0].where)  # the integer, not 1.152921504606847e+18
    rd = open_reader(store)
    try:
        hunted = hunt(rd, rules)
    finally:
        rd.close()
    live = feed(LiveEngine(rules), b.tables())
    assert _by_rule(hunted) == WANT
    assert _by_rule(live) == WANT


def test_stand_ins_are_free_and_exact() -> None:
    """The stand-ins are integers a float holds, used by no rule of the file."""
    taken = 2**53 - 1  # a rule of the file uses the first candidate: it is skipped
    docs, table = stand_ins([{"detection": {"a": {"x": 2**60 + 1, "y": [taken, 2**64 - 1]}, "flag": True}},
                             {"title": "no detection"}])
    assert sorted(table.values()) == [2**60 + 1, 2**64 - 1]
    assert taken not in table and all(float(s) == s for s in table)
    a = docs[0]["detection"]["a"]
    assert table[a["x"]] == 2**60 + 1 and a["y"][0] == taken and table[a["y"][1]] == 2**64 - 1
    assert docs[0]["detection"]["flag"] is True and docs[1] == {"title": "no detection"}
