"""The kernel side alone on the web workloads: CPU per request and BPF per request, per sensor.

    python -m bench.web_kernel --sensor before=/clone/src --sensor after=src --workload web --reps 6
    python -m bench.web_kernel ... --workload web-conn --stats      # bpf_stats on: per-program table

Each configuration loads and attaches a tree's sensor (``forensix.sensor.loader.Sensor``,
from that tree's ``src/`` on PYTHONPATH) with no agent draining it, and runs wrk against
nginx; ``none`` attaches nothing, ``NAME:floor`` the tree's ``make -C bpf floor`` build
(every syscall program returns at once). Configurations alternate within each repetition
(the order rotates). The figure is CPU per request (nginx's worker from its schedstat,
wrk from getrusage): on a shared host, the CPU the workload itself spends per request moves
far less with other work than requests per second do (a loaded host halves req/s, not the
CPU a request costs). 95% of baseline throughput on two busy cores is the baseline's CPU per
request over the configuration's. ``NAME:record`` runs the tree's whole ``forensix record`` (agent
included, recording the host into a scratch store) and adds the CPU of the recorder's
process tree over the run to the request's: on two busy cores the agent's CPU is taken from
the workload, so that sum is what a request costs. ``--stats`` turns kernel.bpf_stats_enabled on during the
run (it adds two clock reads per program run, so the CPU figures are then a little higher)
and prints each program's runs and ns per request, read from the holder's own program fds.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _hold(mode: str, floor_dir: str | None) -> None:
    """Run inside a tree's PYTHONPATH: attach its sensor, say ready, hold until stdin closes,
    then print the run count and run time of every program as JSON."""
    from forensix.sensor.loader import Sensor, SensorConfig

    kw: dict[str, Any] = {"ring_main_mb": 32, "ring_net_mb": 8, "ring_proc_mb": 8}
    if mode == "syscall":
        kw["sock_layer"] = False
    elif mode == "counters":  # a long TCP connection's owner by the connection's counters
        kw["tcp_counters"] = True
    obj = Path(floor_dir) / "sensor.bpf.o" if floor_dir else None
    s = Sensor(SensorConfig(**kw), obj_path=obj)
    s.open_and_load()
    s.attach()
    print("ready", flush=True)
    sys.stdin.read()
    stats = {}
    for name, fd in s.prog_fds().items():
        if fd < 0:
            continue
        info = dict(line.split(":\t", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                    if ":\t" in line)
        if int(info.get("run_cnt", 0)):
            stats[name] = (int(info["run_cnt"]), int(info["run_time_ns"]))
    print(json.dumps(stats), flush=True)
    s.close()


class _Record:
    """A tree's ``forensix record`` of the whole host, its CPU read from /proc."""

    def __init__(self, src: Path, scratch: Path) -> None:
        from bench.forensix_ready import wait_until_recording

        self.store = scratch / f"rec-{os.getpid()}-{time.monotonic_ns()}.duckdb"
        log = self.store.with_suffix(".log")
        self.proc = subprocess.Popen([sys.executable, "-m", "forensix", "record", "--store", str(self.store)],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(src)})
        wait_until_recording(self.proc, self.store, log)  # type: ignore[arg-type]

    def cpu_ns(self) -> int:
        """utime + stime of the recorder and every live descendant, with the reaped ones'."""
        kids: dict[int, list[int]] = {}
        stat: dict[int, list[str]] = {}
        for p in glob.glob("/proc/[0-9]*/stat"):
            try:
                f = Path(p).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(p.split("/")[2])
            stat[pid] = f
            kids.setdefault(int(f[1]), []).append(pid)
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            f = stat.get(pid)
            if f is None:
                continue
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
            todo += kids.get(pid, [])
        return total * 10**9 // os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for p in self.store.parent.glob(self.store.name + "*"):
            if p.is_file():
                p.unlink()


def _holder(spec: str, sensors: dict[str, Path], scratch: Path) -> subprocess.Popen[str]:
    name, _, mode = spec.partition(":")
    src = sensors[name]
    floor = None
    if mode in ("floor", "nosock"):  # measurement builds of the tree's bpf/ (bpf/Makefile)
        floor = scratch / f"{mode}-{name}"
        subprocess.run(["make", "-s", "-C", str(src.parent / "bpf"), mode, f"{mode.upper()}_OUT={floor}"],
                       check=True, capture_output=True)
    p = subprocess.Popen([sys.executable, "-m", "bench.web_kernel", "--hold", mode or "default",
                          *(["--floor-dir", str(floor)] if floor else [])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": f"{src}:{ROOT}"})
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the sensor of {spec} did not attach")
    return p


def _worker_pid(scratch: Path) -> int:
    master = int((scratch / "nginx.pid").read_text().split()[0])
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            f = Path(stat).read_text().split()
        except OSError:
            continue
        if int(f[3]) == master:
            return int(f[0])
    raise RuntimeError("no nginx worker")


def _measure(w: Any, seconds: int, rec: _Record | None = None) -> tuple[float, int]:
    wp = _worker_pid(w.scratch)

    def worker_ns() -> int:
        return int(Path(f"/proc/{wp}/schedstat").read_text().split()[0])

    r0, n0, a0 = resource.getrusage(resource.RUSAGE_CHILDREN), worker_ns(), rec.cpu_ns() if rec else 0
    out = w._wrk(seconds)
    r1, n1, a1 = resource.getrusage(resource.RUSAGE_CHILDREN), worker_ns(), rec.cpu_ns() if rec else 0
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9 + (n1 - n0) + (a1 - a0)
    return cpu / reqs, reqs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.web_kernel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", action="append", default=[], metavar="NAME=SRC",
                    help="a tree's src/ directory (its sensor built); configurations NAME, NAME:floor, NAME:syscall, "
                         "NAME:counters, NAME:nosock (sockets' edges free: make -C bpf nosock), "
                         "NAME:record (its forensix record, agent included)")
    ap.add_argument("--configs", default=None, help="comma list (default: none and every NAME)")
    ap.add_argument("--workload", choices=["web", "web-conn"], default="web")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--stats", action="store_true", help="kernel.bpf_stats_enabled during the run")
    ap.add_argument("--hold", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--floor-dir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.hold:
        _hold(a.hold, a.floor_dir)
        return 0
    from bench.recorders import Recorder
    from bench.web import WebConnWorkload, WebWorkload

    sensors = {k: Path(v).resolve() for k, v in (s.split("=", 1) for s in a.sensor)}
    configs = a.configs.split(",") if a.configs else ["none", *sensors]
    scratch = Path(tempfile.mkdtemp(prefix="fx-web-kernel-"))
    w = (WebConnWorkload if a.workload == "web-conn" else WebWorkload)(False, scratch)
    w.prepare()
    w.before_run(Recorder())
    cpu: dict[str, list[float]] = {c: [] for c in configs}
    progs: dict[str, dict[str, list[int]]] = {c: {} for c in configs}
    loads = []
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    if a.stats:
        stats_path.write_text("1\n")
    try:
        for rep in range(a.reps):
            k = rep % len(configs)
            for c in configs[k:] + configs[:k]:
                rec = _Record(sensors[c.split(":")[0]], scratch) if c.endswith(":record") else None
                holder = None if c == "none" or rec else _holder(c, sensors, scratch)
                try:
                    per_req, reqs = _measure(w, a.seconds, rec)
                finally:
                    stats = {}
                    if rec is not None:
                        rec.stop()
                    if holder is not None:
                        assert holder.stdin is not None and holder.stdout is not None
                        holder.stdin.close()
                        stats = json.loads(holder.stdout.readline() or "{}")
                        holder.wait()
                cpu[c].append(per_req)
                for prog, (runs, ns) in stats.items():
                    acc = progs[c].setdefault(prog, [0, 0, 0])
                    acc[0] += runs
                    acc[1] += ns
                    acc[2] += reqs
            loads.append(os.getloadavg()[0])
            print(f"rep {rep}: " + ", ".join(f"{c} {cpu[c][-1]:.0f} ns" for c in configs)
                  + f"; load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    finally:
        if a.stats:
            stats_path.write_text("0\n")
        w.after_run(Recorder())
    print(f"{w.describe()}; {a.reps} repetitions of {a.seconds} s, kernel side only (no agent), "
          f"bpf_stats {'on' if a.stats else 'off'}; 1-minute load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| configuration | CPU per request (ns, median) | throughput equivalent (paired mean ± se) |")
    print("|---|---|---|")
    for c in configs:
        ratios = [b / x for x, b in zip(cpu[c], cpu[configs[0]], strict=True)]
        se = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
        print(f"| {c} | {statistics.median(cpu[c]):,.0f} | {statistics.mean(ratios):.1%} ± {se:.1%} |")
    if any(progs.values()):
        print("\n| configuration | program | runs per request | ns per run | ns per request |")
        print("|---|---|---|---|---|")
        for c in configs:
            for prog, (runs, ns, reqs) in sorted(progs[c].items(), key=lambda x: -x[1][1]):
                if ns / reqs >= 5:
                    print(f"| {c} | {prog} | {runs / reqs:.2f} | {ns / runs:,.0f} | {ns / reqs:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
