"""python -m bench [--quick] [--only WORKLOAD,...] [--recorders NAME,...] [--reps N]

Runs each workload under each recorder configuration, alternating the configurations
within every repetition, and writes docs/benchmarks.md and docs/benchmarks.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.compile import CompileWorkload
from bench.machine import machine_info
from bench.micro import MicroWorkload
from bench.recorders import (
    RECORDERS,
    ForensixProfiled,
    Recorder,
    foreign_tracing_progs,
    forensix_version,
    make_recorders,
)
from bench.report import write_markdown
from bench.scale import ScaleWorkload, analysis_latency
from bench.storm import StormWorkload
from bench.web import WebConnWorkload, WebWorkload
from bench.workload import Workload

WORKLOADS: dict[str, type[Workload]] = {}
for _cls in (MicroWorkload, WebWorkload, WebConnWorkload, CompileWorkload, StormWorkload, ScaleWorkload):
    if _cls.name in WORKLOADS:
        raise ValueError(f"workload {_cls.name} registered twice")
    WORKLOADS[_cls.name] = _cls

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def _one_run(w: Workload, rec: Recorder, scratch: Path) -> dict[str, Any]:
    w.before_run(rec)
    started = False
    try:
        if rec.host_wide:
            rec.start(scratch)
            started = True
        foreign = foreign_tracing_progs(rec.bpf_ids())
        metrics = w.measure(rec)
    except BaseException:
        if started:
            try:
                rec.stop()
            except Exception as e:  # noqa: BLE001 - the measurement's error is the one to raise
                log(f"{rec.name}: stopping after a failed run also failed: {e}")
        w.after_run(rec)
        raise
    stats = rec.stop(w.inspect_forensix if rec.name == "forensix" else None)
    w.after_run(rec)
    return {"metrics": metrics, "events": stats.events, "lost": stats.lost, "detail": stats.detail,
            "foreign_bpf_progs": foreign}


# The configurations a target is judged on: they run back to back in every repetition, and
# in the extra, paired repetitions (``--paired-reps``) that auditd and strace sit out
# (forensix-agent: the fleet's figure of the same targets, when asked for).
PAIRED = ("none", "forensix", "floor", "base", "forensix-agent")


def run_order(usable: list[Recorder], rep: int, reps: int) -> list[Recorder]:
    """The configurations of repetition ``rep``, in the order they run.

    The baseline, forensix and the floor run back to back, their order rotating, so each
    repetition's ratios compare builds a minute apart, not across strace's minutes; the
    others (in the first ``reps`` repetitions only) run before or after that group in turn."""
    core = [r for r in usable if r.name in PAIRED]
    rest = [r for r in usable if r.name not in PAIRED] if rep < reps else []
    if core:
        k = rep % len(core)
        core = core[k:] + core[:k]
    if rest:
        k = rep % len(rest)
        rest = rest[k:] + rest[:k]
    return core + rest if rep % 2 == 0 else rest + core


def run_workload(
    w: Workload, recorders: list[Recorder], reps: int, scratch: Path, profile: bool = False,
    paired_reps: int = 0,
) -> dict[str, Any]:
    """``profile``: after the scored repetitions, one more forensix run with BPF run-time
    statistics on (the per-program table), kept apart from the scored figures.
    ``paired_reps``: when larger than ``reps`` and the workload takes them (``w.paired``),
    the configurations of PAIRED run that many repetitions, the others ``reps``."""
    result: dict[str, Any] = {
        "title": w.title,
        "description": w.describe(),
        "metrics": [m.__dict__ for m in w.metrics],
        "runs": [],
        "skipped": {},
    }
    usable = []
    for rec in recorders:
        if rec.name not in w.recorders:
            continue
        why = rec.check()
        if why:
            result["skipped"][rec.name] = why
            log(f"{w.name}: {rec.name} skipped: {why}")
        else:
            usable.append(rec)
    w.prepare()
    for rep in range(max(reps, paired_reps) if w.paired else reps):
        for rec in run_order(usable, rep, reps):
            t0 = time.monotonic()
            try:
                r = _one_run(w, rec, scratch)
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                log(f"{w.name}/{rec.name} rep {rep}: FAILED {e}")
                result["runs"].append({
                    "recorder": rec.name, "rep": rep,
                    "error": f"{type(e).__name__}: {e}"[:2000],
                    "traceback": traceback.format_exc()[-3000:],
                })
                continue
            r.update(recorder=rec.name, rep=rep, seconds=time.monotonic() - t0,
                     loadavg_1m=os.getloadavg()[0])
            result["runs"].append(r)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
            log(f"{w.name}/{rec.name} rep {rep}: {shown} events={r['events']} lost={r['lost']}")
    if profile and any(rec.name == "forensix" for rec in usable):
        rec = ForensixProfiled()
        try:
            r = _one_run(w, rec, scratch)
            r.update(recorder=rec.name, rep=reps, loadavg_1m=os.getloadavg()[0])
            result["runs"].append(r)
            log(f"{w.name}/{rec.name} (unscored, BPF statistics on): events={r['events']}")
        except Exception as e:  # noqa: BLE001 - reported, never fatal
            log(f"{w.name}/{rec.name}: FAILED {e}")
    w.finish()
    result["extra"] = w.extra()
    return result


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``new``'s workloads (and analysis) in place of its own, noting when."""
    for name, w in new["workloads"].items():
        w["rerun"] = (f"{new['started']} ({new['mode']} mode, {new['repetitions']} repetitions, "
                      f"forensix {new['forensix'].get('commit')})")
        base["workloads"][name] = w
    if "analysis" in new:
        base["analysis"] = new["analysis"]
    base.setdefault("merged", []).append(
        {"started": new["started"], "workloads": list(new["workloads"]), "forensix": new["forensix"]})
    return base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions (< 5 min)")
    ap.add_argument("--only", default="", help=f"comma list of {','.join(WORKLOADS)}")
    ap.add_argument("--recorders", default=",".join(n for n in RECORDERS if n not in ("base", "forensix-agent")),
                    help=f"comma list of {','.join(RECORDERS)} (base: forensix from BENCH_BASE_SRC, "
                         "for a before/after in one run)")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                    help="one extra, unscored forensix run per workload with BPF statistics on, "
                    "for the per-program table (default: on, off with --quick)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 2)")
    ap.add_argument("--paired-reps", type=int, default=None,
                    help="repetitions of the baseline, forensix and the floor on compile, web and "
                    "micro, back to back, for the paired ratios the targets are judged on; auditd "
                    "and strace run --reps of them (default 10; quick: --reps)")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown output (default docs/benchmarks.md; quick: docs/benchmarks-quick.md)")
    ap.add_argument("--json", type=Path, default=None, help="raw JSON output (beside --out)")
    ap.add_argument("--scratch", type=Path, default=None, help="work directory (default a temp dir)")
    ap.add_argument("--analysis-sizes", default="",
                    help="event counts for the tree/backtrack/file latencies (default 1000000; "
                    "quick 100000), e.g. 1000000,10000000")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only re-render the Markdown from a raw JSON of an earlier run")
    ap.add_argument("--merge-into", type=Path, default=None, metavar="JSON",
                    help="run the chosen workloads and replace their results in this earlier "
                    "run's raw JSON (then re-render its Markdown)")
    a = ap.parse_args(argv)
    if a.render is not None:
        out = a.out or a.render.with_suffix(".md")
        write_markdown(json.loads(a.render.read_text()), out, a.render)
        log(f"wrote {out}")
        return 0

    names = [n for n in a.only.split(",") if n] or list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            ap.error(f"unknown workload {n!r}; choose from {', '.join(WORKLOADS)}")
    rec_names = [n for n in a.recorders.split(",") if n]
    for n in rec_names:
        if n not in RECORDERS:
            ap.error(f"unknown recorder {n!r}; choose from {', '.join(RECORDERS)}")
    if "none" not in rec_names:
        rec_names.insert(0, "none")
    reps = a.reps or (2 if a.quick else 3)
    paired_reps = a.paired_reps if a.paired_reps is not None else (reps if a.quick else 10)
    suffix = "-quick" if a.quick else ""
    out = a.out or ROOT / "docs" / f"benchmarks{suffix}.md"
    out_json = a.json or out.with_suffix(".json")

    scratch = a.scratch or Path(tempfile.mkdtemp(prefix="forensix-bench-", dir="/var/tmp"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if a.quick else "full",
        "repetitions": reps,
        "paired_repetitions": paired_reps,
        "machine": machine_info(),
        "recorders": rec_names,
        "forensix": forensix_version(),
        "workloads": {},
    }
    t0 = time.monotonic()
    try:
        for n in names:
            w = WORKLOADS[n](a.quick, scratch)
            why = w.check()
            if why:
                log(f"{n}: skipped: {why}")
                report["workloads"][n] = {"title": w.title, "skipped_all": why}
                continue
            log(f"{n}: {w.describe()}")
            report["workloads"][n] = run_workload(
                w, make_recorders(rec_names), reps, scratch,
                profile=a.profile if a.profile is not None else not a.quick,
                paired_reps=paired_reps)
        if "scale" in names:
            sizes = [int(x) for x in a.analysis_sizes.split(",") if x] if a.analysis_sizes else (
                [100_000] if a.quick else [1_000_000])
            log(f"analysis latency at {sizes} events (bench/analysis_bench.py)")
            report["analysis"] = analysis_latency(sizes, scratch)
    finally:
        if a.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = time.monotonic() - t0
    if a.merge_into is not None:
        report = _merge(json.loads(a.merge_into.read_text()), report)
        out_json = a.merge_into
        out = a.out or a.merge_into.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    write_markdown(report, out, out_json)
    log(f"wrote {out} and {out_json} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
