"""exec_hold_cost: what the exec-time hold (artifacts/exechold.py, fanotify FAN_OPEN_EXEC) costs.

    python -m bench.exec_hold_cost build --src /tmp/build-cost-src/orig/lua-5.4.4 --make-args posix --pairs 8
    python -m bench.exec_hold_cost build --netns --src /tmp/build-cost-src/orig/lua-5.4.4 --make-args posix --pairs 16
    python -m bench.exec_hold_cost micro --rounds 20

``build``: pairs of fresh builds (``make -j2 -s ARGS``), each under its own ``forensix record``
(host-wide; ``--netns``: as ``bench.build_cost --netns`` measures it, recording only the build),
with the hold and with ``--no-exec-hold``, the order alternating (ABBA) so a drift of the
shared host's load falls on both. Per build: wall time, the build's CPU (user + system of
make and everything it waited for: the marks' checks and the events' queueing are paid in
the build's own system time), the recorder's CPU over the build, and the load average.
Prints each pair and the hold/no-hold ratios (median, mean ± sd).

``micro``: no recorder, the hold alone: CPU ns per ``open``+``close`` and per 1-byte
``pread`` of a file on the root filesystem, and per ``posix_spawn`` + wait of ``/bin/true``
(this process and its children), in alternating blocks with a fanotify group marking every
filesystem and without; and the agent's CPU per event for ``ExecHold.poll`` (read, fstat,
one descriptor per file). CPU time, not wall: the host is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.forensix_ready import wait_until_recording
from forensix.store.embedded import open_reader

_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / _TCK


def _build_once(src: Path, make_args: str, hold: bool, scratch: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=scratch))
    tree = work / "src"
    shutil.copytree(src, tree, symlinks=True)
    store, log = work / "rec.duckdb", work / "rec.log"
    cmd = [sys.executable, "-m", "forensix", "record", "-q", "--no-system-logs", "--no-rules", "--store", str(store)]
    if not hold:
        cmd.append("--no-exec-hold")
    with open(log, "wb") as out:
        rec = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_recording(rec, store, log)
        time.sleep(1.0)  # start-up's own work settles
        load = os.getloadavg()[0]
        c0 = _proc_cpu(rec.pid)
        t0 = time.monotonic()
        make = subprocess.Popen(["make", "-j2", "-s", *make_args.split()], cwd=tree,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(make.pid, 0)
        wall = time.monotonic() - t0
        make.returncode = os.waitstatus_to_exitcode(status)
        rec_cpu = _proc_cpu(rec.pid) - c0
        if make.returncode != 0:
            raise RuntimeError(f"make failed ({make.returncode}) in {tree}")
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(120)
    said = ""
    rd = open_reader(str(store))
    try:
        msgs = rd.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'artifacts'",
                        {}).column("message").to_pylist()
        said = next((m for m in msgs if m), "")
    finally:
        rd.close()
    shutil.rmtree(work, ignore_errors=True)
    hold_said = said[said.find("exec-time hold"):].split(";")[0] if "exec-time hold" in said else ""
    return {"wall_s": wall, "build_cpu_s": ru.ru_utime + ru.ru_stime, "build_sys_s": ru.ru_stime,
            "recorder_cpu_s": rec_cpu, "load": load, "hold": hold_said}


def _build_netns(src: Path, make_args: str, hold: bool, scratch: Path, netns: str) -> dict[str, Any]:
    """One build as bench.build_cost measures it: recording only its own network namespace."""
    from bench.build_cost import measure

    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        got = measure(src, make_args, work, 2.0, dict(os.environ), netns,
                      record_args=() if hold else ("--no-exec-hold",))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": got["build_wall_s"], "build_cpu_s": got["build_cpu_s"], "build_sys_s": 0.0,
            "recorder_cpu_s": got["cpu_total_s"]["build"], "load": got["loadavg_1m"], "hold": ""}


def _ratios(pairs: list[dict[str, dict[str, Any]]], key: str) -> str:
    r = [p["hold"][key] / p["off"][key] for p in pairs if p["off"][key] > 0]
    if not r:
        return f"{key}: no figures"
    sd = statistics.stdev(r) if len(r) > 1 else 0.0
    return (f"{key}: hold/no-hold median {statistics.median(r):.4f}, mean {statistics.mean(r):.4f} ± {sd:.4f} "
            f"({len(r)} pairs)")


def build(args: argparse.Namespace) -> int:
    from bench.build_cost import _netns_up

    scratch = Path(tempfile.mkdtemp(prefix="exec-hold-cost-", dir="/var/tmp"))
    pairs: list[dict[str, dict[str, Any]]] = []
    netns = f"fx-exec-hold-{os.getpid()}" if args.netns else None
    try:
        if netns:
            _netns_up(netns)
        for i in range(args.pairs):
            order = ["hold", "off"] if i % 2 == 0 else ["off", "hold"]
            pair = {name: (_build_netns(args.src, args.make_args, name == "hold", scratch, netns) if netns else
                           _build_once(args.src, args.make_args, name == "hold", scratch)) for name in order}
            pairs.append(pair)
            h, o = pair["hold"], pair["off"]
            sys_s = f" (sys {h['build_sys_s']:.2f} / {o['build_sys_s']:.2f})" if not netns else ""
            print(f"pair {i + 1} ({'/'.join(order)}): wall {h['wall_s']:.2f} / {o['wall_s']:.2f} s, "
                  f"build CPU {h['build_cpu_s']:.2f} / {o['build_cpu_s']:.2f} s{sys_s}, recorder CPU "
                  f"{h['recorder_cpu_s']:.2f} / {o['recorder_cpu_s']:.2f} s, load {h['load']:.2f} / {o['load']:.2f}",
                  flush=True)
            if h["hold"]:
                print(f"  {h['hold']}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)
    for key in ("wall_s", "build_cpu_s", *(() if netns else ("build_sys_s",)), "recorder_cpu_s"):
        print(_ratios(pairs, key))
    return 0


def _opens(path: str, n: int) -> float:
    """CPU ns (this thread, user + system) per open + close."""
    t0 = time.thread_time_ns()
    for _ in range(n):
        os.close(os.open(path, os.O_RDONLY))
    return (time.thread_time_ns() - t0) / n


def _reads(path: str, n: int) -> float:
    """CPU ns per 1-byte pread of an open file (the per-call check on a marked filesystem)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.thread_time_ns()
        for _ in range(n):
            os.pread(fd, 1, 0)
        return (time.thread_time_ns() - t0) / n
    finally:
        os.close(fd)


def _spawns(n: int) -> float:
    """CPU ns (this process and the children, user + system) per posix_spawn + wait of /bin/true."""
    c0 = os.times()
    for _ in range(n):
        pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
        os.waitpid(pid, 0)
    c1 = os.times()
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - (
        c0.user + c0.system + c0.children_user + c0.children_system)
    return cpu * 1e9 / n


def _takes(hold: object, target: str, n: int) -> float:
    """CPU ns per ``ExecHold.take`` (and the close of what it gives) of an exec of ``target``:
    what the collector pays per exec read through the hold, besides ``poll``."""
    ino = os.stat(target).st_ino
    pids = []
    for _ in range(n):
        pid = os.posix_spawn(target, [target], {})
        os.waitpid(pid, 0)
        pids.append(pid)
    hold.poll()  # type: ignore[attr-defined]
    t0 = time.thread_time_ns()
    for pid in pids:
        fd = hold.take(pid, ino)  # type: ignore[attr-defined]
        if fd is not None:
            os.close(fd)
    return (time.thread_time_ns() - t0) / n


def micro(args: argparse.Namespace) -> int:
    from forensix.artifacts.exechold import ExecHold

    target = "/usr/bin/true"
    res: dict[str, dict[str, list[float]]] = {k: {"hold": [], "off": []} for k in ("open", "pread", "spawn")}
    poll_ns: list[float] = []
    take_ns: list[float] = []
    for i in range(args.rounds):
        for name in (("hold", "off") if i % 2 == 0 else ("off", "hold")):
            hold = ExecHold.open() if name == "hold" else None
            if isinstance(hold, str):
                print(f"no hold: {hold}")
                return 1
            try:
                res["open"][name].append(_opens(target, args.opens))
                res["pread"][name].append(_reads(target, args.opens))
                res["spawn"][name].append(_spawns(args.spawns))
                if hold is not None:
                    c0 = time.thread_time_ns()
                    got = hold.poll()
                    poll_ns.append((time.thread_time_ns() - c0) / max(got, 1))
                    take_ns.append(_takes(hold, target, min(args.spawns, 200)))
            finally:
                if hold is not None:
                    hold.close()
    print(f"load {os.getloadavg()[0]:.2f}")
    for what, d in res.items():
        h, o = statistics.median(d["hold"]), statistics.median(d["off"])
        print(f"{what}: {h:.0f} ns with the hold, {o:.0f} ns without ({h - o:+.0f} ns, {h / o - 1:+.2%}; medians of "
              f"{len(d['hold'])} alternating blocks)")
    print(f"ExecHold.poll: {statistics.median(poll_ns):.0f} ns CPU per exec-open event (median of {len(poll_ns)})")
    print(f"ExecHold.take: {statistics.median(take_ns):.0f} ns CPU per exec taken, with the close of its "
          f"descriptor (median of {len(take_ns)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exec_hold_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("build", help="paired builds under forensix record, with and without the hold")
    b.add_argument("--src", type=Path, required=True, help="an unpacked source tree")
    b.add_argument("--make-args", default="", help="what `make -j2 -s` builds")
    b.add_argument("--pairs", type=int, default=8)
    b.add_argument("--netns", action="store_true",
                   help="record only a network namespace made for the run and build inside it (bench.build_cost "
                        "--netns): the recorder's CPU is the build's own; the hold still sees every exec of the host")
    m = sub.add_parser("micro", help="open and spawn costs with a fanotify group marking every filesystem")
    m.add_argument("--rounds", type=int, default=20)
    m.add_argument("--opens", type=int, default=50_000)
    m.add_argument("--spawns", type=int, default=500)
    args = ap.parse_args(argv)
    return build(args) if args.mode == "build" else micro(args)


if __name__ == "__main__":
    sys.exit(main())
