"""An idle raw agent's CPU and wake-ups by thread, and its timed functions (bench/agent_timers.py).

    python -m bench.agent_idle --against OLD/src --seconds 20 --reps 2

A ``forensix agent`` (raw, log host unreachable) records an empty network namespace; after 8 s
of start-up, its threads' CPU (schedstat), voluntary context switches and timed functions are
taken over ``--seconds``. The trees alternate. What such an agent still does comes by time (the
flow flush every 4 s, heartbeats, the status file) or from the host (the exec-time hold's
fanotify marks are per filesystem: every exec of the host is read, whatever ``--netns`` records).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import agent_live as al


def run_once(src: str, seconds: float) -> None:
    ns = f"fx-agent-idle-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    work = Path(tempfile.mkdtemp(prefix="fx-agent-idle-"))
    spool, log, tf = work / "spool", work / "agent.log", work / "timers.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(Path(__file__).resolve().parent.parent)]))
    cmd = [sys.executable, "-m", "bench.agent_timers", str(tf), "--", "agent", "--server", "127.0.0.1:9",
           "--bundle", str(al._bundle(work)), "--spool", str(spool), "--drain", "0", "--netns", f"/run/netns/{ns}"]
    with open(log, "wb") as out:
        agent = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        al._wait_recording(agent, log)
        time.sleep(8)
        tm0, th0, sw0 = al._timers(agent.pid, tf), al._threads(agent.pid), al._switches(agent.pid)
        time.sleep(seconds)
        th = al._by_thread(agent.pid, th0, al._threads(agent.pid))
        sw = al._by_thread(agent.pid, sw0, al._switches(agent.pid), scale=1)
        tm1 = al._timers(agent.pid, tf)
        print(f"{src}: idle {seconds:.0f} s, load {os.getloadavg()[0]:.1f}: ms by thread {th}; wake-ups {sw}", flush=True)
        for k, (c, ns_) in sorted(tm1.items(), key=lambda kv: -kv[1][1]):
            c0, n0 = tm0.get(k, (0, 0))
            if c > c0:
                print(f"    {k[0]}:{k[1]}: {c - c0} calls, {(ns_ - n0) / 1e6:.2f} ms", flush=True)
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agent_idle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, required=True, help="the src/ of the tree to compare with")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args(argv)
    mine = os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parent.parent / "src")).split(os.pathsep)[0]
    for _ in range(a.reps):
        for src in (str(a.against), mine):
            run_once(src, a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
