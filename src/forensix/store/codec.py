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

Format /15 (migration 0016), measured on a real build's rows (bench.store_replay: bash's
configure and make recorded host-wide, 720k events, the same rows sealed by each layout;
bench.store_layout gives each column's bytes): 56.4 -> 41.4 bytes per event.

- Paths (/15 only, see /16 below): ``file_path`` of events and flows is ZSTD-compressed in a new store (``COMPRESSION``,
  DuckDB's ``USING COMPRESSION``): 11.7 -> 6.7 and 16.8 -> 7.4 bytes per row. DuckDB never
  picks ZSTD itself, and an existing column keeps its compression, so an older store keeps
  its own. A raw path equal to its resolved path (269k of 330k) is stored NULL with
  ``path_raw_same`` (``target_path_raw_same`` for the target) true: 10.3 -> 1.5 bytes a row.
- Sort: events by (event_action, process_name, process_entity_id, ts) and edges by
  (process_name, entity_id, first_ts): the processes of one program (every cc1) lie together
  and open the same headers, so their paths and per-process columns compress together.
- Offsets, read back as ``coalesce(column, base - offset)``: an edge's ``last_ts`` from its
  ``first_ts`` (84% of a build's edges last no time at all), open's ``ret`` from its ``fd``,
  a summary row's ``event_end`` from its ``ts``.

Tried and left out: DuckDB's ``zstd_min_string_length`` lowered (it still chose the
dictionary); ZSTD on every string column (several times larger on sparse or short ones);
edges sorted by inode (paths and generations smaller, entity ids larger: 3% worse overall);
events sorted by (action, program, ts) without the process: 1.5% smaller on this build, not
taken on one build's evidence (it interleaves concurrent processes' rows; ids grew 23%).
Marking such arguments and storing them NULL, read back through a CASE
on the syscall: every query bound ~3 ms slower (BackTracker 0.45 -> 0.60 s at 10^7 events).
mmap's a0 XOR its return value saves nothing (a0 is the address hint, mostly 0).

Format /16 (migration 0017), on the same build's rows: 41.4 -> 33.5 bytes per event. A build
names each file many times (every cc1 opens the same headers: 680k rows with a file, 146k
distinct files), and the file's columns took 9 MB of 30: its path (a ZSTD string keeps a
4-byte length per row), inode, and a random 32-bit generation per row.

- ``FILES_TABLE`` holds each file once: (device, inode, generation, type, path), ``FILE_KEY``,
  one life of one name. An events row or an edge with any of them points at it by
  ``file_id`` and stores them NULL. ``encode`` numbers a batch's files in the order of their
  paths; the sealer (``DuckDBStore._store_files``) gives a file the id a recent seal gave it
  (looked up among the newest ``KNOWN_WINDOW`` file rows, so a seal's cost does not grow
  with the store) and new ids to the rest, in the seal's transaction. Rows sealed before
  keep their columns inline and file_id NULL, and so do sockets' rows (``INLINE_TYPES``,
  since 2026-12-07: no migration, the readers already take both).
- Read back through two branches (``_with_files``): the rows without file_id as stored,
  and the others joined to the file table. A filter on a path or inode reaches the file
  table; a filter on a process or a time lets DuckDB build the join on the rows it keeps.
  The analyses at 10^6 events spend the same CPU (bench.analysis_bench, side by side);
  a query over every row pays the join (counting events by action ~3x the CPU on the
  build's store, ~25 ms at 720k rows), a query on a path less (no per-row paths to scan).
- The file table's paths sorted within a seal and ZSTD: 8.7 bytes a file against 34 for
  DuckDB's dictionary. ``COMPRESSION`` forces nothing any more: ZSTD on the rows' path
  columns, now NULL, would cost its lengths, 4.7 bytes a row (a /15 store migrated to /16
  keeps ZSTD there and pays that on its new rows).

Format /17 (migration 0018): network rows in a table of their own, ``NET_TABLE``. DuckDB's
seal costs ~25-35 ns per row per column whatever the column holds (all-NULL included: the
bitpacking and RLE analyses at commit), so an accept or connect paid for the 96 columns of
``events_base`` of which it fills ~40: web-conn stores ~4 rows a request (an accept, a
connect, an edge per side) and the keeper's seal was ~55% of the recorder's CPU a request.

- ``NET_COLUMNS``: the columns the sensor's socket rows can fill (decode.py for records of
  fx_exit_sock: who, when, the syscall and its raw arguments, the socket's inode and type,
  the addresses, a unix socket's path and peer). ``split_network`` sends a row there when its
  category is network and every other column is NULL; any other row, and a network row that
  fills anything else (a socketpair's descriptors, an imported row's module), stays in
  events_base: lossless whatever a source or a later sensor writes.
- The split is made when rows are appended (``DuckDBStore.append``, the recorder's
  ``RecorderStore``), into a journal of its own, not at the seal: a seal that split a
  journal's row group left a partly filled row group in each table, and DuckDB rewrites such
  a row group whole at every later commit (measured: the commit grew 230 -> 830 ms over five
  seals). So each table is sealed in whole row groups, as before.
- Stored: sorted like events, ``ts_boot`` as ``clock_offset``; nothing else encoded (sockets
  keep their file columns inline, ``INLINE_TYPES``; ret is no offset of fd, which a socket
  row lacks; the arguments' XOR keys are file and memory columns a socket row never has).
- Read: the events view is events_base's rows UNION ALL BY NAME this table's (``decoded_sql``),
  with NULL in the columns it lacks. Rows sealed before /17 stay in events_base.

Format /18 (migration 0019): what a web-conn request's four rows (an accept, a connect, a socket
edge per side) cost the keeper's seal, cut where a column can be read back from elsewhere.
DuckDB's seal costs most for strings (~0.06-0.1 µs a row for a VARCHAR column, insert and
commit, against ~0.02-0.04 for an integer one; an all-NULL column ~0.03), measured one column
at a time and on whole row groups of web-conn's rows (docs/benchmarks.md, webrec).

- ``NET_IMPLIED``: every network row of the sensor has category and class "network", kind
  "event" and file type "socket". A NET_TABLE row holding exactly these stores the four NULL and
  ``implied`` true (``_encode_implied``); a row holding anything else there (an older recorder's
  journal, an import) keeps its own values and ``implied`` false. Read back as
  ``CASE WHEN implied THEN 'network' ELSE event_class END``. Rows sealed before /18 have
  ``implied`` NULL and are read as stored. events_net_base's event_category may be NULL from
  0019 on (``implied`` says why).
Made before the row group's sort, so the columns made all NULL are not gathered.
Keeper's seal (bench.keeper_seal, web-conn's replay): a network row ~2.1 -> ~1.8 µs.
Tried and left out: a socket edge's "socket:[inode]" path stored NULL under a flag and read back
as ``file_type || ':[' || file_inode || ']'`` (flows 26 -> 18 bytes an edge, its seal -0.1 µs
less the encoding's 0.08): a filter on file_path then no longer reached the scan, and every
socket edge's path was built to test it (a path's edges 3.4 -> 11.8 ms of CPU on web-conn's
100 k edges, growing with the store). The low-cardinality strings (action, syscall, outcome, transport, type)
as small-integer codes with a fixed vocabulary (-0.05..-0.25 µs a row in the insert and
commit, about what the coding costs); DuckDB settings (disabled_compression_methods,
preserve_insertion_order: no change, or 14x the bytes); the host and boot columns as a
per-seal origin (~0.1 µs a row, but every reader would join an origins table and a filter on
host_id would no longer reach the scan).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.store import schema

__all__ = ["CODEC_COLUMNS", "COMPRESSION", "FILES_TABLE", "FILE_KEY", "INLINE_TYPES", "NET_COLUMNS", "NET_IMPLIED", "NET_SCHEMA", "NET_TABLE",
           "PARTS", "ROW_GROUP", "SORT_KEYS", "decoded_sql", "encode", "files_sql", "known_files_sql", "parts",
           "split_files", "split_network", "store_files"]

ROW_GROUP = 122_880  # DuckDB's row group: rows are sorted within each, never across
# a seal looks for its files among the newest this many of FILES_TABLE (known_files_sql)
KNOWN_WINDOW = 262_144

# /17 (migration 0018): network rows, journaled and sealed apart (``NET_TABLE``_base), read
# as rows of events (module doc). The columns a socket row of the sensor can fill: the
# process and its ids, the syscall and its raw arguments, the socket (inode, device,
# generation, type "socket"; file_path_truncated is false on every sensor row), the
# addresses, and a unix socket's path and peer. Migration 0018 creates the table from these:
# another column takes a migration of its own.
NET_TABLE = "events_net"
NET_COLUMNS = (
    "host_id", "host_name", "boot_id", "ts", "ts_boot", "cpu", "seq", "event_class", "event_kind", "event_category",
    "event_action", "syscall", "event_outcome", "ret", "process_entity_id", "process_pid", "process_tid",
    "process_name", "user_id", "user_effective_id", "group_id", "group_effective_id", "user_audit_id",
    "process_session_id", "process_cgroup_id", "file_path_truncated", "file_inode", "file_device", "file_generation",
    "file_type", "network_transport", "network_type", "source_ip", "source_port", "destination_ip",
    "destination_port", "unix_path", "unix_peer_inode", "a0", "a1", "a2", "a3",
)
NET_SCHEMA = pa.schema([schema.EVENTS.field(c) for c in NET_COLUMNS])
# logical table -> the physical journals its rows are appended to (``split_network``)
PARTS: dict[str, tuple[str, ...]] = {"events": ("events", NET_TABLE)}
_NOT_NET = tuple(c for c in schema.EVENTS.names if c not in NET_COLUMNS)
# split_network: a batch whose network rows lie in up to this many runs is split by slices
_RUNS = 16

# Rows of a row group sorted by these (stable, so equal keys keep their journal order).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("event_action", "process_name", "process_entity_id", "ts"),
    NET_TABLE: ("event_action", "process_name", "process_entity_id", "ts"),
    "flows": ("process_name", "entity_id", "first_ts"),
    "processes": ("entity_id", "image_seq"),
}

# Physical columns of NAME_base beyond the logical schema (schema.TABLES), with DuckDB types.
CODEC_COLUMNS: dict[str, dict[str, str]] = {
    # migrations 0005, 0010, 0016
    "events": {"clock_offset": "BIGINT", "args_xor": "BOOLEAN", "path_raw_same": "BOOLEAN",
               "target_path_raw_same": "BOOLEAN", "ret_offset": "BIGINT", "event_end_offset": "BIGINT",
               "file_id": "UBIGINT"},  # + migration 0017
    "flows": {"clock_offset": "BIGINT", "last_ts_offset": "BIGINT", "file_id": "UBIGINT"},  # migrations 0006, 0016, 0017
    NET_TABLE: {"clock_offset": "BIGINT", "implied": "BOOLEAN"},  # migrations 0018, 0019
}

# /18 (migration 0019): the values every network row of the sensor has in these columns of
# NET_TABLE. A row that has all four stores them NULL and ``implied`` true; read back as these.
NET_IMPLIED: dict[str, str] = {"event_category": "network", "event_class": "network", "event_kind": "event",
                               "file_type": "socket"}

# /16 (migration 0017): the file an events row or an edge names, stored once per row group in
# FILES_TABLE and pointed at by ``file_id`` (see module doc). These columns of such a row are
# stored NULL in NAME_base and read from FILES_TABLE.
FILES_TABLE = "forensix_files"
FILE_KEY = ("file_device", "file_inode", "file_generation", "file_type", "file_path")
_FILE_TYPES = {"file_device": "UBIGINT", "file_inode": "UBIGINT", "file_generation": "UINTEGER",
               "file_type": "VARCHAR", "file_path": "VARCHAR"}

# Files whose rows keep FILE_KEY inline (file_id NULL, as rows sealed before /16), not in
# FILES_TABLE: a socket is one connection, named by nobody else (its edge's path is "socket:[ino]",
# its accept's none), so the table held one row per socket and each seal looked each of them
# up among the newest KNOWN_WINDOW files to find none. On web-conn's rows (two sockets a
# request, ~190 k of 200 k file rows) the seal's file step 0.08 -> 0.02 s per 218 k rows, and
# the store 7% smaller (a socket's inode, device and "socket" compress well inline, sorted).
INLINE_TYPES = ["socket"]

# Columns a new store (format /15 on) creates with a compression of their own (DuckDB's
# ``USING COMPRESSION``): DuckDB never picks ZSTD by itself (not with zstd_min_string_length
# lowered either), and on paths of ~60 bytes ZSTD takes ~35% less than its dictionary + FSST.
# Only long, mostly non-null strings: on sparse or short ones ZSTD takes several times more.
# /16: none. The paths moved to FILES_TABLE (ZSTD there, files_sql), and DuckDB's ZSTD keeps
# every string's length uncompressed: ~4.7 bytes a row on a column that is now all NULL.
COMPRESSION: dict[str, dict[str, str]] = {}

# events (/15): these columns stored as their distance from another (_encode_offset):
# column -> (its base, the physical column holding base - column). open's ret is its fd, and
# a summary row's event_end its ts.
_OFFSETS: dict[str, tuple[str, str]] = {
    "ret": ("fd", "ret_offset"),
    "event_end": ("ts", "event_end_offset"),
}

# events: a raw path stored NULL where it is its resolved path, and this flag true (/15)
_SAME_PATH: dict[str, tuple[str, str]] = {
    "file_path_raw": ("file_path", "path_raw_same"),
    "file_target_path_raw": ("file_target_path", "target_path_raw_same"),
}

# events: each raw argument XOR the first non-null of these columns (0 where all are null).
_ARG_KEYS: dict[str, tuple[str, ...]] = {
    "a1": ("mem_len",),
    "a2": ("file_flags", "mem_prot"),
    "a3": ("file_mode", "mem_flags"),
}

# The wall-clock column each table's ts_boot is the boot-clock reading of.
_TS_OF = {"events": "ts", "flows": "last_ts", NET_TABLE: "ts"}
# Tables whose rows point at FILES_TABLE (/16)
_FILED = ("events", "flows")


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


def _encode_offset(t: pa.Table, col: str, base: str, stored: str) -> pa.Table:
    """``col`` stored NULL and ``stored`` = ``base - col`` where both have a value and that
    cannot overflow; elsewhere ``col`` as it is and ``stored`` NULL. Read back as
    ``coalesce(col, base - stored)``."""
    base_col = t.column(base)
    b = pc.fill_null(base_col, 0).to_numpy()
    c_col = t.column(col)
    c = pc.fill_null(c_col, 0).to_numpy()
    with np.errstate(over="ignore"):
        off = b - c
    overflow = ((b < 0) != (c < 0)) & ((off < 0) != (b < 0))
    c_valid = np.asarray(c_col.is_valid().to_numpy(zero_copy_only=False), bool)
    enc = c_valid & np.asarray(base_col.is_valid().to_numpy(zero_copy_only=False), bool) & ~overflow
    t = t.set_column(t.schema.get_field_index(col), col, pa.array(c, pa.int64(), mask=~c_valid | enc))
    return t.append_column(stored, pa.array(off, pa.int64(), mask=~enc))


def _arg_key(t: pa.Table, cols: tuple[str, ...]) -> pa.Array:
    return pc.coalesce(*(t.column(c).cast(pa.uint64()) for c in cols), pa.scalar(0, pa.uint64()))


def _encode_args(t: pa.Table) -> pa.Table:
    """a1..a3 XOR their key columns, and ``args_xor`` true on every row (see module doc)."""
    for arg, cols in _ARG_KEYS.items():
        i = t.schema.get_field_index(arg)
        t = t.set_column(i, arg, pc.bit_wise_xor(t.column(arg), _arg_key(t, cols)))
    return t.append_column("args_xor", pa.repeat(pa.scalar(True), t.num_rows))


def _encode_raw_paths(t: pa.Table) -> pa.Table:
    """A raw path equal to its resolved path stored NULL, with its flag true (see module doc)."""
    for raw, (path, flag) in _SAME_PATH.items():
        i = t.schema.get_field_index(raw)
        same = pc.fill_null(pc.equal(t.column(raw), t.column(path)), False)
        t = t.set_column(i, raw, pc.if_else(same, pa.scalar(None, pa.string()), t.column(raw)))
        t = t.append_column(flag, same)
    return t


def _codes(c: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Sort keys for one key column: its values (a string by its rank among the column's
    distinct values, 0 for null) and, for a number, whether it is null."""
    if isinstance(c, pa.ChunkedArray):
        c = c.combine_chunks()
    if pa.types.is_string(c.type):
        d = pc.dictionary_encode(c)
        rank = np.empty(len(d.dictionary), np.int64)
        rank[np.asarray(pc.array_sort_indices(d.dictionary))] = np.arange(1, len(d.dictionary) + 1)
        idx = pc.fill_null(d.indices, 0).to_numpy()
        return [np.where(np.asarray(d.indices.is_valid()), rank[idx] if len(rank) else 0, 0)]
    return [np.asarray(c.is_valid()), pc.fill_null(c, 0).to_numpy()]


def _file_ids(t: pa.Table) -> pa.Array:
    """Each row's file (FILE_KEY) as an id of this batch (0, 1, ... in the order of their
    paths), null on rows with no file and on sockets (``INLINE_TYPES``): ``store_files``
    turns them into the stored ids."""
    out = np.full(t.num_rows, -1, np.int64)
    has = np.zeros(t.num_rows, bool)
    for c in FILE_KEY:
        has |= np.asarray(t.column(c).is_valid())
    has &= ~np.asarray(pc.fill_null(pc.is_in(t.column("file_type"), pa.array(INLINE_TYPES)), False))
    rows = np.flatnonzero(has)
    if len(rows):
        at = pa.array(rows)
        keys = [k for c in reversed(FILE_KEY) for k in _codes(t.column(c).take(at))]  # path primary
        order = np.lexsort(list(reversed(keys)))  # lexsort: the last key is primary
        new = np.zeros(len(order), bool)  # a row whose key differs from the one before: a new file
        new[0] = True
        for k in keys:
            s = k[order]
            new[1:] |= s[1:] != s[:-1]
        out[rows[order]] = np.cumsum(new) - 1
    return pa.array(out, pa.int64(), mask=out < 0)


def split_files(rows: pa.Table) -> pa.Table:
    """The files of encoded rows (``encode``): one FILES_TABLE row per ``file_id`` (their ids
    still the batch's own, 0, 1, ...), which ``store_files`` then gives stored ids."""
    local = rows.column("file_id").combine_chunks()
    where = np.flatnonzero(np.asarray(local.is_valid()))
    uniq, first = np.unique(pc.fill_null(local, 0).to_numpy()[where], return_index=True)
    at = pa.array(where[first])
    return pa.table({"file_id": pa.array(uniq.astype(np.uint64), pa.uint64()),
                     **{k: rows.column(k).take(at) for k in FILE_KEY}})


def store_files(rows: pa.Table, files: pa.Table, known: np.ndarray, first_id: int) -> tuple[pa.Table, pa.Table]:
    """Encoded rows as stored, and the FILES_TABLE rows to add. ``files``: ``split_files``;
    ``known``: per file the id the store already gives it, -1 for a new one; new files take
    ids from ``first_id`` on, in ``files``' order. The rows' FILE_KEY columns become NULL where
    they point at a file."""
    new = known < 0
    ids = np.where(new, first_id + np.cumsum(new) - 1, known).astype(np.uint64)
    local = rows.column("file_id").combine_chunks()
    valid = np.asarray(local.is_valid())
    stored = ids[pc.fill_null(local, 0).to_numpy()] if len(ids) else np.zeros(rows.num_rows, np.uint64)
    rows = rows.set_column(rows.schema.get_field_index("file_id"), "file_id", pa.array(stored, pa.uint64(), mask=~valid))
    mask = pa.array(valid)
    for k in FILE_KEY:
        i = rows.schema.get_field_index(k)
        rows = rows.set_column(i, k, pc.if_else(mask, pa.scalar(None, rows.schema.field(k).type), rows.column(k)))
    added = files.filter(pa.array(new)).set_column(0, "file_id", pa.array(ids[new], pa.uint64()))
    return rows, added


def known_files_sql(files: str, view: str) -> str:
    """The ids FILES_TABLE already gives the files of ``view`` (``split_files``' rows), among
    its newest KNOWN_WINDOW (a bound on each seal's cost; a file met again after it is stored
    again). $lo: the first id looked at."""
    on = " AND ".join(f"n.{k} IS NOT DISTINCT FROM f.{k}" for k in FILE_KEY)
    return (f"SELECT n.file_id AS local, max(f.file_id) AS id FROM {view} n JOIN {files} f "
            f"ON f.file_id >= $lo AND {on} GROUP BY n.file_id")


def files_sql() -> str:
    """FILES_TABLE as migration 0017 creates it (paths ZSTD: sorted, they share long prefixes)."""
    cols = ", ".join(f'"{k}" {_FILE_TYPES[k]}' + (" USING COMPRESSION zstd" if k == "file_path" else "")
                     for k in FILE_KEY)
    return f'CREATE TABLE IF NOT EXISTS "{FILES_TABLE}" ("file_id" UBIGINT NOT NULL, {cols})'


def encode(table: str, data: pa.Table) -> pa.Table:
    """The rows of ``data`` as they are stored in ``table``_base: sorted per row group, encoded."""
    if data.num_rows == 0:
        return data
    if table == NET_TABLE:  # before the sort: columns made all NULL need no gather
        data = _encode_implied(data)
    keys = SORT_KEYS.get(table)
    if keys:
        data = _sort(data, keys)
    if table in _TS_OF:
        data = _encode_offset(data, "ts_boot", _TS_OF[table], "clock_offset")
    if table == "flows":  # after ts_boot, whose offset is from the true last_ts
        data = _encode_offset(data, "last_ts", "first_ts", "last_ts_offset")
    if table == "events":
        data = _encode_args(data)
        data = _encode_raw_paths(data)
        for col, (base, stored) in _OFFSETS.items():
            data = _encode_offset(data, col, base, stored)
    if table in _FILED:  # after the raw paths, which are compared with the true file_path
        data = data.append_column("file_id", _file_ids(data))
    return data


def _encode_implied(t: pa.Table) -> pa.Table:
    """NET_IMPLIED's columns stored NULL on the rows that hold exactly its values, with
    ``implied`` true; other rows (an older recorder's journal, an import) keep theirs, false."""
    same = np.ones(t.num_rows, bool)
    for c, v in NET_IMPLIED.items():
        same &= np.asarray(pc.fill_null(pc.equal(t.column(c), v), False), bool)
    mask = pa.array(same)
    for c in NET_IMPLIED:
        i = t.schema.get_field_index(c)
        f = t.schema.field(i)
        col = pa.nulls(t.num_rows, f.type) if same.all() else pc.if_else(mask, pa.scalar(None, f.type), t.column(c))
        t = t.set_column(i, f.with_nullable(True), col)
    return t.append_column("implied", mask)


def parts(table: str, data: pa.Table) -> list[tuple[str, pa.Table]]:
    """The journals (``PARTS``) ``data``, rows of the logical ``table`` conformed to its schema,
    is appended to, each with its rows (none left out, none twice)."""
    if table != "events":
        return [(table, data)]
    rest, net = split_network(data)
    return [("events", rest), (NET_TABLE, net)]


def split_network(data: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Rows of events (``data``: schema.EVENTS) as (events_base's, NET_TABLE's): network rows
    that fill no column outside NET_COLUMNS go to the second, with those columns only."""
    cat = data.column("event_category")
    net = np.asarray(pc.fill_null(pc.equal(cat, "network"), False), bool)
    if not net.any():
        return data, NET_SCHEMA.empty_table()
    for c, (a, b) in _filled(data, net):
        col = data.column(c)
        if a or b < len(col):
            net[a:b] &= ~np.asarray(col.slice(a, b - a).is_valid(), bool)
        else:
            net &= ~np.asarray(col.is_valid(), bool)
    n = int(net.sum())
    if n == 0:
        return data, NET_SCHEMA.empty_table()
    narrow = data.select(list(NET_COLUMNS))
    if n == data.num_rows:
        return data.schema.empty_table(), narrow
    # the recorder's batches hold each ring's rows together (process, network, the rest): the
    # network rows are one run or a few, taken as slices (no copy). A filter copies every
    # column (~0.25 µs an events row on web-conn's batches: most of what the split cost)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(net.view(np.int8))) + 1, [len(net)]))
    if len(bounds) - 1 <= _RUNS:
        runs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        return (_slices(data, [(a, b) for a, b in runs if not net[a]]),
                _slices(narrow, [(a, b) for a, b in runs if net[a]]))
    mask = pa.array(net)
    return data.filter(pc.invert(mask)), narrow.filter(mask)


def _filled(data: pa.Table, net: np.ndarray) -> list[tuple[str, tuple[int, int]]]:
    """The columns outside NET_COLUMNS holding a value where ``net`` may hold a network row,
    each with the row range to test. A decoded drain's socket rows are chunks of their own
    (sensor/decode.py ``_decode_apart``): a column NULL in every chunk holding network rows
    is not tested row by row (a chunk's null count is known without a scan)."""
    lens = [len(c) for c in data.column("event_category").chunks]
    bounds = np.cumsum([0, *lens]).tolist()
    with_net = [i for i in range(len(lens)) if net[bounds[i]:bounds[i + 1]].any()]
    out: list[tuple[str, tuple[int, int]]] = []
    for c in _NOT_NET:
        col = data.column(c)
        if col.null_count == len(col):
            continue
        chunks = col.chunks
        if len(chunks) == 1 or [len(x) for x in chunks] != lens:
            out.append((c, (0, len(col))))
            continue
        out.extend((c, (bounds[i], bounds[i + 1])) for i in with_net if chunks[i].null_count != lens[i])
    return out


def _slices(t: pa.Table, runs: list[tuple[int, int]]) -> pa.Table:
    parts = [t.slice(a, b - a) for a, b in runs]
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def decoded_sql(table: str, base: str, have: set[str] | frozenset[str] = frozenset()) -> str:
    """A SELECT over ``base`` (the physical table) returning the logical rows of ``table``;
    ``have``: the codec columns ``base`` has (an older store opened read-only lacks the
    newer ones; its rows were not encoded by them)."""
    ts = _TS_OF.get(table)
    if ts is None:
        return f"SELECT * FROM {base}"
    drop = ["clock_offset"]
    put = []
    if table == "flows" and "last_ts_offset" in have:
        drop.append("last_ts_offset")
        ts = "coalesce(last_ts, first_ts - last_ts_offset)"
        put.append(f"{ts} AS last_ts")
    put.append(f"coalesce(ts_boot, {ts} - clock_offset) AS ts_boot")
    if table == NET_TABLE and "implied" in have:
        drop.append("implied")
        put += [f"CASE WHEN implied THEN '{v}' ELSE {c} END AS {c}" for c, v in NET_IMPLIED.items()]
    if table == "events" and "args_xor" in have:
        drop.append("args_xor")
        # the cheapest form to bind of those tried (each query binds the view): casts inside
        # the CASE cost ~0.15 ms more per query
        for arg, cols in _ARG_KEYS.items():
            put.append(f"CASE WHEN args_xor THEN xor({arg}, coalesce({', '.join(cols)}, 0)) ELSE {arg} END AS {arg}")
    if table == "events" and "path_raw_same" in have:
        for raw, (path, flag) in _SAME_PATH.items():
            drop.append(flag)
            put.append(f"CASE WHEN {flag} THEN {path} ELSE {raw} END AS {raw}")
        for col, (of, stored) in _OFFSETS.items():
            drop.append(stored)
            put.append(f"coalesce({col}, {of} - {stored}) AS {col}")
    src = base
    if "file_id" in have:
        drop.append("file_id")
        src = _with_files(base)
    return f"SELECT * EXCLUDE ({', '.join(drop)}) REPLACE ({', '.join(put)}) FROM {src}"


def _with_files(base: str) -> str:
    """``base`` with the FILE_KEY columns of rows that point into FILES_TABLE read from there.
    Two branches, not one LEFT JOIN with coalesce: a filter on a path or inode then reaches
    the file table (and the rows without a file) instead of every joined row, and a filter
    on the row (a process, a time) lets the join build on the few rows it keeps."""
    files = base[: base.rfind(".") + 1] + FILES_TABLE
    keys = ", ".join(f"f.{k} AS {k}" for k in FILE_KEY)
    return (f"(SELECT * FROM {base} WHERE file_id IS NULL UNION ALL "
            f"SELECT b.* REPLACE ({keys}) FROM {base} b JOIN {files} f ON b.file_id = f.file_id)")
