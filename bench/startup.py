"""What starting `forensix record` costs: time until it is recording, and CPU spent.

    python -m bench.startup [--reps 5] [--against REV|SRC] [--duration N] [--no-cold] [--write] [--no-bytecode]

Each repetition runs ``forensix record --ready-file F -- true`` (a recording of one
command; with ``--duration N``, ``forensix record --duration N``: a recording of N
seconds of whatever the host does) from this tree and, with ``--against``, from the tree
of another commit (extracted and its sensor built as bench/idle.py does) or another tree's
``src`` with its sensor built (``--against /tmp/base1208/src``), alternating, in these
configurations:

- ``REV``: the other commit, as it starts.
- ``this``: this tree, its compiled rules cached by an earlier start (rules/rule_cache.py),
  as every start after the first on a host.
- ``this, cold``: this tree with its rule cache emptied first (the first start on a host,
  or after the rules or forensix changed); left out with ``--no-cold``.

Figures per run: seconds from exec to the ready file (every program attached, the start
record written); CPU (user + system) of the recorder and all its processes until then
(live ones from /proc, exited ones from the recorder's cutime + cstime: the rule compiler,
a store keeper); and the CPU of the whole run to exit (wait4's rusage, every waited
descendant). Medians with the range; the load average beside them. ``--write`` puts the
table into docs/benchmarks.md, section "Start-up cost".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.idle import TICK, Tree, _family_threads, log, other_tree, this_tree

ROOT = Path(__file__).resolve().parent.parent
# Start forensix with its bytecode kept (in the scratch directory), as pip leaves an installed
# package. This machine's environment sets PYTHONDONTWRITEBYTECODE=1, so a development tree
# compiled every module from source at every start: ~0.25 s of CPU at each `forensix record`
# (and each store keeper) that no installed forensix pays. ``--no-bytecode`` measures that way.
BYTECODE = True
SECTION = "## Start-up cost (bench.startup)"


@dataclass
class Run:
    config: str
    ready_s: float
    cpu_ready_s: float
    cpu_total_s: float


@dataclass
class Config:
    label: str
    tree: Tree
    cache: Path
    cold: bool = False


DURATION: float | None = None  # --duration: record N seconds instead of one command


def run_once(cfg: Config, scratch: Path) -> Run:
    d = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    store, ready, logf = d / "s.duckdb", d / "ready", d / "record.log"
    if cfg.cold:
        shutil.rmtree(cfg.cache, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(cfg.tree.src), FORENSIX_BPF_DIR=str(cfg.tree.bpf),
               FORENSIX_RULE_CACHE=str(cfg.cache))
    if BYTECODE:  # as an installed forensix starts: its modules' bytecode compiled once (module doc)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    with open(logf, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "forensix", "record", "-q", "--store", str(store),
                                 "--ready-file", str(ready),
                                 *(["--duration", f"{DURATION:g}"] if DURATION else ["--", "true"])], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    cpu_ready = -1.0
    deadline = t0 + 180
    while True:
        if ready.exists():
            ready_s = time.monotonic() - t0
            try:
                cpu_ready = sum(c for _, c, _ in _family_threads(proc.pid).values()) / TICK
            except OSError:  # it exited already (a one-command recording can): counted at exit
                pass
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"forensix record did not start: {logf.read_text()[-800:]}")
        time.sleep(0.005)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"forensix record failed ({proc.returncode}): {logf.read_text()[-800:]}")
    total = ru.ru_utime + ru.ru_stime
    shutil.rmtree(d, ignore_errors=True)
    return Run(cfg.label, ready_s, cpu_ready if cpu_ready >= 0 else total, total)


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


# Kept with the table (a rerun with --write rewrites the section): what the figures mean.
NOTES = """
What is left to ready, with the rules cached (one run at load 18, CPU by process at the
ready file, cProfile with a CPU clock): the recorder ~1.3 s (loading and verifying the BPF
programs ~0.6 s, in libbpf and the kernel's verifier; imports ~0.45 s, pyarrow 0.3 of
it; the /proc snapshot 0.12 s; building the live engine 0.09 s) and the first store
keeper ~0.45 s (Python, DuckDB and the store's catalog, store/keeper.py). Before, the
rule compiler child added ~0.8 s of CPU and 1-4 s of wall time, before the keeper
started. Cold: the first start after the rules or forensix changed compiles as before,
and writes the entry (the key costs ~4 ms).
"""


def report(runs: list[Run], configs: list[Config], load: tuple[float, float], reps: int) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    what = f"forensix record --duration {DURATION:g}" if DURATION else "forensix record -- true"
    lines = [SECTION, "", f"{stamp}, `python -m bench.startup --reps {reps}"
             + (f" --against {configs[0].label}" if configs[0].label != "this" else "")
             + (f" --duration {DURATION:g}" if DURATION else "")
             + ("`, bytecode kept as an install keeps it" if BYTECODE else " --no-bytecode`")
             + f": `{what}`, {reps} runs each, alternating, load average "
             f"{load[0]:.1f} before and {load[1]:.1f} after. Medians (range), seconds.", "",
             "| configuration | time to ready | CPU to ready | CPU of the whole run |", "|---|---|---|---|"]
    base = None
    for c in configs:
        rs = [r for r in runs if r.config == c.label]
        lines.append(f"| {c.label} | {_fmt([r.ready_s for r in rs])} | {_fmt([r.cpu_ready_s for r in rs])} "
                     f"| {_fmt([r.cpu_total_s for r in rs])} |")
        if base is None:
            base = rs
    if configs[0].label != "this" and base:
        warm = [r for r in runs if r.config == configs[1].label]
        cpu = statistics.median(r.cpu_ready_s for r in warm) / statistics.median(r.cpu_ready_s for r in base)
        wall = statistics.median(r.ready_s for r in warm) / statistics.median(r.ready_s for r in base)
        whole = statistics.median(r.cpu_total_s for r in warm) / statistics.median(r.cpu_total_s for r in base)
        lines += ["", (f"CPU to ready, this / {configs[0].label}: {cpu:.2f}; time to ready: {wall:.2f}; "
                       f"CPU of the whole run: {whole:.2f}.")]
    return "\n".join(lines) + "\n" + NOTES


def write_docs(text: str) -> None:
    path = ROOT / "docs/benchmarks.md"
    doc = path.read_text()
    if SECTION in doc:
        head, rest = doc.split(SECTION, 1)
        nxt = rest.find("\n## ")
        doc = head + text + (rest[nxt:] if nxt >= 0 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--against", default=None,
                    help="another commit to measure side by side (e.g. main), or a tree's src with its sensor built")
    ap.add_argument("--duration", type=float, default=None,
                    help="record this many seconds (forensix record --duration N) instead of `-- true`")
    ap.add_argument("--no-cold", action="store_true", help="leave out the configuration with an empty rule cache")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="compile forensix from source at every start (PYTHONDONTWRITEBYTECODE as set here)")
    a = ap.parse_args(argv)
    global BYTECODE, DURATION
    BYTECODE = not a.no_bytecode
    DURATION = a.duration
    if os.geteuid() != 0:
        print("bench.startup records with BPF: run it as root", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        this = this_tree(scratch)
        configs = []
        if a.against:
            other = other_tree(a.against, scratch)
            configs.append(Config(other.label, other, scratch / "cache-other"))
        configs += [Config("this", this, scratch / "cache-this")]
        if not a.no_cold:
            configs.append(Config("this, cold", this, scratch / "cache-cold", cold=True))
        for c in [c for c in configs if not c.cold]:  # fills each tree's rule cache (and bytecode), as a first start on a host does
            run_once(c, scratch)
        load0 = os.getloadavg()[0]
        runs: list[Run] = []
        for rep in range(a.reps):
            order = configs[rep % len(configs):] + configs[: rep % len(configs)]
            for c in order:
                r = run_once(c, scratch)
                log(f"{c.label}: ready {r.ready_s:.2f}s, CPU to ready {r.cpu_ready_s:.2f}s, whole {r.cpu_total_s:.2f}s")
                runs.append(r)
        text = report(runs, configs, (load0, os.getloadavg()[0]), a.reps)
        print(text)
        if a.write:
            write_docs(text)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
