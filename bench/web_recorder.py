"""What ``forensix record`` itself spends on the web workloads: its CPU by thread, per tree.

    python -m bench.web_recorder --tree main=/clone/src --tree new=src --workload web --reps 6

nginx and wrk run in a network namespace of their own, and each tree's ``forensix record
--netns`` records only that namespace: on a shared host the recorder of the whole host
stores everyone's events (other engineers' builds and tests were most of its rows), here
only the workload's. For each repetition the trees alternate (the order rotates); the
figure is the CPU (user + system) of the recorder's process tree, every thread and child,
over the wrk window, after the recorder said it records and one more second (start-up is
not in it). CPU that a recorder spends is taken from nginx and wrk on two busy cores, so
it is the part of the throughput gap the recorder's own work makes; the sensor's programs
are in the workload's CPU, not here (bench.web_kernel measures those).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree(root: int) -> dict[str, float]:
    """CPU seconds of every thread of ``root`` and its descendants, by 'pid/tid/name'."""
    out: dict[str, float] = {}
    todo = [root]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                name = stat.split("(", 1)[1].rsplit(")", 1)[0]
                f = stat.rsplit(")", 1)[1].split()
                out[f"{pid}/{tid}/{name}"] = (int(f[11]) + int(f[12])) / tick
                todo += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def _in_netns(netns: str, argv: list[str]) -> int:
    """Run this module's inner part inside the namespace (nsenter changes the network
    namespace only: bpffs and tracefs stay the host's)."""
    return subprocess.call(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-m", "bench.web_recorder",
                            "--inside", netns, *argv], env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})


def _py_spy(out: str, pid: int, label: str, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the recorder (its keeper too) over the window: collapsed stacks with
    thread names, for flame graphs or a grep (``--py-spy DIR``; its own CPU is another process's)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--threads",
                             "--subprocesses", "--nonblocking", "--duration", str(seconds),
                             "-o", str(Path(out) / f"{label}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _print_stop(src: str, store: Path, name: str) -> None:
    """The recorder's stop record (its CPU by thread and the drainer's by stage), from the store."""
    code = ("import sys; from forensix.store.embedded import DuckDBStore; s = DuckDBStore(sys.argv[1], read_only=True); "
            "print(s.query(\"SELECT message FROM events WHERE event_action = 'stop'\").column(0)[0])")
    got = subprocess.run([sys.executable, "-c", code, str(store)], check=False, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(src).resolve())})
    print(f"{name} stop record: {(got.stdout or got.stderr).strip()}", file=sys.stderr, flush=True)


def _inner(a: argparse.Namespace) -> int:
    from bench.forensix_ready import wait_until_recording
    from bench.recorders import Recorder
    from bench.web import WebConnWorkload, WebWorkload

    trees = [(k, v) for k, v in (t.split("=", 1) for t in a.tree)]
    scratch = Path(tempfile.mkdtemp(prefix="fx-web-recorder-"))
    w = (WebConnWorkload if a.workload == "web-conn" else WebWorkload)(False, scratch)
    w.prepare()
    w.before_run(Recorder())
    cpu: dict[str, list[float]] = {k: [] for k, _ in trees}
    threads: dict[str, dict[str, list[float]]] = {k: {} for k, _ in trees}
    rps: dict[str, list[float]] = {k: [] for k, _ in trees}
    keeper: dict[str, list[float]] = {k: [] for k, _ in trees}  # the store keeper's CPU (nice 19), per repetition
    loads = []
    try:
        for rep in range(a.reps):
            k = rep % len(trees)
            for name, src in trees[k:] + trees[:k]:
                store = scratch / f"{name}-{rep}.duckdb"
                log = store.with_suffix(".log")
                p = subprocess.Popen([sys.executable, "-m", "forensix", "record", "--store", str(store),
                                      "--netns", f"/run/netns/{a.inside}"],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(Path(src).resolve())})
                try:
                    wait_until_recording(p, store, log)  # type: ignore[arg-type]
                    time.sleep(1.0)
                    spy = _py_spy(a.py_spy, p.pid, f"{name}-{rep}", a.seconds) if a.py_spy else None
                    t0 = _tree(p.pid)
                    out = w._wrk(a.seconds)
                    t1 = _tree(p.pid)
                    if spy is not None:
                        spy.wait(30)
                finally:
                    p.send_signal(signal.SIGINT)
                    p.wait(120)
                    if a.stop_record:
                        _print_stop(src, store, name)
                    for f in scratch.glob(store.name + "*"):
                        if f.is_file():
                            f.unlink()
                spent: dict[str, float] = {}  # by thread name: threads of one name are added up
                for key, v in t1.items():
                    th = key.split("/", 2)[2]
                    spent[th] = spent.get(th, 0.0) + v - t0.get(key, 0.0)
                cpu[name].append(sum(spent.values()))
                keeper[name].append(spent.get("fx-keeper", 0.0))
                for th, v in spent.items():
                    threads[name].setdefault(th, []).append(v)
                rps[name].append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
            loads.append(os.getloadavg()[0])
            print(f"rep {rep}: " + ", ".join(f"{n} {cpu[n][-1]:.2f} s" for n, _ in trees) + f"; load {loads[-1]:.1f}",
                  file=sys.stderr, flush=True)
    finally:
        w.after_run(Recorder())
    print(f"{w.describe()}, in a network namespace recorded alone (`forensix record --netns`); {a.reps} repetitions "
          f"of {a.seconds} s, trees alternating; 1-minute load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| tree | recorder CPU over the window (s, median, range) | per thread (median s) | req/s (median) "
          "| µs of recorder CPU per request (median; without the keeper) |")
    print("|---|---|---|---|---|")
    for name, _ in trees:
        per = ", ".join(f"{th} {statistics.median(v):.2f}" for th, v in sorted(threads[name].items())
                        if statistics.median(v) >= 0.01)
        reqs = [r * a.seconds for r in rps[name]]
        per_req = statistics.median(c / n * 1e6 for c, n in zip(cpu[name], reqs, strict=True))
        no_keeper = statistics.median((c - k) / n * 1e6 for c, k, n in zip(cpu[name], keeper[name], reqs, strict=True))
        print(f"| {name} | {statistics.median(cpu[name]):.2f} ({min(cpu[name]):.2f}-{max(cpu[name]):.2f}) | {per} "
              f"| {statistics.median(rps[name]):,.0f} | {per_req:.1f}; {no_keeper:.1f} |")
    if len(trees) > 1:
        first = trees[0][0]
        for name, _ in trees[1:]:
            ratios = [x / b for x, b in zip(cpu[name], cpu[first], strict=True) if b > 0]
            print(f"\n{name} / {first}, paired: mean {statistics.mean(ratios):.2f} "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.web_recorder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=SRC",
                    help="a tree's src/ directory (its sensor built); the first is the reference")
    ap.add_argument("--workload", choices=["web", "web-conn"], default="web")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--py-spy", default=None, metavar="DIR",
                    help="sample each recorder with py-spy over the window into DIR/TREE-REP.txt (collapsed stacks)")
    ap.add_argument("--stop-record", action="store_true",
                    help="print each recorder's stop record (CPU by thread, the drainer's by stage)")
    ap.add_argument("--inside", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inside:
        return _inner(a)
    netns = f"fx-web-rec-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        return _in_netns(netns, sys.argv[1:] if argv is None else argv)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


if __name__ == "__main__":
    sys.exit(main())
