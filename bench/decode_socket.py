"""The decoder's CPU per ring record on a capture, per tree: the whole drains, and the socket
records alone (drains of those only), thread CPU, medians; trees alternate round by round.

    python -m bench.decode_socket /tmp/webconn/webconn.npz --tree base=/tmp/base1208/src --tree new=src --rounds 5
    python -m bench.decode_socket CAPTURE --one      # (internal) this interpreter's tree, one round, JSON

A capture is ``python -m bench.agent_cost capture``'s. Each round runs each tree in a fresh
interpreter (PYTHONPATH=its src), which decodes every drain three times and reports the best.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def one(path: Path) -> dict[str, Any]:
    from bench.agent_cost import load_inputs
    from forensix.model.host import local_host
    from forensix.sensor.decode import Decoder
    from forensix.sensor.ringbuf import Drained

    abi, off, inputs = load_inputs(path)
    rings = [x for k, x in inputs if k == "ring"]
    dec = Decoder(abi, local_host(), off)
    sock = []
    for x in rings:
        f = dec._gather_fixed(x.data, x.offsets)
        k = np.flatnonzero((f["kind"] == dec.K["FX_KIND_SYSCALL"]) & ((f["flags"] & dec.F["FX_F_SOCK"]) != 0))
        if len(k):
            sock.append(Drained(x.data, x.offsets[k], x.lengths[k]))

    def best(drains: list[Drained]) -> float:
        n = sum(len(d) for d in drains)
        runs = []
        for _ in range(3):
            d2 = Decoder(abi, local_host(), off)
            t = time.thread_time()
            for d in drains:
                d2.decode(d)
            runs.append((time.thread_time() - t) / max(n, 1) * 1e6)
        return min(runs)

    return {"whole_us": best(rings), "socket_us": best(sock), "records": sum(len(d) for d in rings),
            "socket_records": sum(len(d) for d in sock), "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", type=Path)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=SRC")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", action="store_true")
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.capture)))
        return 0
    trees = [t.split("=", 1) for t in a.tree] or [["this", "src"]]
    root = str(Path(__file__).resolve().parent.parent)
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for r in range(a.rounds):
        for name, src in trees[r % len(trees):] + trees[:r % len(trees)]:
            env = os.environ | {"PYTHONPATH": f"{Path(src).resolve()}:{root}"}
            out = subprocess.run([sys.executable, "-m", "bench.decode_socket", str(a.capture), "--one"],
                                 env=env, capture_output=True, text=True, check=True, cwd=root)
            got[name].append(json.loads(out.stdout))
    print("| tree | whole drains, µs a record | socket records alone, µs a record | load (1 min) |")
    print("|---|---:|---:|---:|")
    for name, rs in got.items():
        print(f"| {name} | {statistics.median(x['whole_us'] for x in rs):.3f} | "
              f"{statistics.median(x['socket_us'] for x in rs):.3f} | "
              f"{min(x['load'] for x in rs):.1f}–{max(x['load'] for x in rs):.1f} |")
    first = next(iter(got.values()))[0]
    print(f"({first['records']} ring records, {first['socket_records']} of them socket records; medians of {a.rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
