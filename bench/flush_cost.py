"""flush_cost: what one flow-map flush costs the recorder, by part, two source trees alternating.

    python -m bench.flush_cost --against /tmp/main-r2/src --pairs 4
    python -m bench.flush_cost --against /tmp/main-r2/src --pairs 4 --build /tmp/build-cost-src/orig/lua-5.4.4 --make-args posix

Without ``--build``: a recorder (in-process, no loop, a NullSink) over a network namespace
made for the run, where nothing happens: ``--flushes`` flushes 20 ms apart, each timed on
the thread's CPU clock, and the bpf() and membarrier calls counted and timed: the fixed cost
of a flush (the map takes, the slot banks, the bank flip's grace period). With ``--build``:
the recorder's own loop runs while ``make -j2 -s ARGS`` builds a fresh copy of the tree in
the namespace, and each flush's parts are summed over the build and 2.5 s after it: the
flush of a real build (rows merged, edges named). Each tree runs in a child process of its
own (``PYTHONPATH``); the trees alternate. CPU clock only: the membarrier's wait is wall
time, reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHILD = r'''
import collections, json, os, shutil, subprocess, sys, tempfile, threading, time
from forensix.sensor import libbpf as lb
from forensix.sensor import slots as S
from forensix.sensor import recorder as R
from forensix.sensor.loader import SensorConfig
from forensix.testing.sinks import NullSink

netns, flushes, build, make_args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
calls, cpu = collections.Counter(), collections.Counter()
rec_thread = {"ident": None}

def timed(obj, name, key=None):
    f = getattr(obj, name)
    def wrap(*a, **k):
        if threading.get_ident() != rec_thread["ident"]:
            return f(*a, **k)
        t = time.thread_time_ns(); w = time.monotonic_ns()
        try:
            return f(*a, **k)
        finally:
            cpu[key or name] += time.thread_time_ns() - t; calls[key or name] += 1
            if name == "_grace_period":
                cpu["membarrier wall"] += time.monotonic_ns() - w
    setattr(obj, name, wrap)

for name in ("bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_map_lookup_batch", "bpf_map_update_batch",
             "bpf_map_lookup_and_delete_batch"):
    timed(lb.lib, name)
timed(S, "_grace_period", "membarrier")
timed(S.SlotCaches, "take", "slots take")
timed(R, "merge_flows"); timed(R, "merge_reopens")
timed(R.Recorder, "_take_map", "hash map take")
timed(R.Recorder, "flush_flows", "flush (all)")
timed(R.Recorder, "poll_once", "drain")
config = SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino)
out = {}
if build == "-":
    rec = R.Recorder([NullSink()], config)
    rec.start()
    rec_thread["ident"] = threading.get_ident()
    for i in range(flushes + 5):
        if i == 5:  # the first flushes pay first touches
            calls.clear(); cpu.clear()
        rec.flush_flows(drain=False)
        time.sleep(0.02)
    rec_thread["ident"] = None
    n = flushes
    rec.stop(); rec.finish()
else:
    ready = threading.Event()
    rec = R.Recorder([NullSink()], config, on_ready=ready.set)
    def run():
        rec_thread["ident"] = threading.get_ident()
        rec.run()
    th = threading.Thread(target=run, daemon=True); th.start()
    assert ready.wait(90)
    scratch = tempfile.mkdtemp(dir="/var/tmp")
    tree = os.path.join(scratch, "b")
    shutil.copytree(build, tree, symlinks=True)
    time.sleep(2)
    calls.clear(); cpu.clear()
    c0 = time.process_time(); w0 = time.monotonic()
    subprocess.run(["ip", "netns", "exec", netns, "make", "-j2", "-s", *make_args.split()], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    out["window_s"] = time.monotonic() - w0
    out["process_cpu_ms"] = (time.process_time() - c0) * 1e3
    n = max(calls["flush (all)"], 1)
    rec.stop(); th.join(60)
    shutil.rmtree(scratch, ignore_errors=True)
    out["stages_ms"] = {k: round(v * 1e3, 1) for k, v in rec.stats.stages.items()}
out["flushes"] = n
out["per_flush_us"] = {k: round(v / n / 1e3, 1) for k, v in cpu.items()}
out["calls_per_flush"] = {k: round(v / n, 2) for k, v in calls.items()}
print(json.dumps(out))
'''


def run_tree(src: str, netns: str, flushes: int, build: str, make_args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", _CHILD, netns, str(flushes), build, make_args], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    got["load"] = os.getloadavg()[0]
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flush_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, required=True, help="the src/ of the tree to compare with")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--flushes", type=int, default=50, help="without --build: flushes timed per run")
    ap.add_argument("--build", type=Path, default=None, help="a source tree to build while recording")
    ap.add_argument("--make-args", default="", help="what `make -j2 -s` builds")
    a = ap.parse_args(argv)
    mine = os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parent.parent / "src")).split(os.pathsep)[0]
    trees = [("before", str(a.against)), ("after", mine)]
    netns = f"fx-flush-cost-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in trees}
    try:
        for i in range(a.pairs):
            for label, src in (trees if i % 2 == 0 else trees[::-1]):
                r = run_tree(src, netns, a.flushes, str(a.build) if a.build else "-", a.make_args)
                runs[label].append(r)
                print(f"{label}: {json.dumps(r)}", flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    print("medians per flush (µs of CPU; membarrier wall: µs of wall):")
    keys = sorted({k for rs in runs.values() for r in rs for k in r["per_flush_us"]})
    for k in keys:
        med = {label: statistics.median(r["per_flush_us"].get(k, 0.0) for r in rs) for label, rs in runs.items()}
        print(f"  {k:>36}: before {med['before']:8.1f}  after {med['after']:8.1f}")
    if a.build:
        for key in ("process_cpu_ms",):
            med = {label: statistics.median(r[key] for r in rs) for label, rs in runs.items()}
            print(f"  {key:>36}: before {med['before']:8.1f}  after {med['after']:8.1f}")
        for stage in ("flow maps", "flows"):
            med = {label: statistics.median(r["stages_ms"].get(stage, 0.0) for r in rs) for label, rs in runs.items()}
            print(f"  {'stage ' + stage + ' (ms, whole run)':>36}: before {med['before']:8.1f}  after {med['after']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
