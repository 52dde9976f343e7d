"""What attaching costs a syscall, by attach type, and a sensor's cost on one web request.

    python -m bench.micro_attach --reps 5
    python -m bench.micro_attach --sensor main=/clone/src --sensor new=src \\
        --configs none,slowpath,classic5,btf,main,new,new:floor --reps 7

Each configuration attaches something, runs two C loops (bench/micro.c) and detaches;
configurations alternate within each repetition (the order rotates). The figures are the
loop's own CPU time per operation (CLOCK_PROCESS_CPUTIME_ID), the lowest of ``--rounds``
rounds: other work on a shared host moves CPU time far less than wall time, and the lowest
round least:

- ``webreq``: one keep-alive web request's syscalls as nginx and wrk make them, both ends in
  one thread over a loopback TCP connection (write; recvfrom, openat of one of 200 files,
  fstat, writev, sendfile, close; read): 8 syscalls, 5 of them hooked by the sensor's
  syscall tracepoints (openat, writev, sendfile, write, read), 5 socket-layer transfers.
- ``webconn`` (only with ``--only``; ``--webreq`` requests a round): one web-conn request as nginx and
  wrk make it with ``Connection: close``, both ends in one thread: a new loopback TCP connection
  (socket, connect, accept4), the request's syscalls as in ``webreq`` plus the access log's write,
  both ends closed. Run a sensor as ``NAME:sink`` (bench.web_kernel: its rings given back every
  100 ms) so its records are written, not dropped into full rings.
- ``getppid``: a syscall nothing hooks: the slow path every syscall takes once any syscall
  tracepoint is attached.
- ``sockpair`` (only with ``--only``; ``--getppid`` rounds): a byte sent and received back over a unix
  socket pair with send(2)/recv(2): two socket-layer transfers, no hooked syscall (``sock`` against
  ``none``: the socket layer's dispatch per transfer, twice).

Configurations: ``none``; empty programs (bench/micro_attach.bpf.c) attached as
``slowpath`` (a classic tracepoint on getpgid, which the loops never call), ``classic5``
(classic tracepoints on the five hooked syscalls of webreq), ``classic1`` / ``classic2`` (on openat
alone / openat and close: what a sensor with no read/write syscall hook attaches), ``hookppid`` (an
empty classic tracepoint on getppid itself: getppid's figure is then the slow path plus one hooked call's
dispatch), ``raw`` / ``btf`` (one program
on every syscall's exit, raw_tp / tp_btf), ``btffilter`` (tp_btf on every exit, the syscall
number tested against a bitmap first), ``sock`` (the socket layer's two tp_btf); and a tree's
sensor as in bench.web_kernel (``NAME``, ``NAME:floor``, ``NAME:counters``, ``NAME:syscall``,
``NAME:norw``, ``NAME:norw+close``).
Another recorder attached on the host meanwhile is counted per repetition (its links slow
every configuration alike, so ratios still hold, but less of each configuration is seen).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.micro import build_micro
from bench.web_kernel import _holder

ROOT = Path(__file__).resolve().parent.parent
BPF_C = Path(__file__).with_name("micro_attach.bpf.c")
WEB_HOOKED = ("openat", "writev", "sendfile64", "write", "read")
SIMPLE = {
    "slowpath": [("empty_tp", "getpgid")],
    "classic5": [("empty_tp", sc) for sc in WEB_HOOKED],
    "hookppid": [("empty_tp", "getppid")],  # getppid itself hooked: the dispatch of one hooked call
    "classic1": [("empty_tp", "openat")],  # the open alone: a sensor with no read/write syscall hook
    "classic2": [("empty_tp", "openat"), ("empty_tp", "close")],  # and a close hook
    "raw": [("empty_raw_exit", None)],
    "btf": [("empty_btf_exit", None)],
    "btffilter": [("filter_btf_exit", None)],
    "sock": [("empty_sock_send", None), ("empty_sock_recv", None)],
}


def build_probe(out: Path) -> Path:
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{ROOT / 'bpf'}", f"-I{arch}",
                    "-c", str(BPF_C), "-o", str(out)], check=True)
    return out


class Probe:
    """The empty programs of one simple configuration, loaded and attached."""

    def __init__(self, obj_path: Path, spec: list[tuple[str, str | None]]) -> None:
        from forensix.sensor import libbpf as lb

        self.lb = lb
        self.obj = lb.lib.bpf_object__open_file(str(obj_path).encode(), None)
        names = {p for p, _ in spec}
        p = lb.lib.bpf_object__next_program(self.obj, None)
        while p:
            lb.lib.bpf_program__set_autoload(p, lb.lib.bpf_program__name(p).decode() in names)
            p = lb.lib.bpf_object__next_program(self.obj, p)
        if lb.lib.bpf_object__load(self.obj) < 0:
            raise RuntimeError(f"cannot load {obj_path}: " + "\n".join(lb.log_lines()[-10:]))
        self.links = []
        for prog, sc in spec:
            pp = lb.lib.bpf_object__find_program_by_name(self.obj, prog.encode())
            link = (lb.lib.bpf_program__attach_tracepoint(pp, b"syscalls", f"sys_exit_{sc}".encode()) if sc
                    else lb.lib.bpf_program__attach(pp))
            if not link:
                raise RuntimeError(f"cannot attach {prog} {sc or ''}")
            self.links.append(link)

    def close(self) -> None:
        for link in self.links:
            self.lb.lib.bpf_link__destroy(link)
        self.lb.lib.bpf_object__close(self.obj)


def _other_links() -> int:
    """BPF links attached on the host (another engineer's recorder shows here)."""
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=False).stdout
    try:
        return len(json.loads(out or "[]"))
    except ValueError:
        return -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro_attach", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", action="append", default=[], metavar="NAME=SRC",
                    help="a tree's src/ (its sensor built): configurations NAME, NAME:floor, NAME:counters...")
    ap.add_argument("--configs", default=None,
                    help="comma list (default: none, every simple configuration, every NAME and NAME:floor)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--webreq", type=int, default=5_000, help="requests per round")
    ap.add_argument("--getppid", type=int, default=100_000, help="getppid calls per round")
    ap.add_argument("--stats", action="store_true",
                    help="kernel.bpf_stats_enabled during the run; a sensor's programs' runs and ns per webreq")
    ap.add_argument("--only", default="webreq,getppid", help="loops to run (comma list)")
    ap.add_argument("--netns", action="store_true",
                    help="run the loops in a network namespace of their own and hold the sensors with --netns "
                         "for it: the programs' figures are then the loop's alone, not the host's other work")
    ap.add_argument("--rounds", type=int, default=12, help="rounds per loop; the lowest round's CPU is kept")
    a = ap.parse_args(argv)
    sensors = {k: Path(v).resolve() for k, v in (s.split("=", 1) for s in a.sensor)}
    configs = (a.configs.split(",") if a.configs
               else ["none", *SIMPLE, *[n for s in sensors for n in (s, f"{s}:floor")]])
    scratch = Path(tempfile.mkdtemp(prefix="fx-micro-attach-"))
    micro = build_micro(scratch / "micro")
    probe_obj = build_probe(scratch / "micro_attach.bpf.o")
    (scratch / "www").mkdir()
    env = {**os.environ, "MICRO_DIR": str(scratch / "www"), "MICRO_ROUNDS": str(a.rounds)}
    prefix: list[str] = []
    if a.netns:
        ns = f"fxmicro{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        os.environ["FX_HOLD_NETNS"] = str(os.stat(f"/var/run/netns/{ns}").st_ino)
        prefix = ["ip", "netns", "exec", ns]
    ops = {o: n for o, n in (("webreq", a.webreq), ("webconn", a.webreq), ("getppid", a.getppid),
                             ("sockpair", a.getppid)) if o in a.only.split(",")}
    web = [o for o in ops if o.startswith("web")]
    progs: dict[str, dict[str, list[int]]] = {c: {} for c in configs}
    cpu: dict[str, dict[str, list[float]]] = {c: {o: [] for o in ops} for c in configs}
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    if a.stats:
        stats_path.write_text("1\n")
    loads, links = [], []
    for rep in range(a.reps):
        k = rep % len(configs)
        links.append(_other_links())
        for c in configs[k:] + configs[:k]:
            probe, holder = None, None
            if c in SIMPLE:
                probe = Probe(probe_obj, SIMPLE[c])
            elif c != "none":
                holder = _holder(c, sensors, scratch)
            try:
                for op, n in ops.items():
                    out = subprocess.run([*prefix, str(micro), op, str(n)], capture_output=True, text=True, check=True,
                                         env=env).stdout.split()
                    cpu[c][op].append(float(out[3]))
            finally:
                if probe is not None:
                    probe.close()
                if holder is not None:
                    assert holder.stdin is not None and holder.stdout is not None
                    holder.stdin.close()
                    for prog, (runs, ns) in json.loads(holder.stdout.readline() or "{}").items():
                        acc = progs[c].setdefault(prog, [0, 0, 0])
                        acc[0] += runs
                        acc[1] += ns
                        acc[2] += a.webreq * a.rounds * (1 + 1 / 100) * len(web) if web else 1
                    holder.wait()
        loads.append(os.getloadavg()[0])
        print(f"rep {rep}: " + ", ".join(f"{c} " + "/".join(f"{v[-1]:.0f}" for v in cpu[c].values())
                                         for c in configs) + f" ns; load {loads[-1]:.1f}; links {links[-1]}",
              file=sys.stderr, flush=True)
    print(f"{a.reps} repetitions, configurations alternating; CPU ns per operation (median) and the paired "
          f"ratio to {configs[0]} (mean ± se); 1-minute load {min(loads):.1f}-{max(loads):.1f}; BPF links "
          f"of others on the host at each repetition's start: {', '.join(map(str, links))}\n")
    head = {"webreq": ["webreq ns", "+ ns", "throughput equivalent"],
            "webconn": ["webconn ns", "+ ns", "throughput equivalent"], "getppid": ["getppid ns", "+ ns"],
            "sockpair": ["sockpair ns", "+ ns"]}
    cols = [h for o in ops for h in head[o]]
    print("| configuration | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    base = configs[0]
    for c in configs:
        row = [c]
        for op in ops:
            med = statistics.median(cpu[c][op])
            d = [x - b for x, b in zip(cpu[c][op], cpu[base][op], strict=True)]
            row += [f"{med:,.0f}", f"{statistics.mean(d):+,.0f}"]
            if op.startswith("web"):
                r = [b / x for x, b in zip(cpu[c][op], cpu[base][op], strict=True)]
                se = statistics.stdev(r) / len(r) ** 0.5 if len(r) > 1 else 0.0
                row.append(f"{statistics.mean(r):.1%} ± {se:.1%}")
        print("| " + " | ".join(row) + " |")
    if a.stats:
        stats_path.write_text("0\n")
    if prefix:
        subprocess.run(["ip", "netns", "del", prefix[3]], check=False)
    if any(progs.values()):
        what = "+".join(web) or "run"
        print(f"\n| configuration | program | runs per {what} | ns per run | ns per {what} |")
        print("|---|---|---:|---:|---:|")
        for c in configs:
            for prog, (runs, ns, reqs) in sorted(progs[c].items(), key=lambda x: -x[1][1]):
                if ns / reqs >= 2:
                    print(f"| {c} | {prog} | {runs / reqs:.2f} | {ns / runs:,.0f} | {ns / reqs:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
