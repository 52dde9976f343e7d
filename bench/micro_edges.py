"""What one write costs the read/write program when its edge is new, and when it is not.

    python -m bench.micro_edges --sensor main=/clone/src --sensor new=src --reps 4
    python -m bench.micro_edges --sensor new=src --configs new,new:floor --writes 200000

A server with a connection per request makes a new data-flow edge for every socket it
accepts or connects (web-conn: two a request, nginx's and wrk's); a kept-alive one adds to
the same few edges. Each configuration attaches a tree's sensor as bench.web_kernel does
(``NAME``, ``NAME:floor``, ``NAME:nosock``, ...; no agent), turns kernel.bpf_stats_enabled on,
and runs two loops in this process, one after the other:

- ``new``: pipe, write one byte, close both ends: every write is a new (process, pipe) edge,
  which takes a slot of its CPU and gives the slot's older edge up to the ``flows`` hash map
  once the slots are full (bpf/sensor.bpf.c, fx_flow_add);
- ``same``: the same byte written to one pipe and read back: the edge is in its slot.

The figure is ``fx_exit_rw``'s ns per run (bpf_stats) in each loop; configurations
alternate within each repetition (the order rotates). The pipe's own ``fx_exit_pipe``
record is in the other program's figure, not here. Taken from bpf_stats, so a busy host
inflates every figure alike (cold caches); compare configurations of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.web_kernel import _holder


def _stop(holder: subprocess.Popen[str]) -> dict[str, tuple[int, int]]:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    stats: dict[str, tuple[int, int]] = {k: (int(v[0]), int(v[1]))
                                          for k, v in json.loads(holder.stdout.readline() or "{}").items()}
    holder.wait()
    return stats


def _new_edges(n: int) -> None:
    for _ in range(n):
        r, w = os.pipe()
        os.write(w, b"x")
        os.close(r)
        os.close(w)


def _same_edge(n: int) -> None:
    r, w = os.pipe()
    try:
        for _ in range(n):
            os.write(w, b"x")
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro_edges", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", action="append", default=[], metavar="NAME=SRC",
                    help="a tree's src/ (its sensor built): configurations NAME, NAME:floor, NAME:nosock")
    ap.add_argument("--configs", default=None, help="comma list (default: every NAME)")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--writes", type=int, default=100_000, help="writes per loop")
    a = ap.parse_args(argv)
    sensors = {k: Path(v).resolve() for k, v in (s.split("=", 1) for s in a.sensor)}
    configs = a.configs.split(",") if a.configs else list(sensors)
    scratch = Path(tempfile.mkdtemp(prefix="fx-micro-edges-"))
    ns: dict[str, dict[str, list[float]]] = {c: {"new": [], "same": []} for c in configs}
    loads = []
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_path.write_text("1\n")
    try:
        for rep in range(a.reps):
            k = rep % len(configs)
            for c in configs[k:] + configs[:k]:
                for loop, fn in (("new", _new_edges), ("same", _same_edge)):
                    holder = _holder(c, sensors, scratch)
                    try:
                        fn(a.writes)
                    finally:
                        runs, t = _stop(holder).get("fx_exit_rw", (0, 0))
                    ns[c][loop].append(t / max(runs, 1))
            loads.append(os.getloadavg()[0])
            print(f"rep {rep}: " + ", ".join(f"{c} {ns[c]['new'][-1]:.0f}/{ns[c]['same'][-1]:.0f} ns"
                                             for c in configs) + f"; load {loads[-1]:.1f}",
                  file=sys.stderr, flush=True)
    finally:
        stats_path.write_text("0\n")
    print(f"fx_exit_rw ns per run (bpf_stats), median of {a.reps} repetitions of {a.writes:,} writes, "
          f"configurations alternating; 1-minute load {min(loads):.1f}-{max(loads):.1f}\n")
    print("| configuration | a new edge each write | the same edge |")
    print("|---|---:|---:|")
    for c in configs:
        print(f"| {c} | {statistics.median(ns[c]['new']):,.0f} | {statistics.median(ns[c]['same']):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
