"""tick_cost: `forensix record`'s CPU per drain tick on a captured build, part by part, as the
live recorder ticks (one decoded batch, the flow flush's rows, one rules round per tick).

    python -m bench.tick_cost CAPTURE.npz [--against OLD/src] [--reps 5] [--merge N]

The capture is one of ``bench.agent_cost capture`` (``--netns`` there is not needed: a capture
taken while the host was busy holds other work's records too, which is as good an input).
Each tick of it (a ring drain, and the map contents of a flow-map flush that follows it) is
replayed as the recorder's drain tick runs it: the decoder on the batch, the flow and re-open
rows, every table handed to the live rules engine `forensix record` builds (the curated
rules and the built-in detectors; stores nothing), then one rules round for the tick (what
``tick_end`` wakes the rules thread for). A fresh process per tree and repetition, alternating
with ``--against``; thread CPU time, so the other work on the host is not counted, though on
a loaded host it still slows ours (caches, the other hyperthread): each process replays
``--inner`` times and keeps its cheapest replay; medians of those.

It prints, per tree, the CPU of each part over the whole capture and per tick (the fixed cost
a tick pays whatever its size is what a build of a few seconds pays most of), the rules
rounds that evaluated something and those that found nothing new, and a digest of the alerts
(both trees must raise the same ones). ``--merge N`` joins every N ticks into one (a recorder
draining N times less often).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def ticks_of(inputs: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[list[tuple[str, Any]]]]:
    """The capture's start tables, then its ticks: each ring drain with the map flushes after it."""
    start: list[tuple[str, Any]] = []
    ticks: list[list[tuple[str, Any]]] = []
    for kind, x in inputs:
        if kind == "ring":
            ticks.append([(kind, x)])
        elif kind.startswith("table:") or not ticks:
            (ticks[-1] if ticks and not kind.startswith("table:snapshot") and kind != "table:labels" else start).append(
                (kind, x))
        else:
            ticks[-1].append((kind, x))
    return start, ticks


def merged(ticks: list[list[tuple[str, Any]]], n: int) -> list[list[tuple[str, Any]]]:
    from forensix.sensor.ringbuf import Drained

    out = []
    for i in range(0, len(ticks), n):
        group = ticks[i:i + n]
        rings = [x for t in group for k, x in t if k == "ring"]
        rest = [(k, x) for t in group for k, x in t if k != "ring"]
        out.append([("ring", Drained.join(rings))] + rest)
    return out


def run(capture: Path, merge: int) -> dict[str, Any]:
    """One replay in this process's tree."""
    import pyarrow as pa

    from bench.agent_cost import load_inputs, replay_table
    from forensix.cli.rules import live_engine_for_record
    from forensix.model.host import local_host
    from forensix.rules.alerts import CallbackOutput
    from forensix.sensor.decode import Decoder
    from forensix.sensor.recorder import Recorder
    from forensix.testing.sinks import NullSink

    abi, offset_ns, inputs = load_inputs(capture)
    start, ticks = ticks_of(inputs)
    if merge > 1:
        ticks = merged(ticks, merge)
    engine = live_engine_for_record(NullSink(), "/nonexistent/tick-cost.duckdb", echo=None)
    engine.max_delay = 3600.0  # rounds only when the replay ends a tick, as tick_end does
    alerts: list[Any] = []

    engine.outputs = [CallbackOutput(alerts.append)]
    cpu: dict[str, float] = defaultdict(float)
    rows = defaultdict(int)

    class Direct:  # the writer thread, inline: the rules engine is the only sink
        def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
            rows[table] += data.num_rows
            t = time.thread_time()
            engine.write(table, data)
            cpu["rules: write"] += time.thread_time() - t

    rec = Recorder([])
    rec.decoder = Decoder(abi, local_host(), offset_ns)
    rec.clock = type("C", (), {"offset_ns": offset_ns})()
    rec._writer = Direct()  # type: ignore[assignment]
    for kind, x in start:
        replay_table(rec, kind, x)
    engine.drain()
    rounds_before = _rounds(engine)
    t_all = time.thread_time()
    for tick in ticks:
        for kind, x in tick:
            t = time.thread_time()
            if kind == "ring":
                tables = rec.decoder.decode(x)
                cpu["decode"] += time.thread_time() - t
                for table, data in tables.items():
                    rec._emit(table, data, bulk=True)
            elif kind.startswith("table:"):
                replay_table(rec, kind, x)
            else:
                before = cpu["rules: write"]
                (rec._emit_flows if kind == "flows" else rec._emit_reopens)(*x)
                cpu["flow rows"] += time.thread_time() - t - (cpu["rules: write"] - before)
        t = time.thread_time()
        engine.tick_end()
        engine.drain()
        cpu["rules: round"] += time.thread_time() - t
    t = time.thread_time()
    engine.close()
    cpu["rules: final"] += time.thread_time() - t
    total = time.thread_time() - t_all
    got = pa.concat_tables(alerts).to_pylist() if alerts else []
    digest = hashlib.sha256(json.dumps(sorted(
        ({k: v for k, v in r.items() if k != "detected_ts"} for r in got),
        key=lambda r: (r["alert_id"], r["ts"])), default=str, sort_keys=True).encode()).hexdigest()
    stored = rows["events"] + rows["flows"]
    return {"ticks": len(ticks), "stored_events": stored, "cpu_s": dict(cpu), "total_s": total,
            "rounds": {k: v - rounds_before.get(k, 0) for k, v in _rounds(engine).items()},
            "alerts": len(got), "digest": digest[:16]}


def _rounds(engine: Any) -> dict[str, int]:
    """The engine's own counts of rounds (a tree without them: none)."""
    stats = getattr(engine, "stats", None)
    return {k: int(getattr(stats, k)) for k in ("rounds", "idle_rounds", "batches") if hasattr(stats, k)}


def compare(capture: Path, against: Path | None, reps: int, merge: int, inner: int = 3) -> str:
    trees = [("this tree", ROOT / "src")] + ([("against", against)] if against else [])
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    load = [os.getloadavg()[0]]
    for _ in range(reps):
        for label, src in trees:
            env = os.environ | {"PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
            out = subprocess.run([sys.executable, "-m", "bench.tick_cost", "_run", str(capture), str(merge), str(inner)],
                                 env=env, capture_output=True, text=True, check=True, cwd=ROOT).stdout
            got[label].append(json.loads(out.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
    first = got["this tree"][0]
    lines = [(f"{capture.name}: {first['ticks']} ticks, {first['stored_events']} stored events; {reps} repetitions "
              f"each, alternating; load average {min(load):.1f}-{max(load):.1f}"),
             f"{'ms of thread CPU (median)':28s}" + "".join(f"{'whole':>10s}{'a tick':>9s}" for _ in trees)
             + "   (" + ", ".join(label for label, _ in trees) + ")"]
    parts = sorted({p for runs in got.values() for r in runs for p in r["cpu_s"]})
    for p in [*parts, "total"]:
        cells = ""
        for label, _ in trees:
            v = statistics.median((r["total_s"] if p == "total" else r["cpu_s"].get(p, 0.0)) for r in got[label])
            cells += f"{v * 1e3:10.1f}{v * 1e3 / got[label][0]['ticks']:9.2f}"
        lines.append(f"{p:28s}{cells}")
    for label, _ in trees:
        r = got[label][0]
        lines.append(f"{label}: rounds {r['rounds'] or '(not counted)'}; alerts {r['alerts']}, digest {r['digest']}")
    digests = {r["digest"] for runs in got.values() for r in runs}
    lines.append("same alerts in every run" if len(digests) == 1 else "ALERTS DIFFER between runs or trees")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_run":  # the least CPU of --inner replays: what the host's other work left alone
        runs = [run(Path(args[1]), int(args[2])) for _ in range(int(args[3]))]
        print(json.dumps(min(runs, key=lambda r: r["total_s"])))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.tick_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", type=Path, help="a capture of `python -m bench.agent_cost capture`")
    ap.add_argument("--against", type=Path, default=None, help="another tree's src/ (e.g. /tmp/base1207/src)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--merge", type=int, default=1, help="join every N ticks into one")
    ap.add_argument("--inner", type=int, default=3,
                    help="replays in each process, the one of least CPU kept (a loaded host's interference is "
                    "one-sided: it only adds)")
    a = ap.parse_args(args)
    print(compare(a.capture, a.against, a.reps, a.merge, a.inner))
    return 0


if __name__ == "__main__":
    sys.exit(main())
