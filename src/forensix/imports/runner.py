"""Importing log files into a store: stream, parse, batch, append, remember.

Lines are read one at a time and rows appended in batches of ``batch`` events (Arrow
tables through the store's journal), so memory stays bounded whatever the file's size.
After each batch written at a point where no event is half-assembled, the ``imports``
table records how far the file went (offset and the hash of the bytes up to it): the same
file imported again adds nothing, a grown file adds only its new lines, and an import
that was interrupted resumes after its last recorded batch. A line that cannot be imported
is skipped, counted, reported by file and line number, and stored as a warning event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from forensix.imports.rows import BadLine, Batcher, Host, Processes, Row
from forensix.imports.source import LogFile
from forensix.store import schema

if TYPE_CHECKING:  # not imported by `forensix record`, which follows logs and holds no DuckDB
    from forensix.store.embedded import DuckDBStore

__all__ = ["FileResult", "Importer", "Parser"]

_KEEP_WARNINGS = 1000  # per file, in the result; every one is stored and counted


class Parser(Protocol):
    module: str

    @property
    def idle(self) -> bool: ...

    def feed(self, line: bytes, number: int) -> Iterator[Row]: ...

    def finish(self) -> Iterator[Row]: ...


@dataclass
class FileResult:
    path: str
    lines: int = 0
    events: int = 0
    processes: int = 0
    alerts: int = 0
    skipped: int = 0
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first ones
    resumed_at: int = 0  # bytes already imported before this run
    already: bool = False  # nothing new: every line was imported before
    stopped: str | None = None  # why reading stopped before the end (a gzip cut short)


Progress = Callable[[int], None]  # bytes of the file on disk read so far


class Importer:
    """Imports files of one format into one store, for one host."""

    def __init__(self, store: DuckDBStore, fmt: str, make_parser: Callable[[Processes, DuckDBStore], Parser],
                 host: Host,
                 *, batch: int = 8192) -> None:
        self.store = store
        self.fmt = fmt
        self.host = host
        self.procs = Processes(host)
        self.parser = make_parser(self.procs, store)
        self.batch = batch

    def _done_before(self, key: str) -> tuple[int, str] | None:
        t = self.store.query(
            "SELECT \"offset\", prefix_sha256 FROM imports WHERE file_key = $k AND format = $f "
            "ORDER BY \"offset\" DESC LIMIT 1", {"k": key, "f": self.fmt})
        if not t.num_rows:
            return None
        return int(t.column("offset")[0].as_py()), str(t.column("prefix_sha256")[0].as_py())

    def import_file(self, path: str | Path, progress: Progress | None = None) -> FileResult:
        lf = LogFile(path)
        res = FileResult(str(path))
        try:
            before = self._done_before(lf.key)
            if before is not None and lf.skip_to(*before):
                res.resumed_at = before[0]
            self._run(lf, res, progress)
        finally:
            lf.close()
        res.already = res.resumed_at > 0 and res.lines == 0
        return res

    def _run(self, lf: LogFile, res: FileResult, progress: Progress | None) -> None:
        out = Batcher(self.batch)
        warnings: list[tuple[int, str]] = []
        tick = 0
        for line in lf.lines():
            res.lines += 1
            if line.data is not None and not line.data.strip():
                continue  # blank lines separate nothing in any of these formats
            try:
                if line.data is None:
                    raise BadLine("line longer than 1 MiB: not a log line")
                for row in self.parser.feed(line.data, line.number):
                    out.add(row)
            except BadLine as e:
                warnings.append((line.number, str(e)))
            except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:  # a parser's blind spot
                warnings.append((line.number, f"cannot be read ({type(e).__name__}: {e})"))
            if len(out) >= self.batch and (self.parser.idle or len(out) >= 4 * self.batch):
                self._write(out, warnings, res, lf, checkpoint=self.parser.idle)
                self.procs.drop_exited()
            tick += 1
            if progress is not None and tick % 1024 == 0:
                progress(lf.raw_position())
        for row in self.parser.finish():
            out.add(row)
        for row in self.procs.finish():
            out.add(row)
        if lf.error:
            res.stopped = lf.error
            warnings.append((lf.number + 1, lf.error))
        self._write(out, warnings, res, lf, checkpoint=True)
        if progress is not None:
            progress(lf.raw_position())

    def _write(self, out: Batcher, warnings: list[tuple[int, str]], res: FileResult, lf: LogFile,
               *, checkpoint: bool) -> None:
        tables = out.take()
        for name, t in tables.items():
            self.store.append(name, t)
        res.events += tables["events"].num_rows if "events" in tables else 0
        res.processes += tables["processes"].num_rows if "processes" in tables else 0
        res.alerts += tables["alerts"].num_rows if "alerts" in tables else 0
        if warnings:
            self.store.append("events", self._warning_rows(lf.path, warnings))
            res.skipped += len(warnings)
            res.warnings += warnings[: max(0, _KEEP_WARNINGS - len(res.warnings))]
            warnings.clear()
        if checkpoint and (res.lines or not res.resumed_at):
            self.store.append("imports", pa.Table.from_pylist([{
                "file_key": lf.key, "path": str(lf.path), "format": self.fmt, "offset": lf.offset,
                "prefix_sha256": lf.snapshot_sha256(), "lines": res.lines, "events": res.events,
                "skipped": res.skipped, "imported_ts": time.time_ns(), "host_id": self.host.host_id,
            }], schema=schema.IMPORTS))

    def _warning_rows(self, path: Path, warnings: list[tuple[int, str]]) -> pa.Table:
        now = time.time_ns()
        n = len(warnings)
        origin = self.host.origin()
        return pa.table({
            "host_id": [origin["host_id"]] * n, "host_name": [origin["host_name"]] * n,
            "boot_id": [origin["boot_id"]] * n, "ts": pa.array([now] * n, pa.int64()),
            "event_kind": ["event"] * n, "event_category": ["import"] * n,
            "event_action": ["import-warning"] * n, "event_module": [self.fmt] * n,
            "message": [f"{path}:{line}: {why}" for line, why in warnings],
        })
