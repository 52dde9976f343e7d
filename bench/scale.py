"""scale: store ingest on one core (events/s), bytes per event on disk, and the latency of
the reconstruction queries at 10^6 and 10^7 events (bench/analysis_bench.py, when it
exists)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.recorders import Recorder
from bench.workload import Metric, Workload, run
from forensix.store.embedded import remove_store

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
            "batches through DuckDBStore.append (flow edges to flows, as the recorder stores "
            "them), pinned to CPU 0, then CHECKPOINT"
        )

    def measure(self, rec: Recorder) -> dict[str, float]:
        store = self.scratch / "ingest.duckdb"
        out = run([
            "taskset", "-c", "0", sys.executable, "-m", "bench.ingest",
            "--events", str(self.events), "--store", str(store),
        ], cwd=Path(__file__).parent.parent)
        r = json.loads(out.strip().splitlines()[-1])
        remove_store(store)
        return {"events_per_s": r["events_per_s"], "bytes_per_event": r["bytes_per_event"]}

    def finish(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def extra(self) -> dict[str, Any]:
        out = run(["taskset", "-c", "0", sys.executable, "-m", "bench.store_probe",
                   "--events", str(50_000 if self.quick else self.events)],
                  cwd=Path(__file__).parent.parent)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


_LINE = re.compile(
    r"^(tree|backtrack|file)\s+([\d.]+) s \(open\+analysis\+render ([\d.]+) s\), "
    r"(\d+) rows/objects, peak RSS (\d+) MiB", re.MULTILINE)


def analysis_latency(sizes: list[int], scratch: Path) -> dict[str, Any]:
    """tree/backtrack/file latencies from bench/analysis_bench.py (the analysis helper's
    benchmark, run as its own command), or why they are pending."""
    if not ANALYSIS_BENCH.exists():
        return {"status": "pending", "why": "bench/analysis_bench.py does not exist yet"}
    results: dict[str, Any] = {}
    for n in sizes:
        store = scratch / f"analysis-{n}" / "bench.duckdb"
        store.parent.mkdir(parents=True, exist_ok=True)
        try:
            out = run([sys.executable, str(ANALYSIS_BENCH), "--events", str(n),
                       "--store", str(store), "--repeat", "3"],
                      cwd=ANALYSIS_BENCH.parent.parent, timeout=3600)
        except Exception as e:  # noqa: BLE001 - another helper's tool: report, do not fail
            results[str(n)] = {"error": str(e)[:500]}
            continue
        finally:
            shutil.rmtree(store.parent, ignore_errors=True)
        rows = {}
        for m in _LINE.finditer(out):
            rows[m.group(1)] = {"analysis_s": float(m.group(2)), "with_open_s": float(m.group(3)),
                                "rows": int(m.group(4)), "peak_rss_mb": int(m.group(5))}
        gen = re.search(r"^generated .* in ([\d.]+) s", out, re.MULTILINE)
        results[str(n)] = {"commands": rows, "generate_s": float(gen.group(1)) if gen else None,
                           "raw": out[-2000:]}
    return {"status": "ok", "results": results}
