"""A recorded store's rows written again with this tree's layout: ``python -m bench.store_replay SRC``.

Why: a store's bytes per event depend on what was recorded (a build under load records
other people's work too), so two layouts are compared on the same rows, not on two
recordings. The logical rows of SRC (the bulk tables as their views decode them, flow edges
once, plus every small table) are appended to a fresh store in time order, in batches of
``--batch`` rows as a recorder appends them, then flushed; the bulk tables are sealed in
whole row groups as a recording seals them (a recording also seals a quiet table every
60 s, which this does not). Prints one JSON line: rows, file bytes and bytes per events
row of SRC and of the copy, and checks that the copy's rows are SRC's (``--check``).

A store of a newer format than a tree reads: ``--dump DIR`` with the newer tree, then this
module with the older one (e.g. a copy of this file in a pinned tree) and ``DIR`` as SRC.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix.store import schema
from forensix.store.embedded import DuckDBStore, open_writer, store_files

_ORDER = {"events": "ts, cpu, seq", "flows": "last_ts, entity_id, fd", "processes": "image_ts, entity_id, image_seq"}
# what --check compares: each bulk table's rows as a multiset (the store's sort may reorder them)
_CHECK = ("events", "flows", "processes", "artifacts", "accounts", "alerts", "gaps", "hosts", "tty")


def _rows(src: DuckDBStore, table: str) -> pa.Table:
    """SRC's rows of ``table`` as appended (events without the rows the view derives from flows)."""
    if table in src._views:
        sql = f"SELECT * FROM ({src._views[table]}) ORDER BY {_ORDER[table]}"
        t = src._con.sql(sql).to_arrow_table()
    else:
        t = src.query(f'SELECT * FROM "{table}"')
    return t.select([n for n in schema.TABLES[table].names if n in t.column_names])


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in store_files(path))


def _read(src_path: Path, check: bool) -> tuple[dict[str, pa.Table], dict[str, pa.Table], int]:
    """SRC's rows to append, what its views show (for --check), and its events count. SRC
    may be a directory ``--dump`` wrote: a newer format's rows, for an older tree to append."""
    if src_path.is_dir():
        load = {p.stem: pa.ipc.open_file(p).read_all() for p in src_path.glob("*.arrow")}
        data = {t: load[t] for t in schema.TABLES if t in load}
        seen = {t: load[f"seen.{t}"] for t in _CHECK} if check else {}
        return data, seen, int(json.loads((src_path / "events").read_text()))
    src = DuckDBStore(src_path, read_only=True)
    try:
        data = {t: _rows(src, t) for t in schema.TABLES}
        # what a reader sees: the copy must show the same (the events view included)
        seen = {t: src.query(f'SELECT * FROM "{t}"') for t in _CHECK} if check else {}
        return data, seen, int(src.query("SELECT count(*) AS n FROM events").column("n")[0].as_py())
    finally:
        src.close()


def dump(src_path: Path, out: Path) -> None:
    """SRC's rows (and its views' rows) as Arrow files in ``out``, for another tree's replay."""
    data, seen, events = _read(src_path, True)
    out.mkdir(parents=True, exist_ok=True)
    for name, t in [*data.items(), *((f"seen.{k}", v) for k, v in seen.items())]:
        with pa.ipc.new_file(out / f"{name}.arrow", t.schema) as w:
            w.write_table(t)
    (out / "events").write_text(str(events))


def replay(src_path: Path, out: Path, batch: int, check: bool) -> dict[str, Any]:
    data, seen, src_events = _read(src_path, check)
    t0 = time.perf_counter()
    w = open_writer(out)
    try:
        for table, rows in data.items():
            for start in range(0, rows.num_rows, batch):
                w.append(table, rows.slice(start, batch))
        w.flush()
        events = int(w.query("SELECT count(*) AS n FROM events").column("n")[0].as_py())
        mismatch = []
        if check:
            for table in _CHECK:
                cols = ", ".join(f'"{c}"' for c in seen[table].column_names)
                cur = w._cursor()
                try:
                    cur.register("_fx_src", seen[table])
                    n = cur.execute(
                        f"SELECT count(*) FROM ((SELECT {cols} FROM _fx_src EXCEPT ALL SELECT {cols} FROM {table}) "
                        f"UNION ALL (SELECT {cols} FROM {table} EXCEPT ALL SELECT {cols} FROM _fx_src))"
                    ).fetchall()[0][0]
                finally:
                    cur.close()
                if n:
                    mismatch.append(f"{table}: {n} rows differ")
    finally:
        w.close()
    dt = time.perf_counter() - t0
    src_bytes, out_bytes = (0 if src_path.is_dir() else _size(src_path)), _size(out)
    return {
        "src": str(src_path), "src_bytes": src_bytes, "events": src_events,
        "src_bytes_per_event": round(src_bytes / src_events, 2),
        "rows": {t: d.num_rows for t, d in data.items() if d.num_rows},
        "copy_events": events, "copy_bytes": out_bytes, "copy_bytes_per_event": round(out_bytes / events, 2),
        "copy_seconds": round(dt, 2), "differences": mismatch if check else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src", type=Path)
    ap.add_argument("--out", type=Path, help="the copy (default: a temporary file, removed)")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--check", action="store_true", help="compare every table's rows with SRC's")
    ap.add_argument("--dump", type=Path, help="only write SRC's rows to this directory (SRC for an older tree)")
    a = ap.parse_args()
    if a.dump is not None:
        dump(a.src, a.dump)
        return
    if a.out is not None:
        print(json.dumps(replay(a.src, a.out, a.batch, a.check)))
        return
    with tempfile.TemporaryDirectory(prefix="fx-store-replay-", dir="/var/tmp") as d:
        print(json.dumps(replay(a.src, Path(d) / "copy.duckdb", a.batch, a.check)))


if __name__ == "__main__":
    main()
