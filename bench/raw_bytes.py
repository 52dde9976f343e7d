"""What fewer bytes per ring record would save the raw agent's zstd: an offline estimate.

    python -m bench.raw_bytes /tmp/agent-cpu/build.npz

The raw agent compresses the kernel's records as they are (agent/frame.py, zstd level -1),
~390 bytes a record on a build, about two thirds zeros: the 312-byte fixed part of struct
fx_event is the same for every kind. Before changing the record ABI (variable-length fixed
parts: bpf/events.h, the sensor, every decoder), this measures what it would buy. Each
record of the capture is rewritten, untimed, to the fields that its kind and syscall ever
fill in the capture (a best case: the same layout for all records of a kind and syscall is
what a kernel-side change could do), and zstd at the agent's level is timed over the real
and the rewritten drains (thread CPU, median of ``--reps``), with the fixed parts zeroed
(only the strings and headers left to compress) as a bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard


def _timed(fn: Callable[[], int], reps: int) -> tuple[float, int]:
    times, out = [], 0
    for _ in range(reps):
        t = time.thread_time()
        out = fn()
        times.append(time.thread_time() - t)
    return statistics.median(times) * 1e3, out


def _fixed_parts(d: Any, ev: int) -> np.ndarray:
    words = np.frombuffer(d.data, np.uint64)
    rows = np.lib.stride_tricks.sliding_window_view(words, ev // 8)[d.offsets // 8]
    return np.asarray(rows).view(np.uint8).reshape(-1, ev)


def main(argv: list[str] | None = None) -> int:
    from bench.agent_cost import load_inputs
    from forensix.agent.frame import RAW_LEVEL
    from forensix.sensor.abi import struct_dtype

    ap = argparse.ArgumentParser(prog="python -m bench.raw_bytes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", type=Path)
    ap.add_argument("--reps", type=int, default=9)
    a = ap.parse_args(argv)
    abi, _, inputs = load_inputs(a.capture)
    dt = struct_dtype(abi, "fx_event")
    ev = dt.itemsize
    fields: Any = dt.fields
    spans = sorted((o, o + f.itemsize) for f, o, *_ in fields.values())
    drains = [x for k, x in inputs if k == "ring"]
    fixed = np.concatenate([_fixed_parts(d, ev) for d in drains])
    word = fixed[:, fields["kind"][1]: fields["kind"][1] + 8].copy().view(np.uint64).ravel()  # kind | nr << 32
    used: dict[int, list[tuple[int, int]]] = {}
    for k in np.unique(word).tolist():
        nonzero = fixed[word == k].any(axis=0)
        used[k] = [(lo, hi) for lo, hi in spans if nonzero[lo:hi].any()]
    trimmed, holed, i = [], [], 0
    for d in drains:
        out = bytearray()
        for o, n in zip(d.offsets.tolist(), d.lengths.tolist(), strict=True):
            rec = b"".join(d.data[o + lo: o + hi] for lo, hi in used[int(word[i])]) + d.data[o + ev: o + n]
            i += 1
            out += np.array([len(rec), 0], np.uint32).tobytes() + rec + bytes(-(len(rec) + 8) % 8)
        trimmed.append(bytes(out))
        h = np.frombuffer(d.data, np.uint64).copy()
        np.lib.stride_tricks.sliding_window_view(h, ev // 8, writeable=True)[d.offsets // 8] = 0
        holed.append(h.tobytes())
    z = zstandard.ZstdCompressor(level=RAW_LEVEL)
    print(f"{len(word):,} records; fixed part {ev} bytes, the fields their kind and syscall fill: "
          f"{np.mean([sum(hi - lo for lo, hi in used[int(k)]) for k in word]):.0f} bytes on average")
    for label, bufs in (("as recorded", [d.data for d in drains]), ("trimmed", trimmed),
                        ("fixed parts zeroed (bound)", holed)):
        ms, size = _timed(lambda b=bufs: sum(len(z.compress(x)) for x in b), a.reps)
        print(f"{label}: {sum(len(x) for x in bufs):,} bytes, zstd {ms:.1f} ms, {size:,} bytes compressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
