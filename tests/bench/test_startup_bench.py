"""bench.startup's table: the configurations side by side with the ratio to the commit
measured against, and a rerun replaces its own section of docs/benchmarks.md only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import startup


def _configs() -> list[startup.Config]:
    tree = startup.Tree("x", Path("/nonexistent"), Path("/nonexistent"))
    return [startup.Config("abc1234", tree, Path("/c1")), startup.Config("this", tree, Path("/c2")),
            startup.Config("this, cold", tree, Path("/c3"), cold=True)]


def test_table_has_each_configuration_and_the_ratio_to_the_other_commit() -> None:
    runs = [startup.Run("abc1234", 10.0, 2.0, 3.0), startup.Run("abc1234", 12.0, 3.0, 3.5),
            startup.Run("this", 5.0, 1.0, 2.0), startup.Run("this", 7.0, 2.0, 2.5),
            startup.Run("this, cold", 11.0, 2.5, 3.1), startup.Run("this, cold", 11.0, 2.5, 3.1)]
    text = startup.report(runs, _configs(), (15.0, 16.5), 2)
    assert "| abc1234 | 11.00 (10.00-12.00) | 2.50 (2.00-3.00) | 3.25 (3.00-3.50) |" in text
    assert "| this | 6.00 (5.00-7.00) | 1.50 (1.00-2.00) | 2.25 (2.00-2.50) |" in text
    assert "| this, cold |" in text
    assert "CPU to ready, this / abc1234: 0.60; time to ready: 0.55; CPU of the whole run: 0.69." in text
    assert "load average 15.0 before and 16.5 after" in text and "--against abc1234" in text


def test_rerun_replaces_only_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs/benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Before\n\nkept\n")
    monkeypatch.setattr(startup, "ROOT", tmp_path)
    startup.write_docs(startup.SECTION + "\n\nfirst\n")
    doc.write_text(doc.read_text() + "\n## After\n\nalso kept\n")
    startup.write_docs(startup.SECTION + "\n\nsecond\n")
    text = doc.read_text()
    assert "second" in text and "first" not in text
    assert "## Before\n\nkept" in text and "## After\n\nalso kept" in text
