"""Analysis benchmark: tree, backtrack and file history on a large generated store.

    python bench/analysis_bench.py --events 1000000            # quick
    python bench/analysis_bench.py --events 10000000 --processes 100000 --write-docs

A generator (``forensix.testing.generator.generate``) writes a realistic host history
through the real store code; each measured command then runs in a fresh Python process
(so peak RSS is that command's own), opening the store, running the analysis and
rendering its output to /dev/null, three times; the table reports the median wall time
and the largest peak RSS. Results go to docs/benchmarks-analysis.md with --write-docs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_MEASURE = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
from forensix.store.embedded import open_reader
from forensix.analysis.processes import tree
from forensix.analysis.graph import backtrack
from forensix.analysis.filehistory import file_history
from forensix.analysis.targets import Target
from forensix.render.tree import render_tree_text
from forensix.render.graph import render_graph
from forensix.render.tables import render
t_import = time.perf_counter()
what, store, arg = sys.argv[1], sys.argv[2], sys.argv[3]
r = open_reader(store)
t1 = time.perf_counter()
out = open(os.devnull, "w")
if what == "tree":
    t = tree(r)
    n = t.num_rows
    ta = time.perf_counter()
    render_tree_text(t, out)
elif what == "backtrack":
    g = backtrack(r, Target("file", path=arg))
    n = len(g.nodes)
    ta = time.perf_counter()
    render_graph(g, "text", out)
elif what == "file":
    t = file_history(r, arg)
    n = t.num_rows
    ta = time.perf_counter()
    render(t, "text", out)
elif what == "sessions":
    from forensix.analysis.sessions import sessions
    t = sessions(r)
    n = t.num_rows
    ta = time.perf_counter()
    render(t, "text", out)
elif what == "report":
    from forensix.analysis.report import build_report
    from forensix.render.report import render_markdown
    rep = build_report(r, Target("file", path=arg))
    n = len(rep.graph.nodes)
    ta = time.perf_counter()
    render_markdown(rep, out)
t2 = time.perf_counter()
print(json.dumps({"query_s": ta - t1, "analysis_s": t2 - t1, "with_open_s": t2 - t_import, "rows": n,
                  "peak_rss_mb": int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024}))
"""

TARGETS: dict[str, float | None] = {"tree": 1.0, "backtrack": 2.0, "file": 0.5, "sessions": None, "report": None}


def _run(what: str, store: Path, arg: str) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", _MEASURE, what, str(store), arg], capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=None, help="default: events / 100")
    ap.add_argument("--store", type=Path, default=None, help="reuse or create this store")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true", help="append the results to docs/benchmarks-analysis.md")
    a = ap.parse_args()
    from forensix.store.embedded import open_writer
    from forensix.testing.generator import generate

    store = a.store or Path(tempfile.mkdtemp(prefix="fxbench-")) / "bench.duckdb"
    gen_s = None
    meta_path = store.with_suffix(".json")
    if not store.exists():
        t = time.perf_counter()
        w = open_writer(store)
        res = generate(w, a.events, a.processes)
        w.close()
        gen_s = time.perf_counter() - t
        meta = {"events": res.events, "processes": res.processes, "flows": res.flows, "target": res.target_file}
        meta_path.write_text(json.dumps(meta))
        print(f"generated {res.events} events, {res.processes} processes, {res.flows} flows "
              f"in {gen_s:.1f} s into {store} ({_store_mib(store):.0f} MiB)", flush=True)
    meta = json.loads(meta_path.read_text())
    load = os.getloadavg()
    results = {}
    for what, arg in (("tree", ""), ("backtrack", meta["target"]), ("file", "/tmp/x.sh"), ("sessions", ""),
                      ("report", meta["target"])):
        runs = [_run(what, store, arg) for _ in range(a.repeat)]
        results[what] = {
            "query_s": statistics.median(x["query_s"] for x in runs),
            "analysis_s": statistics.median(x["analysis_s"] for x in runs),
            "with_open_s": statistics.median(x["with_open_s"] for x in runs),
            "rows": runs[0]["rows"], "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
        }
        x = results[what]
        # this line's shape is parsed by bench/scale.py: keep its prefix
        target = TARGETS[what]
        print(f"{what:<10} {x['analysis_s']:.3f} s (open+analysis+render {x['with_open_s']:.3f} s), "
              f"{x['rows']} rows/objects, peak RSS {x['peak_rss_mb']:.0f} MiB "
              f"[target {'< ' + str(target) + ' s' if target else 'none'}; query alone {x['query_s']:.3f} s]",
              flush=True)
    if a.write_docs:
        _write_docs(meta, results, store, gen_s, load)


_HEADER = """# Analysis benchmarks

Produced by `python bench/analysis_bench.py --events N [--processes P] --write-docs` (quick:
`--events 1000000`). The store is written by `forensix.testing.generator.generate` through the
real store code: a host with systemd services, 20 ssh logins (accepted sockets), cron jobs and
about P short-lived commands (pids reused every 30000), whose events are 43 % opens (15 % for
writing), 33 % flow edges, 17 % mmaps, 3 % connects, and chmod/rename/unlink/setuid/kill; paths
are drawn with a skew (libraries and /etc hot, data files warm, /tmp and /proc cold). One
intrusion is planted: an ssh login that downloads a script with curl, chmods and runs it, and
the script writes /etc/cron.d/evil.

Each command runs three times, each in a fresh Python process (cold DuckDB caches; the file
in the OS page cache): `query` is the analysis, `query + render` adds formatting the output
as text to /dev/null (the targets apply to this), the next column adds opening the store.
The median is shown; peak RSS (VmHWM) is the largest of the three and includes Python,
DuckDB and Arrow. `tree` is the whole tree (every process); `backtrack` starts from
/etc/cron.d/evil with the default filters; `file` is the history of /tmp/x.sh; `report`
builds the full incident report from /etc/cron.d/evil (Markdown, without drawing).
"""


def _store_mib(store: Path) -> float:
    from forensix.store.embedded import store_files

    return sum(p.stat().st_size for p in store_files(store)) / 2**20


def _write_docs(meta: dict[str, object], results: dict[str, dict[str, float]], store: Path,
                gen_s: float | None, load: tuple[float, float, float]) -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-analysis.md"
    if not doc.exists():
        doc.write_text(_HEADER)
    cpu = platform.processor() or platform.machine()
    lines = [f"\n## {meta['events']:,} events, {meta['processes']:,} processes, {meta['flows']:,} flows\n",
             f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; store "
             f"{_store_mib(store):.0f} MiB"
             + (f", generated in {gen_s:.0f} s" if gen_s else "") + f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             + f"; load average before the runs {load[0]:.1f}, after {os.getloadavg()[0]:.1f} (other work shared the CPUs).\n",
             "| command | query (s) | query + render (s) | with opening the store (s) | target (s) | output | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for what, x in results.items():
        target = TARGETS[what]
        ok = "—" if target is None else f"< {target} ({'ok' if x['analysis_s'] < target else 'OVER'})"
        lines.append(f"| `{what}` | {x['query_s']:.3f} | {x['analysis_s']:.3f} | {x['with_open_s']:.3f} | {ok} | "
                     f"{int(x['rows'])} | {x['peak_rss_mb']:.0f} |")
    with doc.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {doc}")


if __name__ == "__main__":
    main()
