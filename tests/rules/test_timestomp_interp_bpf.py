"""forensix-timestomp-not-a-copy on the real kernel: an interpreter that writes a file and
then backdates it is raised (before, having made the file, it passed for a copy); copies and
extractions that set their source's old times stay quiet (timestomp_interp.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.rules.timestomp import NAMED_TIMESTOMP

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("timestomp_interp.sh")


def test_interpreter_backdating_its_own_file_is_raised_copies_are_not(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    os.chmod(tmp_path, 0o755)
    store, jsonl = tmp_path / "s.duckdb", tmp_path / "alerts.jsonl"
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--store", str(store),
                        "--alerts-jsonl", str(jsonl), "--", "bash", str(CASE), str(work)],
                       check=False, capture_output=True, text=True, timeout=180,
                       env=os.environ | {"PYTHON": sys.executable})
    assert r.returncode == 0 and "timestomp case done" in r.stdout, r.stdout + r.stderr
    assert os.stat(work / "copy2.txt").st_mtime < os.stat(work / "dropper.py").st_mtime - 86400  # times kept
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    mine = [a for a in alerts if str(work) in json.dumps(a)]
    stamped = sorted(Path(a["object.name"]).name for a in mine if a["rule.id"] == NAMED_TIMESTOMP.rule_id)
    assert stamped == ["drop-c", "drop-script"], [(a["rule.id"], a.get("summary")) for a in mine]
    assert all("made itself" in a["summary"] for a in mine if a["rule.id"] == NAMED_TIMESTOMP.rule_id), mine
    # nor does the Sigma rule raise a copy (it leaves their programs out by name): only the
    # case's own `touch -d` of the sources
    sigma = {Path(a["process.executable"]).name for a in mine if "timestamps set back" in a["rule.title"]
             and a["rule.id"] != NAMED_TIMESTOMP.rule_id}
    assert sigma == {"touch"}, sigma
