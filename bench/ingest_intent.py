"""python -m bench.ingest_intent [--groups N] [--rows N] [--reps N] [--write]

What the DuckDB log host's ingest intent (forensix.server.ledger: one fdatasync'd write per
group of frames, so that a crash between the store commit and the marks does not store a
frame twice) costs per group: the real Ingestor on a real DuckDB store, groups of --rows
events, with and without the intent, alternating within every repetition. --write puts the
figures in docs/benchmarks-ingest-intent.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from forensix.server.ingest import Ingestor
from forensix.server.ledger import IngestLedger
from forensix.store.embedded import open_writer
from forensix.testing.batches import events_batch


class _Mark:
    def __init__(self, d: Path) -> None:
        self.host, self.stream, self.dir = "alpha", "ab" * 16, d

    def set_ingested(self, seq: int) -> None:
        (self.dir / "ingested").write_text(str(seq))


def run(groups: int, rows: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="ingest-intent-", dir="/var/tmp") as tmp:
        d = Path(tmp)
        w = open_writer(d / "b.duckdb")
        ing = Ingestor(w)
        mark, batch, seq = _Mark(d), events_batch(rows), 0
        try:
            for _ in range(reps):
                for name in ("without", "with"):
                    ing.ledger = IngestLedger(w, d) if name == "with" else None
                    if ing.ledger is not None:
                        ing.ledger.rows("events")
                    t = time.perf_counter()
                    for _ in range(groups):
                        ing.submit("events", batch, mark, seq)
                        ing.flush()  # one group each
                        seq += 1
                    out[name].append((time.perf_counter() - t) / groups * 1000)
        finally:
            ing.close()
            w.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=40)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    res = run(a.groups, a.rows, a.reps)
    load = os.getloadavg()[0]
    lines = [f"# The DuckDB log host's ingest intent: cost per group of {a.rows} events", "",
             (f"`python -m bench.ingest_intent --groups {a.groups} --rows {a.rows} --reps {a.reps}`, "
              f"load average {load:.1f} (2 cores, shared: re-take on a quiet machine)."), "",
             "| intent | median ms per group | each repetition (ms) |", "|---|---|---|"]
    for name, v in res.items():
        lines.append(f"| {name} | {statistics.median(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        Path("docs/benchmarks-ingest-intent.md").write_text(text)


if __name__ == "__main__":
    main()
