"""Where store ingest time goes: ``python -m bench.store_probe``.

Two probes, pinned to one CPU, printed as one JSON line:
- the cost of one ``DuckDBStore.append`` by batch size (a recorder that appends every
  poll interval appends small batches: the fixed cost per append decides its throughput);
- the same events written as Parquet (zstd level 1) by pyarrow, an alternative format for
  staged segments, for events/s and bytes/event beside DuckDB's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.synth import EventGenerator
from forensix.store.embedded import open_writer


def append_cost(sizes: list[int], total: int, tmp: Path) -> dict[str, dict[str, float]]:
    gen = EventGenerator(seed=11)
    out: dict[str, dict[str, float]] = {}
    for size in sizes:
        batches = [gen.batch(size) for _ in range(max(5, total // size))]
        w = open_writer(tmp / f"append-{size}.duckdb")
        t0 = time.perf_counter()
        for b in batches:
            w.append("events", b)
        w.flush()
        dt = time.perf_counter() - t0
        w.close()
        n = sum(b.num_rows for b in batches)
        out[str(size)] = {"ms_per_append": dt / len(batches) * 1e3, "events_per_s": n / dt}
    return out


def parquet(events: int, tmp: Path) -> dict[str, float]:
    gen = EventGenerator()
    batches = [gen.batch(65536) for _ in range(max(1, events // 65536))]
    n = sum(b.num_rows for b in batches)
    path = tmp / "events.parquet"
    t0 = time.perf_counter()
    w = pq.ParquetWriter(path, batches[0].schema, compression="zstd", compression_level=1)
    for b in batches:
        w.write_table(b, row_group_size=131072)
    w.close()
    dt = time.perf_counter() - t0
    return {"events": n, "events_per_s": n / dt, "bytes_per_event": path.stat().st_size / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--cpu", type=int, default=0)
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.cpu})
    with tempfile.TemporaryDirectory(prefix="fx-store-probe-", dir="/var/tmp") as d:
        tmp = Path(d)
        res: dict[str, Any] = {
            "append": append_cost([100, 1000, 10000, 65536], min(a.events, 200_000), tmp),
            "parquet_zstd1": parquet(a.events, tmp),
        }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
