"""Store ingest on one core: ``python -m bench.ingest --events N --store PATH``.

Appends synthetic event batches (bench/synth.py; flow edges to flows only, as the recorder
stores them) to a fresh DuckDB store through the
store's own ``append`` (the path every recorder batch takes), pinned to one CPU, and
prints one JSON line: events, seconds in append+checkpoint, events/s, bytes on disk.
Only append and the final checkpoint are timed; batch generation is not.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.synth import EventGenerator, split_flows
from forensix.store.embedded import open_writer, remove_store, store_files

DISTINCT_ROWS = 2_000_000  # beyond this, batches are reused with shifted times


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in store_files(path))


def _shifted(t: pa.Table, cols: tuple[str, ...], by: int) -> pa.Table:
    for c in cols:
        t = t.set_column(t.schema.get_field_index(c), c, pc.add(t.column(c), pa.scalar(by, pa.int64())))
    return t


def ingest(events: int, store: Path, batch: int) -> dict[str, float]:
    """``events``: rows of the events view (flow edges are stored in flows only, as the
    recorder stores them)."""
    gen = EventGenerator()
    pool: list[tuple[pa.Table, pa.Table]] = []  # (events, flow edges) as the recorder appends them
    made = 0
    while made < min(events, DISTINCT_ROWS):
        n = min(batch, events - made)
        pool.append(split_flows(gen.batch(n)))
        made += n
    span = gen.ts - 1_790_000_000_000_000_000 + 1
    store.parent.mkdir(parents=True, exist_ok=True)
    remove_store(store)
    w = open_writer(store)
    done = 0
    timed = 0.0
    rnd = 0
    while done < events:
        for t, fl in pool:
            if done >= events:
                break
            if rnd:
                t, fl = _shifted(t, ("ts",), rnd * span), _shifted(fl, ("first_ts", "last_ts"), rnd * span)
            if done + t.num_rows + fl.num_rows > events:
                left = events - done
                t, fl = t.slice(0, left - left * fl.num_rows // (t.num_rows + fl.num_rows)), fl.slice(
                    0, left * fl.num_rows // (t.num_rows + fl.num_rows))
            t0 = time.perf_counter()
            w.append("events", t)
            w.append("flows", fl)
            timed += time.perf_counter() - t0
            done += t.num_rows + fl.num_rows
        rnd += 1
    t0 = time.perf_counter()
    w.flush()
    timed += time.perf_counter() - t0
    w.close()
    size = _store_bytes(store)
    return {
        "events": done,
        "seconds": timed,
        "events_per_s": done / timed,
        "store_bytes": size,
        "bytes_per_event": size / done,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--cpu", type=int, default=0)
    a = ap.parse_args()
    os.sched_setaffinity(0, {a.cpu})
    print(json.dumps(ingest(a.events, a.store, a.batch)))


if __name__ == "__main__":
    main()
