"""The live rules' CPU per stored event, part by part, on a real recording replayed offline.

    python -m bench.rules_cost CAPTURE.npz [--base-src OLD/src] [--reps 3]

The capture is one of ``bench.agent_cost capture``. It is decoded once, as ``bench.agent_cost
replay --ship`` does, and what the live engine is handed (events, flows, processes, ...
batches, in order) is kept. That input is then fed, in a fresh process per tree and
repetition (alternating with ``--base-src``), to the engine ``forensix record`` builds:
the curated rules and the built-in detectors, each batch evaluated at once (as the replay
does). It prints the thread CPU of each part: the Sigma rules (``evaluate``), each detector,
the findings (evidence and grouping), the process and session context, and the whole
engine. It also checks that both trees raise the same alerts (a digest of every alert
row but its detection time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def tap(capture: Path, out: Path) -> int:
    """Decode ``capture`` and keep what the live engine receives (pickled to ``out``)."""
    from bench import agent_cost
    from forensix.rules import engine as engine_mod

    seen: list[tuple[str, Any]] = []
    plain = engine_mod.LiveEngine.write

    def write(self: Any, table: str, data: Any) -> None:
        seen.append((table, data))
        plain(self, table, data)

    engine_mod.LiveEngine.write = write  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory(prefix="rules-cost-") as tmp:
            r = agent_cost.replay(capture, Path(tmp) / "r.duckdb", True, ship=True)
    finally:
        engine_mod.LiveEngine.write = plain  # type: ignore[method-assign]
    with open(out, "wb") as f:
        pickle.dump(seen, f)
    return int(r["stored_events"])


def run(inputs: Path, stored: int) -> dict[str, Any]:
    """One replay of the engine over the tapped input (in this process's tree)."""
    import pyarrow as pa

    from forensix.cli.rules import live_engine_for_record
    from forensix.rules.alerts import CallbackOutput
    from forensix.testing.sinks import NullSink

    with open(inputs, "rb") as f:
        seen = pickle.load(f)
    cpu: dict[str, float] = defaultdict(float)

    def timed(obj: Any, name: str, label: str) -> None:
        f = getattr(obj, name)

        def g(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                cpu[label] += time.thread_time() - t

        setattr(obj, name, g)

    with tempfile.TemporaryDirectory(prefix="rules-cost-") as tmp:
        engine = live_engine_for_record(NullSink(), str(Path(tmp) / "x.duckdb"), echo=None)
    engine.max_delay = 0
    alerts: list[Any] = []

    engine.outputs = [CallbackOutput(alerts.append)]
    for d in engine.detectors:
        timed(d, "observe", type(d).__name__)
    timed(engine, "evaluate", "sigma rules")
    timed(engine, "findings", "findings")
    for obj, name in ((engine.context, "add_events"), (engine.context, "add_processes"),
                      (engine.sessions, "add_events")):
        timed(obj, name, "context")
    t = time.thread_time()
    for table, data in seen:
        engine.write(table, data)
    engine.flush()
    cpu["engine"] = time.thread_time() - t
    rows = pa.concat_tables(alerts).to_pylist() if alerts else []
    digest = hashlib.sha256(json.dumps(sorted(
        ({k: v for k, v in r.items() if k != "detected_ts"} for r in rows),
        key=lambda r: (r["alert_id"], r["ts"])), default=str, sort_keys=True).encode()).hexdigest()
    return {"cpu_s": dict(cpu), "us_per_event": {k: v / stored * 1e6 for k, v in cpu.items()},
            "alerts": len(rows), "digest": digest[:16]}


def compare(capture: Path, base_src: Path | None, reps: int) -> str:
    with tempfile.TemporaryDirectory(prefix="rules-cost-") as tmp:
        inputs = Path(tmp) / "inputs.pkl"
        stored = tap(capture, inputs)
        trees = [("this tree", ROOT / "src")] + ([("base", base_src)] if base_src else [])
        got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        load = [os.getloadavg()[0]]
        for _ in range(reps):
            for label, src in trees:
                env = os.environ | {"PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
                out = subprocess.run([sys.executable, "-m", "bench.rules_cost", "_run", str(inputs), str(stored)],
                                     env=env, capture_output=True, text=True, check=True, cwd=ROOT).stdout
                got[label].append(json.loads(out.strip().splitlines()[-1]))
                load.append(os.getloadavg()[0])
    parts = sorted({p for runs in got.values() for r in runs for p in r["cpu_s"]},
                   key=lambda p: (p != "engine", p != "sigma rules", p))
    lines = [(f"{capture.name}: {stored} stored events, {reps} repetitions each, alternating;"
              f" load average {min(load):.1f}-{max(load):.1f}"),
             f"{'µs per stored event (median)':32s}" + "".join(f"{label:>12s}" for label, _ in trees)]
    for p in parts:
        lines.append(f"{p:32s}" + "".join(
            f"{statistics.median(r['us_per_event'].get(p, 0.0) for r in got[label]):12.2f}" for label, _ in trees))
    for label, _ in trees:
        lines.append(f"alerts ({label}): {got[label][0]['alerts']} rows, digest {got[label][0]['digest']}")
    digests = {r["digest"] for runs in got.values() for r in runs}
    lines.append("same alerts in every run" if len(digests) == 1 else "ALERTS DIFFER between runs or trees")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_run":
        print(json.dumps(run(Path(args[1]), int(args[2]))))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.rules_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", type=Path, help="a capture of `python -m bench.agent_cost capture`")
    p.add_argument("--base-src", type=Path, default=None, help="the src/ directory of a tree to compare with")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(args)
    print(compare(a.capture, a.base_src, a.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
