"""The agent's CPU per event, stage by stage, on a real recording replayed offline.

    python -m bench.agent_cost capture --out compile.npz [--cwd DIR] -- make -j2 -s   # root
    python -m bench.agent_cost replay compile.npz [--store S] [--no-rules] [--repeat N] [--merge N]

``capture`` runs the real recorder (sensor, drains, flow-map flushes at the recorder's
cadence) while COMMAND runs, and keeps what the agent received from the kernel, in order:
the raw ring drains and the flow/re-open map contents. Nothing is decoded or stored.

``replay`` feeds that input through the agent's pipeline on one thread, as ``forensix
record`` wires it (decoder, store sink on a fresh DuckDB store, live rules with the curated
set and built-in detectors), and prints the CPU seconds of each stage (thread CPU time,
so other work on the host does not count) and µs per stored event. The workload's
slowdown on a busy host follows this CPU: on 2 cores, a 30 s ``make -j2`` at 3% slower
leaves ~1.8 CPU-s for BPF and agent together.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


class NullSink:
    """A sink that keeps nothing: the recorder's loop without a store or rules."""

    def write(self, table: str, data: pa.Table) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def capture(out: Path, command: list[str], cwd: Path | None) -> dict[str, Any]:
    from forensix.sensor.recorder import Recorder
    from forensix.sensor.ringbuf import Drained

    items: list[tuple[str, Any]] = []

    class Capturing(Recorder):
        def poll_once(self, wait: float = 0.0) -> int:
            drains = [r.drain(max_bytes=16 << 20) for r in self.rings]
            drains = [d for d in drains if len(d)]
            if drains:
                items.append(("ring", Drained.join(drains)))
            return sum(len(d) for d in drains)

        def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
            items.append(("flows", (k, v)))

        def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
            items.append(("reopens", (k, v)))

    rec = Capturing([NullSink()])
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    t0 = time.monotonic()
    try:
        rc = rec.run(command=command)
    finally:
        os.chdir(old)
    wall = time.monotonic() - t0
    parts: dict[str, np.ndarray] = {
        "abi": np.frombuffer(json.dumps(rec.abi).encode(), np.uint8),
        "kinds": np.array([k for k, _ in items]),
        "offset_ns": np.array([rec.clock.offset_ns], np.int64),
    }
    records = 0
    for i, (kind, x) in enumerate(items):
        if kind == "ring":
            parts[f"i{i}_data"] = np.frombuffer(x.data, np.uint8)
            parts[f"i{i}_offsets"] = x.offsets
            parts[f"i{i}_lengths"] = x.lengths
            records += len(x)
        else:
            parts[f"i{i}_k"], parts[f"i{i}_v"] = x
    np.savez_compressed(out, **parts)
    return {"items": len(items), "ring_records": records, "command_rc": rc, "wall_s": round(wall, 1),
            "dropped_in_kernel": rec.stats.dropped}


def _merged(inputs: list[tuple[str, Any]], n: int) -> list[tuple[str, Any]]:
    """Every n ring drains joined into one, as a recorder draining n times less often
    would see them; the map flushes in between follow the joined drain."""
    from forensix.sensor.ringbuf import Drained

    out: list[tuple[str, Any]] = []
    rings: list[Any] = []
    maps: list[tuple[str, Any]] = []
    for kind, x in inputs:
        if kind == "ring":
            rings.append(x)
            if len(rings) == n:
                out.append(("ring", Drained.join(rings)))
                out.extend(maps)
                rings, maps = [], []
        else:
            maps.append((kind, x))
    if rings:
        out.append(("ring", Drained.join(rings)))
    out.extend(maps)
    return out


def replay(path: Path, store: Path, rules: bool, merge: int = 1) -> dict[str, Any]:
    from forensix.agent.sink import StoreSink
    from forensix.cli.rules import live_engine_for_record
    from forensix.model.host import local_host
    from forensix.sensor.decode import Decoder
    from forensix.sensor.recorder import Recorder
    from forensix.sensor.ringbuf import Drained
    from forensix.store.embedded import open_writer, remove_store

    z = np.load(path)
    abi = json.loads(z["abi"].tobytes())
    kinds = [str(k) for k in z["kinds"]]
    inputs = []
    for i, kind in enumerate(kinds):
        if kind == "ring":
            inputs.append((kind, Drained(z[f"i{i}_data"].tobytes(), z[f"i{i}_offsets"], z[f"i{i}_lengths"])))
        else:
            inputs.append((kind, (z[f"i{i}_k"], z[f"i{i}_v"])))
    if merge > 1:
        inputs = _merged(inputs, merge)

    remove_store(store)
    writer = open_writer(str(store))
    cpu: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    store_sink = StoreSink(writer)
    sinks: list[Any] = [("store", store_sink)]
    if rules:
        engine = live_engine_for_record(store_sink, str(store), echo=None)
        engine.max_delay = 0  # evaluate every batch at once, on this thread
        sinks.append(("rules", engine))

    in_sinks = [0.0]

    class Direct:
        """The recorder's writer thread, inline: each sink's CPU counted apart."""

        def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
            rows[table] += data.num_rows
            for name, s in sinks:
                t = time.thread_time()
                s.write(table, data)
                dt = time.thread_time() - t
                cpu[name] += dt
                in_sinks[0] += dt

    host = local_host()
    rec = Recorder([])
    rec.decoder = Decoder(abi, host, int(z["offset_ns"][0]))
    rec.clock = type("C", (), {"offset_ns": int(z["offset_ns"][0])})()
    rec._writer = Direct()  # type: ignore[assignment]
    t_all = time.thread_time()
    for kind, x in inputs:
        t = time.thread_time()
        if kind == "ring":
            tables = rec.decoder.decode(x)
            cpu["decode"] += time.thread_time() - t
            for table, data in tables.items():
                rec._emit(table, data, bulk=True)
        else:
            before = in_sinks[0]
            (rec._emit_flows if kind == "flows" else rec._emit_reopens)(*x)
            # what the sinks spent inside the emit is theirs, not the flush's
            cpu["flows+reopens"] += time.thread_time() - t - (in_sinks[0] - before)
    t = time.thread_time()
    for _, s in sinks:
        s.flush()
    cpu["final flush"] += time.thread_time() - t
    total = time.thread_time() - t_all
    for name, s in sinks:
        if name == "rules":
            s.close()
    writer.close()
    n = rows["events"]
    out = {
        "events": n, "flows": rows["flows"], "processes": rows["processes"],
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "total_cpu_s": round(total, 3),
        "us_per_event": {k: round(v / n * 1e6, 2) for k, v in cpu.items()} if n else {},
        "total_us_per_event": round(total / n * 1e6, 2) if n else None,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agent_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture", help="record the agent's input while COMMAND runs (root)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--cwd", type=Path, default=None)
    c.add_argument("command", nargs=argparse.REMAINDER)
    r = sub.add_parser("replay", help="the agent's CPU per stage on a capture")
    r.add_argument("capture", type=Path)
    r.add_argument("--store", type=Path, default=None, help="store to write (default: a temporary one)")
    r.add_argument("--no-rules", action="store_true", help="without the live rules")
    r.add_argument("--repeat", type=int, default=1, help="replays; the figures of each are printed")
    r.add_argument("--merge", type=int, default=1,
                   help="join every N ring drains into one batch (a recorder draining N times less often)")
    a = ap.parse_args(argv)
    if a.cmd == "capture":
        cmd = [x for x in a.command if x != "--"]
        if not cmd:
            ap.error("capture needs a COMMAND after --")
        print(json.dumps(capture(a.out, cmd, a.cwd)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="fx-agent-cost-"))
    try:
        for _ in range(a.repeat):
            print(json.dumps(replay(a.capture, a.store or tmp / "replay.duckdb", not a.no_rules, a.merge)))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
