"""The live raw agent's CPU per stored event over a real build: two source trees, alternating.

    python -m bench.agent_live --src /tmp/build-cost-src/orig/lua-5.4.4 --make-args posix --against OLD/src --pairs 4

``bench.agent_cost ship`` replays a capture, so what only a live agent pays is not in its
figure: the exec-time hold (artifacts/exechold.py: a fanotify event read, a descriptor
checked and mostly closed per exec-open, one taken per exec), reading and hashing the
executables, the ring's own copy at drain time, the map take. Here a real ``forensix agent``
(raw, the default; no log host: its frames stay in its spool, as with the network down)
records a network namespace made for the run (``--netns``: only the build's processes) while
``make -j2 -s ARGS`` builds a fresh copy of ``--src`` in it, twice: the first build's
executables are read, kept and shipped (once in an agent's life), the second is measured. The
agent's CPU (its threads' run time) is taken before it and ~2.5 s after it (its last drain
tick and flush), then again after as long idle: ``less idle`` takes the ticks' cost by time
out. The rows are those the log host's decoder makes of the frames sealed in the measured
window (server/rawdecode.py, as bench.agent_cost does). The trees alternate (ABBA)
so a drift of the shared host's load falls on both; each run has its own spool and bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _cpu(pid: int) -> float:
    """The process's CPU seconds, in ns steps: its threads' run time (/proc/PID/task/*/schedstat;
    /proc/PID/stat counts 10 ms ticks, a tenth of a lua build's agent CPU). The agent's threads
    live as long as it does."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread gone meanwhile
    return total / 1e9


def _threads(pid: int) -> dict[int, int]:
    """Each thread's run time (ns), by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _switches(pid: int) -> dict[int, int]:
    """Each thread's voluntary context switches (its sleeps: the wake-ups it took), by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[int(task.name)] = int(line.split()[1])
        except (OSError, ValueError):
            continue
    return out


def _timers(pid: int, out: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """The agent's timed functions so far (bench/agent_timers.py: SIGUSR2 writes them)."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            got = json.loads(out.read_text())
            return {(t, f): (c, ns) for t, f, c, ns in got["rows"]}
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("the agent wrote no timers (bench/agent_timers.py)")


def _thread_names(pid: int) -> dict[int, str]:
    """Python thread names by thread id (``py-spy dump``; {} without it)."""
    if shutil.which("py-spy") is None:
        return {}
    r = subprocess.run(["py-spy", "dump", "--pid", str(pid)], check=False, capture_output=True, text=True, timeout=60)
    found = re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', r.stdout, re.MULTILINE)
    return {int(m.group(1)): m.group(2) for m in found}


def _by_thread(pid: int, before: dict[int, int], after: dict[int, int], scale: float = 1e6) -> dict[str, float]:
    """ms of CPU per thread name between two ``_threads`` readings (``scale`` 1: counts)."""
    names = _thread_names(pid)
    out: dict[str, float] = {}
    for tid, ns in after.items():
        name = names.get(tid, f"tid {tid}")
        out[name] = round(out.get(name, 0.0) + (ns - before.get(tid, 0)) / scale, 2)
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v}


def _bundle(where: Path) -> Path:
    from forensix.pki.authority import Authority

    pki = Authority(where / "pki")
    pki.init(["127.0.0.1"])
    return pki.issue("livebench", seal_interval_s=3600).directory


def _wait_recording(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while b"recording: every program attached" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("forensix agent did not start recording: " + log.read_text(errors="replace")[-800:])
        time.sleep(0.1)


def _rows(spool: Path, after_ns: int, before_ns: int) -> dict[str, int]:
    """Rows per table the log host makes of the frames sealed in (after_ns, before_ns], and those
    frames (``frames``); every frame is decoded (the decoder's state needs them all), only
    those are counted."""
    from forensix.agent.frame import RAW_TABLE, decode_body, parse_frame
    from forensix.server.rawdecode import StreamDecoder

    dec = StreamDecoder("livebench", "live")
    rows: dict[str, int] = {}
    for seg in sorted(spool.glob("seg-*.fxs")):
        buf, off = seg.read_bytes(), 0
        while off < len(buf):
            fr = parse_frame(buf, off)
            off += len(fr.raw)
            data = decode_body(fr)
            got = dec.feed(data, fr.seq).joined() if fr.table == RAW_TABLE else [(fr.table, data)]
            if after_ns < fr.seal_ns <= before_ns:
                rows["frames"] = rows.get("frames", 0) + 1
                for table, t in got:
                    rows[table] = rows.get(table, 0) + t.num_rows
    return rows


def _build(tree: Path, build: Path, make_args: str, netns: str) -> float:
    shutil.copytree(build, tree, symlinks=True)
    w0 = time.monotonic()
    subprocess.run(["ip", "netns", "exec", netns, "make", "-j2", "-s", *make_args.split()], cwd=tree,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - w0


def _blob_frames(spool: Path) -> int:
    """The artifact_blobs frames in the spool (headers only)."""
    from forensix.agent.frame import HEADER, frame_length

    n = 0
    for seg in spool.glob("seg-*.fxs"):
        buf, off = seg.read_bytes(), 0
        while off + HEADER.size <= len(buf):
            total = frame_length(buf[off: off + HEADER.size], off)
            hlen, tlen = buf[off + 60], buf[off + 61]  # the header's host and table lengths
            n += buf[off + HEADER.size + hlen: off + HEADER.size + hlen + tlen] == b"artifact_blobs"
            off += total
    return n


def _blobs_shipped(spool: Path, netns: str, settle: float = 3.0, limit: float = 90.0) -> None:
    """Wait until the kept files' bytes are spooled (artifact_blobs, 4 MiB a drain tick: the
    compilers' ~40 MiB), ticks kept going by a little activity in the namespace (a tick with
    no record ships no blob)."""
    busy = subprocess.Popen(["ip", "netns", "exec", netns, "sh", "-c", "while sleep 0.2; do :; done"])
    try:
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = _blob_frames(spool)
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= settle:
                return
            time.sleep(0.5)
    finally:
        busy.kill()
        busy.wait()


def run_once(src_tree: str, build: Path, make_args: str, scratch: Path, netns: str,
             profile: Path | None = None, timers: bool = False) -> dict[str, Any]:
    """One agent: a first build (its compilers read and kept: once in an agent's life, not per
    event), then the measured build, then as long again idle (the ticks' cost by time)."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    spool, log = work / "spool", work / "agent.log"
    env = dict(os.environ, PYTHONPATH=src_tree)
    timer_file = work / "timers.json"
    run = ["-m", "bench.agent_timers", str(timer_file), "--"] if timers else ["-m", "forensix"]
    if timers:  # this bench's own module, whichever tree the agent is
        env["PYTHONPATH"] = os.pathsep.join([src_tree, str(Path(__file__).resolve().parent.parent)])
    cmd = [sys.executable, *run, "agent", "--server", "127.0.0.1:9", "--bundle", str(_bundle(work)),
           "--spool", str(spool), "--drain", "0", "--netns", f"/run/netns/{netns}"]
    with open(log, "wb") as out:
        agent = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_recording(agent, log)
        _build(work / "warm", build, make_args, netns)
        # its last records (a drain tick and a flush), and the kept files' bytes shipped
        # (artifact_blobs: 4 MiB a tick, the compilers' ~40 MiB)
        _blobs_shipped(spool, netns)
        time.sleep(2.5)
        spy = None
        if profile is not None:  # py-spy over the measured window: samples of the thread holding the GIL (CPU, not waits)
            spy = subprocess.Popen(["py-spy", "record", "-p", str(agent.pid), "-r", "200", "--nonblocking", "--gil",
                                    "--threads", "-f", "raw", "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        tm0 = _timers(agent.pid, timer_file) if timers else {}
        th0, sw0 = _threads(agent.pid), _switches(agent.pid)
        c0, t0 = _cpu(agent.pid), time.time_ns()
        wall = _build(work / "measured", build, make_args, netns)
        time.sleep(2.5)
        c1, t1 = _cpu(agent.pid), time.time_ns()
        threads = _by_thread(agent.pid, th0, _threads(agent.pid))
        wakeups = _by_thread(agent.pid, sw0, _switches(agent.pid), scale=1)
        tm1 = _timers(agent.pid, timer_file) if timers else {}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        load = os.getloadavg()[0]
        time.sleep(wall + 2.5)  # idle as long: nothing recorded in the namespace
        c2 = _cpu(agent.pid)
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(timeout=60)
    rows = _rows(spool, t0, t1)
    shutil.rmtree(work, ignore_errors=True)
    n = rows.get("events", 0) + rows.get("flows", 0)
    busy, idle = c1 - c0, c2 - c1
    return {"cpu_s": busy, "idle_cpu_s": idle, "events": n, "us_per_event": busy / max(n, 1) * 1e6,
            "us_per_event_less_idle": (busy - idle) / max(n, 1) * 1e6, "build_wall_s": wall, "load": load,
            "rows": rows, "threads_ms": threads, "wakeups": wakeups,
            "timers": {f"{t}:{f}": (c - tm0.get((t, f), (0, 0))[0], round((ns - tm0.get((t, f), (0, 0))[1]) / 1e6, 3))
                       for (t, f), (c, ns) in sorted(tm1.items(), key=lambda kv: -kv[1][1])
                       if c > tm0.get((t, f), (0, 0))[0]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agent_live", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="an unpacked source tree to build")
    ap.add_argument("--make-args", default="", help="what `make -j2 -s` builds")
    ap.add_argument("--against", type=Path, required=True, help="the src/ of the tree to compare with")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--timers", action="store_true",
                    help="run the agent under bench.agent_timers: calls and thread CPU per function over the window")
    ap.add_argument("--profile", type=Path, default=None,
                    help="a directory: py-spy record (raw, by thread) of each run's measured window there")
    a = ap.parse_args(argv)
    mine = os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parent.parent / "src")).split(os.pathsep)[0]
    trees = [("before", str(a.against)), ("after", mine)]
    netns = f"fx-agent-live-{os.getpid()}"
    scratch = Path(tempfile.mkdtemp(prefix="fx-agent-live-"))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in trees}
    try:
        for i in range(a.pairs):
            for label, src in (trees if i % 2 == 0 else trees[::-1]):
                prof = None if a.profile is None else a.profile / f"{label}-{i}.txt"
                if prof is not None:
                    a.profile.mkdir(parents=True, exist_ok=True)
                r = run_once(src, a.src, a.make_args, scratch, netns, prof, a.timers)
                runs[label].append(r)
                print(f"{label}: {r['us_per_event']:.2f} µs/event, {r['us_per_event_less_idle']:.2f} less idle "
                      f"({r['cpu_s']:.2f} s CPU, idle {r['idle_cpu_s']:.2f}; {r['events']} events, "
                      f"build {r['build_wall_s']:.1f} s, load {r['load']:.1f}) {r['rows']}; ms by thread {r['threads_ms']}; "
                      f"wake-ups by thread {r['wakeups']}", flush=True)
                for name, (calls, ms) in r["timers"].items():
                    print(f"    {name}: {calls} calls, {ms:.2f} ms", flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    for key in ("us_per_event", "us_per_event_less_idle"):
        b = [r[key] for r in runs["before"]]
        f = [r[key] for r in runs["after"]]
        ratios = [y / x for x, y in zip(b, f, strict=True)]
        print(f"{key}: median before {statistics.median(b):.2f}, after {statistics.median(f):.2f}; per pair "
              f"after/before median {statistics.median(ratios):.3f}, mean {statistics.mean(ratios):.3f}"
              + (f" ± {statistics.stdev(ratios):.3f}" if len(ratios) > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
