"""The agent that ships the kernel's records as they are, for the log host to decode.

``RawRecorder`` drains the rings as the recorder does (the space is held until the frame
is in the spool), but does not decode: each drain tick becomes one ``raw`` row (its rings'
bytes, headers kept), each flow-map flush one row of the merged map entries. What the
decoder needs besides the records goes first, in a ``seed`` row: the sensor's record
layout (abi.json, which an agent upgrade may change) and the decoder's state after the
``/proc`` snapshot (snapshot entity ids, the open files' names). The log host decodes
the rows of a stream in order with one ``Decoder`` (server/rawdecode.py): the rows it
stores are those a decoding agent would have sent (tests/agent/test_raw_agent_bpf.py).

A drain tick stays one row so that the log host decodes exactly the batches the decoding
agent would have (a batch's bounds decide which records a warning names, which labels
a flush sees). Rows of one kind share the frame's table (``raw``), so the sink's
joining of small batches keeps them in the order they were made.

Rare rows the agent knows best stay tables: hosts, agent events, gaps, accounts, the
snapshot's processes. Executed-file preservation needs the exec records at exec time:
the process ring's records (~2% of a build's) and the executable mappings of the other
rings are decoded here too, for it alone, and the hashes it finds travel with the row; the
collector's own rows (artifacts, artifact.missing events) travel in the tick's frame as
``table`` rows (an Arrow IPC table each). Live rules need decoded rows: an agent that
must alert on its own runs ``forensix agent --decode``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.agent.execs import collector_rows, file_key_of, pick_all
from forensix.agent.frame import RAW_SCHEMA, RAW_TABLE, encode_batch
from forensix.artifacts.collect import Seen, in_writable_dir  # the collector's own test
from forensix.sensor.abi import struct_dtype
from forensix.sensor.decoder_state import export_state
from forensix.sensor.recorder import Recorder
from forensix.sensor.ringbuf import Drained

__all__ = ["RAW_FORMAT", "RawRecorder", "raw_row"]

RAW_FORMAT = 1  # the meta's "format": a log host refuses rows of a format it does not know


_KINDS: dict[str, pa.Array] = {}  # a row's kind column, made once per kind (three rows a drain tick)


def raw_row(kind: str, meta: dict[str, Any], data: bytes | memoryview | np.ndarray | pa.Buffer) -> pa.Table:
    """One row of a raw frame: its kind, a JSON preamble, the bytes (not copied: an Arrow
    value over the drained bytes themselves, which the frame's compressor reads)."""
    meta = {"format": RAW_FORMAT, **meta}
    buf = pa.py_buffer(data)
    value = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, buf.size], np.int64)), buf])
    kinds = _KINDS.get(kind)
    if kinds is None:
        kinds = _KINDS[kind] = pa.array([kind], pa.string())
    return pa.Table.from_arrays([kinds, pa.array([json.dumps(meta)], pa.string()), value], schema=RAW_SCHEMA)


def _bytes_of(a: np.ndarray) -> np.ndarray:
    """A record array's bytes as they are in memory (the kernel's layout), as uint8."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


class _TickBatch:
    """The recorder's writer while a flush tick runs: the tick's raw rows (its drain's and
    its maps') go to the writer as one batch, so the spool seals one frame a tick instead of
    two (each frame costs an fsync, a hash, a MAC and Arrow's IPC set-up: ~0.6 ms, a tenth of
    a raw agent's CPU on a build). Everything keeps its order: the joined rows take the
    place of the first, and what waits for the records to be written (the ring space given
    back to the kernel) is handed on after them. Only the tick's own thread is held back:
    another (the system-log follower, the writer's warnings) writes straight through, as
    it would have, and can never add to a batch already handed on."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.owner = threading.get_ident()
        self.raw: list[pa.Table] = []
        self.bulk = False
        self.items: list[tuple[str, pa.Table, bool] | Callable[[], None] | None] = []  # None: the raw rows

    def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        if threading.get_ident() != self.owner:
            self.writer.put(table, data, bulk=bulk)
            return
        if table != RAW_TABLE:
            self.items.append((table, data, bulk))
            return
        if not self.raw:
            self.items.append(None)
        self.raw.append(data)
        self.bulk |= bulk

    def after_written(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() != self.owner:
            self.writer.after_written(fn)
            return
        self.items.append(fn)

    def __getattr__(self, name: str) -> Any:  # room, back-pressure, errors: the writer's own
        return getattr(self.writer, name)

    def hand_on(self) -> None:
        for item in self.items:
            if item is None:
                rows = self.raw[0] if len(self.raw) == 1 else pa.concat_tables(self.raw)
                self.writer.put(RAW_TABLE, rows, bulk=self.bulk)
            elif callable(item):
                self.writer.after_written(item)
            else:
                self.writer.put(*item)


class RawRecorder(Recorder):
    """A Recorder whose sinks get the kernel's records undecoded (table ``raw``)."""

    # what stats.events counts here: rows are made, and counted, on the log host
    counted = "kernel records and flow entries, shipped undecoded (the log host counts the rows it stores)"

    # the collector reads inline here (Collector.preserve): the hashes ride in the tick's ring row
    holds_batches = False

    # files mapped executable the collector has no use for (_judge); replaced, never changed in place
    _ordinary: np.ndarray = np.empty(0, np.uint64)

    def _snapshot(self) -> None:
        super()._snapshot()
        seed = {"abi": self.abi, "host": asdict(self.host), "state": export_state(self.decoder)}
        self._emit(RAW_TABLE, raw_row("seed", {}, json.dumps(seed).encode()))

    def flush_flows(self, final: bool = False, drain: bool = False) -> int:
        with self.one_batch():
            return super().flush_flows(final, drain)

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        """What is emitted meanwhile reaches the writer as one raw batch (``_TickBatch``)."""
        writer = self._writer
        batch = _TickBatch(writer)
        self._writer = batch  # type: ignore[assignment]  # the writer as the drain and emits use it
        try:
            yield
        finally:
            self._writer = writer
            batch.hand_on()

    def _handle_drains(self, named: list[tuple[int, Drained]], bulk: bool) -> None:
        # each part's ring position: a network drain may have waited in the hold (sensor/hold.py)
        parts = [[i, d.start if d.start >= 0 else self.rings[i].pos - len(d.data), len(d.data)] for i, d in named]
        # the rings' bytes as one region (the row's value), which the exec finder reads too
        joined = Drained.join([d for _, d in named])
        meta: dict[str, Any] = {"offset_ns": self.clock.offset_ns, "parts": parts,
                                "records": len(joined)}  # for the agent's metrics
        extra: dict[str, pa.Table] = {}
        if self.artifacts is not None:
            try:
                wanted, ns = pick_all(self.decoder, joined, self._ordinary)
                if ns:
                    self.artifacts.hold_scan_soon()
                if len(wanted):
                    meta["hashes"], extra = self._preserve(joined, wanted)
                self._ship_artifacts(once=True)
            except Exception as e:  # noqa: BLE001 - logged there: a bug keeping executables must not stop recording
                self._artifacts_failed(e)
        self._emit(RAW_TABLE, raw_row("ring", meta, joined.data), bulk=bulk)
        self.stats.events += len(joined)  # records, not rows: the log host counts rows
        for table, t in extra.items():
            # the collector's rows ride in the tick's frame (log host: server/rawdecode.py
            # ``_table``): in a frame of their own they cost a seal and an fsync a tick, ~0.2
            # µs per event on a build, more than the rest of preservation
            self._emit(RAW_TABLE, raw_row("table", {"table": table, "rows": t.num_rows}, encode_batch(t)))

    def _judge(self, seen: list[Seen]) -> None:
        """Remember the files of executable mappings that the collector has no use for."""
        add = {file_key_of(r.inode, r.device or 0) for r in seen
               if not r.exec and r.inode is not None and not r.deleted and not in_writable_dir(r.path)}
        if not add:
            return
        if len(self._ordinary) + len(add) > 65_536:  # bounded: judged again
            self._ordinary = np.empty(0, np.uint64)
        self._ordinary = np.union1d(self._ordinary, np.fromiter(add, np.uint64, len(add)))

    def _preserve(self, d: Drained, idx: np.ndarray) -> tuple[list[list[Any]], dict[str, pa.Table]]:
        """Keep what the process ring's execs ran and the libraries mapped executable (the
        records ``idx`` of ``d``); the hashes for the log host, and the rows the collector adds
        (artifacts, artifact.missing events)."""
        assert self.artifacts is not None
        seen = collector_rows(self.decoder, d, idx)
        self._judge(seen)
        kept = self.artifacts.preserve(seen)
        extra = {} if kept.artifacts is None else {"artifacts": kept.artifacts}
        if kept.missing is not None:
            extra["events"] = kept.missing
        # (entity id, ts, sha256) of the execs whose executable was kept: the log host puts
        # the hash on the rows it decodes
        return [[seen[i].entity, seen[i].ts, h] for i, h in kept.hashes.items() if h is not None], extra

    def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
        self.stats.events += len(v)
        self._emit_map("flows", k, v)

    def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
        keep = v["count"] > 0
        if keep.any():
            self._emit_map("reopens", k[keep], v[keep])

    def _emit_map(self, kind: str, k: np.ndarray, v: np.ndarray) -> None:
        meta = {"offset_ns": self.clock.offset_ns, "n": len(v)}
        self._emit(RAW_TABLE, raw_row(kind, meta, np.concatenate([_bytes_of(k), _bytes_of(v)])))

    def _take_tty_cuts(self) -> None:
        if "fx_tty_budget" not in self.abi["structs"]:
            return
        keys, vals = self._take_map("tty_budget", np.dtype(np.uint32), struct_dtype(self.abi, "fx_tty_budget"))
        if len(vals):
            self._emit_map("tty_budget", keys, vals)
