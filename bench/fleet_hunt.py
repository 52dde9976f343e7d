"""Fleet hunt benchmark: `forensix hunt --store clickhouse://...` over bench/fleet.py's fleet.

    python bench/fleet_hunt.py [--events 100000000] [--hosts 1000] [--runs 3]
                               [--cluster-dir DIR] [--out docs/benchmarks-fleet-hunt.md]

Generates the fleet of bench/fleet.py (the same INSERT ... SELECT from system.numbers, in a
local 2-shard cluster of Debian's ClickHouse 18.16) and times the hunt of the curated rules
plus SigmaHQ's Linux rules the project tests with, in ClickHouse (``rules.fleet_hunt``):
Sigma rules only, then with the built-in detectors (which pull their rows). With
``--cluster-dir`` a cluster started there (``scripts/clickhouse.sh start``) is used and a
fleet already generated in it is reused. Load averages are printed beside every figure:
other work on the machine slows these runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

# the fleet of bench/fleet.py, generated the same way
from fleet import load_fleet

from forensix.rules import default_detectors, load_rules
from forensix.rules.fleet_hunt import fleet_hunt
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.clickhouse import load_cluster, start_cluster, stop_cluster

DB = "fleetbench"
SIGMAHQ = ROOT / "tests" / "rules" / "fixtures" / "sigmahq"


def _load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def generate(url: str, events: int, hosts: int) -> float:
    st = ClickHouseStore(url, write=True)
    try:
        have = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        if have >= events:
            return 0.0
        return load_fleet(st, events, hosts)
    finally:
        st.close()


def measure(url: str, runs: int) -> list[dict[str, Any]]:
    rs = load_rules([SIGMAHQ])
    out = []
    with ClickHouseStore(url) as st:
        n = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        for label, detectors in (("Sigma rules", []), ("Sigma rules + built-in detectors", default_detectors())):
            for i in range(runs):
                before = _load()
                t = time.monotonic()
                res = fleet_hunt(st, rs.ok, detectors)
                s = time.monotonic() - t
                row = {"what": label, "run": i + 1, "seconds": s, "events": n, "rules": len(res.in_clickhouse),
                       "fallback": len(res.fallback), "matched": res.matched_rows, "replayed": res.replayed_rows,
                       "alerts": res.alerts.num_rows, "load_before": before, "load_after": _load()}
                print(row, flush=True)
                out.append(row)
    return out


def render(a: argparse.Namespace, rows: list[dict[str, Any]], gen_s: float) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "# Fleet hunt benchmark (ClickHouse)",
        "",
        (f"Measured {now} on {platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}) with "
         f"`python bench/fleet_hunt.py --events {a.events} --hosts {a.hosts} --runs {a.runs}`."),
        (f"The fleet of bench/fleet.py ({rows[0]['events']:,} events of {a.hosts:,} hosts"
         + (f", generated in {gen_s:.0f} s" if gen_s else ", generated before") + ") in a local 2-shard cluster of"),
        "Debian's ClickHouse 18.16 on the same 2 CPUs; `forensix hunt --store clickhouse://...` with the curated",
        "rules and SigmaHQ's Linux rules of tests/rules/fixtures/sigmahq, run in ClickHouse on both shards at once.",
        "Load average (1, 5, 15 min) before and after each run: other engineers' work shares the machine.",
        "",
        "| hunt | run | seconds | rules in ClickHouse | over slices | rows matched | rows replayed | alerts | load before | load after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['what']} | {r['run']} | {r['seconds']:.2f} | {r['rules']} | {r['fallback']} | "
                     f"{r['matched']:,} | {r['replayed']:,} | {r['alerts']} | {r['load_before']} | {r['load_after']} |")
    lines += ["", "rows matched: rows the shards sent back (Sigma matches); rows replayed: rows pulled for the",
              "built-in detectors, which keep per-process state in time order (docs/fleet.md).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cluster-dir", help="use the cluster started in this directory (and keep its data)")
    ap.add_argument("--out", default="docs/benchmarks-fleet-hunt.md")
    a = ap.parse_args()
    own = a.cluster_dir is None
    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="fx-fleet-hunt-")) / "ch", shards=2) if own \
        else load_cluster(a.cluster_dir)
    try:
        url = cluster.url(database=DB)
        gen_s = generate(url, a.events, a.hosts)
        print(f"generated in {gen_s:.0f} s (load {_load()})", flush=True)
        rows = measure(url, a.runs)
    finally:
        if own:
            stop_cluster(cluster)
    report = render(a, rows, gen_s)
    Path(a.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
