"""Bulk tables staged as immutable Parquet segments beside the DuckDB file.

Why: a DuckDB append analyses and compresses every column of every row group on the
writer's core (~100k events/s for the ~75 event columns here, and a fixed few
milliseconds per append), while pyarrow writes the same rows as zstd Parquet several
times faster and smaller. DuckDB reads Parquet natively, so the bulk tables (events,
flows, processes) are written as segments and queried through per-connection views
(``embedded.DuckDBStore``); the DuckDB file keeps the catalog, the small tables and the
rows of stores written before segments existed.

Layout, for a store ``host.duckdb``::

    host.duckdb.segments/<table>/000000000042.parquet               sealed (written to .tmp, fsynced, renamed)
    host.duckdb.segments/<table>/000000000001-000000000041.parquet  small sealed segments merged
    host.duckdb.segments/<table>/000000000043.arrows                journal of the open segment

Every append goes to the open segment's journal (an Arrow IPC stream, written at once and
fsynced at most every ``sync_seconds``); queries read the journal's complete part through a
memory map, so unsealed rows are visible and cost no heap. The journal is sealed into the
Parquet segment of the same number when it holds ``seal_rows`` rows, is ``seal_seconds``
old, or on flush; only then is it removed. Runs of small segments (a quiet host seals a
few rows at a time) are merged into one file named by the range it covers; the files it
covers are removed after it is durable, and ignored by anyone who still finds them.

A writer killed at any point loses nothing written before it died: the next writer seals
leftover journals (a torn last batch is the only thing a journal can lose, and it is
reported), and readers include journals nobody sealed yet.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from forensix.errors import StoreError

__all__ = ["SegmentedTable", "conform", "live_segments", "segments_dir"]

_SEGMENT = re.compile(r"^(\d{12})(?:-(\d{12}))?\.parquet$")
_JOURNAL = re.compile(r"^(\d{12})\.arrows$")


def segments_dir(store: Path) -> Path:
    """Where the segments of the store at ``store`` live."""
    return store.with_name(store.name + ".segments")


def _span(p: Path) -> tuple[int, int]:
    m = _SEGMENT.match(p.name)
    assert m is not None
    first = int(m.group(1))
    return first, int(m.group(2) or first)


def live_segments(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(segments to read, segments a merged file covers), in order."""
    spans = {p: _span(p) for p in files}
    merged = [sp for sp in spans.values() if sp[0] != sp[1]]
    live, covered = [], []
    for p, (a, b) in sorted(spans.items(), key=lambda kv: kv[1]):
        if any(x <= a and b <= y and (a, b) != (x, y) for x, y in merged):
            covered.append(p)
        else:
            live.append(p)
    return live, covered


def conform(data: pa.Table, sch: pa.Schema, table: str) -> pa.Table:
    """``data`` with exactly ``sch``'s columns, in order: missing ones null, types cast.

    A column the schema does not know, or a null in a column that must have a value, is
    refused: a segment is immutable, so nothing malformed may reach one.
    """
    unknown = set(data.column_names) - set(sch.names)
    if unknown:
        raise StoreError(f"table {table!r} has no column(s) {sorted(unknown)}", "append columns of forensix.store.schema")
    if data.schema.equals(sch):
        return data
    cols = []
    n = data.num_rows
    for f in sch:
        if f.name in data.column_names:
            c = data.column(f.name)
            if c.type != f.type:
                if pa.types.is_dictionary(c.type):
                    c = c.cast(c.type.value_type)
                c = c.cast(f.type)
        else:
            c = pa.nulls(n, f.type)
        if not f.nullable and c.null_count:
            raise StoreError(f"table {table!r}: column {f.name!r} must not be null ({c.null_count} nulls)",
                             "fill it before appending")
        cols.append(c)
    return pa.Table.from_arrays(cols, schema=sch)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_journal(source: Path | pa.Buffer) -> tuple[list[pa.RecordBatch], str | None]:
    """The whole batches in a journal, and what was torn off its end (if anything)."""
    batches: list[pa.RecordBatch] = []
    try:
        src = source if isinstance(source, pa.Buffer) else pa.memory_map(str(source))
        reader = pa.ipc.open_stream(src)
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                return batches, None
    except (pa.ArrowInvalid, OSError) as e:
        return batches, str(e)


class SegmentedTable:
    """One bulk table's segments and journal. One writer thread appends; any thread reads."""

    def __init__(
        self,
        directory: Path,
        name: str,
        sch: pa.Schema,
        *,
        writable: bool,
        seal_rows: int = 200_000,
        seal_seconds: float = 60.0,
        sync_seconds: float = 1.0,
        merge_count: int = 16,
        compression_level: int = 1,
    ) -> None:
        self.dir = directory / name
        self.name = name
        self.schema = sch
        self.writable = writable
        self.seal_rows = seal_rows
        self.seal_seconds = seal_seconds
        self.sync_seconds = sync_seconds
        self.merge_count = merge_count
        self.compression_level = compression_level
        self._lock = threading.Lock()
        self._journal: pa.NativeFile | None = None
        self._journal_writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._journal_path: Path | None = None
        self._journal_len = 0  # bytes of whole messages: what a query may read
        self._journal_rows = 0
        self._journal_since = 0.0
        self._last_sync = 0.0
        self.recovered: list[str] = []  # what recovery found, for the writer to report
        if writable:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._recover()
        self._segments, covered = live_segments(self._list(_SEGMENT))
        if writable:
            for p in covered:  # a merge was durable but its inputs were not removed yet
                p.unlink()
        self._rows = {p: -1 for p in self._segments}  # row counts, read lazily for merging
        last = [_span(p)[1] for p in self._segments] + [int(m.group(1)) for m in map(_JOURNAL.match, self._names()) if m]
        self._next = max(last, default=0) + 1

    # -- listing -----------------------------------------------------------------
    def _names(self) -> list[str]:
        return [p.name for p in self.dir.iterdir()] if self.dir.is_dir() else []

    def _list(self, pattern: re.Pattern[str]) -> list[Path]:
        return sorted(self.dir / n for n in self._names() if pattern.match(n))

    def snapshot(self) -> tuple[list[Path], pa.Table | None]:
        """The sealed segments and the unsealed rows, at one instant: each row in exactly one."""
        parts: list[pa.Table] = []
        with self._lock:
            segs = list(self._segments)
            if self._journal_path is not None and self._journal_len:
                # mapped under the lock, so a seal that removes the file cannot race us
                buf = pa.memory_map(str(self._journal_path)).read_buffer(self._journal_len)
                parts.append(pa.ipc.open_stream(buf).read_all())
        if not self.writable:
            # a store whose writer died before sealing: its journals hold the rest
            for j in self._list(_JOURNAL):
                if not j.with_suffix(".parquet").exists():
                    batches, _ = _read_journal(j)
                    if batches:
                        parts.append(pa.Table.from_batches(batches, schema=batches[0].schema))
        parts = [t for t in parts if t.num_rows]
        if not parts:
            return segs, None
        return segs, pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]

    # -- writing -----------------------------------------------------------------
    def _recover(self) -> None:
        """Seal every journal a previous writer left behind; drop torn temporary files."""
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        for j in self._list(_JOURNAL):
            seg = j.with_suffix(".parquet")
            if seg.exists():  # sealed, but the writer died before removing the journal
                j.unlink()
                continue
            batches, torn = _read_journal(j)
            if batches:
                self._write_segment(seg, pa.Table.from_batches(batches))
            rows = sum(b.num_rows for b in batches)
            note = f"{self.name}: sealed {rows} rows from the journal {j.name} of a writer that did not finish"
            if torn:
                note += f"; its last, partly written batch was unreadable ({torn})"
            self.recovered.append(note)
            j.unlink()
        _fsync_dir(self.dir)

    def append(self, data: pa.Table) -> int:
        if not self.writable:
            raise StoreError(f"{self.dir} is open read-only", "open the store as its writer")
        n = data.num_rows
        if n == 0:
            return 0
        if self._journal_writer is None:
            path = self.dir / f"{self._next:012d}.arrows"
            self._journal = pa.OSFile(str(path), "wb")
            self._journal_writer = pa.ipc.new_stream(self._journal, self.schema)
            self._journal_since = time.monotonic()
            _fsync_dir(self.dir)
            with self._lock:
                self._journal_path = path
        assert self._journal is not None
        self._journal_writer.write_table(data)
        now = time.monotonic()
        if now - self._last_sync >= self.sync_seconds:
            os.fsync(self._journal.fileno())
            self._last_sync = now
        with self._lock:
            self._journal_len = self._journal.tell()
        self._journal_rows += n
        if self._journal_rows >= self.seal_rows or now - self._journal_since >= self.seal_seconds:
            self.seal()
        return int(n)

    def seal(self) -> None:
        """Write the journal as the next segment, retire it, and merge small segments."""
        if self._journal_writer is None or self._journal is None or self._journal_path is None:
            return
        journal = self._journal_path
        seg = journal.with_suffix(".parquet")
        self._journal_writer.close()
        self._journal.close()
        self._journal_writer = self._journal = None
        data = pa.ipc.open_stream(pa.memory_map(str(journal))).read_all()
        if data.num_rows:
            self._write_segment(seg, data)
        with self._lock:
            if data.num_rows:
                self._segments.append(seg)
                self._rows[seg] = data.num_rows
            self._journal_path = None
            self._journal_len = 0
        journal.unlink()
        self._journal_rows = 0
        self._next += 1
        self._merge_small()

    def _merge_small(self) -> None:
        """Merge the trailing run of small segments once it is long or large enough."""
        run: list[Path] = []
        total = 0
        for p in reversed(self._segments):
            if self._rows[p] < 0:
                self._rows[p] = int(pq.read_metadata(str(p)).num_rows)
            if self._rows[p] >= self.seal_rows:
                break
            run.insert(0, p)
            total += self._rows[p]
        if len(run) < 2 or (len(run) < self.merge_count and total < self.seal_rows):
            return
        first, last = _span(run[0])[0], _span(run[-1])[1]
        merged = self.dir / f"{first:012d}-{last:012d}.parquet"
        data = pa.concat_tables([pq.read_table(str(p), schema=self.schema) for p in run])
        self._write_segment(merged, data)
        with self._lock:
            keep = [p for p in self._segments if p not in run]
            self._segments = sorted(keep + [merged], key=_span)
            self._rows[merged] = data.num_rows
        for p in run:
            p.unlink()
            del self._rows[p]
    def _write_segment(self, seg: Path, data: pa.Table) -> None:
        tmp = seg.with_name(seg.name + ".tmp")
        try:
            with pa.OSFile(str(tmp), "wb") as f:
                pq.write_table(
                    data, f, compression="zstd", compression_level=self.compression_level,
                    row_group_size=max(data.num_rows, 1), write_statistics=True,
                )
                os.fsync(f.fileno())
            os.rename(tmp, seg)
            _fsync_dir(self.dir)
        except OSError as e:
            raise StoreError(f"cannot write segment {seg}: {e.strerror or e}",
                             "free disk space or fix permissions; the rows are still in the journal") from e

    def close(self) -> None:
        if self.writable:
            self.seal()
