"""ui: each view's first paint in a real chromium, on a large generated store.

    python bench/ui.py --events 1000000                        # quick
    python bench/ui.py --events 10000000 --processes 100000 --store /tmp/ui-1e7.duckdb --write-docs

The store is written by ``forensix.testing.generator.generate`` (a host with daemons, ssh
logins, cron jobs, pid reuse and one planted intrusion), then ``forensix hunt --save`` puts
the built-in rules' alerts in it. ``forensix ui`` serves it (a separate process, as a user
runs it); Debian's chromium (Playwright) opens each view. Figures per view:

* ``api``: the whole JSON twin's time (one request over HTTP, the browser aside); the
  incident and the timeline pages ask for it in parts, the first of which is all their
  first paint waits for, so for them it is more than the page needs;
* ``first paint``: from the start of navigation until the page has drawn the view's data
  (``main[data-drawn-ms]``, set by app.js right after drawing), the target being < 1 s;
* for the incident, ``graph``: until Cytoscape has laid the graph out.

The first visit of each view is shown apart (``cold``: the server computes what it keeps,
e.g. the session attribution, and DuckDB reads from the page cache), then the median of
the next ``--repeat`` visits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks-ui.md"
TARGET_S = 1.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _build(store: Path, events: int, processes: int | None) -> dict[str, Any]:
    from forensix.store.embedded import open_writer
    from forensix.testing.generator import generate

    t = time.perf_counter()
    w = open_writer(store)
    res = generate(w, events, processes)
    w.close()
    built = time.perf_counter() - t
    subprocess.run([sys.executable, "-m", "forensix", "hunt", "--store", str(store), "--save"], check=True,
                   stdout=subprocess.DEVNULL)
    return {"events": res.events, "processes": res.processes, "build_s": built}


def _get(base: str, path: str) -> tuple[Any, float]:
    t = time.perf_counter()
    with urllib.request.urlopen(base + path, timeout=300) as r:
        body = json.load(r)
    return body, time.perf_counter() - t


def _views(base: str) -> list[tuple[str, str]]:
    """The views to measure, with the ids an investigator would click through to."""
    ov, _ = _get(base, "/overview.json")
    cron = next((r["rule_id"] for r in ov["alerts_by_rule"] if "cron" in (r["rule_title"] or "").lower()), "")
    alerts, _ = _get(base, "/alerts.json?" + urllib.parse.urlencode({"rule": cron, "limit": 1000}))
    alert = next((a for a in alerts["alerts"] if "/etc/cron.d/evil" in (a["summary"] or "")), None)
    inc_target = urllib.parse.urlencode({"alert": alert["alert_id"]} if alert else {"target": "/etc/cron.d/evil"})
    hits, _ = _get(base, "/search.json?" + urllib.parse.urlencode({"q": "-o /tmp/x.sh"}))
    curl = hits["results"][0]["url"]
    proc, _ = _get(base, curl + ".json")
    mid = ov["coverage"]["t_ms"][60] / 1000
    mid_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mid))
    end_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mid + 60))
    return [
        ("overview", "/overview"),
        ("alerts", "/alerts"),
        ("alerts, filtered", "/alerts?" + urllib.parse.urlencode({"level": "high", "rule": cron})),
        ("incident (from the cron alert)", "/incident?" + inc_target),
        ("sessions", "/sessions"),
        ("session (the intruder's)", f"/session/{proc['session']}"),
        ("process (curl)", curl),
        ("process tree (whole, first page)", "/tree"),
        ("process tree at a time", "/tree?" + urllib.parse.urlencode({"at": mid_iso})),
        ("timeline (whole record, first page)", "/timeline"),
        ("timeline, one minute", "/timeline?" + urllib.parse.urlencode({"from": mid_iso, "to": end_iso})),
        ("timeline, network only", "/timeline?category=network"),
        ("timeline of a session, quiet", "/timeline?" + urllib.parse.urlencode(
            {"session": proc["session"], "quiet": 1})),
        ("file history (/etc/cron.d/evil)", "/file?path=/etc/cron.d/evil"),
        ("search: a command", "/search?q=curl"),
        ("search: a path prefix", "/search?q=/etc/cron"),
        ("search: an address", "/search?q=203.0.113.66"),
    ]


def _paint(page: Any, url: str) -> dict[str, float]:
    page.goto(url)
    page.wait_for_selector("main[data-loaded]", timeout=300_000)
    out = {"paint": float(page.eval_on_selector("main", "m => m.dataset.drawnMs")) / 1000}
    if "/incident" in url:
        page.wait_for_selector("main[data-graph-ms]", timeout=300_000)
        out["graph"] = float(page.eval_on_selector("main", "m => m.dataset.graphMs")) / 1000
    assert page.eval_on_selector("main", "m => m.dataset.loaded") != "error", page.inner_text("main")[:300]
    return out


def measure(store: Path, repeat: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    ui = subprocess.Popen([sys.executable, "-m", "forensix", "ui", "--store", str(store), "--listen", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert ui.stdout is not None
        base = ui.stdout.readline().strip().rsplit("/overview", 1)[0]
        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            for name, path in _views(base):
                cold = _paint(page, base + path)
                runs = [_paint(page, base + path) for _ in range(repeat)]
                api = [_get(base, path.replace("?", ".json?", 1) if "?" in path else path + ".json")[1]
                       for _ in range(repeat)]
                r = {"view": name, "path": path, "cold": cold["paint"],
                     "paint": statistics.median(x["paint"] for x in runs), "api": statistics.median(api)}
                if "graph" in cold:
                    r["graph_cold"] = cold["graph"]
                    r["graph"] = statistics.median(x["graph"] for x in runs)
                results.append(r)
                print(f"{name:40s} cold {r['cold']:6.3f} s  paint {r['paint']:6.3f} s  api {r['api']:6.3f} s"
                      + (f"  graph {r['graph']:6.3f} s" if "graph" in r else ""), flush=True)
            browser.close()
        return results
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def _write_docs(meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    load = os.getloadavg()
    lines = [
        f"\n## {meta['events']:,} events, {meta['processes']:,} processes\n",
        (f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, chromium (Debian) headless; store "
         f"{meta['mib']:.0f} MiB; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average after the runs "
         f"{load[0]:.1f} (other work shared the CPUs). Median of {meta['repeat']} visits after a first (cold) one.\n"),
        "| view | first paint, cold (s) | first paint (s) | whole JSON twin (s) | target | graph laid out (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = "ok" if r["paint"] < TARGET_S else "MISSED"
        graph = f"{r['graph']:.3f} (cold {r['graph_cold']:.3f})" if "graph" in r else ""
        lines.append(f"| {r['view']} | {r['cold']:.3f} | {r['paint']:.3f} | {r['api']:.3f} | < {TARGET_S:.0f} s ({ok}) "
                     f"| {graph} |")
    if not DOC.exists():
        DOC.write_text("# Web UI benchmarks\n\nProduced by `python bench/ui.py --events N [--processes P] "
                       "[--store PATH] --write-docs`; what each figure means is in the docstring of bench/ui.py.\n")
    with DOC.open("a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=None, help="default: events / 100")
    ap.add_argument("--store", type=Path, default=None, help="reuse or create this store")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true", help="append the figures to docs/benchmarks-ui.md")
    a = ap.parse_args()
    store = a.store or Path(f"/tmp/forensix-bench-ui-{a.events}.duckdb")
    if not store.exists():
        print(f"building {store} ({a.events:,} events) ...", flush=True)
        print(_build(store, a.events, a.processes), flush=True)
    elif not _has_alerts(store):
        subprocess.run([sys.executable, "-m", "forensix", "hunt", "--store", str(store), "--save"], check=True,
                       stdout=subprocess.DEVNULL)
    meta = _meta(store) | {"repeat": a.repeat}
    results = measure(store, a.repeat)
    if a.write_docs:
        _write_docs(meta, results)
        print(f"wrote {DOC}")


def _has_alerts(store: Path) -> bool:
    from forensix.store.embedded import open_reader

    r = open_reader(store)
    try:
        return bool(r.query("SELECT count(*) AS n FROM alerts").column("n")[0].as_py())
    finally:
        r.close()


def _meta(store: Path) -> dict[str, Any]:
    from forensix.store.embedded import open_reader, store_files

    r = open_reader(store)
    try:
        n = r.query("SELECT (SELECT count(*) FROM events) AS e, "
                    "(SELECT count(DISTINCT entity_id) FROM processes) AS p").to_pylist()[0]
    finally:
        r.close()
    return {"events": n["e"], "processes": n["p"], "mib": sum(f.stat().st_size for f in store_files(store)) / 2**20}


if __name__ == "__main__":
    main()
