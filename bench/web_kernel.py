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
the workload, so that sum is what a request costs; ``NAME:floor+record`` is that recorder loading the floor
build (the bench's ``floor``), ``...+stop`` the same SIGSTOPped once it records (its sensor
attached, nothing drains it): with ``none`` and ``NAME:floor`` they split the floor with an
agent into kernel and agent, with one metric in one run. ``NAME:agent`` is the fleet's deployment:
the tree's ``forensix agent`` (raw records) shipping over mutual TLS to its ``forensix server``
started by the bench, which stands in for another machine (``SCHED_IDLE`` at nice 19, its CPU
reported apart and never added to the request's); the agent's CPU is added, up to when the log
host has acknowledged what the window made, and each window is checked for loss (kernel drop
counters, the agent's spool, the log host's gaps and decode warnings, nginx's requests stored). Beside CPU per request it reports
req/s, nginx's and wrk's context switches per request (how often the two share a CPU moves
req/s more than a sensor does on this 2-core VM), and the recorder's threads' CPU and wake-ups;
``--pin`` puts nginx's worker on CPU 0 and wrk on CPU 1. ``--stats`` turns kernel.bpf_stats_enabled on during the
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
    from forensix.sensor import loader
    from forensix.sensor.loader import Sensor, SensorConfig

    kw: dict[str, Any] = {"ring_main_mb": 32, "ring_net_mb": 8, "ring_proc_mb": 8}
    parts = mode.split("+")
    if "syscall" in parts:
        kw["sock_layer"] = False
    if "counters" in parts:  # a long TCP connection's owner by the connection's counters
        kw["tcp_counters"] = True
    if os.environ.get("FX_HOLD_NETNS"):  # bench.micro_attach --netns: only that namespace's tasks
        kw["netns"] = int(os.environ["FX_HOLD_NETNS"])
    if "norw" in parts:  # the norw build: no read/write syscall hook attached at all
        loader.SYSCALLS = {k: v for k, v in loader.SYSCALLS.items() if v.handler != "fx_exit_rw"}
    obj = Path(floor_dir) / "sensor.bpf.o" if floor_dir else None
    s = Sensor(SensorConfig(**kw), obj_path=obj)
    s.open_and_load()
    s.attach()
    if "close" in parts:  # the norw build's stand-in for a close hook ending a file's edge
        s._tp(s._prog("fx_close_bound"), "sys_enter_close")
    if "sink" in parts:
        _sink(s)
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


def _sink(s: Any) -> None:
    """``NAME+sink``: give every ring's space back to the kernel every 100 ms without reading it
    (a thread of the holder), so the sensor writes its records as with an agent, never into a full
    ring (no drop path), and nothing but the kernel touches them: the full sensor's own cost in
    nginx's and wrk's system calls, apart from an agent's CPU and cache use."""
    import threading

    from forensix.sensor.ringbuf import RingBuffer

    rings = [RingBuffer(s.map_fd(n), s.ring_size(n)) for n in ("rb_proc", "rb_main", "rb_net", "flow_spill")
             if s.has_map(n)]

    def run() -> None:
        while True:
            time.sleep(0.1)
            for r in rings:
                r.pos = r.released() + r.pending()
                r.release()

    threading.Thread(target=run, daemon=True).start()


class _Record:
    """A tree's ``forensix record`` of the whole host, its CPU read from /proc. ``bpf_dir``: a
    measurement build of its sensor to load instead (the floor); ``stopped``: SIGSTOP the
    recorder's processes once it records (its sensor stays attached, nothing drains it)."""

    def __init__(self, src: Path, scratch: Path, bpf_dir: Path | None = None, stopped: bool = False) -> None:
        from bench.forensix_ready import wait_until_recording

        self.store = scratch / f"rec-{os.getpid()}-{time.monotonic_ns()}.duckdb"
        log = self.store.with_suffix(".log")
        env = {**os.environ, "PYTHONPATH": str(src)}
        if bpf_dir is not None:
            env["FORENSIX_BPF_DIR"] = str(bpf_dir)
        self.proc = subprocess.Popen([sys.executable, "-m", "forensix", "record", "-q", "--store", str(self.store)],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        wait_until_recording(self.proc, self.store, log)
        from bench.recorders import _owned_bpf_ids

        self.progs = _owned_bpf_ids(self.proc.pid)[0]
        # the query that saw it recording started the store's keeper: let it exit (10 s idle),
        # as it does a few seconds into a recording nobody queries
        deadline = time.monotonic() + 20
        while len(self.tree()) > 2 and time.monotonic() < deadline:  # the recorder and its orphan watch
            time.sleep(0.5)
        self.stopped = self.tree() if stopped else []
        for pid in self.stopped:
            os.kill(pid, signal.SIGSTOP)

    def tree(self) -> list[int]:
        """The recorder and every live descendant."""
        kids: dict[int, list[int]] = {}
        for p in glob.glob("/proc/[0-9]*/stat"):
            try:
                ppid = int(Path(p).read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.split("/")[2]))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += kids.get(pid, [])
        return out

    def threads(self) -> dict[str, tuple[int, int]]:
        """CPU ns and times run of each thread of the recorder (by name), from schedstat."""
        out: dict[str, tuple[int, int]] = {}
        for pid in self.tree():
            for t in glob.glob(f"/proc/{pid}/task/*"):
                try:
                    name = Path(t, "comm").read_text().strip()
                    ns, _, runs = (int(x) for x in Path(t, "schedstat").read_text().split())
                except (OSError, ValueError):
                    continue
                a, b = out.get(name, (0, 0))
                out[name] = (a + ns, b + runs)
        return out

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
            fields = stat.get(pid)
            if fields is None:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            todo += kids.get(pid, [])
        return total * 10**9 // os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        from bench.recorders import _wait_detached, stop_process

        stop_process(self.proc)

        # its programs are detached by a child after it exits (seconds, a grace period per link): the
        # next configuration must not run while they still are
        _wait_detached(self.progs)
        for p in self.store.parent.glob(self.store.name + "*"):
            if p.is_file():
                p.unlink()


class _Agent(_Record):
    """``NAME:agent``: the tree's ``forensix agent`` (raw records, the default) shipping over real
    mutual TLS to the tree's ``forensix server`` started here, which stands in for another machine
    (``SCHED_IDLE`` at nice 19: bench/recorder_agent.py). The agent's CPU is the host's and counted
    as the recorder's is; the log host's is reported apart. After the window (``settle``) the log
    host catches up until it has acknowledged every frame the window's records became; the agent's
    CPU until then is counted (sending what the log host took late). ``stop`` checks nothing was
    lost (``AgentPair.stop``) and what nginx did in the window is in the log host's store."""

    def __init__(self, src: Path, scratch: Path, off: bool = False) -> None:
        """``off``: the log host SIGSTOPped for the window (``NAME:agent+off``): none of its CPU or cache use
        on these cores; the agent spools, and sends once it is continued (that sending counted)."""
        from bench.recorder_agent import AgentPair

        self.off = off

        self.pair = AgentPair(scratch, {**os.environ, "PYTHONPATH": str(src)}, [sys.executable, "-m", "forensix"])
        self.proc = self.pair.agent
        self.progs = self.pair.owned[0]
        self.stopped = []
        # its start-up's tail (the /proc snapshot's seed, the first frames and their sending) out of
        # the window, as NAME:record's keeper is: until the agent spends <= 20 ms a second
        last, deadline = self.pair.agent_cpu_s(), time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.pair.agent_cpu_s()
            if now - last <= 0.02:  # clock ticks of 10 ms
                break
            last = now
        self.lh0 = self.pair.loghost_cpu_s()

    def settle(self) -> dict[str, float]:
        lh = self.pair.loghost_cpu_s() - self.lh0
        return {**self.pair.settle(), "loghost_window_s": lh}

    def stop(self) -> dict[str, Any]:  # type: ignore[override]
        out = self.pair.stop(_served)
        out["loghost_s"] = out["loghost_cpu_s"] - self.lh0
        return out


def _served(reader: Any) -> dict[str, Any]:
    """What nginx and wrk did, as the log host stored it (repeats counted in the kernel included)."""
    rows = reader.query("SELECT process_name AS p, event_action AS a, sum(coalesce(event_count, 1)) AS n FROM events "
                        "WHERE process_name IN ('nginx', 'wrk') AND event_action IN ('accept', 'connect', 'open') "
                        "GROUP BY ALL").to_pylist()
    return {"served": {f"{r['p']} {r['a']}": int(r["n"]) for r in rows}}


BUILDS = ("floor", "nosock", "norw")


def _build(mode: str, name: str, src: Path, scratch: Path) -> Path | None:
    """The tree's measurement build of its sensor for ``mode`` (bpf/Makefile), or None."""
    mode = next((m for m in mode.split("+") if m in BUILDS), "")
    if not mode:
        return None
    out = scratch / f"{mode}-{name}"
    if not (out / "sensor.bpf.o").is_file():
        subprocess.run(["make", "-s", "-C", str(src.parent / "bpf"), mode, f"{mode.upper()}_OUT={out}"],
                       check=True, capture_output=True)
    return out


def _holder(spec: str, sensors: dict[str, Path], scratch: Path) -> subprocess.Popen[str]:
    name, _, mode = spec.partition(":")
    src = sensors[name]
    floor = _build(mode, name, src, scratch)
    p = subprocess.Popen([sys.executable, "-m", "bench.web_kernel", "--hold", mode or "default",
                          *(["--floor-dir", str(floor)] if floor else [])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": f"{src}:{ROOT}"})
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the sensor of {spec} did not attach")
    return p


def _recorder(spec: str, sensors: dict[str, Path], scratch: Path) -> _Record | None:
    """``NAME:record``, ``NAME:floor+record`` (its forensix record loading the floor build),
    ``...+stop`` (the recorder SIGSTOPped while measured), ``NAME:agent`` (its forensix agent and log
    host): None for a sensor held alone."""
    name, _, mode = spec.partition(":")
    parts = mode.split("+")
    if mode in ("agent", "agent+off"):
        return _Agent(sensors[name], scratch, off=mode == "agent+off")
    if "record" not in parts:
        return None
    src = sensors[name]
    return _Record(src, scratch, _build(mode, name, src, scratch), stopped="stop" in parts)


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


def _switches(pid: int) -> tuple[int, int, int]:
    """A process's voluntary and involuntary context switches and migrations between CPUs."""
    st = Path(f"/proc/{pid}/status").read_text()
    vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", st, re.MULTILINE).group(1))  # type: ignore[union-attr]
    inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", st, re.MULTILINE).group(1))  # type: ignore[union-attr]
    mig = re.search(r"^nr_migrations\s+:\s+(\d+)", Path(f"/proc/{pid}/sched").read_text(), re.MULTILINE)
    return vol, inv, int(mig.group(1)) if mig else 0


def _measure(w: Any, seconds: int, rec: _Record | None = None, pin: bool = False) -> dict[str, Any]:
    """CPU per request (the workload's, plus the recorder's), requests per second, the nginx
    worker's and wrk's context switches per request, and the recorder's threads' wake-ups.
    ``pin``: nginx's worker on CPU 0, wrk on CPU 1 (the recorder wherever the scheduler puts it)."""
    wp = _worker_pid(w.scratch)
    everywhere = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(wp, {0})
        os.sched_setaffinity(0, {1})  # wrk, started from here, inherits it

    def worker_ns() -> int:
        return int(Path(f"/proc/{wp}/schedstat").read_text().split()[0])

    def worker_sys() -> float:  # the worker's system time (s), from its stat: clock ticks
        return int(Path(f"/proc/{wp}/stat").read_text().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")

    if isinstance(rec, _Agent) and rec.off:
        os.kill(rec.pair.server.pid, signal.SIGSTOP)
    r0, n0, a0 = resource.getrusage(resource.RUSAGE_CHILDREN), worker_ns(), rec.cpu_ns() if rec else 0
    k0 = worker_sys()
    s0, th0, t0 = _switches(wp), rec.threads() if rec else {}, time.monotonic()
    try:
        out = w._wrk(seconds)
    finally:
        os.sched_setaffinity(0, everywhere)
        if isinstance(rec, _Agent) and rec.off:
            os.kill(rec.pair.server.pid, signal.SIGCONT)
    r1, n1, a1 = resource.getrusage(resource.RUSAGE_CHILDREN), worker_ns(), rec.cpu_ns() if rec else 0
    k1 = worker_sys()
    s1, th1, t1 = _switches(wp), rec.threads() if rec else {}, time.monotonic()
    settled: dict[str, float] = {}
    if isinstance(rec, _Agent):  # the agent's CPU until the log host has taken what the window made
        settled = rec.settle()
        settled["window_ns"] = a1 - a0
        a1 = rec.cpu_ns()
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9 + (n1 - n0) + (a1 - a0)
    wake = {k: ((v[0] - th0.get(k, (0, 0))[0]) / (t1 - t0), (v[1] - th0.get(k, (0, 0))[1]) / (t1 - t0))
            for k, v in th1.items()}
    sys_ns = (r1.ru_stime - r0.ru_stime + k1 - k0) * 1e9  # the kernel's part of nginx's and wrk's CPU
    return {"cpu": cpu / reqs, "sys": sys_ns / reqs, "cpu_rec": a1 - a0, "reqs": reqs, "rps": reqs / secs,
            "nginx_vol": (s1[0] - s0[0]) / reqs, "nginx_inv": (s1[1] - s0[1]) / reqs, "nginx_mig": (s1[2] - s0[2]) / reqs,
            "wrk_vol": (r1.ru_nvcsw - r0.ru_nvcsw) / reqs, "wrk_inv": (r1.ru_nivcsw - r0.ru_nivcsw) / reqs,
            "threads": wake, "agent": settled}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.web_kernel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", action="append", default=[], metavar="NAME=SRC",
                    help="a tree's src/ directory (its sensor built); configurations NAME, NAME:floor, NAME:syscall, "
                         "NAME:counters, NAME:nosock (sockets' edges free: make -C bpf nosock), NAME:norw (no read/write "
                         "syscall hook: make -C bpf norw; sockets per call at the socket layer), NAME:norw+close (and "
                         "a close hook's least work), parts joined by + (NAME:norw+counters), "
                         "NAME:record (its forensix record, agent included), NAME:agent (its forensix agent shipping to its "
                         "forensix server, which runs at SCHED_IDLE, nice 19, its CPU apart), NAME:agent+off (that log host "
                         "SIGSTOPped during the window), NAME:floor+record (forensix record "
                         "loading the floor build), ...+stop (the recorder SIGSTOPped while measured)")
    ap.add_argument("--configs", default=None, help="comma list (default: none and every NAME)")
    ap.add_argument("--workload", choices=["web", "web-conn"], default="web")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--stats", action="store_true", help="kernel.bpf_stats_enabled during the run")
    ap.add_argument("--pin", action="store_true",
                    help="nginx's worker on CPU 0 and wrk on CPU 1 (unpinned, the two often share a CPU: how often "
                         "moves the figures more than a sensor does)")
    ap.add_argument("--json", type=Path, default=None, help="also write every window's figures here")
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
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    progs: dict[str, dict[str, list[int]]] = {c: {} for c in configs}
    loads = []
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    if a.stats:
        stats_path.write_text("1\n")
    try:
        for rep in range(a.reps):
            k = rep % len(configs)
            for c in configs[k:] + configs[:k]:
                rec = _recorder(c, sensors, scratch)
                holder = None if c == "none" or rec else _holder(c, sensors, scratch)
                try:
                    m = _measure(w, a.seconds, rec, a.pin)
                finally:
                    stats = {}
                    checked = rec.stop() if rec is not None else None
                    if holder is not None:
                        assert holder.stdin is not None and holder.stdout is not None
                        holder.stdin.close()
                        stats = json.loads(holder.stdout.readline() or "{}")
                        holder.wait()
                if isinstance(checked, dict):
                    m["agent"]["check"] = _complete(checked, m["reqs"], a.workload)
                runs[c].append(m)
                for prog, (n, ns) in stats.items():
                    acc = progs[c].setdefault(prog, [0, 0, 0])
                    acc[0] += n
                    acc[1] += ns
                    acc[2] += m["reqs"]
            loads.append(os.getloadavg()[0])
            print(f"rep {rep}: " + ", ".join(f"{c} {runs[c][-1]['cpu']:.0f} ns {runs[c][-1]['rps']:,.0f}/s"
                                              for c in configs) + f"; load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    finally:
        if a.stats:
            stats_path.write_text("0\n")
        w.after_run(Recorder())
    _report(w, a, configs, runs, progs, loads)
    if a.json is not None:
        a.json.write_text(json.dumps({"workload": a.workload, "loads": loads, "runs": runs}, indent=1, default=str))
    return 0


def _complete(out: dict[str, Any], reqs: int, workload: str) -> dict[str, Any]:
    """``AgentPair.stop``'s checks, and whether the log host holds every request of the window: nginx's
    accepts and wrk's connects (web-conn), nginx's opens of the served files (web, repeats counted in
    the kernel included) at least the requests wrk completed. Said on stderr when one fails."""
    served = out.get("served", {})
    need = ("nginx accept", "wrk connect") if workload == "web-conn" else ("nginx open",)
    short = {k: served.get(k, 0) for k in need if served.get(k, 0) < reqs}
    out["requests_stored"] = not short
    if not (out["complete"] and not short):
        print(f"bench: NOT everything reached the log host: {reqs:,} requests, stored {short or 'all'}; kernel drops "
              f"{out['kernel_drops']}, gaps {out['lost']}, unacknowledged {out['unacked']}, refused {out['refused']}, "
              f"decode warnings {out['decode_warnings']}, stop record {out['stop_recorded']} of "
              f"{out['agent_shipped']} shipped", file=sys.stderr, flush=True)
    keep = ("events", "lost", "kernel_drops", "unacked", "refused", "decode_warnings", "agent_shipped",
            "stop_recorded", "complete", "requests_stored", "served", "loghost_s", "stop_records")
    return {k: out.get(k) for k in keep}


def _paired(runs: dict[str, list[dict[str, Any]]], c: str, base: str, key: str, inverse: bool) -> str:
    ratios = [(b[key] / x[key]) if inverse else (x[key] / b[key]) for x, b in zip(runs[c], runs[base], strict=True)]
    se = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
    return f"{statistics.mean(ratios):.1%} ± {se:.1%}"


def _per_request(runs: dict[str, list[dict[str, Any]]], configs: list[str]) -> None:
    """Each recorder thread's CPU per request (µs, median of the windows), and paired against
    the first of ``configs`` window by window: on a loaded host the recorder's CPU per request
    moves far less than req/s. A window in which a thread's processes came and went (a store
    keeper exiting idle while another starts) can give a negative difference: left out, counted."""
    def us(r: dict[str, Any], n: str) -> float | None:
        v = r["threads"].get(n, (0, 0))[0] / r["rps"] / 1e3
        return None if v < 0 else float(v)

    names = sorted({n for c in configs for r in runs[c] for n in r["threads"]
                    if any(r2["threads"].get(n, (0, 0))[0] > 1e6 for r2 in runs[c])})
    first = configs[0]
    print(f"\n| configuration | recorder thread: µs of CPU per request (median; paired against {first}) |")
    print("|---|---|")
    for c in configs:
        cells = []
        for n in names + ["all"]:
            vals = [v for v in ((r["cpu_rec"] / r["reqs"] / 1e3 if n == "all" else us(r, n)) for r in runs[c])
                    if v is not None]
            if not vals:
                continue
            pairs = [(x, y) for x, y in ((us(b, n) if n != "all" else b["cpu_rec"] / b["reqs"] / 1e3,
                                          us(r, n) if n != "all" else r["cpu_rec"] / r["reqs"] / 1e3)
                                         for b, r in zip(runs[first], runs[c], strict=False))
                     if x and y is not None]
            cell = f"{n} {statistics.median(vals):.2f}"
            if c != first and pairs:
                cell += f" ({statistics.median(y / x for x, y in pairs):.2f})"
            left = len(runs[c]) - len(vals)
            cells.append(cell + (f" [{left} window(s) left out]" if left else ""))
        print(f"| {c} | {'; '.join(cells)} |")


def _report(w: Any, a: Any, configs: list[str], runs: dict[str, list[dict[str, Any]]],
            progs: dict[str, dict[str, list[int]]], loads: list[float]) -> None:
    def med(c: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[c]))

    print(f"{w.describe()}; {a.reps} repetitions of {a.seconds} s, alternating; "
          f"bpf_stats {'on' if a.stats else 'off'}{'; nginx and wrk pinned to CPUs 0 and 1' if a.pin else ''}; 1-minute load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| configuration | CPU per request (ns, median) | as throughput (paired mean ± se) "
          "| nginx + wrk system time per request (ns, median; paired against the first) | req/s (median) "
          "| req/s against the first (paired) | nginx switches per request (vol / invol / migrations) "
          "| wrk switches per request (vol / invol) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in configs:
        print(f"| {c} | {med(c, 'cpu'):,.0f} | {_paired(runs, c, configs[0], 'cpu', True)} "
              f"| {med(c, 'sys'):,.0f} ({_paired(runs, c, configs[0], 'sys', False)}) | {med(c, 'rps'):,.0f} "
              f"| {_paired(runs, c, configs[0], 'rps', False)} "
              f"| {med(c, 'nginx_vol'):.3f} / {med(c, 'nginx_inv'):.4f} / {med(c, 'nginx_mig'):.4f} "
              f"| {med(c, 'wrk_vol'):.3f} / {med(c, 'wrk_inv'):.4f} |")
    threads = [c for c in configs if any(r["threads"] for r in runs[c])]
    if threads:
        print("\n| configuration | recorder thread: CPU ms per s / times run per s (medians) |")
        print("|---|---|")
        for c in threads:
            names = sorted({n for r in runs[c] for n in r["threads"]})
            cells = []
            for n in names:
                ms = statistics.median(r["threads"].get(n, (0, 0))[0] for r in runs[c]) / 1e6
                wk = statistics.median(r["threads"].get(n, (0, 0))[1] for r in runs[c])
                cells.append(f"{n} {ms:.2f} / {wk:.1f}")
            print(f"| {c} | {'; '.join(cells)} |")
        _per_request(runs, threads)
    agents = [c for c in configs if any(r.get("agent") for r in runs[c])]
    if agents:
        print("\n| configuration | agent CPU per request, window / until acknowledged (µs, median; the latter is "
              "counted above) | as throughput with the window's agent CPU only (paired) | log host CPU per request, window / all (µs, median; NOT counted: another machine's) "
              "| catch-up after the window (s, median) | kernel records shipped / events stored (median) "
              "| nothing lost (windows) |")
        print("|---|---|---|---|---|---|---|")
        for c in agents:
            rs = [r for r in runs[c] if r.get("agent")]

            def us(key: str, rs: list[dict[str, Any]] = rs) -> float:
                return float(statistics.median(r["agent"][key] / r["reqs"] for r in rs)) / 1e3

            def chk(key: str, rs: list[dict[str, Any]] = rs) -> float:
                return float(statistics.median(r["agent"]["check"][key] for r in rs))

            ok = sum(1 for r in rs if r["agent"]["check"]["complete"] and r["agent"]["check"]["requests_stored"])
            lh_w = statistics.median(r["agent"]["loghost_window_s"] / r["reqs"] for r in rs) * 1e6
            lh_all = statistics.median(r["agent"]["check"]["loghost_s"] / r["reqs"] for r in rs) * 1e6
            # the throughput with the agent's CPU of the window only (as NAME:record's is counted)
            base = configs[0]
            alt = [b["cpu"] / (x["cpu"] - (x["cpu_rec"] - x["agent"]["window_ns"]) / x["reqs"])
                   for x, b in zip(runs[c], runs[base], strict=True) if x.get("agent")]
            se = statistics.stdev(alt) / len(alt) ** 0.5 if len(alt) > 1 else 0.0
            print(f"| {c} | {us('window_ns'):.2f} / {statistics.median((r['cpu_rec'] / r['reqs']) for r in rs) / 1e3:.2f} "
                  f"| {statistics.mean(alt):.1%} ± {se:.1%} | {lh_w:.2f} / {lh_all:.2f} | {statistics.median(r['agent']['settle_s'] for r in rs):.1f} "
                  f"| {chk('agent_shipped'):,.0f} / {chk('events'):,.0f} | {ok} of {len(rs)} |")
    if any(progs.values()):
        print("\n| configuration | program | runs per request | ns per run | ns per request |")
        print("|---|---|---|---|---|")
        for c in configs:
            for prog, (n, ns, reqs) in sorted(progs[c].items(), key=lambda x: -x[1][1]):
                if ns / reqs >= 5:
                    print(f"| {c} | {prog} | {n / reqs:.2f} | {ns / n:,.0f} | {ns / reqs:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
