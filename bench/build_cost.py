"""build_cost: where `forensix record`'s CPU goes around a build, by process and thread, and
which part of it lands inside the compile bench's timed window.

    python -m bench.build_cost --src /tmp/build-bytes-src/libzstd-1.5.4+dfsg2 --make-args "-C lib libzstd.a"
    python -m bench.build_cost --src /tmp/build-cost-src/orig/lua-5.4.4 --make-args posix --forensix-src OTHER/src

Runs `forensix record --store TMP` as bench/recorders.py does, waits until it records
(bench/forensix_ready.py: what the compile bench waits for before its clock starts), then
builds a fresh copy with `make -j2 -s ARGS`, waits ``--tail`` seconds and stops it. Prints the
CPU seconds of every thread of the recorder and of its children (store keepers, the orphan
watch), in three windows: start-up (before the clock), build (timed), tail (after), with
the events recorded and the host's load. The recorder records the whole host: on a shared
machine the other work's events are in the figures too (the event count says how many).

``--netns`` records only a network namespace made for the run (`forensix record --netns`:
the sensor drops every other task's records in the kernel) and builds inside it, so the
recorder's CPU is what the build's own events and the recorder's fixed cost make, even
while other engineers load the host. Without ``--src`` nothing is built: the recorder
records ``--idle`` seconds of nothing (with ``--netns``: exactly nothing), which is its
fixed cost per second. A fourth window, stop, is the CPU from the stop signal to exit (the
final drain, the keeper's last seal), from the recorder's rusage.

    python -m bench.build_cost --netns --src /tmp/build-bytes-src/libzstd-1.5.4+dfsg2 --make-args "-C lib libzstd.a"
    python -m bench.build_cost --netns --idle 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.forensix_ready import store_counts, wait_until_recording
from bench.recorders import _bpf_prog_stats, _owned_bpf_ids

_TCK = os.sysconf("SC_CLK_TCK")
Snapshot = dict[tuple[int, int], tuple[str, float]]  # (pid, tid) -> (who, CPU s)


def _cpu(stat: Path) -> float:
    """A thread's CPU seconds: from schedstat (ns on the CPU) where the kernel keeps it, else
    stat's user + system ticks (10 ms each: a build's recorder thread spends a few of them)."""
    try:
        return int((stat.parent / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        f = stat.read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / _TCK


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            for c in (t / "children").read_text().split():
                out += _tree(int(c))
    except OSError:
        pass
    return out


def _who(pid: int, root: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(args).decode(errors="replace")
    if pid == root:
        return "recorder"
    if "forensix.store.keeper" in text:
        return "keeper"
    if "orphan" in text:
        return "orphan watch"
    return text[:40]


def snapshot(root: int) -> Snapshot:
    """CPU seconds of every thread of ``root`` and its descendants, named process/thread."""
    snap: Snapshot = {}
    for pid in _tree(root):
        try:
            who = _who(pid, root)
            for t in Path(f"/proc/{pid}/task").iterdir():
                name = (t / "comm").read_text().strip()
                snap[(pid, int(t.name))] = (f"{who}/{name}", _cpu(t / "stat"))
        except OSError:  # exited meanwhile
            pass
    return snap


def sleeps(root: int) -> dict[tuple[int, int], tuple[str, int]]:
    """Voluntary context switches so far of every thread of ``root`` and its descendants: how
    often each went to sleep (and so was woken), named as ``snapshot`` names them."""
    out: dict[tuple[int, int], tuple[str, int]] = {}
    for pid in _tree(root):
        try:
            who = _who(pid, root)
            for t in Path(f"/proc/{pid}/task").iterdir():
                name = (t / "comm").read_text().strip()
                for line in (t / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[(pid, int(t.name))] = (f"{who}/{name}", int(line.split()[1]))
        except OSError:  # exited meanwhile
            pass
    return out


def sleeps_per_second(a: dict[tuple[int, int], tuple[str, int]], b: dict[tuple[int, int], tuple[str, int]],
                      seconds: float) -> dict[str, float]:
    """Sleeps a second between two ``sleeps`` readings, by process/thread name (threads seen in both)."""
    out: dict[str, float] = {}
    for key, (name, n) in b.items():
        if key in a:
            out[name] = out.get(name, 0.0) + (n - a[key][1]) / seconds
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.1}


def window(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by process/thread name (a thread that
    started and ended between them is not seen: the windows are a floor)."""
    out: dict[str, float] = {}
    for key, (name, cpu) in b.items():
        out[name] = out.get(name, 0.0) + cpu - a.get(key, (name, 0.0))[1]
    return {k: round(v, 4) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.0005}


def _stop_message(reader: Any) -> dict[str, Any]:
    """The recorder's stop event: its CPU by thread and the drainer's by stage, whole recording."""
    got = reader.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'stop'").to_pylist()
    return {"stop": got[-1]["message"] if got else None}


def _netns_up(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def measure(src: Path | None, make_args: str, scratch: Path, tail: float, env: dict[str, str],
            netns: str | None = None, idle: float = 20.0, profile: str | None = None,
            bench_wait: bool = False, record_args: tuple[str, ...] = (), bpf_stats: bool = False) -> dict[str, Any]:
    store = scratch / "forensix.duckdb"
    build = scratch / "build"
    if src is not None:
        shutil.rmtree(build, ignore_errors=True)
        shutil.copytree(src, build, symlinks=True)
    log = scratch / "record.log"
    ready_file = scratch / "ready"
    where = ["--netns", f"/run/netns/{netns}"] if netns else []
    # --profile: every thread under cProfile on its own CPU clock (bench/thread_profile.py)
    cli = ["-m", "bench.thread_profile", profile] if profile else ["-c", "from forensix.cli.main import main; main()"]
    proc = subprocess.Popen([sys.executable, *cli, "record",
                             "--store", str(store), "--ready-file", str(ready_file), *where, *record_args],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    # the ready file (what a script waits for), not a query: a query would start a store keeper
    # that a user's recording does not start (the compile bench's wait does; it is untimed there)
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 180:
            proc.kill()
            raise RuntimeError(f"forensix record did not start: {log.read_text(errors='replace')[-800:]}")
        time.sleep(0.01)
    if bench_wait:  # as the compile bench waits (bench/recorders.py): a query, so a keeper starts
        wait_until_recording(proc, store, log)
    ready = time.monotonic() - t0
    # the kernel side: this recorder's programs (held open by it: other recorders on the host
    # are not counted), runs and ns on the CPU (kernel.bpf_stats_enabled, turned on by main)
    owned = _owned_bpf_ids(proc.pid)[0] if bpf_stats else set()
    p0 = _bpf_prog_stats(owned) if bpf_stats else {}
    s0 = snapshot(proc.pid)
    z0 = sleeps(proc.pid)
    t1 = time.monotonic()
    build_cpu = 0.0
    timeline: list[float] = []  # the recorder's (and its children's) CPU in each second of the window
    stop_sampling = threading.Event()

    def sample() -> None:
        last = sum(c for _, c in s0.values())
        while not stop_sampling.wait(1.0):
            now = sum(c for _, c in snapshot(proc.pid).values())
            timeline.append(round(now - last, 3))
            last = now

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if src is not None:
        inside = ["ip", "netns", "exec", netns] if netns else []
        mk = subprocess.Popen([*inside, "sh", "-c", f"make -j2 -s {make_args} >/dev/null 2>&1"], cwd=build)
        _, mstatus, mru = os.wait4(mk.pid, 0)
        mk.returncode = os.waitstatus_to_exitcode(mstatus)
        if mk.returncode:
            raise subprocess.CalledProcessError(mk.returncode, mk.args)
        build_cpu = mru.ru_utime + mru.ru_stime  # the build's own CPU, its BPF programs' included
    else:
        time.sleep(idle)
    wall = time.monotonic() - t1
    p1 = _bpf_prog_stats(owned) if bpf_stats else {}
    z1 = sleeps(proc.pid)
    stop_sampling.set()
    sampler.join()
    load = os.getloadavg()[0]
    s1 = snapshot(proc.pid)
    time.sleep(tail)
    s2 = snapshot(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    total = ru.ru_utime + ru.ru_stime
    seen: dict[tuple[int, int], float] = {}  # a keeper that exited after a snapshot is in rusage too
    for snap in (s0, s1, s2):
        for key, (_, cpu) in snap.items():
            seen[key] = max(seen.get(key, 0.0), cpu)
    stop = total - sum(seen.values())
    counts = store_counts(store, _stop_message)
    windows = {"start-up": window({}, s0), "build" if src else "idle": window(s0, s1), "tail": window(s1, s2)}
    inside_cpu = sum(windows["build" if src else "idle"].values())
    per_build = {"build_cpu_s": round(build_cpu, 2),
                 "recorder_cpu_per_build_cpu": round(inside_cpu / build_cpu, 4)} if src else {}
    return {"ready_s": round(ready, 2), "build_wall_s" if src else "idle_s": round(wall, 2), "loadavg_1m": load,
            **per_build,
            "events": counts["events"], "lost": counts["lost"], "stop": counts["detail"].get("stop"),
            "cpu_s": windows, "cpu_per_second_of_window": timeline,
            # how often each thread slept in the window (so was woken): the loop's ticks (sensor/pacing.py)
            "sleeps_per_s": sleeps_per_second(z0, z1, wall),
            # the programs in the window: [runs, ns] each (host-wide runs: with --netns the other
            # tasks' syscalls return at the namespace test, a few tens of ns each)
            "programs": {k: [v["run_cnt"] - p0.get(k, {}).get("run_cnt", 0),
                             v["run_time_ns"] - p0.get(k, {}).get("run_time_ns", 0)]
                         for k, v in sorted(p1.items()) if v["run_cnt"] > p0.get(k, {}).get("run_cnt", 0)},
            "cpu_total_s": {**{k: round(sum(v.values()), 2) for k, v in windows.items()},
                            "stop (and threads unseen by the snapshots)": round(stop, 2), "whole run": round(total, 2)}}


def _one(a: argparse.Namespace, src_dir: Path | None, profile: str | None) -> dict[str, Any]:
    """One recording of one build (or idle window) with the tree ``src_dir`` (None: the
    interpreter's own path)."""
    env = dict(os.environ)
    if src_dir is not None:
        env["PYTHONPATH"] = str(src_dir)
    scratch = Path(tempfile.mkdtemp(prefix="build-cost-", dir="/var/tmp"))
    netns = f"fx-build-cost-{os.getpid()}" if a.netns else None
    try:
        if netns:
            _netns_up(netns)
        got = measure(a.src, a.make_args, scratch, a.tail, env, netns, a.idle, profile, a.bench_wait,
                      tuple(a.record_arg), a.bpf_stats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)
    got.update(src=str(a.src or "none (idle)"), make_args=a.make_args, netns=bool(netns),
               forensix_src=str(src_dir or "this tree"), record_args=a.record_arg)
    return got


def _thread(name: str) -> str:
    """A thread's name without its process (the recorder's own threads; children apart)."""
    who, _, thread = name.partition("/")
    return thread if who == "recorder" else name


def pairs_summary(runs: dict[str, list[dict[str, Any]]], window: str) -> str:
    """Medians by tree of the recorder's CPU in the build window, by thread, with the build's
    own CPU, the events, the losses and the load: the lines bench/docs quote."""
    import statistics

    labels = list(runs)
    def by_thread(t: str) -> Any:
        return lambda r: 1e3 * sum(v for k, v in r["cpu_s"][window].items() if _thread(k) == t)

    def sleeps_of(t: str) -> Any:
        return lambda r: sum(v for k, v in r["sleeps_per_s"].items() if _thread(k) == t)

    def prog(p: str) -> Any:
        return lambda r: r.get("programs", {}).get(p, [0, 0])[1] / 1e6

    progs = sorted({p for rs in runs.values() for r in rs for p in r.get("programs", {})},
                   key=lambda p: -statistics.median(prog(p)(r) for r in runs[labels[0]]))
    threads = sorted({_thread(t) for rs in runs.values() for r in rs for t in r["cpu_s"][window]},
                     key=lambda t: -statistics.median(by_thread(t)(r) for r in runs[labels[0]]))

    def med(label: str, f: Any) -> float:
        return statistics.median(f(r) for r in runs[label])

    loads = [r["loadavg_1m"] for rs in runs.values() for r in rs]
    n = min(len(rs) for rs in runs.values())
    lines = [f"{n} builds each, alternating; load average {min(loads):.1f}-{max(loads):.1f}",
             f"{'median of ' + str(n):34s}" + "".join(f"{label:>16s}" for label in labels)]
    rows: list[tuple[str, Any, str]] = [
        ("recorder CPU in the build, ms", lambda r: 1e3 * sum(r["cpu_s"][window].values()), "{:16.1f}"),
        *((f"  {t}, ms", by_thread(t), "{:16.1f}") for t in threads),
        ("recorder / build CPU, %", lambda r: 100 * r.get("recorder_cpu_per_build_cpu", 0.0), "{:16.2f}"),
        # the recorder's work follows its drain ticks, so the build's wall time (the host's load)
        ("recorder CPU a second of build, ms", lambda r: 1e3 * sum(r["cpu_s"][window].values())
         / max(r.get("build_wall_s", r.get("idle_s", 1.0)), 1e-3), "{:16.1f}"),
        *((f"  {t} sleeps a second", sleeps_of(t), "{:16.1f}") for t in threads),
        *((("BPF programs in the build, ms", lambda r: sum(v[1] for v in r["programs"].values()) / 1e6, "{:16.1f}"),)
          if progs else ()),
        *((f"  {p}, ms", prog(p), "{:16.2f}") for p in progs),
        ("build CPU, s", lambda r: r.get("build_cpu_s", 0.0), "{:16.2f}"),
        ("build wall, s", lambda r: r.get("build_wall_s", r.get("idle_s", 0.0)), "{:16.2f}"),
        ("events", lambda r: r["events"], "{:16.0f}"),
        ("lost", lambda r: r["lost"], "{:16.0f}"),
    ]
    for name, f, fmt in rows:
        lines.append(f"{name:34s}" + "".join(fmt.format(med(label, f)) for label in labels))
    per_run = {label: [round(1e3 * sum(r["cpu_s"][window].values()), 1) for r in rs] for label, rs in runs.items()}
    lines.append("recorder CPU in the build, ms, each run: " + "; ".join(f"{k} {v}" for k, v in per_run.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.build_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=None, help="an unpacked source tree (apt-get source); "
                    "none: record --idle seconds of nothing")
    ap.add_argument("--idle", type=float, default=20.0, help="without --src: seconds recorded")
    ap.add_argument("--netns", action="store_true",
                    help="record only a network namespace made for the run, and build inside it")
    ap.add_argument("--make-args", default="", help="what `make -j2 -s` builds")
    ap.add_argument("--tail", type=float, default=5.0, help="seconds recorded after the build")
    ap.add_argument("--forensix-src", type=Path, default=None, help="another tree's src/ to record with")
    ap.add_argument("--pairs", type=int, default=0, metavar="N",
                    help="N builds with this tree and N with --forensix-src, alternating; prints medians side by side "
                    "(the recorder's CPU in the build by thread)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    ap.add_argument("--bench-wait", action="store_true",
                    help="wait for the recorder as the compile bench does (a query on its store: a store keeper starts "
                    "before the clock) instead of its ready file")
    ap.add_argument("--profile", default=None, metavar="PREFIX",
                    help="run the recorder with every thread under cProfile (its own CPU clock): PREFIX.<thread>.prof; "
                    "read with python -m bench.thread_profile --top FILE (the profiler slows Python ~1.5-2x)")
    ap.add_argument("--record-arg", action="append", default=[], metavar="ARG",
                    help="an option for `forensix record` (repeat it): e.g. --record-arg=--no-artifacts, what "
                    "preserving executables costs a build")
    ap.add_argument("--bpf-stats", action="store_true",
                    help="kernel.bpf_stats_enabled during the runs: the recorder's programs' runs and ns in the build "
                    "window (the stats add two clock reads to every program run, on every configuration alike)")
    a = ap.parse_args(argv)
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = stats.read_text().strip() if a.bpf_stats else ""
    if a.bpf_stats:
        stats.write_text("1\n")
    try:
        return _main(a, ap)
    finally:
        if a.bpf_stats:
            stats.write_text(before + "\n")


def _main(a: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    if a.pairs:
        if a.forensix_src is None:
            ap.error("--pairs needs --forensix-src (the tree to compare with)")
        trees = {"this tree": Path(__file__).resolve().parent.parent / "src", "other": a.forensix_src}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for i in range(a.pairs):
            for label, src_dir in (trees.items() if i % 2 == 0 else reversed(trees.items())):
                runs[label].append(_one(a, src_dir, None))
                print(f"{label}: {json.dumps(runs[label][-1]['cpu_s']['build' if a.src else 'idle'])}",
                      file=sys.stderr)
        text = pairs_summary(runs, "build" if a.src else "idle") + f"\nother = {a.forensix_src}"
        print(text)
        if a.out is not None:
            a.out.write_text(json.dumps({"summary": text, "runs": runs}, indent=1) + "\n")
        return 0
    got = _one(a, a.forensix_src, a.profile)
    text = json.dumps(got, indent=1)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
