"""Where a store's bytes are: ``python -m bench.store_layout STORE [--columns N]``.

Reads DuckDB's ``pragma_storage_info`` of every table and gives each column the blocks its
segments occupy: a block holding several segments is split at their offsets, and its tail
after the last segment goes to that segment (what a partly filled segment costs on disk).
What no segment of any table occupies is the file's metadata and free blocks. Prints one
JSON document: per table rows, bytes and bytes per row; per column bytes, bytes per row and
the compressions DuckDB chose; the file's size and bytes per events row.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from forensix.store.embedded import store_files


def layout(path: Path) -> dict[str, Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        block = int(con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])  # type: ignore[index]
        total_blocks, free_blocks = con.execute(
            "SELECT total_blocks, free_blocks FROM pragma_database_size()").fetchone()  # type: ignore[misc]
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        rows = {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}  # type: ignore[index]
        segs: list[tuple[str, str, str, int, int, list[int]]] = []
        for t in tables:
            for col, comp, bid, off, extra in con.execute(
                f"SELECT column_name, compression, block_id, block_offset, additional_block_ids "
                f"FROM pragma_storage_info('{t}') WHERE persistent AND block_id >= 0"
            ).fetchall():
                segs.append((t, col, comp, int(bid), int(off), list(extra or [])))
        # events rows: events_base's, and from format /17 on the network rows' (events_net_base)
        events = sum(rows[t] for t in ("events_base", "events_net_base") if t in tables)
    finally:
        con.close()
    by_block: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(segs):
        by_block[s[3]].append(i)
    size = [0] * len(segs)
    for ids in by_block.values():
        ids.sort(key=lambda i: segs[i][4])
        for k, i in enumerate(ids):
            end = segs[ids[k + 1]][4] if k + 1 < len(ids) else block
            size[i] += end - segs[i][4]
    for i, s in enumerate(segs):
        size[i] += block * len(s[5])
    per_col: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for i, (t, col, comp, _b, _o, _x) in enumerate(segs):
        c = per_col[t].setdefault(col, {"bytes": 0, "compression": defaultdict(int)})
        c["bytes"] += size[i]
        c["compression"][comp] += size[i]
    files = store_files(path)
    out_tables = {}
    for t in tables:
        cols = per_col.get(t, {})
        tb = sum(c["bytes"] for c in cols.values())
        n = rows[t]
        out_tables[t] = {
            "rows": n, "bytes": tb, "bytes_per_row": round(tb / n, 2) if n else None,
            "columns": {k: {"bytes": v["bytes"], "bytes_per_row": round(v["bytes"] / n, 3) if n else None,
                            "compression": dict(sorted(v["compression"].items(), key=lambda kv: -kv[1]))}
                        for k, v in sorted(cols.items(), key=lambda kv: -kv[1]["bytes"])},
        }
    in_tables = sum(size)
    file_bytes = path.stat().st_size
    return {
        "file": str(path), "file_bytes": file_bytes, "store_bytes": sum(f.stat().st_size for f in files),
        "block_size": block, "total_blocks": int(total_blocks), "free_blocks": int(free_blocks),
        "metadata_and_free_bytes": file_bytes - in_tables, "events_base_rows": events,
        "tables": dict(sorted(out_tables.items(), key=lambda kv: -kv[1]["bytes"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("store", type=Path)
    ap.add_argument("--columns", type=int, default=12, help="columns shown per table (largest first)")
    a = ap.parse_args()
    res = layout(a.store)
    for t in res["tables"].values():
        t["columns"] = dict(list(t["columns"].items())[: a.columns])
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
