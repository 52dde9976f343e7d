"""The recorder's half of a journaled store: appends rows to the journals, never opens DuckDB.

Why: DuckDB's library and buffers are ~45 MB of an idle recorder's resident memory, and
an idle recorder has nothing to seal. So ``forensix record`` appends every table's rows to
journals (the same Arrow IPC files ``store/journal.py`` describes: durable, queried at
once) from the draining process, and a store keeper process (``store/keeper.py``) seals
them into DuckDB and answers queries; it exits when it has had nothing to do for a while,
and is started again when a journal is due or a query comes.

The two sides share no memory, so their rules are on disk: the appender writes journal N,
closes it (end marker, fsync) before it creates N+1, and always keeps an open journal
once it has written one; the keeper seals every journal but the newest, which may be open
(``JournaledTable.seal_closed``). A full journal holds exactly ``seal_rows`` rows, one
whole DuckDB row group. A keeper killed at any point loses nothing: the journals stay
until the store records them sealed (``forensix_sealed``), in the same transaction as
their rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from forensix.errors import StoreError
from forensix.store.journal import _JOURNAL, _fsync_dir, conform
from forensix.store.private import FILE_MODE, private_dir

__all__ = ["JournalAppender"]


class JournalAppender:
    """Appends one table's rows to numbered journals in ``directory/name``; one thread.

    ``first``: the first journal number to use (the store's sealed sequence: lower numbers
    count as sealed). ``on_closed``: called after a journal is closed and its successor
    created (the keeper may seal it now). A journal is closed when it holds ``seal_rows``
    rows, or when it is ``seal_seconds`` old and rows come (``tick``).
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        sch: pa.Schema,
        *,
        first: int,
        on_closed: Callable[[str], None] = lambda name: None,
        seal_rows: int = 122_880,
        seal_seconds: float = 300.0,
        sync_seconds: float = 1.0,
    ) -> None:
        self.dir = directory / name
        self.name = name
        self.schema = sch
        self.on_closed = on_closed
        self.seal_rows = seal_rows
        self.seal_seconds = seal_seconds
        self.sync_seconds = sync_seconds
        private_dir(directory)
        private_dir(self.dir)
        found = [int(m.group(1)) for m in map(_JOURNAL.match, (p.name for p in self.dir.iterdir())) if m]
        self._next = max([first - 1, *found]) + 1
        self._file: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._path: Path | None = None
        self._rows = 0  # in the open journal
        self._opened = 0.0
        self._last_sync = 0.0
        self._written = 0.0
        self.rows = 0  # appended in all
        self._resume: tuple[pa.Table, int] | None = None  # (table, rows of it written) after a failure
        self._torn = False  # the last journal is closed (or cut after a failed write) and its successor not created

    def append(self, data: pa.Table) -> int:
        """Append ``data``; on a failure (a full disk) nothing torn stays behind, and the
        same table given again (the writer retries a batch it kept) resumes after the rows
        that did go in: none lost, none twice."""
        given = data
        done = 0
        if self._resume is not None and self._resume[0] is given:  # not for another append meanwhile
            done, self._resume = self._resume[1], None
        data = conform(data, self.schema, self.name)
        n = int(data.num_rows)
        data = data.slice(done)
        try:
            while data.num_rows:
                if self._writer is None:
                    self._open()
                assert self._writer is not None and self._file is not None
                room = self.seal_rows - self._rows
                part = data.slice(0, room) if data.num_rows > room else data
                start = self._file.tell()
                try:
                    self._writer.write_table(part)
                except OSError:
                    self._drop_torn(start)
                    raise
                self._rows += part.num_rows
                done += part.num_rows
                data = data.slice(part.num_rows)
                if self._rows >= self.seal_rows:
                    self._rotate()
            now = self._written = time.monotonic()
            if now - self._last_sync >= self.sync_seconds:
                self.sync()
        except OSError as e:
            self._resume = (given, done)
            raise StoreError(f"cannot write the journal in {self.dir}: {e}",
                             f"free disk space in {self.dir.parent} or fix its permissions; "
                             "rows already appended are kept") from e
        self.rows += n
        return n

    def tick(self, now: float) -> None:
        """Close a journal that has rows and is ``seal_seconds`` old (the keeper seals it)."""
        if self._file is not None and self._rows and now - self._opened >= self.seal_seconds:
            try:
                self._rotate()
            except OSError:  # a full disk: the journal is left whole; the next append says why
                pass

    def sync(self) -> None:
        if self._file is not None and self._last_sync < self._written:
            os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def _open(self) -> None:
        path = self.dir / f"{self._next:012d}.arrows"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE))  # 0600 first
        file = pa.OSFile(str(path), "wb")
        try:
            writer = pa.ipc.new_stream(file, self.schema)
        except OSError:  # not even its schema fits (a full disk): no journal, not a torn one
            file.close()
            path.unlink()
            raise
        self._next += 1
        self._file, self._writer = file, writer
        self._path, self._rows, self._opened = path, 0, time.monotonic()
        _fsync_dir(self.dir)
        if self._torn:  # the journal before this one is closed: not the newest any more, seal it
            self._torn = False
            self.on_closed(self.name)

    def _drop_torn(self, start: int) -> None:
        """A write that failed halfway (a full disk): cut the journal back to its last whole
        message and leave it without an end marker (a stream read to its end without one is
        whole; writing the marker would fail as well). The batch, retried, goes on in the next.
        A journal with no batch yet is removed instead (its schema may not be written: pyarrow
        writes it with the first batch), and its number used again."""
        assert self._file is not None and self._path is not None
        try:
            if self._rows:
                os.ftruncate(self._file.fileno(), start)
        finally:
            self._writer = None
            self._file.close()
            self._file = None
            if self._rows:
                self._torn = True
            else:
                self._path.unlink()
                self._next -= 1

    def _close(self) -> None:
        if self._writer is not None and self._file is not None:
            self._writer.close()  # the end marker: a whole journal
            os.fsync(self._file.fileno())
            self._file.close()
        self._writer = self._file = None

    def _rotate(self) -> None:
        """Close the open journal and create the next at once: the newest journal is the
        open one, so the keeper, which seals all but the newest, seals only closed ones.
        If the end marker does not fit, the journal is cut back to its last batch (whole
        without one); if the next does not fit, the next append creates it."""
        assert self._file is not None
        end = self._file.tell()
        try:
            self._close()
        except OSError:
            self._drop_torn(end)
            raise
        self._torn = True  # closed: the keeper is told once its successor exists
        self._open()

    def close(self) -> None:
        """Close the open journal (a clean stop: the keeper then seals them all). On a full
        disk it stays without its end marker, whole: a recording stopped because the disk
        stayed full must not end in a second error that hides the first."""
        if self._file is None:
            return
        end = self._file.tell()
        try:
            self._close()
        except OSError:
            self._drop_torn(end)
