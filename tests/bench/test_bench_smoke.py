"""Smoke test of the benchmark harness: the pieces of `python -m bench --quick` that run
in seconds, against the real things (a compiled C loop, a real DuckDB store, the real
recorder). No thresholds: figures come from `python -m bench`, never from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.store.embedded import open_reader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.micro import build_micro
from bench.web import parse_wrk


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_micro_program_reports_ns_per_op(tmp_path: Path) -> None:
    exe = build_micro(tmp_path / "micro")
    for mode, n in (("getppid", 20000), ("openclose", 2000), ("forkexec", 5)):
        out = subprocess.run([str(exe), mode, str(n)], capture_output=True, text=True, check=True)
        # mode, operations, wall ns per op (mean of rounds), CPU ns per op (lowest round)
        name, ops, ns, cpu_ns = out.stdout.split()
        assert name == mode and int(ops) == n and float(ns) > 0 and float(cpu_ns) > 0
    out = subprocess.run([str(exe), "storm", "2", "0.2"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "storm" and int(out.stdout.split()[1]) > 0


def test_wrk_output_is_parsed() -> None:
    sample = """Running 5s test @ http://127.0.0.1:18089/
  1 threads and 16 connections
  Latency Distribution
     50%  101.00us
     75%  130.00us
     90%  160.00us
     99%    1.25ms
  700000 requests in 5.00s, 900.00MB read
Requests/sec: 140000.50
Transfer/sec:    180.00MB
"""
    assert parse_wrk(sample) == {"rps": 140000.5, "p99_ms": 1.25}


def test_ingest_writes_a_readable_store(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--events", "30000", "--batch", "10000",
         "--store", str(store)],
        capture_output=True, text=True, check=True, cwd=ROOT, env=_env(),
    )
    r = json.loads(out.stdout)
    assert r["events"] == 30000 and r["events_per_s"] > 0 and r["bytes_per_event"] > 0
    reader = open_reader(store)
    try:
        n = reader.query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
        actions = set(reader.query("SELECT DISTINCT event_action AS a FROM events").column("a").to_pylist())
    finally:
        reader.close()
    assert n == 30000
    assert {"open", "exec", "fork", "exit", "flow"} <= actions


def _bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "b.md"
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1", "--out", str(out),
         "--scratch", str(tmp_path / "scratch"), *args],
        check=True, cwd=ROOT, env=_env(), timeout=240,
    )
    md = out.read_text()
    assert "## Targets" in md and "Machine:" in md
    return json.loads(out.with_suffix(".json").read_text())


def test_runner_writes_markdown_and_json(tmp_path: Path) -> None:
    report = _bench(tmp_path, "--only", "micro,scale", "--recorders", "none",
                    "--analysis-sizes", "20000")
    runs = report["workloads"]["micro"]["runs"]
    assert [r["recorder"] for r in runs] == ["none"]
    assert runs[0]["metrics"]["getppid_ns"] > 0
    assert report["workloads"]["scale"]["runs"][0]["metrics"]["events_per_s"] > 0
    assert report["analysis"]["status"] in ("ok", "pending", "failed")


@pytest.mark.bpf
def test_forensix_column_counts_events_and_losses(tmp_path: Path) -> None:
    report = _bench(tmp_path, "--only", "storm", "--recorders", "forensix")
    fx = [r for r in report["workloads"]["storm"]["runs"] if r["recorder"] == "forensix"]
    assert fx and "error" not in fx[0], fx
    d = fx[0]["detail"]
    assert fx[0]["events"] > 0
    # loss is accounted exactly: gap records add up to the kernel's drop counters
    assert d["kernel_drops"] == d["lost_total"]
    assert d["opens_accounted"] and d["lifecycle_complete"], d
    # and said per class and reason: the storm's file records, never the lifecycle's
    assert sum(d["lost_by"].values()) == d["lost_total"] > 0, d["lost_by"]
    assert not [k for k in d["lost_by"] if k.startswith("process/")], d["lost_by"]


@pytest.mark.bpf
def test_floor_reference_attaches_programs_that_record_no_syscall(tmp_path: Path) -> None:
    report = _bench(tmp_path, "--only", "micro", "--recorders", "floor")
    floor = [r for r in report["workloads"]["micro"]["runs"] if r["recorder"] == "floor"]
    assert floor and "error" not in floor[0], floor
    cats = floor[0]["detail"]["by_category"]
    # the open+close loop ran under the floor sensor: its syscall programs returned at once,
    # while the process lifecycle (fork, exec, exit of the loops) was still recorded
    assert "file" not in cats and cats.get("process", 0) > 0, cats
    assert floor[0]["lost"] == 0
    md = (tmp_path / "b.md").read_text()
    assert "floor: forensix's tracepoints, programs return at once" in md


def test_paired_ratios_match_each_repetition_with_its_own_baseline() -> None:
    from bench.report import paired_ratios, targets

    def run(rec: str, rep: int, wall: float | None) -> dict[str, object]:
        return {"recorder": rec, "rep": rep, "metrics": {"wall_s": wall}, "lost": 0}

    # the host slowed down between repetitions: each ratio uses its own repetition's baseline
    w = {"runs": [run("none", 0, 20.0), run("forensix", 0, 20.4), run("forensix", 1, 30.9),
                  run("none", 1, 30.0), run("forensix", 2, 25.0), run("none", 3, None)]}
    assert [round(r, 3) for r in paired_ratios(w, "forensix", "wall_s")] == [1.02, 1.03]
    md = "\n".join(targets({"workloads": {"compile": w}}))
    assert "compile forensix +2.0%, +3.0%" in md


def test_ablation_pairs_each_build_with_the_baseline_of_its_repetition() -> None:
    from bench.ablation import paired

    # the host slowed down by half between repetitions; the recorder cost 2% and 4%
    got = {"none": [{"wall_s": 20.0}, {"wall_s": 30.0}],
           "forensix": [{"wall_s": 20.4}, {"wall_s": 31.2}]}
    assert paired(got, "forensix") == "+3.00% ± 1.00"
    assert paired(got, "none") == "n/a"
    assert paired({"forensix": got["forensix"]}, "forensix") == "n/a"  # no baseline in the run


def test_baseline_forensix_and_floor_run_back_to_back_and_alone_in_the_extra_repetitions() -> None:
    from bench.__main__ import run_order
    from bench.recorders import make_recorders

    usable = make_recorders(["none", "forensix", "floor", "auditd", "strace"])
    seen = {}
    for rep in range(6):
        names = [r.name for r in run_order(usable, rep, reps=2)]
        seen[rep] = names
        core = [i for i, n in enumerate(names) if n in ("none", "forensix", "floor")]
        # the three a target is judged on are never split by auditd's or strace's minutes
        assert core == list(range(core[0], core[0] + 3)), names
    assert all({"auditd", "strace"} <= set(seen[r]) for r in (0, 1))
    assert all(sorted(seen[r]) == ["floor", "forensix", "none"] for r in range(2, 6))
    # every one of the three runs first in turn, so none always gets the coldest slot
    assert {seen[r][0] for r in range(2, 5)} == {"none", "forensix", "floor"}


def test_compile_target_is_judged_on_the_paired_mean_and_names_the_medians() -> None:
    from bench.report import targets

    def run(rec: str, rep: int, wall: float) -> dict[str, object]:
        return {"recorder": rec, "rep": rep, "metrics": {"wall_s": wall}, "lost": 0}

    # the host slowed down for two repetitions: each build is compared with its own baseline
    walls = [(20.0, 20.4), (20.1, 20.5), (26.0, 26.5), (26.2, 26.7), (20.0, 20.4)]
    w = {"runs": [run(rec, i, v) for i, pair in enumerate(walls)
                  for rec, v in zip(("none", "forensix"), pair)]}
    md = "\n".join(targets({"workloads": {"compile": w}}))
    row = next(line for line in md.splitlines() if line.startswith("| compile at most 3%"))
    assert "+2.0% ± 0.0 (mean of 5 paired repetitions; ratio of the medians +2.0%)" in row
    assert row.endswith("| yes |")
    # and a recorder that costs 4% in every repetition fails it, whatever the medians say
    w = {"runs": [run(rec, i, v * (1.04 if rec == "forensix" else 1)) for i, pair in enumerate(walls)
                  for rec, v in zip(("none", "forensix"), (pair[0], pair[0]))]}
    row = next(line for line in "\n".join(targets({"workloads": {"compile": w}})).splitlines()
               if line.startswith("| compile at most 3%"))
    assert "+4.0% ± 0.0" in row and row.endswith("| **no** |")
