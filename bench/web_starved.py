"""web-conn with the recorder starved of CPU: what each tree loses, and its peak memory.

On a quiet host the agent keeps up with web-conn on average, and what it loses (a record or
a few a run) comes from seconds when it falls behind. This makes those seconds the whole run
without loading the shared machine: ``forensix record`` (each tree in turn, alternating) is
put in a cgroup (v1 ``cpu``) with a CPU quota once it records, for the 15 s of
``python -m bench.web web-conn 15``; the quota is lifted after, so that it catches up and
stops. Per run: requests/s, accept+connect rows stored, gaps by class and reason, the
recorder's peak RSS (VmHWM) and the hold's line of its stop record.

    python -m bench.web_starved --quota 0.05 --reps 2 --tree new=src --tree base=BASE/src

Root only (BPF, cgroups).
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
import time
from pathlib import Path
from typing import Any

from bench.forensix_ready import wait_until_recording

_CGROUP = Path("/sys/fs/cgroup/cpu")
_PERIOD_US = 100_000


def _into_cgroup(cg: Path, pid: int) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():  # threads started later inherit it
        (cg / "tasks").write_text(task.name)


def _remove_cgroup(cg: Path) -> None:
    """Move what is left (a recorder's detaching child outlives it by a moment) out, then remove it."""
    for _ in range(50):
        for task in (cg / "tasks").read_text().split():
            try:
                (_CGROUP / "tasks").write_text(task)
            except OSError:  # exited meanwhile
                pass
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.2)
    print(f"web_starved: could not remove {cg}: tasks {(cg / 'tasks').read_text().split()}", file=sys.stderr)


def _stopped_store(store: Path) -> dict[str, Any]:
    import duckdb

    c = duckdb.connect(str(store), read_only=True)
    try:
        stop = c.execute("SELECT message FROM events_base WHERE event_action = 'stop'").fetchall()
        gaps = c.execute("SELECT event_class, reason, sum(count)::BIGINT FROM gaps GROUP BY ALL ORDER BY ALL").fetchall()
        # network rows are sealed apart from format /17 on (store/codec.py: events_net_base)
        net = [t for (t,) in c.execute("SELECT table_name FROM duckdb_tables() WHERE table_name IN "
                                       "('events_base', 'events_net_base')").fetchall()]
        n = sum(c.execute(f"SELECT count(*) FROM {t} WHERE event_action IN ('accept', 'connect')").fetchall()[0][0]
                for t in net)
    finally:
        c.close()
    hold = [part for m in stop for part in m[0].split("; ") if "hold" in part]
    return {"accept_connect": int(n), "gaps": [list(g) for g in gaps], "hold": hold}


def one_run(name: str, src: str, quota: float, cg: Path, scratch: Path) -> dict[str, Any]:
    d = scratch / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    store, log = d / "s.duckdb", d / "record.log"
    p = subprocess.Popen([sys.executable, "-c", "from forensix.cli.main import main; main()", "record", "--store", str(store)],
                         stdout=log.open("wb"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=src))
    try:
        wait_until_recording(p, store, log)
        (cg / "cpu.cfs_quota_us").write_text(str(int(quota * _PERIOD_US)))
        _into_cgroup(cg, p.pid)
        load = os.getloadavg()[0]
        here = Path(__file__).resolve().parent.parent
        w = subprocess.run([sys.executable, "-m", "bench.web", "web-conn", "15"], cwd=here, capture_output=True, text=True,
                           check=False, env=dict(os.environ, PYTHONPATH=str(here / "src")))
        (cg / "cpu.cfs_quota_us").write_text("-1")
        rps = [float(line.split()[-1]) for line in w.stdout.splitlines() if line.startswith("Requests/sec")]
        status = Path(f"/proc/{p.pid}/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        p.send_signal(signal.SIGINT)
        p.wait(300)
    finally:
        (cg / "cpu.cfs_quota_us").write_text("-1")
        if p.poll() is None:
            p.kill()
            p.wait()
    return {"tree": name, "quota": quota, "load": round(load, 2), "rps": rps[0] if rps else None,
            "peak_rss_mb": round(hwm / 1024), **_stopped_store(store)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quota", type=float, default=0.05, help="CPUs the recorder gets while web-conn runs")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tree", action="append", required=True, help="NAME=SRC (a src/ directory), repeatable")
    a = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in a.tree]
    cg = _CGROUP / f"forensix-bench-{os.getpid()}"
    cg.mkdir()
    (cg / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
    scratch = Path(tempfile.mkdtemp(prefix="forensix-starved-", dir="/var/tmp"))
    try:
        for rep in range(a.reps):
            for name, src in trees:
                print(json.dumps({"rep": rep, **one_run(name, src, a.quota, cg, scratch)}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _remove_cgroup(cg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
