"""The compile bench gives no verdict on its 3% target when the run cannot judge it: another
recorder's tracing programs attached during a build, or baseline builds that alone vary by
more than the target (bench/compile.py); the report says so instead of "met" or "not met"."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.compile import refusal  # noqa: E402
from bench.report import targets  # noqa: E402


def _report(none: list[float], fx: list[float], extra: dict[str, str]) -> dict[str, object]:
    runs = [{"recorder": "none", "rep": i, "metrics": {"wall_s": w}, "lost": 0} for i, w in enumerate(none)]
    runs += [{"recorder": "forensix", "rep": i, "metrics": {"wall_s": w}, "lost": 0} for i, w in enumerate(fx)]
    return {"workloads": {"compile": {"runs": runs, "extra": extra}}}


def test_a_quiet_run_is_judged() -> None:
    none = [13.0, 13.1, 12.9, 13.05]
    assert refusal(none, [("none", 0), ("forensix", 0)] * 4) is None
    rows = "\n".join(targets(_report(none, [w * 1.02 for w in none], {})))
    assert "compile at most 3% slower | +2.0%" in rows and "| yes |" in rows.split("compile at most")[1].split("\n")[0]


def test_another_recorder_attached_refuses_the_verdict() -> None:
    why = refusal([13.0, 13.0, 13.0], [("none", 0), ("forensix", 12), ("none", 12)])
    assert why is not None and "another recorder" in why and "2 of 3 builds" in why


def test_a_noisy_baseline_refuses_the_verdict_and_the_report_says_why() -> None:
    none = [13.0, 15.0, 12.5, 16.0]  # 11% spread: a 3% effect is not visible in it
    why = refusal(none, [("none", 0)] * 4)
    assert why is not None and "vary by" in why
    line = next(r for r in targets(_report(none, [w * 1.01 for w in none], {"no_verdict": why}))
                if r.startswith("| compile at most"))
    assert "no verdict" in line and line.endswith("| – |")
