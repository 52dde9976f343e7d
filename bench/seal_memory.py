"""The store keeper's peak resident memory while it seals a large backlog, per DuckDB setting.

    python -m bench.seal_memory STORE [--copies 20] [--reps 2] [--limits default,256MB,128MB]
                                [--tree this=src --tree base=/tmp/base1208/src]

STORE is a replayed store (``python -m bench.agent_cost replay CAPTURE --store STORE``). Its
events and flows, repeated ``--copies`` times (each copy with other socket inodes), are
written as journals the way ``forensix record`` writes them (store/appender.py, 122,880-row
journals, split as the tree splits them), then a fresh process opens the store as a keeper
does after a recorder died (``DuckDBStore(keeper=True, recover_all=True)``: every journal
sealed at once, the largest seal a keeper makes) and closes it. Reported per configuration:
the sealing process's peak RSS (wait4's ru_maxrss, its imports included), its CPU, the rows
sealed and whether they are all in the store (a memory limit must never lose a row or fail).

``--limits`` sets DuckDB's ``memory_limit`` in the sealing process (``default``: the tree's
own setting), to see what a limit buys and that a seal far larger than it still succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WRITE = r'''
import json, sys
from pathlib import Path
import pyarrow as pa
import pyarrow.compute as pc
from forensix.store import codec, schema
from forensix.store.appender import JournalAppender
from forensix.store.embedded import DuckDBStore
from forensix.store.journal import conform, journal_dir

src, store, copies = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
RG = 122_880
r = DuckDBStore(src, read_only=True)
tables = {"events": conform(r.query("SELECT * FROM events WHERE event_action <> 'flow' ORDER BY ts"), schema.EVENTS, "events"),
          "flows": conform(r.query("SELECT * FROM flows ORDER BY last_ts"), schema.FLOWS, "flows")}
r.close()
DuckDBStore(store).close()  # a store with its schema: the journals are its backlog
split = getattr(codec, "parts", None)
NET = getattr(codec, "NET_TABLE", None)

def new_sockets(t, k):
    if k == 0 or "file_type" not in t.column_names:
        return t
    sock = pc.fill_null(pc.equal(t.column("file_type"), "socket"), False)
    ino = pc.if_else(sock, pc.add(t.column("file_inode"), pa.scalar(k * 10**12, pa.uint64())), t.column("file_inode"))
    return t.set_column(t.schema.get_field_index("file_inode"), "file_inode", ino)

aps, rows = {}, {}
for k in range(copies):
    for name, data in tables.items():
        for part, t in (split(name, new_sockets(data, k)) if split else [(name, data)]):
            if not t.num_rows:
                continue
            sch = codec.NET_SCHEMA if part == NET else schema.TABLES[part]
            a = aps.get(part) or aps.setdefault(part, JournalAppender(journal_dir(store), part, sch, first=0, seal_rows=RG))
            for s in range(0, t.num_rows, 8192):
                a.append(t.slice(s, 8192))
            rows[name] = rows.get(name, 0) + t.num_rows
for a in aps.values():
    a.close()
print(json.dumps(rows))
'''

_SEAL = r'''
import json, sys, time, resource
import duckdb
limit = sys.argv[2]
if limit != "default":  # DuckDB's memory_limit for every connection this process opens
    _connect = duckdb.connect
    def connect(*a, config=None, **k):
        return _connect(*a, config={**(config or {}), "memory_limit": limit}, **k)
    duckdb.connect = connect
from forensix.store.embedded import DuckDBStore
t = time.process_time()
st = DuckDBStore(sys.argv[1], keeper=True, recover_all=True)
st.limit_threads(1)
st.seal_closed(everything=True)
setting = st._con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
st.close()
cpu = time.process_time() - t
r = DuckDBStore(sys.argv[1], read_only=True)
n = {t: r.query(f"SELECT count(*) AS n FROM {t}").column("n")[0].as_py() for t in ("events", "flows")}
r.close()
print(json.dumps({"cpu_s": cpu, "stored": n, "memory_limit": setting}))
'''


def _seal(src: Path, store: Path, limit: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-c", _SEAL, str(store), limit], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    got: dict[str, object] = {"ok": status == 0, "peak_rss_mb": ru.ru_maxrss / 1024,
                              "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall}
    if status == 0:
        got.update(json.loads(out.strip().splitlines()[-1]))
    else:
        got["error"] = err.strip().splitlines()[-1] if err.strip() else f"status {status}"
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.seal_memory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path, help="a replayed store (bench.agent_cost replay --store)")
    ap.add_argument("--tree", action="append", default=None, metavar="NAME=SRC",
                    help="trees to compare (default: this=src)")
    ap.add_argument("--copies", type=int, default=20, help="copies of the store's rows in the backlog")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--limits", default="default", help="DuckDB memory_limit values, comma-separated")
    a = ap.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    trees = [t.split("=", 1) for t in (a.tree or [f"this={root / 'src'}"])]
    load0 = os.getloadavg()[0]
    results: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="fx-seal-memory-") as work:
        for rep in range(a.reps):
            for name, src in trees if rep % 2 == 0 else trees[::-1]:
                for limit in a.limits.split(","):
                    store = Path(work) / f"{name}-{rep}-{limit}.duckdb"
                    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                    w = subprocess.run([sys.executable, "-c", _WRITE, str(a.store), str(store), str(a.copies)],
                                       env=env, capture_output=True, text=True, check=False)
                    if w.returncode:
                        raise SystemExit(f"writing the journals failed:\n{w.stderr[-3000:]}")
                    written = json.loads(w.stdout.strip().splitlines()[-1])
                    got = _seal(Path(src).resolve(), store, limit)
                    got["written"] = written
                    stored = got.get("stored", {})  # the events view holds the flows too
                    got["lost"] = (sum(written.values()) - stored["events"] + written["flows"] - stored["flows"]  # type: ignore[index]
                                   if got["ok"] else None)
                    key = f"{name} {limit}"
                    results.setdefault(key, []).append(got)
                    print(f"[{time.strftime('%H:%M:%S')}] {key}: {json.dumps(got)}", file=sys.stderr, flush=True)
                    for f in Path(work).glob(f"{name}-{rep}-{limit}.duckdb*"):
                        subprocess.run(["rm", "-rf", str(f)], check=False)
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; {a.copies} copies of {a.store}")
    print("| tree, memory_limit | peak RSS MB | CPU s | rows sealed | lost | failed |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, rs in results.items():
        ok = [r for r in rs if r["ok"]]

        def med(k: str, ok: list[dict[str, object]] = ok) -> float:
            return statistics.median(float(r[k]) for r in ok) if ok else float("nan")  # type: ignore[arg-type]

        rows = sum(ok[0]["written"].values()) if ok else 0  # type: ignore[union-attr]
        peaks = ", ".join(f"{float(r['peak_rss_mb']):.0f}" for r in ok)  # type: ignore[arg-type]
        print(f"| {key} | {med('peak_rss_mb'):.0f} ({peaks}) "
              f"| {med('cpu_s'):.2f} | {rows} | {max((r['lost'] or 0) for r in ok) if ok else '-'} "
              f"| {len(rs) - len(ok)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
