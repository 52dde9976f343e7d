"""scale: store ingest on one core (events/s), bytes per event on disk, and the latency of
the reconstruction queries at 10^6 and 10^7 events (bench/analysis_bench.py, when it
exists)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.recorders import Recorder
from bench.workload import Metric, Workload, run

ANALYSIS_BENCH = Path(__file__).with_name("analysis_bench.py")


class ScaleWorkload(Workload):
    name = "scale"
    title = "scale"
    metrics = (
        Metric("events_per_s", "store ingest, one core", "events/s", higher_is_better=True),
        Metric("bytes_per_event", "on disk", "bytes/event"),
    )
    recorders = ("none",)

    def __init__(self, quick: bool, scratch: Any) -> None:
        super().__init__(quick, scratch)
        self.events = 200_000 if quick else 1_000_000

    def describe(self) -> str:
        return (
            f"{self.events:,} synthetic events (bench/synth.py) appended in 65,536-row Arrow "
            "batches through DuckDBStore.append, pinned to CPU 0, then CHECKPOINT"
        )

    def measure(self, rec: Recorder) -> dict[str, float]:
        store = self.scratch / "ingest.duckdb"
        out = run([
            "taskset", "-c", "0", sys.executable, "-m", "bench.ingest",
            "--events", str(self.events), "--store", str(store),
        ], cwd=Path(__file__).parent.parent)
        r = json.loads(out.strip().splitlines()[-1])
        for p in store.parent.glob(store.name + "*"):
            p.unlink()
        return {"events_per_s": r["events_per_s"], "bytes_per_event": r["bytes_per_event"]}

    def finish(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def analysis_latency(quick: bool, scratch: Path) -> dict[str, Any]:
    """tree/backtrack/file latencies from bench/analysis_bench.py, or why they are pending."""
    if not ANALYSIS_BENCH.exists():
        return {"status": "pending", "why": "bench/analysis_bench.py does not exist yet"}
    spec = importlib.util.spec_from_file_location("bench.analysis_bench", ANALYSIS_BENCH)
    if spec is None or spec.loader is None:
        return {"status": "pending", "why": "bench/analysis_bench.py cannot be loaded"}
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - another helper's file, possibly half-written
        return {"status": "pending", "why": f"bench/analysis_bench.py failed to import: {e}"}
    fn = getattr(mod, "run_for_bench", None)
    if fn is None:
        return {"status": "pending", "why": "bench/analysis_bench.py has no run_for_bench()"}
    try:
        return {"status": "ok", "results": fn(quick=quick, scratch=scratch)}
    except Exception as e:  # noqa: BLE001 - reported, never fatal
        return {"status": "failed", "why": f"{type(e).__name__}: {e}"}
