"""The store keeper's seal, per tree: thread CPU per row sealed, from journals a recorder wrote.

    python -m bench.keeper_seal STORE --tree base=/clone/src --tree new=src --reps 3

STORE is a replayed store (``python -m bench.agent_cost replay CAPTURE --store STORE``). Its
events and flows are written as journals the way ``forensix record`` writes them
(store/appender.py, appends of ``--chunk`` rows), then sealed by each tree's keeper code
(``DuckDBStore(keeper=True).seal_closed``: read the journals, sort and encode, the file table,
DuckDB's insert and commit, on one DuckDB thread) into a store that already holds the same
rows once (the second time with other socket inodes, as a web server's new connections),
so the file table's lookup runs as in a long recording. Why a bench of its own:
on web-conn the keeper seals a journal when it fills (122,880 rows, every ~5 s), at nice 19,
and starts once (~0.5 s of CPU), so a window of seconds (bench.web_recorder) catches zero,
one or two seals and its keeper figure is a lottery; the seal is ~60% of what a request
costs the recorder once it runs for minutes.

Each tree runs in a process of its own (its ``src/`` on PYTHONPATH), trees alternating; the
first run of a process after another tree's was ~2x slower in its sort (warm-up, not the
code), so each repetition runs a tree twice and keeps the second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_INNER = r'''
import json, sys, time, shutil
from pathlib import Path
import pyarrow as pa
from forensix.store import schema
from forensix.store.appender import JournalAppender
from forensix.store.embedded import DuckDBStore, remove_store
from forensix.store.journal import conform, journal_dir

src, work, chunk = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
r = DuckDBStore(src, read_only=True)
tables = {"events": conform(r.query("SELECT * FROM events WHERE event_action <> 'flow' ORDER BY ts"), schema.EVENTS, "events"),
          "flows": conform(r.query("SELECT * FROM flows ORDER BY last_ts"), schema.FLOWS, "flows")}
r.close()
store = work / "seal.duckdb"
remove_store(store)

def journals_then_seal():
    jd = journal_dir(store)
    for name, data in tables.items():
        a = JournalAppender(jd, name, schema.TABLES[name], first=DuckDBStore_seq.get(name, 0), seal_rows=10**9)
        for s in range(0, data.num_rows, chunk):
            a.append(data.slice(s, chunk))
        a.close()
    st = DuckDBStore(store, keeper=True, recover_all=False)
    st.limit_threads(1)
    t = time.thread_time()
    rows = st.seal_closed(everything=True)
    cpu = time.thread_time() - t
    DuckDBStore_seq.update(st.sealed_seqs())
    st.close()
    return rows, cpu

def new_sockets(t):  # a web server's sockets are new ones each time: other inodes
    import pyarrow.compute as pc
    sock = pc.fill_null(pc.equal(t.column("file_type"), "socket"), False)
    ino = pc.if_else(sock, pc.add(t.column("file_inode"), pa.scalar(10**12, pa.uint64())), t.column("file_inode"))
    return t.set_column(t.schema.get_field_index("file_inode"), "file_inode", ino)

DuckDBStore_seq = {}
DuckDBStore(store).close()
journals_then_seal()  # the store holds these rows once: the next seal looks its files up
tables = {name: new_sockets(t) for name, t in tables.items()}
rows, cpu = journals_then_seal()
print(json.dumps({"rows": rows, "cpu_s": cpu, "store_bytes": store.stat().st_size}))
'''


def _one(src: str, store: Path, chunk: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fx-keeper-seal-") as work:
        out = subprocess.run([sys.executable, "-c", _INNER, str(store), work, str(chunk)], check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(src).resolve())})
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.keeper_seal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path, help="a replayed store (bench.agent_cost replay --store)")
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=SRC")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=10_000, help="rows per journal append (the writer's batches)")
    a = ap.parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in a.tree]
    per: dict[str, list[float]] = {n: [] for n, _ in trees}
    size: dict[str, float] = {}
    loads = []
    for rep in range(a.reps):
        k = rep % len(trees)
        for name, src in trees[k:] + trees[:k]:
            _one(src, a.store, a.chunk)  # warm-up (see the module doc)
            got = _one(src, a.store, a.chunk)
            per[name].append(got["cpu_s"] / got["rows"] * 1e6)
            size[name] = got["store_bytes"]
        loads.append(os.getloadavg()[0])
        print(f"rep {rep}: " + ", ".join(f"{n} {per[n][-1]:.2f} us/row" for n, _ in trees), file=sys.stderr, flush=True)
    print(f"keeper seal of {a.store.name}'s events and flows as journals ({a.chunk:,}-row appends), the second seal "
          f"into one store; {a.reps} repetitions, trees alternating; load {min(loads):.1f}-{max(loads):.1f}\n")
    print("| tree | µs of keeper CPU per row sealed (median, range) | store file after both seals |")
    print("|---|---|---|")
    for name, _ in trees:
        v = per[name]
        print(f"| {name} | {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}) | {size[name] / 1e6:.1f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
