"""A recorder gets its rules compiled by a child process and never loads pySigma (issue 25:
the Sigma stack is ~16 MB of a recorder's resident memory, needed only to compile).

What the recorder builds must be what an in-process load builds: the same rules, the same
problems named at start (a broken rule file, a rule the live engine cannot run), and the
same error with its hint for a rule path that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.errors import ForensixError, UsageError
from forensix.rules import load_rules
from forensix.rules.precompile import load_rules_isolated

HERE = Path(__file__).parent
SIGMAHQ = HERE / "fixtures" / "sigmahq"  # eleven SigmaHQ Linux rules (DRL 1.1, see its README)
SIGMA_STACK = ("sigma", "yaml", "jinja2", "pyparsing")
ARGS_ID = "5f4d7c3e-0b7a-4c55-9d1e-7a4a52c1e0a1"
ON_ARGS = f"""title: Args mention a pool
id: {ARGS_ID}
status: test
logsource: {{product: linux, category: process_creation}}
detection:
  sel:
    process.args|contains: pool
  condition: sel
level: high
"""

# Builds the live engine exactly as `forensix record` does (cli.record imports it from
# cli.rules), then reports what it said at start and which Sigma-stack modules it holds.
RECORDER = """
import json, sys
import forensix.cli.main, forensix.cli.record
from forensix.agent.sink import StoreSink
from forensix.cli.rules import live_engine_for_record
from forensix.store.embedded import open_writer
store, rules = sys.argv[1], sys.argv[2:]
lines = []
writer = open_writer(store)
engine = live_engine_for_record(StoreSink(writer), store, rule_paths=rules, echo=lines.append)
stack = sorted(m for m in sys.modules if m.split(".")[0] in {stack!r})
print(json.dumps({{"lines": lines, "stack": stack, "rules": sorted(r.rule_id for r in engine.rules)}}))
engine.close()
writer.close()
"""


def _rule_files(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "args.yml").write_text(ON_ARGS)
    (d / "broken.yml").write_text("title: [unclosed\n")
    return d


def test_recorder_engine_never_imports_the_sigma_stack(tmp_path: Path) -> None:
    mine = _rule_files(tmp_path)
    script = RECORDER.format(stack=SIGMA_STACK)
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", script, str(tmp_path / "rec.duckdb"),
                          str(SIGMAHQ), str(mine)], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "FORENSIX_RULE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["stack"] == []
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in SIGMA_STACK}
    assert "forensix.rules.ir" in imported and "forensix.rules.compile" not in imported
    # the rules it runs are those an in-process load gives, less the one the live engine skips
    expected = load_rules([SIGMAHQ, mine])
    assert out["rules"] == sorted(r.rule_id for r in expected.ok if r.rule_id != ARGS_ID)
    assert len(out["rules"]) > 20
    said = "\n".join(out["lines"])
    assert f"rule not run: {mine / 'broken.yml'}: error: broken YAML" in said
    assert f"skipped {ARGS_ID} (Args mention a pool): the live engine cannot run it: it tests the list column" in said


def test_child_compiles_the_same_rules_as_this_process(tmp_path: Path) -> None:
    mine = _rule_files(tmp_path)
    here, there = load_rules([SIGMAHQ, mine]), load_rules_isolated([SIGMAHQ, mine], cache=None)
    assert there.rules == here.rules  # scope and body trees, statuses and reasons alike
    assert [(r.source, r.status) for r in there.problems if r.source.startswith(str(mine))] == [
        (str(mine / "broken.yml"), "error")]


def test_missing_rule_path_is_the_same_error_with_its_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yml"
    with pytest.raises(UsageError) as here:
        load_rules([missing])
    with pytest.raises(UsageError) as there:
        load_rules_isolated([missing], cache=None)
    assert str(there.value) == str(here.value)
    assert there.value.hint == "give a .yml file or a directory of them"


def test_a_child_that_dies_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(ForensixError) as e:
        load_rules_isolated([], cache=None)  # not read from a cache a recording left
    assert "the rule compiler process failed: exit status 1" in str(e.value)
    assert e.value.hint and "forensix rules check" in e.value.hint


def test_missing_rule_path_is_the_same_error_with_a_cache(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        load_rules_isolated([tmp_path / "nowhere.yml"], cache=tmp_path / "cache")
    assert e.value.hint == "give a .yml file or a directory of them"
