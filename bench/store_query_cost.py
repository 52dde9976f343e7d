"""What a store layout costs its readers: ``python -m bench.store_query_cost OLD OLD_SRC NEW NEW_SRC``.

Why: a layout change (store/codec.py) is paid by every query, and on a shared machine wall
time follows the load more than the code. So each store is read by its own tree (OLD_SRC,
NEW_SRC: src/ directories, e.g. a pinned copy of the commit before), in a fresh process per
round, rounds alternating, and CPU time (all threads) is reported beside wall time, best of
the rounds.

Two sets: raw queries over the views (``--queries``, the default; best of 5 per process:
lookups by path, raw path and inode, one process's rows, a one-second window, a count over
every row, the whole table, who connected to an address, one process's connections, the peers
of every connect and accept, one process's exec and exit) on two stores of the same rows (``bench.store_replay`` of one
recording by each tree); and the analyses of ``bench/analysis_bench.py`` (``--analyses``:
tree, backtrack, file, report, each a fresh process) on two stores it generated, one per
tree (``--store`` there). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

_QUERIES = r'''
import json, sys, time
from forensix.store.embedded import DuckDBStore
qs = json.loads(sys.argv[2])
r = DuckDBStore(sys.argv[1], read_only=True)
out = {}
for k, q in qs.items():
    r.query(q)
    best = (1e9, 1e9)
    for _ in range(5):
        c, w = time.process_time(), time.perf_counter()
        r.query(q)
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    out[k] = best
print(json.dumps(out))
'''

_PROBE = r'''
import json, sys
from forensix.store.embedded import DuckDBStore
r = DuckDBStore(sys.argv[1], read_only=True)
one = lambda sql: r.query(sql).to_pylist()[0]
p = one("SELECT file_path AS p, count(*) AS n FROM events WHERE file_path IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 1")["p"]
print(json.dumps({
    "path": p,
    "inode": one(f"SELECT file_inode AS i FROM events WHERE file_path = '{p}' LIMIT 1")["i"],
    "entity": one("SELECT process_entity_id AS e, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 1")["e"],
    "t0": one("SELECT min(ts) AS t FROM events")["t"],
    # the address connected to most, and the process that connected most (None: no network rows)
    "ip": (r.query("SELECT destination_ip AS i, count(*) AS n FROM events WHERE destination_ip IS NOT NULL "
                   "GROUP BY 1 ORDER BY 2 DESC LIMIT 1").to_pylist() or [{"i": None}])[0]["i"],
    "net_entity": (r.query("SELECT process_entity_id AS e, count(*) AS n FROM events WHERE event_category = 'network' "
                           "GROUP BY 1 ORDER BY 2 DESC LIMIT 1").to_pylist() or [{"e": 0}])[0]["e"],
}))
'''


def queries(probe: dict[str, object]) -> dict[str, str]:
    """Constants, not subqueries: the analyses pass them as parameters, and DuckDB plans a
    join on what it can estimate."""
    p, t0 = probe["path"], int(probe["t0"])  # type: ignore[call-overload]
    return {
        "path =": f"SELECT count(*) FROM events WHERE file_path = '{p}'",
        "path LIKE '%/name'": f"SELECT count(*) FROM events WHERE file_path LIKE '%/{str(p).rsplit('/', 1)[-1]}'",
        "raw path =": "SELECT count(*) FROM events WHERE file_path_raw = 'config.h'",
        "inode =": f"SELECT count(*) FROM events WHERE file_inode = {probe['inode']}",
        "edges of a path": f"SELECT entity_id, read_bytes FROM flows WHERE file_path = '{p}'",
        "one process, every column": f"SELECT * FROM events WHERE process_entity_id = {probe['entity']} ORDER BY ts",
        "1 s window, every column": f"SELECT * FROM events WHERE ts BETWEEN {t0 + 60 * 10**9} AND {t0 + 61 * 10**9}",
        "count by action (every row)": "SELECT event_action, count(*) FROM events GROUP BY 1",
        "the whole table": "SELECT * FROM events",
        # the network's questions (network rows are a table of their own from format /17 on)
        "who connected to an address": f"SELECT process_entity_id, event_action, count(*) FROM events "
                                       f"WHERE destination_ip = '{probe['ip']}' GROUP BY ALL",
        "one process's connections": f"SELECT * FROM events WHERE process_entity_id = {probe['net_entity']} "
                                     f"AND event_category = 'network' ORDER BY ts",
        "peers of every connect and accept": "SELECT destination_ip, destination_port, count(*) FROM events "
                                             "WHERE event_action IN ('connect', 'accept') GROUP BY ALL",
        "one process's exec and exit": f"SELECT * FROM events WHERE process_entity_id = {probe['entity']} "
                                       f"AND event_action IN ('exec', 'exit')",
    }


def _child(src: str, *args: str) -> tuple[dict[str, object], float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", *args], check=False, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=src))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"{args[1]} with {src}: {p.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return json.loads(p.stdout.strip().splitlines()[-1]), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("old_src")
    ap.add_argument("new", type=Path)
    ap.add_argument("new_src")
    ap.add_argument("--analyses", action="store_true", help="analysis_bench's commands instead of raw queries")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    pairs = [(str(a.old), a.old_src), (str(a.new), a.new_src)]
    best: dict[tuple[str, str], tuple[float, float]] = {}
    loads = []
    if a.analyses:
        from bench.analysis_bench import _MEASURE

        meta = json.loads(a.old.with_suffix(".json").read_text())
        cmds = {"tree": "", "backtrack": str(meta["target"]), "file": "/tmp/x.sh", "report": str(meta["target"])}
    else:
        probe, _ = _child(a.new_src, _PROBE, str(a.new))
        qs = queries(probe)
    for i in range(a.rounds):
        for store, src in pairs if i % 2 == 0 else pairs[::-1]:
            if a.analyses:
                for what, arg in cmds.items():
                    out, cpu = _child(src, _MEASURE, what, store, arg)
                    t = (float(out["analysis_s"]), cpu)  # type: ignore[arg-type]
                    best[(store, what)] = min(best.get((store, what), t), t)
            else:
                res, _ = _child(src, _QUERIES, store, json.dumps(qs))
                for k, v in res.items():
                    t = (float(v[0]), float(v[1]))  # type: ignore[index]
                    best[(store, k)] = min(best.get((store, k), t), t)
        loads.append(os.getloadavg()[0])
    names = list(cmds) if a.analyses else list(qs)
    unit, scale = ("s", 1.0) if a.analyses else ("ms", 1000.0)
    print(f"load average {min(loads):.1f}-{max(loads):.1f}; best of {a.rounds} rounds; wall / CPU {unit}"
          + ("; CPU: the whole process, Python's start-up included" if a.analyses else ""))
    print(f"| {'query' if not a.analyses else 'analysis'} | old wall | old CPU | new wall | new CPU | CPU new/old |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in names:
        o, n = best[(pairs[0][0], k)], best[(pairs[1][0], k)]
        print(f"| {k} | {o[0] * scale:.1f} | {o[1] * scale:.1f} | {n[0] * scale:.1f} | {n[1] * scale:.1f} | "
              f"{n[1] / max(o[1], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
