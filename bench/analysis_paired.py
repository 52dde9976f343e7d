"""Paired before/after cost of `backtrack`: two source trees, one store, CPU time per query.

    python bench/analysis_paired.py --store /tmp/b.duckdb --before /tmp/base/src --after src [--rounds 3]

The store is one `bench/analysis_bench.py` made (its .json beside it names the target).
Each round runs the backtrack of analysis_bench once per tree, alternating, each in a fresh
Python process that warms up once and keeps the cheapest of five runs; every store query is
timed. CPU time (all threads) is reported beside wall time because on a shared machine wall
time follows the load more than the code: the CPU seconds of the same queries do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_MEASURE = r"""
import json, sys, time
from forensix.analysis.graph import backtrack
from forensix.analysis.targets import Target
from forensix.store.embedded import open_reader
r = open_reader(sys.argv[1])
target = json.load(open(sys.argv[1].rsplit(".", 1)[0] + ".json"))["target"]
orig = r.query
log = []
def timed(sql, params=None):
    c, w = time.process_time(), time.perf_counter()
    out = orig(sql, params) if params is not None else orig(sql)
    log.append((time.process_time() - c, time.perf_counter() - w))
    return out
r.query = timed
backtrack(r, Target("file", path=target))
best = None
for _ in range(5):
    log.clear()
    g = backtrack(r, Target("file", path=target))
    cpu, wall = sum(x[0] for x in log), sum(x[1] for x in log)
    if best is None or cpu < best[0]:
        best = (cpu, wall, len(log), len(g.nodes))
print(json.dumps(dict(zip(("cpu", "wall", "queries", "nodes"), best))))
"""


def _one(src: str, store: str) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", _MEASURE, store], capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONPATH=src))
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--before", required=True, help="src/ of the tree to compare against")
    ap.add_argument("--after", default=os.path.join(os.path.dirname(__file__), "..", "src"))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(a.rounds):
        for name in ("before", "after"):
            runs[name].append(_one(getattr(a, name), a.store))
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("cpu", "wall")} for k, v in runs.items()}
    b, f = med["before"], med["after"]
    print(f"backtrack  before: {b['cpu']:.3f} s CPU ({b['wall']:.3f} s wall), {int(runs['before'][0]['queries'])} queries"
          f"  after: {f['cpu']:.3f} s CPU ({f['wall']:.3f} s wall), {int(runs['after'][0]['queries'])} queries"
          f"  CPU {(f['cpu'] / b['cpu'] - 1) * 100:+.1f} %  [{a.rounds} rounds, load {os.getloadavg()[0]:.1f}]")


if __name__ == "__main__":
    main()
