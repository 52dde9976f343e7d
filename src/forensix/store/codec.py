"""How the bulk tables lie in DuckDB: each sealed row group sorted, ts_boot as an offset.

Why: DuckDB compresses a column segment by run length, bit packing against a frame of
reference, or a dictionary. Rows in ring order interleave hundreds of processes and every
kind of event, so the columns that are constant per process (pids, ids, names, cgroup) or
per kind of event (the validity of the sparse columns, the syscall, its raw arguments)
break into short runs; and ``ts_boot`` is ``ts`` minus a clock offset that only changes at
a resync, stored a second time in full. Sorting each row group by (event_action,
process_entity_id, ts) and storing ``ts_boot`` as that offset took the synthetic mix of
``bench.ingest`` from 77 to 34 bytes/event (62 before it carried raw arguments). The sort
costs ~45 ms per row group (the gather of ~75 columns); DuckDB then compresses the sorted
runs faster, which pays for most of it.

Nothing is lost and nothing changes for a reader: ``decoded_sql`` is the projection the
query views (``DuckDBStore._cursor``) read the base tables through, and it returns exactly
the rows that were appended. Rows are reordered only within a row group (122,880 rows of
one seal, i.e. one span of the recording), never across, so zone maps on ``ts`` still skip
row groups; queries order their results explicitly (``ORDER BY ts, cpu, seq``).

``events_base`` (migration 0005): ``clock_offset`` = ``ts - ts_boot`` and ``ts_boot`` stored
NULL, read back as ``coalesce(ts_boot, ts - clock_offset)``; ``flows_base`` (0006) the same
with ``last_ts``. Rows sealed before 0005, and
rows where the difference would overflow, keep ``ts_boot`` and a NULL ``clock_offset``.

``events_base`` (migration 0010): the raw arguments a1..a3 that copy a named column are
stored XOR that column, so a copy is stored as 0: openat's a2 and a3 are its file_flags and
file_mode, mmap's a1..a3 its mem_len, mem_prot and mem_flags. Each is XOR-ed with the first
non-null of its columns (``_ARG_KEYS``), whatever the syscall, so the encoding is lossless
whether or not the argument is a copy (a mismatch only compresses less) and reads back
without knowing the syscall. ``args_xor`` is true on the rows so encoded; rows sealed
before 0010 have it NULL and are read as stored. On a real build (bash's configure and
make, 153k event rows) events_base went from 28 to 24 blocks (7.34 to 6.29 MB): those
arguments took ~6.4 bytes of each row, under 1 with the copies at 0.

Tried and left out: marking such arguments and storing them NULL, read back through a CASE
on the syscall: every query bound ~3 ms slower (BackTracker 0.45 -> 0.60 s at 10^7 events).
mmap's a0 XOR its return value saves nothing (a0 is the address hint, mostly 0).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CODEC_COLUMNS", "ROW_GROUP", "SORT_KEYS", "decoded_sql", "encode"]

ROW_GROUP = 122_880  # DuckDB's row group: rows are sorted within each, never across

# Rows of a row group sorted by these (stable, so equal keys keep their journal order).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("event_action", "process_entity_id", "ts"),
    "flows": ("entity_id", "first_ts"),
    "processes": ("entity_id", "image_seq"),
}

# Physical columns of NAME_base beyond the logical schema (schema.TABLES), with DuckDB types.
CODEC_COLUMNS: dict[str, dict[str, str]] = {
    "events": {"clock_offset": "BIGINT", "args_xor": "BOOLEAN"},  # migrations 0005, 0010
    "flows": {"clock_offset": "BIGINT"},  # migration 0006
}

# events: each raw argument XOR the first non-null of these columns (0 where all are null).
_ARG_KEYS: dict[str, tuple[str, ...]] = {
    "a1": ("mem_len",),
    "a2": ("file_flags", "mem_prot"),
    "a3": ("file_mode", "mem_flags"),
}

# The wall-clock column each table's ts_boot is the boot-clock reading of.
_TS_OF = {"events": "ts", "flows": "last_ts"}


def _sort(t: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """``t`` with each row group's rows sorted by ``keys`` (numeric or string)."""
    out = []
    for start in range(0, t.num_rows, ROW_GROUP):
        part = t.slice(start, ROW_GROUP)
        cols = []
        for k in reversed(keys):  # np.lexsort: the last key is the primary one
            c = part.column(k)
            if pa.types.is_string(c.type):  # grouped, not ordered: codes by first appearance
                c = pc.dictionary_encode(c.combine_chunks()).indices
            cols.append(pc.fill_null(c, 0).to_numpy())
        idx = pa.array(np.lexsort(cols))
        # a column that is all null (or all one dictionary value) needs no gather
        arrays = [c if c.null_count == len(c) else c.take(idx) for c in part.columns]
        out.append(pa.Table.from_arrays(arrays, schema=part.schema))
    return pa.concat_tables(out) if len(out) > 1 else out[0]


def _encode_ts_boot(t: pa.Table, ts_name: str) -> pa.Table:
    """``ts_boot`` as the clock offset ``ts - ts_boot`` where that cannot overflow."""
    ts_col = t.column(ts_name)
    ts = pc.fill_null(ts_col, 0).to_numpy()
    tb_col = t.column("ts_boot")
    tb = pc.fill_null(tb_col, 0).to_numpy()
    with np.errstate(over="ignore"):
        off = ts - tb
    overflow = ((ts < 0) != (tb < 0)) & ((off < 0) != (ts < 0))
    tb_valid = np.asarray(tb_col.is_valid().to_numpy(zero_copy_only=False), bool)
    # only where ts has a value to add the offset back to
    enc = tb_valid & np.asarray(ts_col.is_valid().to_numpy(zero_copy_only=False), bool) & ~overflow
    t = t.set_column(t.schema.get_field_index("ts_boot"), "ts_boot", pa.array(tb, pa.int64(), mask=~tb_valid | enc))
    return t.append_column("clock_offset", pa.array(off, pa.int64(), mask=~enc))


def _arg_key(t: pa.Table, cols: tuple[str, ...]) -> pa.Array:
    return pc.coalesce(*(t.column(c).cast(pa.uint64()) for c in cols), pa.scalar(0, pa.uint64()))


def _encode_args(t: pa.Table) -> pa.Table:
    """a1..a3 XOR their key columns, and ``args_xor`` true on every row (see module doc)."""
    for arg, cols in _ARG_KEYS.items():
        i = t.schema.get_field_index(arg)
        t = t.set_column(i, arg, pc.bit_wise_xor(t.column(arg), _arg_key(t, cols)))
    return t.append_column("args_xor", pa.repeat(pa.scalar(True), t.num_rows))


def encode(table: str, data: pa.Table) -> pa.Table:
    """The rows of ``data`` as they are stored in ``table``_base: sorted per row group, encoded."""
    if data.num_rows == 0:
        return data
    keys = SORT_KEYS.get(table)
    if keys:
        data = _sort(data, keys)
    if table in _TS_OF:
        data = _encode_ts_boot(data, _TS_OF[table])
    if table == "events":
        data = _encode_args(data)
    return data


def decoded_sql(table: str, base: str, have: set[str] | frozenset[str] = frozenset()) -> str:
    """A SELECT over ``base`` (the physical table) returning the logical rows of ``table``;
    ``have``: the codec columns ``base`` has (an older store opened read-only lacks the
    newer ones; its rows were not encoded by them)."""
    ts = _TS_OF.get(table)
    if ts is None:
        return f"SELECT * FROM {base}"
    drop = ["clock_offset"]
    put = [f"coalesce(ts_boot, {ts} - clock_offset) AS ts_boot"]
    if table == "events" and "args_xor" in have:
        drop.append("args_xor")
        # the cheapest form to bind of those tried (each query binds the view): casts inside
        # the CASE cost ~0.15 ms more per query
        for arg, cols in _ARG_KEYS.items():
            put.append(f"CASE WHEN args_xor THEN xor({arg}, coalesce({', '.join(cols)}, 0)) ELSE {arg} END AS {arg}")
    return f"SELECT * EXCLUDE ({', '.join(drop)}) REPLACE ({', '.join(put)}) FROM {base}"
