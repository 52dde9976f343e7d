"""Bulk tables appended through a journal and sealed into DuckDB in large batches.

Why: DuckDB's cost per append is dominated by what it does per call and per row group
(a few milliseconds, then compressing every column of a partly filled row group): the
recorder's half-second batches of a few thousand rows ran at ~100k events/s and 79
bytes/event, while the same rows appended 122,880 at a time (one full row group, in one
Arrow chunk so that DuckDB does not split it between threads) run at ~360k events/s on
one core at ~60 bytes/event (the synthetic mix of bench.ingest). Parquet segments were tried: faster to
write and smaller, but a BackTracker hop over 10^7 events read them 2.5x slower than
DuckDB's own storage, which filters a key column and fetches only the matching rows.

So the bulk tables (events, flows, processes) are appended to a journal beside the DuckDB
file, an Arrow IPC stream written at once and fsynced at most every ``sync_seconds``;
queries read its complete part through a memory map (``embedded.DuckDBStore`` unions it
with the DuckDB table ``NAME_base``), so every row is visible as soon as it is appended.
When the journals hold ``seal_rows`` unsealed rows, the open one is ``seal_seconds`` old, or
on flush, whole row groups of them are inserted into ``NAME_base`` in one transaction that
also records how far they are sealed (``forensix_sealed``); only then are journals whose
rows are all sealed removed.

A writer killed at any point loses nothing it appended: the next writer seals the journals
it finds (skipping what the store already records as sealed, so nothing is counted
twice; a torn last batch is the only thing a journal can lose, and it is
reported), and readers include journals that nobody sealed yet.

Layout, for a store ``host.duckdb``: ``host.duckdb.journal/<table>/000000000042.arrows``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from forensix.errors import StoreError
from forensix.store.private import FILE_MODE, private_dir

__all__ = ["JournaledTable", "Parts", "conform", "journal_dir"]

log = logging.getLogger("forensix.store")

_JOURNAL = re.compile(r"^(\d{12})\.arrows$")

# (rows, new sealed position, flip) -> inserted into DuckDB with the position, in one
# transaction; ``flip`` runs under the store's lock right after the commit (the rows leave
# the journal view as they appear in DuckDB)
Sealer = Callable[[pa.Table, tuple[int, int], Callable[[], None]], None]
# (journal, everything) -> a seal of that journal is due: the store's sealing thread takes it
OnDue = Callable[["JournaledTable", bool], None]


def journal_dir(store: Path) -> Path:
    """Where the journals of the store at ``store`` live."""
    return store.with_name(store.name + ".journal")


def conform(data: pa.Table, sch: pa.Schema, table: str) -> pa.Table:
    """``data`` with exactly ``sch``'s columns, in order: missing ones null, types cast.

    A column the schema does not know, or a null in a column that must have a value, is
    refused before it reaches the journal.
    """
    have = set(data.schema.names)  # (Table.column_names costs ~30 us a call, Schema.names a quarter)
    unknown = have - set(sch.names)
    if unknown:
        raise StoreError(f"table {table!r} has no column(s) {sorted(unknown)}", "append columns of forensix.store.schema")
    if data.schema.equals(sch):
        return data
    cols = []
    n = data.num_rows
    for f in sch:
        if f.name in have:
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


class Parts:
    """Appends a logical table's rows to its journals (``codec.parts``: events to two, format
    /17), resuming a batch whose append failed halfway: the writer retries the same table
    object after a failure (a full disk), and the parts that went in are not appended again
    (the one that failed is given again as the same object, so a ``JournalAppender`` resumes
    inside it)."""

    def __init__(self) -> None:
        self._left: tuple[object, list[tuple[str, pa.Table]]] | None = None

    def append(self, given: object, parts: Callable[[], list[tuple[str, pa.Table]]],
               put: Callable[[str, pa.Table], object]) -> None:
        left = self._left[1] if self._left is not None and self._left[0] is given else parts()
        self._left = None
        for i, (name, part) in enumerate(left):
            if not part.num_rows:
                continue
            try:
                put(name, part)
            except BaseException:
                self._left = (given, left[i:])
                raise


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_journal(path: Path) -> tuple[list[pa.RecordBatch], str | None]:
    """The whole batches in a journal, and what was torn off its end (if anything)."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                return batches, None
    except (pa.ArrowInvalid, OSError) as e:
        return batches, str(e)


@dataclass
class _Journal:
    number: int
    path: Path
    rows: int = 0
    length: int = 0  # bytes of whole messages: what a query may read


class JournaledTable:
    """One bulk table's journals. One writer thread appends and seals; any thread reads.

    Rows are ordered by (journal number, row in it); the store records the position up to
    which they are sealed, ``(seq, offset)``: every journal before ``seq`` whole, and the
    first ``offset`` rows of ``seq``. A seal inserts whole row groups of ``seal_rows`` and
    leaves the rest where it is (DuckDB rewrites a partly filled row group on every later
    append: +60% bytes, half the speed), except on flush, close and for a quiet table.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        sch: pa.Schema,
        *,
        sealed: tuple[int, int],
        sealer: Sealer | None,
        encode: Callable[[pa.Table], pa.Table] | None = None,
        lock: threading.RLock | None = None,
        on_due: OnDue | None = None,
        seal_rows: int = 122_880,
        seal_seconds: float = 60.0,
        sync_seconds: float = 1.0,
        external: bool = False,
        recover_all: bool = True,
    ) -> None:
        """``sealed``: the store's sealed position (seq, offset).
        ``external``: another process appends (a recorder's ``JournalAppender``, store/keeper.py):
        this side only seals journals it closed (``seal_closed``) and reads the rest from disk.
        ``recover_all``: on opening, seal every journal found, the newest too (no appender
        runs); else the newest is left alone, as the one an appender may still be writing.
        ``sealer``: None for a reader (it never writes). ``encode``: turns rows into what the
        sealer inserts (store/codec.py), run outside the lock so that queries do not wait for
        it. ``lock``: shared with the store, so that a query's snapshot of the journals and of
        DuckDB cannot straddle a seal."""
        self.dir = directory / name
        self.name = name
        self.schema = sch
        self.sealer = sealer
        self.encode = encode or (lambda t: t)
        # None: append seals inline when a seal is due. Set: append only says so, and
        # another thread seals (``seal(keep_open=True)``) while appends go on.
        self.on_due = on_due
        self.seal_rows = seal_rows
        self.seal_seconds = seal_seconds
        self.sync_seconds = sync_seconds
        self._sealed = sealed
        self._lock = lock or threading.RLock()
        self._pending: list[_Journal] = []  # journals holding unsealed rows, oldest first
        self._file: pa.NativeFile | None = None  # the open journal: the last of _pending
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._since = 0.0
        self._last_sync = 0.0
        self._written = 0.0  # when rows were last written (sync() has nothing to do when older than _last_sync)
        self.recovered: list[str] = []  # what recovery found, for the writer to report
        self.external = external
        self.recover_all = recover_all
        if sealer is not None:
            private_dir(self.dir.parent)  # root only, whatever the umask (store/private.py)
            private_dir(self.dir)
            self._recover()
        self._next = max([sealed[0], *self._numbers()]) + 1

    @property
    def sealed(self) -> tuple[int, int]:
        """(journal number, rows of it) up to which the rows are in DuckDB."""
        return self._sealed

    @property
    def writable(self) -> bool:
        return self.sealer is not None

    def _numbers(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for m in map(_JOURNAL.match, (p.name for p in self.dir.iterdir())) if m)

    def _unsealed_on_disk(self) -> list[tuple[Path, pa.Table, str | None]]:
        """Each journal's unsealed rows, read from disk, and what was torn off its end."""
        return [self._unsealed_journal(n) for n in self._numbers() if n >= self._sealed[0]]

    def _unsealed_journal(self, n: int) -> tuple[Path, pa.Table, str | None]:
        """Journal ``n``'s unsealed rows, read from disk, and what was torn off its end."""
        seq, offset = self._sealed
        j = self.dir / f"{n:012d}.arrows"
        batches, torn = _read_journal(j)
        if batches and not batches[0].schema.equals(self.schema):  # written by an older version
            t = conform(pa.Table.from_batches(batches), self.schema, self.name)
        else:
            t = pa.Table.from_batches(batches, schema=self.schema)
        return j, t.slice(offset) if n == seq else t, torn

    def _unsealed_pending(self) -> list[pa.Table]:
        """Each pending journal's unsealed rows, from its whole messages (memory-mapped)."""
        return self._unsealed(self._pending, self._sealed)

    def _unsealed(self, pending: list[_Journal], sealed: tuple[int, int]) -> list[pa.Table]:
        seq, offset = sealed
        out = []
        for j in pending:
            if not j.length:
                out.append(self.schema.empty_table())
                continue
            t = pa.ipc.open_stream(pa.memory_map(str(j.path)).read_buffer(j.length)).read_all()
            out.append(t.slice(offset) if j.number == seq else t)
        return out

    def snapshot(self) -> pa.Table | None:
        """The rows appended but not sealed yet, at one instant."""
        parts: list[pa.Table] = []
        if self.external:  # appended by another process: from disk, under the lock a seal flips with
            with self._lock:
                parts = [t for _, t, _ in self._unsealed_on_disk()]
        elif self.writable:
            with self._lock:  # mapped under the lock, so a seal that removes a file cannot race us
                parts = self._unsealed_pending()
        else:  # a reader, perhaps of a store whose writer died before sealing
            parts = [t for _, t, _ in self._unsealed_on_disk()]
        parts = [t for t in parts if t.num_rows]
        if not parts:
            return None
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    # -- writing -----------------------------------------------------------------
    def _recover(self) -> None:
        """Seal what journals a previous writer left behind; remove those already sealed."""
        assert self.sealer is not None
        seq = self._sealed[0]
        for n in self._numbers():
            if n < seq:  # sealed, but the writer died before removing it
                (self.dir / f"{n:012d}.arrows").unlink()
        numbers = [n for n in self._numbers() if n >= seq]
        if numbers and not self.recover_all:  # the newest may be an appender's open journal
            numbers = numbers[:-1]
        self._seal_journals(numbers, lambda j, t, torn: self.recovered.append(
            f"{self.name}: sealed {t.num_rows} rows from the journal {j.name} of a writer that did not finish"
            + (f"; its last, partly written batch was unreadable ({torn})" if torn else "")))
        _fsync_dir(self.dir)

    def append(self, data: pa.Table) -> int:
        if self.sealer is None:
            raise StoreError(f"{self.dir} is open read-only", "open the store as its writer")
        n = int(data.num_rows)
        if n == 0:
            return 0
        try:
            if self._writer is None:
                j = _Journal(self._next, self.dir / f"{self._next:012d}.arrows")
                self._next += 1
                os.close(os.open(j.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE))  # 0600 first
                self._file = pa.OSFile(str(j.path), "wb")
                try:
                    self._writer = pa.ipc.new_stream(self._file, self.schema)
                except OSError:  # not even its schema fits (a full disk): no journal, not a torn one
                    self._file.close()
                    self._file = None
                    j.path.unlink()
                    raise
                self._since = time.monotonic()
                _fsync_dir(self.dir)
                with self._lock:
                    self._pending.append(j)
            assert self._file is not None
            start = self._file.tell()
            try:
                self._writer.write_table(data)
            except OSError:
                self._drop_torn(start)
                raise
            now = self._written = time.monotonic()
            if now - self._last_sync >= self.sync_seconds:
                os.fsync(self._file.fileno())
                self._last_sync = now
        except OSError as e:
            raise StoreError(f"cannot write the journal in {self.dir}: {e}",
                             "free disk space or fix permissions; rows already appended are kept") from e
        with self._lock:
            cur = self._pending[-1]
            cur.rows += n
            cur.length = self._file.tell()
            unsealed = sum(j.rows for j in self._pending) - self._sealed[1]
        due = unsealed >= self.seal_rows or now - self._since >= self.seal_seconds
        if self.on_due is None:
            if due:
                self.seal(everything=unsealed < self.seal_rows)
            return n
        if cur.rows >= self.seal_rows:
            self._close_open()  # a journal sealed to its end can then be removed whole
        if due:
            self.on_due(self, unsealed < self.seal_rows)
        return n

    def _drop_torn(self, start: int) -> None:
        """A write that failed halfway (a full disk): cut the journal back to its last whole
        message and close it without an end marker (a stream read to its end without one is
        whole), so the batch, retried, goes into the next journal after nothing torn."""
        assert self._file is not None
        fd = self._file.fileno()
        try:
            os.ftruncate(fd, start)
        finally:
            self._writer = None  # not closed: closing writes an end marker, which would fail as well
            self._file.close()
            self._file = None
            with self._lock:
                self._pending[-1].length = start

    def sync(self) -> None:
        """Make every appended row durable now (the writer's thread only): a log host marks
        frames ingested only after this, so a power cut cannot leave a mark past rows lost."""
        if self._file is not None and self._last_sync < self._written:
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def _close_open(self) -> None:
        """Close the open journal (the writer's thread only): the next append opens the next."""
        if self._writer is not None and self._file is not None:
            self._writer.close()
            try:  # a closed journal is not synced again before its seal
                os.fsync(self._file.fileno())
            except OSError as e:  # the rows are written: raising would have them appended twice
                log.error("cannot fsync the journal %s: %s", self._pending[-1].path, e)
            self._file.close()
            self._writer = self._file = None
            with self._lock:
                self._pending[-1].length = self._pending[-1].path.stat().st_size

    def seal(self, everything: bool = True, keep_open: bool = False) -> None:
        """Insert the unsealed rows into DuckDB (whole row groups only, unless ``everything``).

        ``keep_open``: called by the store's sealing thread while the writer goes on
        appending. The open journal is not closed, and the seal never passes the end of
        the journals as they were when it began (rows appended meanwhile wait for the next).
        Only the final COMMIT and the switch of the journal view hold the store's lock:
        queries and appends do not wait for the insert.
        """
        if not keep_open:
            self._close_open()
        with self._lock:
            pending = [replace(j) for j in self._pending]  # a stable view: appends go on
            seq, offset = self._sealed
        if not pending:
            return
        assert self.sealer is not None
        tables = self._unsealed(pending, (seq, offset))
        data = pa.concat_tables(tables)
        take = data.num_rows if everything else data.num_rows - data.num_rows % self.seal_rows
        if take == 0 and keep_open:
            return
        # the new position: after `take` rows, counted through the pending journals
        last = pending[-1]
        pos, left = (last.number + 1, 0), take
        for j, t in zip(pending, tables):
            if left < t.num_rows:
                pos = (j.number, (offset if j.number == seq else 0) + left)
                break
            left -= t.num_rows
        if keep_open and pos[0] > last.number:  # it may still be the open journal: keep it
            pos = (last.number, (offset if last.number == seq else 0) + tables[-1].num_rows)
        rows = self.encode(data.slice(0, take))  # outside the lock: queries do not wait for it
        done: list[_Journal] = []

        def flip() -> None:
            """Under the store's lock, right after the commit: the rows leave the journal view."""
            self._sealed = pos
            done.extend(j for j in self._pending if j.number < pos[0])
            self._pending = [j for j in self._pending if j.number >= pos[0]]

        self.sealer(rows, pos, flip)
        for j in done:
            j.path.unlink()
        if keep_open:
            self._since = time.monotonic()

    def seal_closed(self, everything: bool = False) -> int:
        """Seal the journals an appender in another process closed (external mode): all
        but the newest, which it may still be writing, or all when ``everything`` (it has
        stopped). Whole journals, so each full one is one whole row group (JournalAppender
        closes them at ``seal_rows``). A backlog (a keeper that fell behind, a recovery after
        a crash) is sealed a journal or so at a time, each read only when its turn comes: a
        seal's memory is about 1.2 KB a row at its peak, so sealing 900 k rows at once took
        ~1.5 GB and could get the keeper killed on a small host again at every restart, while
        a seal of ``seal_rows`` stays near 300 MB; what was sealed stays sealed if a later
        seal fails. Returns the rows sealed."""
        assert self.sealer is not None and self.external
        with self._lock:
            numbers = [n for n in self._numbers() if n >= self._sealed[0]]
        if not everything:
            numbers = numbers[:-1]

        def note(j: Path, t: pa.Table, torn: str | None) -> None:
            if torn:  # only a journal whose appender was killed mid-write: say what was cut
                self.recovered.append(f"{self.name}: the last, partly written batch of {j.name} was "
                                      f"unreadable ({torn})")

        return self._seal_journals(numbers, note)

    def _seal_journals(self, numbers: list[int], note: Callable[[Path, pa.Table, str | None], None]) -> int:
        """Seal journals ``numbers`` (in order) from disk, a group of whole journals reaching
        ``seal_rows`` at a time, each read only when its turn comes (``seal_closed``: a seal's
        memory grows with its rows); ``note`` is told of each journal sealed, which is then
        removed. Returns the rows sealed."""
        assert self.sealer is not None
        numbers = list(numbers)
        rows = 0
        while numbers:
            with self._lock:
                group: list[tuple[Path, pa.Table, str | None]] = []
                while numbers and sum(t.num_rows for _, t, _ in group) < max(1, self.seal_rows):
                    group.append(self._unsealed_journal(numbers.pop(0)))
            data = pa.concat_tables([t for _, t, _ in group])
            pos = (int(group[-1][0].name[:12]) + 1, 0)

            def flip(pos: tuple[int, int] = pos) -> None:
                self._sealed = pos

            self.sealer(self.encode(data), pos, flip)
            for j, t, torn in group:
                note(j, t, torn)
                j.unlink()
            rows += int(data.num_rows)
        return rows

    def close(self) -> None:
        if self.writable and not self.external:
            self.seal()
