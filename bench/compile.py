"""compile: a real C project from Debian source, ``./configure && make -j2``, wall time.

The source tree comes from ``apt-get source`` (scripts/bench-setup.sh unpacks it under
/var/cache/forensix-bench/src). Every run builds a fresh copy, so each configuration does
the same work. ``--quick`` builds only readline inside an already configured copy.

Another project than bash (the build the recorder was tuned on): ``BENCH_SRC_PACKAGE``
names it and ``BENCH_SRC_DIR`` where ``apt-get source`` unpacked it; a tree without a
``configure`` script (zstd: a plain Makefile) is built with ``make -j2 $BENCH_MAKE_ARGS``
alone (e.g. ``-C lib libzstd.a``: zstd's library, ~30 files at -O3).

``BENCH_NETNS=1``: every configuration builds inside a network namespace made for the run,
and forensix records only that namespace (``forensix record --netns``: the sensor drops
every other task's records in the kernel). On a shared host the recorder then pays for the
build's own events only, not for what other people run meanwhile (a host-wide recorder
stored 0.5-2 M events of their work per build here, and its CPU was taken from the build).
The syscall programs still run for every task of the host: the attach cost is the same.

Two figures per build, judged apart (bench/report.py):

- ``wall_s``, the wall time: what a user waits for, the target as written. On a shared 2-core
  host it varies 5-15% from build to build (other work takes the cores ``make -j2`` wants).
- ``cpu_s``, the CPU the build costs: the build's own user + sys (``wait4``'s rusage of the
  whole make tree: the BPF programs run in its syscalls, so their cost is in its sys time)
  plus the recorder's CPU over the same window (every thread of it and of its children,
  /proc; a nice-19 reader's included), as bench.web_kernel takes CPU per request. Other work
  on the host does not add to it, so it varies 3-4x less (lua at load 5: 3.8% against 13% of
  wall). On two cores kept busy by ``make -j2`` it is the wall time's cost too; where the build
  leaves a core idle (its serial steps) the recorder may run there for free, so ``cpu_s`` is
  the stricter of the two. ``build_cpu_s`` and ``recorder_cpu_s`` are its two parts.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.recorders import RECORD_NETNS, Recorder, foreign_tracing_progs
from bench.workload import Metric, Workload, run

SRC_ROOT = Path(os.environ.get("BENCH_SRC_DIR", "/var/cache/forensix-bench/src"))
SRC_PACKAGE = os.environ.get("BENCH_SRC_PACKAGE", "bash")
# what `make -j2` builds in a tree without configure (default: its default target)
MAKE_ARGS = os.environ.get("BENCH_MAKE_ARGS", "")
# build in a namespace of its own and record only it (module doc)
NETNS = os.environ.get("BENCH_NETNS", "") not in ("", "0")
# The target the compile ratio is judged on (at most 3% slower): a run whose baseline builds
# alone vary by more than this cannot tell a recorder that meets it from one that does not.
TARGET = 0.03


def source_tree() -> Path | None:
    trees = sorted(p for p in SRC_ROOT.glob(f"{SRC_PACKAGE}-*") if p.is_dir())
    return trees[-1] if trees else None


class CompileWorkload(Workload):
    name = "compile"
    paired = True
    title = "compile"
    metrics = (Metric("wall_s", "wall time", "s"),
               Metric("cpu_s", "CPU, build + recorder", "s"),
               Metric("build_cpu_s", "the build's CPU (its BPF included)", "s"),
               Metric("recorder_cpu_s", "the recorder's CPU in the window", "s"))

    def __init__(self, quick: bool, scratch: Path) -> None:
        super().__init__(quick, scratch)
        self._walls: dict[str, list[float]] = {}  # wall time of each build, by configuration
        self._cpus: dict[str, list[float]] = {}  # CPU of each build (cpu_s), by configuration
        self._foreign: list[tuple[str, int]] = []  # (configuration, foreign tracing programs) per build
        self._netns: str | None = None  # BENCH_NETNS: the namespace every build runs in

    def check(self) -> str | None:
        if source_tree() is None:
            return f"no {SRC_PACKAGE} source under {SRC_ROOT}: run scripts/bench-setup.sh"
        return None

    @property
    def _template(self) -> Path:
        return self.scratch / "template"

    @property
    def _build(self) -> Path:
        return self.scratch / "build"

    def prepare(self) -> None:
        tree = source_tree()
        assert tree is not None
        self._netns = f"fx-bench-compile-{os.getpid()}" if NETNS else None
        if self._netns:
            run(["ip", "netns", "add", self._netns])
            run(["ip", "-n", self._netns, "link", "set", "lo", "up"])
            os.environ[RECORD_NETNS] = f"/run/netns/{self._netns}"  # forensix records only it (bench/recorders.py)
        shutil.rmtree(self._template, ignore_errors=True)
        shutil.copytree(tree, self._template, symlinks=True)
        if self.quick:
            run(["sh", "-c", "./configure -q >/dev/null"], cwd=self._template)
        # one untimed build first, so every measured run starts with a warm page cache
        self.before_run(Recorder())
        run(self._command(), cwd=self._build)
        self.after_run(Recorder())

    def describe(self) -> str:
        tree = source_tree()
        what = tree.name if tree else SRC_PACKAGE
        if self.quick:
            return f"`make -j2 -C lib/readline` in a configured {what} tree (quick subset)"
        if NETNS:
            what += " (built in a network namespace of its own, the only one forensix records)"
        if tree is not None and not (tree / "configure").is_file():
            return f"`make -j2 {MAKE_ARGS}`".replace(" `", "`") + f" of {what} (Debian source, no configure step), fresh copy per run"
        return f"`./configure && make -j2` of {what} (Debian source), fresh copy per run"

    def before_run(self, rec: Recorder) -> None:
        shutil.rmtree(self._build, ignore_errors=True)
        shutil.copytree(self._template, self._build, symlinks=True)

    def _configured(self) -> bool:
        return (self._template / "configure").is_file()

    def finish(self) -> None:
        if self._netns:
            os.environ.pop(RECORD_NETNS, None)
            subprocess.run(["ip", "netns", "del", self._netns], check=False)

    def _command(self) -> list[str]:
        inside = ["ip", "netns", "exec", self._netns] if self._netns else []
        return [*inside, *self._plain_command()]

    def _plain_command(self) -> list[str]:
        if self.quick:
            return ["make", "-j2", "-s", "-C", "lib/readline"]
        if not self._configured():
            return ["sh", "-c", f"make -j2 -s {MAKE_ARGS} >/dev/null"]
        return ["sh", "-c", "./configure -q >/dev/null && make -j2 -s >/dev/null"]

    def measure(self, rec: Recorder) -> dict[str, float]:
        before = foreign_tracing_progs(rec.bpf_ids())
        cpu0 = rec.cpu_snapshot()
        t0 = time.monotonic()
        build_cpu = run_rusage(rec.wrap(self._command()), cwd=self._build)
        wall = time.monotonic() - t0
        recorder_cpu = window_cpu(cpu0, rec.cpu_snapshot())
        # another engineer's recorder attached meanwhile slows this build, not the others
        foreign = max(before, foreign_tracing_progs(rec.bpf_ids()))
        self._walls.setdefault(rec.name, []).append(wall)
        self._cpus.setdefault(rec.name, []).append(build_cpu + recorder_cpu)
        self._foreign.append((rec.name, foreign))
        return {"wall_s": wall, "cpu_s": build_cpu + recorder_cpu, "build_cpu_s": build_cpu,
                "recorder_cpu_s": recorder_cpu}

    def extra(self) -> dict[str, Any]:
        """Whether this run can judge the target at all, by wall time (another recorder, the
        baseline's spread) and by CPU (another recorder; its noise is judged on the paired
        ratios' standard error, bench/report.py); printed, and kept for the report."""
        out = {}
        for key, figure, series in (("no_verdict", "wall time", self._walls), ("no_verdict_cpu", "CPU", None)):
            why = refusal(series.get("none", []) if series is not None else [], self._foreign)
            if why:
                print(f"compile: no verdict on the {TARGET:.0%} target by {figure}: {why}", file=sys.stderr, flush=True)
                out[key] = why
        return out

    def after_run(self, rec: Recorder) -> None:
        shutil.rmtree(self._build, ignore_errors=True)


def run_rusage(argv: list[str], *, cwd: Path) -> float:
    """Run a command to its end; the CPU seconds (user + sys) of it and of every descendant it
    waited for. A failure raises with the end of its output."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            out.seek(0)
            tail = out.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"{' '.join(argv[:6])} exited {p.returncode}: {tail}")
    return ru.ru_utime + ru.ru_stime


def window_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds a recorder's processes spent between two snapshots (a process that started
    meanwhile counts whole; one that ended meanwhile is not seen: a floor)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def refusal(baseline: list[float], foreign: list[tuple[str, int]]) -> str | None:
    """Why a run's builds cannot judge the target, or None.

    - Tracing BPF programs of another recorder were attached during a build (another
      engineer's recorder on this shared machine): every syscall of that build paid for
      them, in whichever configuration it ran, so its ratio is not forensix's.
    - The baseline's builds alone vary by more than the target (standard deviation over
      the mean): a 3% effect cannot be told from the host's noise.
    """
    hit = [(name, n) for name, n in foreign if n > 0]
    if hit:
        names = ", ".join(sorted({name for name, _ in hit}))
        return (f"tracing BPF programs of another recorder were attached during {len(hit)} of {len(foreign)} "
                f"builds (configurations {names}; up to {max(n for _, n in hit)} programs): re-run when "
                "`bpftool prog show` lists no tracing programs but the bench's own")
    if len(baseline) >= 2:
        spread = statistics.stdev(baseline) / statistics.mean(baseline)
        if spread > TARGET:
            return (f"the baseline builds alone vary by {spread:.1%} (standard deviation over the mean of "
                    f"{len(baseline)} builds, {min(baseline):.1f}-{max(baseline):.1f} s), more than the "
                    f"{TARGET:.0%} the target judges: re-run on a quiet host")
    return None
