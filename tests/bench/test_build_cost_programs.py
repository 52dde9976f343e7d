"""bench.build_cost --pairs: the kernel side (the recorder's own BPF programs, bpf_stats) by program
beside the recorder's threads, so a regression of the programs is told from one of the recorder."""

from __future__ import annotations

from typing import Any

from bench.build_cost import pairs_summary


def _run(rec_ms: float, open_ns: int, mmap_ns: int) -> dict[str, Any]:
    return {"cpu_s": {"build": {"recorder/python": rec_ms / 1e3}}, "sleeps_per_s": {}, "loadavg_1m": 1.0,
            "build_cpu_s": 6.0, "build_wall_s": 4.0, "recorder_cpu_per_build_cpu": rec_ms / 6e3,
            "events": 10_000, "lost": 0,
            "programs": {"fx_exit_open": [12_000, open_ns], "fx_exit_mmap": [6_000, mmap_ns]}}


def test_pairs_name_each_program_and_its_ms_in_the_build() -> None:
    runs = {"this tree": [_run(100, 14_000_000, 6_000_000), _run(120, 16_000_000, 6_000_000)],
            "other": [_run(150, 13_000_000, 5_000_000), _run(170, 15_000_000, 7_000_000)]}
    text = pairs_summary(runs, "build")
    lines = {ln[:34].strip(): ln[34:].split() for ln in text.splitlines() if "ms" in ln[:34]}
    assert lines["BPF programs in the build, ms"] == ["21.0", "20.0"]
    assert lines["fx_exit_open, ms"] == ["15.00", "14.00"]
    assert lines["fx_exit_mmap, ms"] == ["6.00", "6.00"]
    assert lines["recorder CPU in the build, ms"] == ["110.0", "160.0"]


def test_runs_without_bpf_stats_have_no_program_rows() -> None:
    runs = {"a": [_run(100, 1, 1)], "b": [_run(100, 1, 1)]}
    for r in (*runs["a"], *runs["b"]):
        r["programs"] = {}
    assert "BPF programs" not in pairs_summary(runs, "build")
