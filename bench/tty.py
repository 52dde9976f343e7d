"""python -m bench.tty [--reps N] [--quick]: the cost of terminal capture and of artifact capture.

Terminal capture: ``yes | head -c 200M`` written into a real pty (a reader drains the
master), with forensix recording without terminal capture, and with it (default rate
limit: most of the 200 MB is cut and counted, as it would be on a host). Artifact capture:
an exec storm of 3,000 fork+exec of one binary, and of 300 distinct binaries (10 runs
each), with and without preserving executed files. Each figure is the workload's own wall
time, alternating the configurations within every repetition, plus the recorder's CPU.

Writes docs/benchmarks-tty.md. The machine is shared: timings are noisy (see the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks-tty.md"

CONFIGS = {
    "tty": {
        "no tty capture": ["--no-tty", "--no-artifacts"],
        "tty capture (256 KiB/s per terminal)": ["--no-artifacts"],
        "tty capture, no limit in effect (1 GiB/s)": ["--no-artifacts", "--tty-rate", str(1 << 30)],
    },
    "exec": {
        "no artifact capture": ["--no-tty", "--no-artifacts"],
        "artifact capture": ["--no-tty"],
    },
}


# -- workloads (run inside `forensix record -- ...`, after the sensor is attached) --------------
def pty_flood(nbytes: int) -> float:
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    p = subprocess.Popen(["sh", "-c", f"yes | head -c {nbytes}"], stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    got = 0
    while True:
        try:
            b = os.read(master, 1 << 16)
        except OSError:  # EIO: the slave side is closed
            break
        if not b:
            break
        got += len(b)
    p.wait()
    os.close(master)
    return time.perf_counter() - t0


def exec_storm(binaries: list[str], runs: int) -> float:
    t0 = time.perf_counter()
    for i in range(runs):
        pid = os.posix_spawn(binaries[i % len(binaries)], [binaries[i % len(binaries)]], {})
        os.waitpid(pid, 0)
    return time.perf_counter() - t0


def make_binaries(d: Path, n: int) -> list[str]:
    src = Path(shutil.which("true") or "/bin/true").read_bytes()
    out = []
    for i in range(n):
        p = d / f"bin{i:03d}"
        p.write_bytes(src + os.urandom(16))
        p.chmod(0o755)
        out.append(str(p))
    return out


def _workload_main(argv: list[str]) -> None:
    kind, out = argv[0], Path(argv[1])
    if kind == "flood":
        secs = pty_flood(int(argv[2]))
    else:
        secs = exec_storm(json.loads(Path(argv[2]).read_text()), int(argv[3]))
    out.write_text(str(secs))


# -- the driver ------------------------------------------------------------------------------
def run_once(flags: list[str], workload: list[str], scratch: Path) -> tuple[float, float]:
    store = scratch / f"s{time.monotonic_ns()}.duckdb"
    out = scratch / "secs"
    cmd = [sys.executable, "-m", "forensix", "record", "--no-rules", "--store", str(store), *flags, "--",
           sys.executable, "-m", "bench.tty", "--workload", workload[0], str(out), *workload[1:]]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=900,
                       env=os.environ | {"PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)})
    if r.returncode != 0:
        raise SystemExit(f"recording failed: {r.stderr[-2000:]}")
    m = re.search(r"recorder CPU ([0-9.]+)s", r.stderr)
    for f in scratch.glob(store.name + "*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    return float(out.read_text()), float(m.group(1)) if m else float("nan")


def _fmt(xs: list[float]) -> str:
    med = statistics.median(xs)
    return f"{med:.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20 MB and 600 execs instead of 200 MB and 3,000")
    ap.add_argument("--workload", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.workload:
        _workload_main(a.workload)
        return
    nbytes = (20 if a.quick else 200) << 20
    runs = 600 if a.quick else 3000
    with tempfile.TemporaryDirectory(prefix="tty-bench-") as tmp:
        scratch = Path(tmp)
        os.chmod(scratch, 0o755)
        one = scratch / "one.json"
        many = scratch / "many.json"
        (scratch / "b1").mkdir()
        (scratch / "b300").mkdir()
        one.write_text(json.dumps(make_binaries(scratch / "b1", 1)))
        many.write_text(json.dumps(make_binaries(scratch / "b300", 300)))
        workloads = {
            "tty": {f"yes | head -c {nbytes >> 20}M into a pty": ["flood", str(nbytes)]},
            "exec": {f"{runs} fork+exec of one binary": ["exec", str(one), str(runs)],
                     f"{runs} fork+exec of 300 distinct binaries": ["exec", str(many), str(runs)]},
        }
        results: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = {}
        for group, wls in workloads.items():
            for wname, wl in wls.items():
                res: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in CONFIGS[group]}
                for _ in range(a.reps):
                    for cname, flags in CONFIGS[group].items():  # alternated within each repetition
                        secs, cpu = run_once(flags, wl, scratch)
                        res[cname][0].append(secs)
                        res[cname][1].append(cpu)
                        print(f"{wname} | {cname}: {secs:.3f} s, recorder CPU {cpu:.2f} s", flush=True)
                results[(group, wname)] = res
    lines = [
        "# Terminal and artifact capture: cost", "",
        f"`python -m bench.tty` (reps {a.reps}{', quick' if a.quick else ''}), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, on the shared 2-core VM while other engineers "
        "ran their own tests and recorders: **the timings are noisy**; read the spread (min, max) beside each "
        "median. Workload wall time in seconds, then the recorder's CPU seconds for the whole recording "
        "(start-up included). Ratios are of medians, to the first configuration of each table.", "",
    ]
    for (group, wname), res in results.items():
        base = statistics.median(next(iter(res.values()))[0])
        lines += [f"## {wname}", "", "| configuration | workload s (median, min, max) | ratio | recorder CPU s |",
                  "| --- | --- | --- | --- |"]
        for cname, (secs, cpu) in res.items():
            lines.append(f"| {cname} | {_fmt(secs)} | {statistics.median(secs) / base:.2f} | {_fmt(cpu)} |")
        lines.append("")
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
