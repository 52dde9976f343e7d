"""What DuckDB's insert of one sealed row group costs, and what it does not depend on.

    python -m bench.seal_cost STORE [--reps 3]

STORE is a replayed store (``python -m bench.agent_cost replay CAPTURE --store STORE``):
its ``events_base`` rows, as the seal hands them to DuckDB (sorted and encoded by
store/codec.py), repeated to one full row group (122,880 rows), are inserted into a fresh
store file the way ``DuckDBStore._sealer`` does (one transaction, one Arrow chunk, DuckDB on
one thread as the recorder's sealing thread runs it). Thread CPU, best of ``--reps``, split
into the INSERT (DuckDB copies the Arrow columns into an uncompressed in-memory row group)
and the COMMIT (DuckDB analyses every column segment for each compression method, compresses
and writes it). Then the same with one thing changed at a time, and per kind of column.
Prints a markdown table (docs/benchmarks.md, "Agent CPU per stored event, stage by stage").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

ROW_GROUP = 122_880


def _events(store: Path) -> tuple[str, pa.Table]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        ddl = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'events_base'").fetchall()[0][0]
        t = con.sql("SELECT * FROM events_base").to_arrow_table()
    finally:
        con.close()
    if t.num_rows == 0:
        raise SystemExit(f"{store} has no sealed events rows")
    reps = [t] * (ROW_GROUP // t.num_rows + 1)
    return str(ddl), pa.concat_tables(reps).slice(0, ROW_GROUP).combine_chunks()


def _seal(ddl: str, data: pa.Table, reps: int, settings: Sequence[str] = (),
          memory: bool = False) -> tuple[float, float, int]:
    """(insert, commit) thread CPU seconds of one transaction, best of ``reps``, and the
    bytes the file grew by."""
    best = (float("inf"), float("inf"))
    grew = 0
    with tempfile.TemporaryDirectory(prefix="fx-seal-cost-") as tmp:
        for i in range(reps):
            path = ":memory:" if memory else str(Path(tmp) / f"s{i}.duckdb")
            con = duckdb.connect(path, config={} if memory else {"default_block_size": str(64 << 10)})
            try:
                con.execute("SET threads = 1")
                for s in settings:
                    con.execute(s)
                con.execute(ddl)
                con.execute("CHECKPOINT")
                size = 0 if memory else os.path.getsize(path)
                cur = con.cursor()
                t0 = time.thread_time()
                cur.execute("BEGIN TRANSACTION")
                cur.register("_fx_seal", data)
                cols = ", ".join(f'"{c}"' for c in data.column_names)
                cur.execute(f"INSERT INTO events_base ({cols}) SELECT {cols} FROM _fx_seal")
                cur.unregister("_fx_seal")
                t1 = time.thread_time()
                cur.execute("COMMIT")
                t2 = time.thread_time()
                cur.close()
                if (t1 - t0) + (t2 - t1) < sum(best):
                    best = (t1 - t0, t2 - t1)
                if not memory:
                    con.execute("CHECKPOINT")
                    grew = os.path.getsize(path) - size
            finally:
                con.close()
    return best[0], best[1], grew


def _strings_as(t: pa.Table, f: Callable[[pa.ChunkedArray], pa.Array | pa.ChunkedArray]) -> pa.Table:
    return pa.Table.from_arrays([f(c) if pa.types.is_string(c.type) else c for c in t.columns], names=t.column_names)


def run(store: Path, reps: int) -> str:
    ddl, t = _events(store)
    n = t.num_rows
    kinds: dict[str, list[str]] = {"string": [], "number": [], "all NULL": [], "list": []}
    for f in t.schema:
        c = t.column(f.name)
        kinds["all NULL" if c.null_count == n else "string" if pa.types.is_string(f.type)
              else "list" if pa.types.is_list(f.type) else "number"].append(f.name)
    same = pc.fill_null(pc.equal(t.column("file_path_raw"), t.column("file_path")), False)
    raw_null_when_same = t.set_column(t.schema.get_field_index("file_path_raw"), "file_path_raw",
                                      pc.if_else(same, pa.scalar(None, pa.string()), t.column("file_path_raw")))
    rows: list[tuple[str, Callable[[], tuple[float, float, int]]]] = [
        ("as the seal does it", lambda: _seal(ddl, t, reps)),
        ("NOT NULL constraints dropped", lambda: _seal(ddl.replace(" NOT NULL", ""), t, reps)),
        ("preserve_insertion_order = false", lambda: _seal(ddl, t, reps, ["SET preserve_insertion_order = false"])),
        ("checkpoint_threshold = 1GB", lambda: _seal(ddl, t, reps, ["SET checkpoint_threshold = '1GB'"])),
        ("never-chosen compressions disabled",
         lambda: _seal(ddl, t, reps, ["SET disabled_compression_methods = 'fsst,dictionary,alp,alprd,chimp,patas,zstd'"])),
        ("strings as Arrow string_view", lambda: _seal(ddl, _strings_as(t, lambda c: c.cast(pa.string_view())), reps)),
        ("strings dictionary-encoded", lambda: _seal(ddl, _strings_as(t, pc.dictionary_encode), reps)),
        ("all-NULL columns left out", lambda: _seal(ddl, t.select([c for c in t.column_names
                                                                   if c not in kinds["all NULL"]]), reps)),
        ("no compression (force uncompressed; 5x the bytes)",
         lambda: _seal(ddl, t, reps, ["SET force_compression = 'uncompressed'"])),
        ("in-memory database (nothing compressed or written)", lambda: _seal(ddl, t, reps, memory=True)),
        ("codec idea: file_path_raw NULL where it equals file_path",
         lambda: _seal(ddl, raw_null_when_same, reps)),
    ]
    head = (f"events_base, one row group of {n:,} rows, {t.num_columns} columns ({len(kinds['string'])} string, "
             f"{len(kinds['number'])} number, {len(kinds['list'])} list, {len(kinds['all NULL'])} all NULL); "
             f"file_path_raw equals file_path on {pc.sum(same).as_py() or 0:,} rows; best of {reps}; "
             f"load average {os.getloadavg()[0]:.1f}")
    lines = [head, "", "| insert of one row group | INSERT s | COMMIT s | total s | µs/row | file grew, bytes/row |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, f in rows:
        ins, com, grew = f()
        lines.append(f"| {label} | {ins:.3f} | {com:.3f} | {ins + com:.3f} | {(ins + com) / n * 1e6:.2f} | "
                     f"{grew / n:.1f} |")
    lines += ["", "| columns inserted alone (with ts) | count | total s | ms per column |", "|---|---:|---:|---:|"]
    alone = sum(_seal(_ddl_of(t, ["ts"]), t.select(["ts"]), reps)[:2])
    groups = {**{k: v for k, v in kinds.items() if v}, "file_path, file_path_raw": ["file_path", "file_path_raw"]}
    for label, cols in groups.items():
        keep = list(dict.fromkeys(["ts", *cols]))
        sub = t.select(keep)
        ins, com, _ = _seal(_ddl_of(t, keep), sub, reps)
        cost = ins + com - alone
        lines.append(f"| {label} | {len(cols)} | {cost:.3f} | {cost / len(cols) * 1e3:.1f} |")
    return "\n".join(lines)


def _ddl_of(t: pa.Table, cols: list[str]) -> str:
    """events_base with only ``cols`` (their types as the store declares them)."""
    from forensix.store.migrations import duckdb_type

    return "CREATE TABLE events_base (" + ", ".join(f'"{c}" {duckdb_type(t.schema.field(c).type)}' for c in cols) + ")"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.seal_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path, help="a replayed store (bench.agent_cost replay --store)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    print(run(a.store, a.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
