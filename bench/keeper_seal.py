"""The store keeper's seal, per tree: thread CPU per row sealed, from journals a recorder wrote.

    python -m bench.keeper_seal STORE --tree base=/clone/src --tree new=src --reps 3

STORE is a replayed store (``python -m bench.agent_cost replay CAPTURE --store STORE``). Its
events and flows are written as journals the way each tree's ``forensix record`` writes them
(store/keeper.py ``RecorderStore``: appends of ``--chunk`` rows; from format /17 on, events'
network rows to a journal of their own, ``codec.parts``), then sealed by that tree's keeper code
(``DuckDBStore(keeper=True)``: read the journals, sort and encode, the file table, DuckDB's
insert and commit, on one DuckDB thread). Why a bench of its own: on web-conn the keeper seals
a journal when it fills (122,880 rows, every ~5 s), at nice 19, and starts once (~0.5 s of
CPU), so a window of seconds (bench.web_recorder) catches zero, one or two seals and its
keeper figure is a lottery; the seal is ~55% of what a request costs the recorder once it runs
for minutes.

Two ways (``--mode``):

- ``whole`` (the default): as a long recording seals, every seal one whole row group of one
  journal. The store's rows are repeated (each copy with other socket inodes, as a web
  server's new connections) until each journal of the tree has ``2 x --groups`` whole row
  groups; the first half is sealed into the store (so the file table's lookup runs as in a
  long recording), the second half measured, journal by journal. Reported: µs per row of
  each journal, and per stored row of the store's mix (each journal's cost weighted by the
  rows it gets of one copy of the store's rows: what a request's rows cost).
- ``twice``: the store's rows once, then again with other socket inodes, each time as one
  journal per table sealed whole (the bench as it was before /17; a seal then fills the
  partly filled row group the first left, which DuckDB rewrites whole).

Each seal is also split by phase (``read`` the journals, ``encode``: the codec's sort and
encodings, ``files``: the file table, ``insert``: DuckDB's insert of the Arrow rows, the rest:
its COMMIT, i.e. compression and write), thread CPU per row of each journal.

And the writer's side of the same rows (``append``): thread CPU per row of appending them to
the journals in ``--chunk``-row batches, the split included (it runs on the recorder's nice-0
writer thread, the seal at nice 19). Each batch holds its rows as the recorder's drain joins
them: the process ring's, the network ring's, the main ring's, each in time order (measured
on web-conn's replay: the network rows of a batch lie in one run, at most three).

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
import json, sys, time
from pathlib import Path
import pyarrow as pa
import pyarrow.compute as pc
from forensix.store import codec, schema
from forensix.store.appender import JournalAppender
from forensix.store.embedded import DuckDBStore, remove_store
from forensix.store.journal import conform, journal_dir

src, work, chunk, mode, groups = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
RG = 122_880
r = DuckDBStore(src, read_only=True)
tables = {"events": conform(r.query("SELECT * FROM events WHERE event_action <> 'flow' ORDER BY ts"), schema.EVENTS, "events"),
          "flows": conform(r.query("SELECT * FROM flows ORDER BY last_ts"), schema.FLOWS, "flows")}
r.close()
store = work / "seal.duckdb"
remove_store(store)
split = getattr(codec, "parts", None)  # a tree before /17: one journal per table
NET = getattr(codec, "NET_TABLE", None)

def physical(name, data):
    return split(name, data) if split else [(name, data)]

def schema_of(part):
    return codec.NET_SCHEMA if part == NET else schema.TABLES[part]

def new_sockets(t, k):  # a web server's sockets are new ones each time: other inodes
    if k == 0:
        return t
    sock = pc.fill_null(pc.equal(t.column("file_type"), "socket"), False)
    ino = pc.if_else(sock, pc.add(t.column("file_inode"), pa.scalar(k * 10**12, pa.uint64())), t.column("file_inode"))
    return t.set_column(t.schema.get_field_index("file_inode"), "file_inode", ino)

RING = {"process": 0, "network": 1, "other": 1}  # sensor/losses.py: file and flow rows on the main ring (2)

def as_drained(t):
    """A chunk of rows in time order as the recorder's drain joins them: each ring's rows
    together (process, network, main), in time order within each."""
    if "event_class" not in t.column_names:
        return t
    key = [RING.get(c, 2) for c in t.column("event_class").to_pylist()]
    return t.take(pa.array(sorted(range(len(key)), key=key.__getitem__)))

def append_cost():
    """The writer's side: one copy appended in chunks, split as the tree's recorder splits."""
    jd = work / "append.journal"
    aps, cpu, n = {}, 0.0, 0
    for name, data in tables.items():
        for s in range(0, data.num_rows, chunk):
            part_rows = as_drained(data.slice(s, chunk))
            t = time.thread_time()
            for part, rows in physical(name, part_rows):
                if rows.num_rows:
                    a = aps.get(part) or aps.setdefault(part, JournalAppender(jd, part, schema_of(part), first=0))
                    a.append(rows)
            cpu += time.thread_time() - t
            n += part_rows.num_rows
    for a in aps.values():
        a.close()
    return cpu / n * 1e6

seqs = {}
# each seal's CPU by phase (thread CPU, per part): reading the journals, the codec's sort and
# encoding, the file table, DuckDB's insert of the Arrow rows; the rest of a part's seal is
# DuckDB's COMMIT (compression and write) and the bookkeeping around it
PHASES = {}
current = [None]

def _phase(name, fn):
    def timed(*a, **k):
        t = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            if current[0] is not None:
                d = PHASES.setdefault(current[0], {})
                d[name] = d.get(name, 0.0) + time.thread_time() - t
    return timed

import forensix.store.embedded as _emb
import forensix.store.journal as _jr
codec.encode = _phase("encode", codec.encode)
_emb._insert = _phase("insert", _emb._insert)
_emb.DuckDBStore._store_files = _phase("files", _emb.DuckDBStore._store_files)
_jr.JournaledTable._unsealed_on_disk = _phase("read", _jr.JournaledTable._unsealed_on_disk)

def write(part, rows, seal_rows):
    a = JournalAppender(journal_dir(store), part, schema_of(part), first=seqs.get(part, 0), seal_rows=seal_rows)
    for s in range(0, rows.num_rows, chunk):
        a.append(rows.slice(s, chunk))
    a.close()

def seal(journals):
    """Open the keeper's store, have ``journals`` written (a recorder appends while a keeper runs:
    opened after them, the keeper would seal all but the newest as it opens), seal them all."""
    st = DuckDBStore(store, keeper=True, recover_all=False)
    st.limit_threads(1)
    journals()
    cpu, rows = {}, {}
    PHASES.clear()
    for part, j in st._journals.items():
        current[0] = part
        t = time.thread_time()
        rows[part] = j.seal_closed(everything=True)
        cpu[part] = time.thread_time() - t
        current[0] = None
    t = time.thread_time()
    st._con.execute("CHECKPOINT")
    ck = time.thread_time() - t
    seqs.update(st.sealed_seqs())
    st.close()
    return cpu, rows, ck

DuckDBStore(store).close()
out = {"append_us": append_cost()}
mix = {}
for name, data in tables.items():
    for part, rows in physical(name, data):
        mix[part] = rows.num_rows
out["mix"] = mix
if mode == "twice":
    sealed = 0
    for k in (0, 1):
        def journals():
            for name, data in tables.items():
                for part, rows in physical(name, new_sockets(data, k)):
                    write(part, rows, 10**9)
        cpu, rows, ck = seal(journals)
        sealed += sum(rows.values())
    out.update(rows=sum(rows.values()), cpu_s=sum(cpu.values()) + ck, per_part={p: cpu[p] / rows[p] * 1e6 for p in cpu if rows[p]})
else:
    need = {p: 2 * groups * RG for p, n in mix.items() if n}
    got = {p: [] for p in need}
    k = 0
    while any(sum(t.num_rows for t in got[p]) < need[p] for p in need):
        for name, data in tables.items():
            for part, rows in physical(name, new_sockets(data, k)):
                if part in got and sum(t.num_rows for t in got[part]) < need[part]:
                    got[part].append(rows)
        k += 1
    stream = {p: pa.concat_tables(ts).slice(0, need[p]) for p, ts in got.items()}
    half = groups * RG
    sealed = 0
    for rnd in (0, 1):
        def journals():
            for p, t in stream.items():
                write(p, t.slice(rnd * half, half), RG)
        cpu, rows, ck = seal(journals)
        sealed += sum(rows.values())
    per = {p: (cpu[p] + ck * rows[p] / sum(rows.values())) / rows[p] * 1e6 for p in cpu if rows[p]}
    out["phases"] = {p: {**{k: v / rows[p] * 1e6 for k, v in PHASES.get(p, {}).items()},
                         "commit and the rest": (cpu[p] - sum(PHASES.get(p, {}).values())) / rows[p] * 1e6}
                     for p in cpu if rows[p]}
    w = sum(per[p] * mix[p] for p in per) / sum(mix[p] for p in per)
    out.update(rows=sum(mix[p] for p in per), cpu_s=w * sum(mix[p] for p in per) / 1e6, per_part=per, copies=k)
out["store_bytes"] = store.stat().st_size
out["sealed_rows"] = sealed
print(json.dumps(out))
'''


def _one(src: str, store: Path, chunk: int, mode: str, groups: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fx-keeper-seal-") as work:
        out = subprocess.run([sys.executable, "-c", _INNER, str(store), work, str(chunk), mode, str(groups)],
                             check=False, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(src).resolve())})
    if out.returncode:
        raise SystemExit(f"the seal of tree {src} failed:\n{out.stderr}")
    got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.keeper_seal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path, help="a replayed store (bench.agent_cost replay --store)")
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=SRC")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=10_000, help="rows per journal append (the writer's batches)")
    ap.add_argument("--mode", choices=("whole", "twice"), default="whole")
    ap.add_argument("--groups", type=int, default=1, help="whole: row groups per journal and half")
    a = ap.parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in a.tree]
    per: dict[str, list[float]] = {n: [] for n, _ in trees}
    app: dict[str, list[float]] = {n: [] for n, _ in trees}
    parts: dict[str, list[dict[str, float]]] = {n: [] for n, _ in trees}
    last: dict[str, dict[str, object]] = {}
    phases: dict[str, list[dict[str, dict[str, float]]]] = {n: [] for n, _ in trees}
    loads = []
    for rep in range(a.reps):
        k = rep % len(trees)
        for name, src in trees[k:] + trees[:k]:
            _one(src, a.store, a.chunk, a.mode, a.groups)  # warm-up (see the module doc)
            got = _one(src, a.store, a.chunk, a.mode, a.groups)
            per[name].append(float(got["cpu_s"]) / float(got["rows"]) * 1e6)  # type: ignore[arg-type]
            app[name].append(float(got["append_us"]))  # type: ignore[arg-type]
            parts[name].append(got["per_part"])  # type: ignore[arg-type]
            if "phases" in got:
                phases[name].append(got["phases"])  # type: ignore[arg-type]
            last[name] = got
        loads.append(os.getloadavg()[0])
        print(f"rep {rep}: " + ", ".join(f"{n} {per[n][-1]:.2f} us/row" for n, _ in trees), file=sys.stderr, flush=True)
    how = ("each journal's whole row groups sealed into a store holding as many already"
           if a.mode == "whole" else "the second seal into one store")
    print(f"keeper seal of {a.store.name}'s events and flows as journals ({a.chunk:,}-row appends), {how}; "
          f"{a.reps} repetitions, trees alternating; load {min(loads):.1f}-{max(loads):.1f}\n")
    print("| tree | µs of keeper CPU per stored row (median, range) | per journal (µs per row, median) "
          "| rows of one copy per journal | writer: µs per row appended (median) | store bytes per row sealed |")
    print("|---|---|---|---|---|---|")
    for name, _ in trees:
        v = per[name]
        pp = {p: statistics.median(d[p] for d in parts[name]) for p in parts[name][0]}
        mix = last[name]["mix"]
        size = float(last[name]["store_bytes"]) / float(last[name]["sealed_rows"])  # type: ignore[arg-type]
        print(f"| {name} | {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}) | "
              + ", ".join(f"{p} {u:.2f}" for p, u in pp.items())
              + f" | {', '.join(f'{p} {n:,}' for p, n in mix.items())} "  # type: ignore[attr-defined]
              f"| {statistics.median(app[name]):.2f} | {size:.1f} |")
    if any(phases.values()):
        print("\nThe seal by phase, µs of keeper CPU per row of each journal (medians; `commit and the rest`: DuckDB's "
              "COMMIT, compression and write, and what the seal does around it)\n")
        print("| tree | journal | " + " | ".join(_PHASES) + " |")
        print("|---|---|" + "---|" * len(_PHASES))
        for name, _ in trees:
            for part in (phases[name][0] if phases[name] else {}):
                vals = [statistics.median(r[part].get(ph, 0.0) for r in phases[name]) for ph in _PHASES]
                print(f"| {name} | {part} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return 0


_PHASES = ("read", "encode", "files", "insert", "commit and the rest")


if __name__ == "__main__":
    sys.exit(main())
