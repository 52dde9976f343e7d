"""Where the compile overhead comes from: the build under variants of the recorder, many
repetitions, alternating, with ./configure and make timed apart.

    python -m bench.ablation --reps 8 --variants none,floor,drain,norules,forensix

Variants (each host-wide, started before and stopped after each build, as in the bench):

- ``none``: no recorder;
- ``floor``: the attach floor (bench.recorders.ForensixFloor: every syscall program
  returns at once, the lifecycle is recorded);
- ``drain``: the real sensor and a process that only drains its rings and takes its
  flow/re-open maps at the recorder's cadence, then throws the records away: BPF and
  the kernel-to-user copy, without decoding, storing or rules;
- ``decode``: ``forensix record --no-rules`` whose store drops every decoded row;
- ``noseal``: ``forensix record --no-rules`` that seals its journals only when it stops;
- ``norules``: ``forensix record --no-rules``;
- ``forensix``: ``forensix record``;
- ``eager``: ``forensix record`` draining every 0.5 s (as it did up to 2cdfcb7) instead of every second;
- ``mimalloc``: ``forensix record`` with pyarrow's default memory pool (mimalloc) instead of
  glibc's malloc (forensix.sensor.recorder.use_system_allocator), as it ran before it.
- ``nice19``: ``forensix record`` with every thread at nice 19;
- ``idle``: ``forensix record`` with every thread under SCHED_IDLE (it runs only where a core
  would idle, and a woken task of the workload preempts it at once).

The gaps between neighbours say what each layer costs; the medians of one run are only
comparable with each other (the host drifts by ~1.5% between runs). Prints one line per
build and a table at the end; ``--json`` keeps the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compile import CompileWorkload
from bench.recorders import (
    ForensixFloor,
    ForensixRecorder,
    Recorder,
    RecordStats,
    _owned_bpf_ids,
    _proc_cpu_seconds,
    _wait_detached,
    forensix_env,
)


class NoRules(ForensixRecorder):
    name = "norules"

    def args(self) -> list[str]:
        return ["--no-rules"]


class Patched(ForensixRecorder):
    """``forensix record --no-rules`` with one layer of the agent switched off in its
    process (``python -m bench.ablation --patched NAME -- record ...``), never in forensix."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.ablation", "--patched", self.name, "--"]

    def env(self, scratch: Path) -> dict[str, str]:
        path = [str(Path(__file__).resolve().parent.parent), forensix_env().get("PYTHONPATH", "")]
        return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}  # bench importable from anywhere

    def args(self) -> list[str]:
        return ["--no-rules"]


class DecodeOnly(Patched):
    """Decoded, then dropped: the store keeps only the agent's own events (so that the
    bench sees the recorder start), no file, process or flow rows."""

    name = "decode"


class NoSeal(Patched):
    """Stored in the journals, sealed into DuckDB only when the recorder stops."""

    name = "noseal"


class PatchedForensix(Patched):
    """``forensix record`` as users run it (the rules on), with one thing changed."""

    def args(self) -> list[str]:
        return []


class Eager(PatchedForensix):
    """``forensix record`` with a batch every 0.5 s: the recorder of 2cdfcb7."""

    name = "eager"


class Nice19(PatchedForensix):
    """``forensix record`` with every thread at nice 19 (the workload first)."""

    name = "nice19"


class Idle(PatchedForensix):
    """``forensix record`` with every thread under SCHED_IDLE (runs only on an idle core)."""

    name = "idle"


class Mimalloc(PatchedForensix):
    """``forensix record`` with pyarrow's default memory pool, as before use_system_allocator."""

    name = "mimalloc"


def patch(name: str) -> None:
    import pyarrow.compute as pc

    from forensix.store.embedded import DuckDBStore

    if name == "eager":
        from forensix.sensor.recorder import Recorder

        init = Recorder.__init__

        def half_second(self: Recorder, *a: Any, **k: Any) -> None:
            init(self, *a, **k)
            self.batch_interval = 0.5

        Recorder.__init__ = half_second  # type: ignore[method-assign]
    elif name == "nice19":
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # before any thread starts: they all inherit it
    elif name == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # inherited by every thread
    elif name == "mimalloc":
        from forensix.sensor import recorder

        recorder.use_system_allocator = lambda: None
    elif name == "decode":
        append = DuckDBStore.append

        def agent_rows_only(self: DuckDBStore, table: str, data: Any) -> int:
            if table in ("flows", "processes"):
                return int(data.num_rows)
            if table == "events":
                data = data.filter(pc.equal(data.column("event_category"), "agent"))
            return append(self, table, data)

        DuckDBStore.append = agent_rows_only  # type: ignore[method-assign]
    elif name == "noseal":
        DuckDBStore.seal_in_background = lambda self, *a, **k: None  # type: ignore[method-assign]
        from forensix.store import journal

        init = journal.JournaledTable.__init__

        def never_due(self: Any, *a: Any, **k: Any) -> None:
            init(self, *a, **k)
            self.seal_rows, self.seal_seconds = 1 << 40, 1e12

        journal.JournaledTable.__init__ = never_due  # type: ignore[method-assign]
    else:
        raise SystemExit(f"no patch {name!r}")


class DrainOnly(Recorder):
    """The sensor, drained and discarded (``python -m bench.ablation --drain``)."""

    name = "drain"
    host_wide = True

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._progs: set[int] = set()

    def start(self, scratch: Path) -> None:
        log = scratch / "drain.log"
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.ablation", "--drain"],
                                      stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                      env=forensix_env(), cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + 60
        while b"draining" not in log.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the drain-only recorder did not start: {log.read_text()[-800:]}")
            time.sleep(0.1)
        self._progs = _owned_bpf_ids(self._proc.pid)[0]

    def stop(self, inspect: Any = None) -> RecordStats:
        assert self._proc is not None
        cpu = _proc_cpu_seconds(self._proc.pid)
        self._proc.send_signal(signal.SIGINT)
        out = self._proc.wait(timeout=120)
        self._proc = None
        _wait_detached(self._progs)
        return RecordStats(detail={"agent_cpu_s": cpu, "rc": out})


def drain_forever() -> None:
    """The recorder's loop and cadence, with the decode and the sinks left out."""
    import numpy as np

    from forensix.sensor.recorder import Recorder as FxRecorder
    from forensix.testing.sinks import NullSink

    class Draining(FxRecorder):
        records = 0

        def start(self) -> None:
            super().start()
            print("draining", flush=True)

        def poll_once(self, wait: float = 0.0) -> int:
            got = sum(len(r.drain(max_bytes=16 << 20)) for r in self.rings)
            self.records += got
            return got

        def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
            pass

        def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
            pass

    rec = Draining([NullSink()])
    signal.signal(signal.SIGINT, lambda *_: rec.stop("interrupted"))
    rec.run()
    print(f"drained {rec.records} records", flush=True)


VARIANTS: dict[str, type[Recorder]] = {
    "none": Recorder, "floor": ForensixFloor, "drain": DrainOnly, "decode": DecodeOnly, "noseal": NoSeal,
    "norules": NoRules, "forensix": ForensixRecorder, "eager": Eager, "mimalloc": Mimalloc,
    "nice19": Nice19, "idle": Idle,
}


class SplitCompile(CompileWorkload):
    """The bench's compile workload, ./configure and make timed apart."""

    def measure(self, rec: Recorder) -> dict[str, float]:
        from bench.workload import run

        def cpu() -> float:  # user+system time of every process the build started (all reaped)
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime

        c0, t0 = cpu(), time.monotonic()
        run(rec.wrap(["sh", "-c", "./configure -q >/dev/null"]), cwd=self._build)
        c1, t1 = cpu(), time.monotonic()
        run(rec.wrap(["sh", "-c", "make -j2 -s >/dev/null"]), cwd=self._build)
        c2, t2 = cpu(), time.monotonic()
        return {"configure_s": t1 - t0, "make_s": t2 - t1, "wall_s": t2 - t0,
                "configure_cpu_s": c1 - c0, "make_cpu_s": c2 - c1, "build_cpu_s": c2 - c0}


def paired(got: dict[str, list[dict[str, float]]], name: str, key: str = "wall_s") -> str:
    """Mean and standard error of the per-repetition ratios to ``none`` of the same
    repetition (the host drifts between repetitions far more than within one)."""
    if "none" not in got or name == "none":
        return "n/a"
    pct = [100 * (m[key] / b[key] - 1) for m, b in zip(got[name], got["none"])]
    if len(pct) < 2:
        return f"{pct[0]:+.1f}%" if pct else "n/a"
    se = statistics.stdev(pct) / len(pct) ** 0.5
    return f"{statistics.mean(pct):+.2f}% ± {se:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--variants", default="none,floor,drain,forensix")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--patched", help=argparse.SUPPRESS)
    if "--patched" in sys.argv:  # python -m bench.ablation --patched NAME -- forensix arguments
        i = sys.argv.index("--")
        patch(sys.argv[sys.argv.index("--patched") + 1])
        from forensix.cli.main import main as forensix_main

        sys.argv = ["forensix", *sys.argv[i + 1:]]
        forensix_main()
        return
    a = ap.parse_args()
    if a.drain:
        drain_forever()
        return
    names = a.variants.split(",")
    unknown = set(names) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variant(s) {sorted(unknown)}: choose from {','.join(VARIANTS)}")
    if os.geteuid() != 0:
        sys.exit("bench.ablation needs root (it loads the sensor)")
    with tempfile.TemporaryDirectory(prefix="fx-ablation-") as tmp:
        scratch = Path(tmp)
        wl = SplitCompile(scratch=scratch, quick=False)
        why = wl.check()
        if why:
            sys.exit(why)
        wl.prepare()
        got: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for rep in range(a.reps):
            order = names[rep % len(names):] + names[: rep % len(names)]  # rotate: no fixed neighbour
            for name in order:
                rec = VARIANTS[name]()
                wl.before_run(rec)
                rec.start(scratch)
                try:
                    m = wl.measure(rec)
                finally:
                    st = rec.stop()
                wl.after_run(rec)
                m["agent_cpu_s"] = st.detail.get("agent_cpu_s")
                m["events"], m["lost"] = st.events, st.lost
                m["lost_by"] = st.detail.get("lost_by")  # class/reason: count, from the store's gaps
                got[name].append(m)
                print(f"[{time.strftime('%H:%M:%S')}] rep {rep} {name:9s} configure {m['configure_s']:6.2f} "
                      f"make {m['make_s']:6.2f} total {m['wall_s']:6.2f} build cpu {m['configure_cpu_s']:5.2f}+{m['make_cpu_s']:5.2f} agent cpu {m['agent_cpu_s']} events {m['events']} lost {m['lost']}"
                      + (f" {m['lost_by']}" if m["lost"] else ""), flush=True)
    base = statistics.median(m["wall_s"] for m in got.get("none", [])) if got.get("none") else None
    print(f"\n{'variant':9s} {'total median':>12s} {'mean':>7s} {'ratio':>6s} {'paired':>15s} {'configure':>9s} {'make':>6s}  min-max")
    for name, ms in got.items():
        tot = [m["wall_s"] for m in ms]
        med = statistics.median(tot)
        ratio = f"{med / base:6.3f}" if base else "   n/a"
        print(f"{name:9s} {med:12.2f} {statistics.mean(tot):7.2f} {ratio} {paired(got, name):>15s} "
              f"{statistics.median(m['configure_s'] for m in ms):9.2f} {statistics.median(m['make_s'] for m in ms):6.2f}"
              f"  {min(tot):.2f}-{max(tot):.2f}")
    print(f"\n{'variant':9s} paired ratios: {'configure':>15s} {'make':>15s} {'build CPU':>15s}  agent CPU (mean, min-max)")
    for name, ms in got.items():
        agent = [m["agent_cpu_s"] for m in ms if m.get("agent_cpu_s") is not None]
        spread = f"{statistics.mean(agent):.2f} s, {min(agent):.2f}-{max(agent):.2f}" if agent else "n/a"
        print(f"{name:9s} {'':15s} {paired(got, name, 'configure_s'):>15s} {paired(got, name, 'make_s'):>15s} "
              f"{paired(got, name, 'build_cpu_s'):>15s}  {spread}")
    if a.json:
        a.json.write_text(json.dumps(got, indent=1))


if __name__ == "__main__":
    main()
