"""Recorded by the real sensor: a shell writes a file and then exec's chmod on it (one pid).

Before, every view named the process by its last image: backtrack, the report and the
file history said chmod wrote the bytes ("chmod [pid] --write 3 B-->"). The write is the
shell's, the chmod chmod's, and both edges leave the one node of the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.filehistory import file_history
from forensix.analysis.graph import TrackOptions, backtrack, graph_tables
from forensix.analysis.targets import Target
from forensix.store.embedded import open_reader

pytestmark = pytest.mark.bpf


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "forensix", *args], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("edge-images")
    os.chmod(work, 0o755)
    f, store = work / "made.sh", work / "s.duckdb"
    # the write by a builtin (no fork), then the same process becomes chmod
    _cli("record", "-q", "--no-rules", "--store", str(store), "--",
         "bash", "-c", f"echo hi > {f}; exec chmod +x {f}")
    assert os.access(f, os.X_OK)
    return {"store": store, "file": f, "reader": open_reader(store)}


def test_the_write_is_the_shells_the_chmod_chmods(rec: dict[str, Any]) -> None:
    g = backtrack(rec["reader"], Target("file", path=str(rec["file"])), TrackOptions(depth=1))
    edges = graph_tables(g)[1].to_pylist()
    into = [(e["src"], e["src_label"].split(" [")[0], e["kind"], e["bytes"]) for e in edges
            if e["dst_label"] == str(rec["file"])]
    writers = {(name, kind) for _, name, kind, _ in into}
    assert ("bash", "write") in writers and ("chmod", "chmod") in writers, into
    assert not {k for n, k in writers if n == "chmod"} - {"chmod"}, into  # chmod wrote nothing
    assert len({src for src, *_ in into}) == 1, into  # one process, one node
    (node,) = [n for n in g.node_by("process")]
    assert node.label.startswith("chmod [") and node.attrs["images"][-2:] == ["bash", "chmod"], node


def test_the_cli_views_say_so(rec: dict[str, Any]) -> None:
    s, f = str(rec["store"]), str(rec["file"])
    text = _cli("backtrack", "--store", s, f)
    assert [ln for ln in text.splitlines() if "--write" in ln and "bash [" in ln], text
    assert not [ln for ln in text.splitlines() if "chmod [" in ln and "--write" in ln], text
    report = _cli("report", "--store", s, f)
    changed = next(ln for ln in report.splitlines() if ln.startswith("| Changed by"))
    assert "bash [" in changed and "chmod [" in changed, changed
    dot = _cli("backtrack", "--store", s, f, "--format", "dot")
    assert "by bash [" in dot, dot
    hist = file_history(rec["reader"], f).to_pylist()
    by = {(r["event_action"], Path(r["process_executable"] or "?").name) for r in hist}
    assert ("chmod", "chmod") in by and ("open", "bash") in by and ("flow", "bash") in by, by
