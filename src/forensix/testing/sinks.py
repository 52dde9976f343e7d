"""Sinks that fail on purpose: a consumer's bug, or a disk that fills, seen by the recorder.

The recorder hands every batch to each of its sinks (agent/sink.py); the writer thread
(sensor/writer.py) must keep recording when a non-evidence sink raises, and keep and retry
a batch an evidence sink refuses. These stand at that seam, which is ours.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from forensix.artifacts import ArtifactStore, Collector
from forensix.artifacts.collect import Annotating
from forensix.model.host import local_host

__all__ = ["BrokenCollector", "BrokenSink", "KeptSink", "NullSink", "SinkBug"]


class NullSink:
    """A sink that keeps nothing: the recorder's loop without a store or rules (benches of
    the drain and decode alone, tests of what the recorder hands its sinks). ``evidence``:
    whether the writer treats it as the store (held and retried) or as a consumer."""

    def __init__(self, evidence: bool = False) -> None:
        self.evidence = evidence

    def write(self, table: str, data: pa.Table) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class KeptSink:
    """A sink that keeps every batch in memory, by table, as the store would get them (the
    tests of what an in-process recorder hands its sinks). Treated as the store (evidence)."""

    evidence = True

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}

    def write(self, table: str, data: pa.Table) -> None:
        self.tables.setdefault(table, []).append(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def rows(self, table: str) -> list[dict[str, object]]:
        return [r for t in self.tables.get(table, []) for r in t.to_pylist()]


class SinkBug(RuntimeError):
    """What ``BrokenSink`` raises: a stand-in for a bug in a metrics or alert consumer."""


class BrokenSink:
    """A non-evidence sink that takes ``ok_batches`` batches, then raises ``SinkBug`` on
    every call. ``calls`` counts the writes it was given (a disabled sink gets no more)."""

    evidence = False

    def __init__(self, ok_batches: int = 0, name: str = "broken-test-sink") -> None:
        self.ok_batches = ok_batches
        self.sink_name = name
        self.calls = 0
        self.failed = threading.Event()

    def write(self, table: str, data: pa.Table) -> None:
        self.calls += 1
        if self.calls > self.ok_batches:
            self.failed.set()
            raise SinkBug(f"{self.sink_name} cannot take a {table} batch of {data.num_rows} rows (on purpose)")

    def flush(self) -> None:
        raise SinkBug(f"{self.sink_name} cannot flush (on purpose)")

    def close(self) -> None:
        pass


class BrokenCollector(Collector):
    """An artifact collector (``Recorder(artifacts=...)``) whose hook raises on the first
    batch of events: a stand-in for a bug in keeping executables."""

    def __init__(self, directory: Path) -> None:
        super().__init__(ArtifactStore(directory).open(), local_host())

    def annotate(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        raise SinkBug("the artifact collector cannot annotate a batch (on purpose)")

    def annotate_later(self, tables: dict[str, pa.Table], defer: bool = True) -> Annotating:
        raise SinkBug("the artifact collector cannot annotate a batch (on purpose)")
