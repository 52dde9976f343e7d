"""What an orphaned, paused sensor costs every syscall on the host, and what detaching saves.

    python -m bench.orphan_cost [--calls 1000000] [--reps 3] [--out docs/benchmarks-orphan.md]

A syscall-bound workload (`dd bs=1` from /dev/zero to /dev/null: two syscalls a byte) is
timed, alternating, with no sensor of ours and with a pinned sensor whose recorder was killed
and that the heartbeat watch paused, its programs still attached: the state an orphan was in
for good before the orphan watch (sensor/orphan_watch.py) detached it. To hold that state the
bench kills the orphan watch of the recorder it kills; `forensix record --stop` detaches it
between the rounds and the next round pins a new one. Other recorders on a shared machine
attach too: the ratio is taken round by round, with the load average beside it. As root; ~2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forensix.sensor.loader import pin_dir_for
from forensix.testing.orphans import watch_pids

FX = [sys.executable, "-m", "forensix"]


def _dd(calls: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={calls}"], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def _paused(pin: Path) -> bool:
    out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", str(pin / "control")], capture_output=True,
                         text=True, check=True).stdout
    return '"paused":2' in out.replace(" ", "")


def _orphan(store: Path) -> Path:
    """A pinned sensor, paused by the heartbeat watch, programs attached, nobody to detach it."""
    ready = store.with_name("ready")
    p = subprocess.Popen([*FX, "record", "-q", "--no-rules", "--no-system-logs", "--no-artifacts", "--store",
                          str(store), "--orphan-timeout", "1", "--ready-file", str(ready)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready.exists():
        if p.poll() is not None:
            raise SystemExit("the recorder did not start")
        time.sleep(0.1)
    pin = pin_dir_for(store)
    watches = watch_pids(pin)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for w in watches:
        os.kill(w, signal.SIGKILL)
    ready.unlink(missing_ok=True)
    while not _paused(pin):
        time.sleep(0.1)
    assert any(pin.glob("link-*"))
    return pin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks-orphan.md"))
    args = ap.parse_args(argv)
    ratios, rows = [], []
    with tempfile.TemporaryDirectory(prefix="fx-orphan-cost-") as d:
        store = Path(d) / "s.duckdb"
        for rep in range(args.reps):
            load = os.getloadavg()[0]
            bare = _dd(args.calls)
            pin = _orphan(store)
            try:
                paused = _dd(args.calls)
            finally:
                subprocess.run([*FX, "record", "--stop", "--store", str(store)], check=True, capture_output=True)
            after = _dd(args.calls)
            ratio = paused / ((bare + after) / 2)
            ratios.append(ratio)
            rows.append({"rep": rep, "bare_s": round(bare, 3), "paused_attached_s": round(paused, 3),
                         "detached_s": round(after, 3), "ratio": round(ratio, 3), "load": round(load, 1)})
            print(json.dumps(rows[-1]), flush=True)
            assert not pin.exists()
    med = statistics.median(ratios)
    print(f"{2 * args.calls} syscalls: a paused, attached orphan makes them {med:.2f}x as slow (median of "
          f"{args.reps}); detached, they cost what they cost without it")
    if not args.out.exists():
        args.out.write_text(
            "# What an orphaned sensor costs\n\n"
            "`dd bs=1` (two syscalls a byte) with no sensor of ours, then with a killed recorder's sensor "
            "paused by the heartbeat watch and still attached (what an orphan was before the orphan watch "
            "detached it), then after it is detached. Command: `python -m bench.orphan_cost`.\n\n"
            "| when | rep | no sensor s | paused, attached s | detached s | ratio | load |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    with args.out.open("a") as f:
        for r in rows:
            f.write(f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC | {r['rep']} | {r['bare_s']} | "
                    f"{r['paused_attached_s']} | {r['detached_s']} | {r['ratio']} | {r['load']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
