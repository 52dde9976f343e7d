"""The log host's decoding of raw frames (agent/raw.py): one ``Decoder`` per (host, stream).

A stream's raw rows are fed in sequence order (the listener handles a stream's frames in
order to check the chain; the start-up replay walks the evidence in order). Each row
becomes the tables a decoding agent would have sent: a ``seed`` row (re)starts the
stream's decoder with the agent's record layout and state; ``ring`` rows are the drained
records; ``flows``/``reopens``/``tty_budget`` rows the kernel's map entries at a flush.

A row that cannot be decoded (a bad preamble, truncated ring bytes, records before any
seed, a decoder error) becomes a ``decode-warning`` event naming the frame and the cause:
the frame is kept in the evidence and acknowledged (it is authentic: retrying it would
fail the same way), and the stream's later rows are decoded as usual.

After a log-host restart, the decoder of a stream is rebuilt by decoding its retained
frames again up to the last stored one, without storing (``dry``): see server/startup.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from pyarrow import ipc

from forensix.model.host import HostInfo
from forensix.pki.sealkey import write_atomic
from forensix.sensor.abi import struct_dtype
from forensix.sensor.decode import Decoder
from forensix.sensor.decoder_state import import_state
from forensix.sensor.maprows import flow_rows, reopen_rows
from forensix.sensor.ringbuf import Drained, walk
from forensix.sensor.tty import budget_cuts
from forensix.server import checkpoint
from forensix.server.checks import null_problem
from forensix.store import schema

if TYPE_CHECKING:
    from forensix.server.evidence import StreamLog

__all__ = ["CHECKPOINT_PREFIX", "Decoded", "RawDecoders", "StreamDecoder", "checkpoint_seq"]

log = logging.getLogger("forensix.server")

_FORMAT = 1
CHECKPOINT_PREFIX = _CKPT = "decoder-"


def checkpoint_seq(sdir: Path) -> int:
    """The frame the newest decoder checkpoint of a stream follows (by its name), or -1."""
    seqs = [int(p.stem[len(_CKPT):]) for p in sdir.glob(f"{_CKPT}*.ckpt") if p.stem[len(_CKPT):].isdigit()]
    return max(seqs, default=-1)
_MAP_KEYS = {"flows": ("fx_flow_key", "fx_flow"), "reopens": ("fx_open_key", "fx_open_rep")}
# tables the agent makes itself (its artifact collector's rows: artifacts, artifact.missing
# events), carried as ``table`` rows in the drain tick's frame: a frame of their own cost the
# agent a seal and an fsync a tick (agent/raw.py)
_INNER_TABLES = ("artifacts", "events")


class RawRowError(ValueError):
    """A raw row the decoder cannot use; the message says which part and why."""


@dataclass
class Decoded:
    """The tables one raw frame decoded to, stored together (one ingest item, one mark)."""

    tables: list[tuple[str, pa.Table]] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(t.num_rows for _, t in self.tables)

    def add(self, table: str, data: pa.Table | None) -> None:
        if data is not None and data.num_rows:
            self.tables.append((table, data))

    def joined(self) -> list[tuple[str, pa.Table]]:
        """One table per name, in the order the names first came (a frame's rows of one name
        in the order the agent made them)."""
        by: dict[str, list[pa.Table]] = {}
        for name, t in self.tables:
            by.setdefault(name, []).append(t)
        return [(n, ts[0] if len(ts) == 1 else pa.concat_tables(ts)) for n, ts in by.items()]


class StreamDecoder:
    """The decoder of one agent stream and what it needs besides the records."""

    def __init__(self, host: str, stream: str) -> None:
        self.host_name = host  # the enrolled name: every row travels under it
        self.stream = stream
        self.decoder: Decoder | None = None
        self.abi: dict[str, Any] | None = None
        self.info: HostInfo | None = None
        self.last_seq = 0  # the last frame fed
        self.cpu_s = 0.0  # thread CPU spent decoding (bench/agent_cost.py reads it)
        self.checkpointed_at = time.monotonic()  # when the last checkpoint was taken (the listener's)
        self.pending: tuple[int, bytes] | None = None  # a checkpoint taken, not yet written
        self.records = 0
        self._where = ""  # the row being decoded, for its warnings
        self.rebuilt = 0  # frames decoded again at start without storing (server/startup.py)
        self.replayed = 0  # frames decoded at start and stored (in the evidence, not yet in the store)

    def feed(self, raw: pa.Table, seq: int) -> Decoded:
        """Decode one raw frame's rows (in order) into the tables to store."""
        t0 = time.thread_time()
        out = Decoded()
        kinds = raw.column("kind").to_pylist()
        metas = raw.column("meta").to_pylist()
        datas = raw.column("data")
        for i, (kind, meta_s) in enumerate(zip(kinds, metas, strict=True)):
            where = f"raw frame {seq} of {self.host_name}/{self.stream}, row {i} ({kind})"
            self._where = where
            try:
                try:
                    meta = json.loads(meta_s)
                except json.JSONDecodeError as e:
                    raise RawRowError(f"preamble is not JSON ({e}): {meta_s[:80]!r}") from None
                if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise RawRowError(f"preamble is not a format-{_FORMAT} raw preamble: {meta_s[:80]!r}")
                self._row(kind, meta, datas[i].as_buffer(), out)
            except RawRowError as e:
                out.add("events", self._warning(f"{where}: {e}; the frame is kept in the evidence, not decoded"))
            except Exception as e:
                log.exception("decoding %s failed", where)
                out.add("events", self._warning(
                    f"{where}: the decoder failed ({type(e).__name__}: {e}); the frame is kept in the evidence "
                    "and can be decoded again with a fixed log host (forensix server --reingest)"))
        self.last_seq = max(self.last_seq, seq)
        self.cpu_s += time.thread_time() - t0
        return out

    # -- checkpoints: the state after a frame, so that a restart need not decode from the seed --
    def maybe_checkpoint(self, every: float, sdir: Path, ingested: Callable[[], int]) -> None:
        """Every ``every`` seconds, keep the decoder's state; write it once the store holds its
        frame (``ingested()``, the stream's mark). Without one a restart decodes the stream's
        frames again from its agent's start."""
        if every <= 0:
            return
        try:
            if self.pending is not None:
                self.write_checkpoint(sdir, ingested())
            elif time.monotonic() - self.checkpointed_at >= every:
                self.checkpointed_at = time.monotonic()
                self.take_checkpoint()
        except OSError as e:  # the evidence holds the frames: a restart decodes them again instead
            log.warning("cannot write the decoder checkpoint of %s/%s: %s", self.host_name, self.stream, e)

    def take_checkpoint(self) -> None:
        """Keep the decoder's state after frame ``last_seq``, to be written once the store holds
        that frame (``write_checkpoint``): a restart stores the frames after the mark with the
        state before them, so a checkpoint past the mark would be of no use."""
        if self.decoder is not None and self.abi is not None and self.info is not None:
            self.pending = (self.last_seq, checkpoint.dump(_FORMAT, self.last_seq, self.abi, self.info, self.decoder))

    def write_checkpoint(self, sdir: Path, ingested: int) -> bool:
        """Write the kept state as ``decoder-SEQ.ckpt`` in the stream's evidence directory (an
        Arrow IPC file, server/checkpoint.py; replaced atomically, older ones removed) if the
        store holds frame SEQ."""
        if self.pending is None or self.pending[0] > ingested:
            return False
        seq, body = self.pending
        self.pending = None
        path = sdir / f"{_CKPT}{seq:016d}.ckpt"
        write_atomic(path, body)
        for old in sdir.glob(f"{_CKPT}*.ckpt"):
            if old != path:
                old.unlink(missing_ok=True)
        return True

    def restore(self, sdir: Path) -> int:
        """Load the newest checkpoint of the stream; the seq it follows, or -1 (none, or not
        readable: then the stream is decoded again from its first retained frame)."""
        for path in sorted(sdir.glob(f"{_CKPT}*.ckpt"), reverse=True):
            try:
                seq, abi, info, dec = self._load(path.read_bytes())
            except (OSError, ValueError, KeyError, TypeError, IndexError, zstandard.ZstdError, pa.ArrowException) as e:
                log.warning("decoder checkpoint %s is not usable (%s): the stream is decoded again from its "
                            "first retained frame", path, e)
                continue
            self.decoder, self.abi, self.info, self.last_seq = dec, abi, info, seq
            return seq
        return -1

    def _load(self, data: bytes) -> tuple[int, dict[str, Any], HostInfo, Decoder]:
        if data.startswith(checkpoint.MAGIC):
            return checkpoint.load(data, self.host_name)
        # zstd JSON, as log hosts before the Arrow checkpoint wrote it
        ck = json.loads(zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31))
        host = ck["host"]
        info = HostInfo(str(host["host_id"]), self.host_name, str(host["boot_id"]), str(host["kernel"]))
        dec = Decoder(ck["abi"], info, 0)
        import_state(dec, ck["state"])
        return int(ck["seq"]), ck["abi"], info, dec

    # -- the kinds of row -----------------------------------------------------------
    def _row(self, kind: str, meta: dict[str, Any], data: pa.Buffer, out: Decoded) -> None:
        if kind == "seed":
            self._seed(data)
            return
        if kind == "table":
            out.add(*self._table(meta, data))
            return
        dec = self.decoder
        if dec is None:
            raise RawRowError("records before the stream's seed (the agent's record layout): cannot decode them")
        if "offset_ns" in meta:
            dec.offset_ns = int(meta["offset_ns"])
        if kind == "ring":
            self._ring(dec, meta, data, out)
        elif kind in _MAP_KEYS:
            k, v = self._map(meta, data, *_MAP_KEYS[kind])
            assert self.info is not None
            if kind == "flows":
                out.add("flows", flow_rows(dec, self.info, dec.offset_ns, k, v))
            else:
                out.add("events", reopen_rows(dec, self.info, dec.offset_ns, k, v))
        elif kind == "tty_budget":
            assert self.abi is not None
            vdt = struct_dtype(self.abi, "fx_tty_budget")
            k, v = self._split(meta, data, np.dtype(np.uint32), vdt)
            out.add("tty", budget_cuts(dec, k, v, dec.tty_names))
        else:
            raise RawRowError(f"unknown raw row kind {kind!r}")

    def _table(self, meta: dict[str, Any], data: pa.Buffer) -> tuple[str, pa.Table]:
        """A table the agent made itself, checked as a frame of its own is (listener.py: the
        schema, the NOT NULL columns), its rows under the enrolled name."""
        name = meta.get("table")
        if name not in _INNER_TABLES:
            raise RawRowError(f"a table row names {name!r}, not one of {', '.join(_INNER_TABLES)}")
        try:
            t = ipc.open_stream(data).read_all()
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
            raise RawRowError(f"the {name} rows are not an Arrow IPC stream: {e}") from None
        want = schema.TABLES[name]
        if not t.schema.equals(want):
            try:
                t = t.select(want.names).cast(want)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise RawRowError(f"the {name} rows do not match the schema: {e}") from None
        if t.num_rows != meta.get("rows"):
            raise RawRowError(f"{t.num_rows} {name} rows, the preamble says {meta.get('rows')!r}")
        idx = t.schema.get_field_index("host_name")
        t = t.set_column(idx, t.schema.field(idx), pa.repeat(self.host_name, t.num_rows))
        nulls = null_problem(name, t)
        if nulls:
            raise RawRowError(nulls)
        return name, t

    def _seed(self, data: pa.Buffer) -> None:
        try:
            seed = json.loads(data.to_pybytes())
            host = seed["host"]
            info = HostInfo(str(host["host_id"]), self.host_name, str(host["boot_id"]), str(host.get("kernel", "")))
            dec = Decoder(seed["abi"], info, 0)
            import_state(dec, seed["state"])
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise RawRowError(f"seed is malformed ({type(e).__name__}: {e})") from None
        self.decoder, self.abi, self.info = dec, seed["abi"], info

    def _ring(self, dec: Decoder, meta: dict[str, Any], data: pa.Buffer, out: Decoded) -> None:
        parts = meta.get("parts")
        if not isinstance(parts, list) or sum(int(p[2]) for p in parts) != data.size:
            raise RawRowError(f"ring parts {parts!r} do not add up to the row's {data.size} bytes (truncated?)")
        drains: list[Drained] = []
        bad: list[str] = []
        at = 0
        whole = data.to_pybytes()
        for ring, pos, length in parts:
            chunk = whole[at: at + int(length)] if len(parts) > 1 else whole
            at += int(length)
            if len(chunk) % 8:
                raise RawRowError(f"ring {ring} part at {pos} is {len(chunk)} bytes, not a whole number of records")
            offs, lens, taken = walk(chunk, len(chunk))
            inside = offs + lens <= len(chunk)
            if taken != len(chunk) or not inside.all():
                bad.append(f"{self._where}: ring {ring} part at position {pos}: the records run past its {len(chunk)} bytes "
                           f"(truncated); {int(inside.sum())} of {len(offs)} records decoded")
                offs, lens = offs[inside], lens[inside]
            if len(offs):
                drains.append(Drained(chunk, offs, lens))
        if drains:
            self.records += sum(len(d) for d in drains)
            tables = dec.decode(Drained.join(drains))
            hashes = meta.get("hashes")
            if hashes:
                tables = _with_hashes(tables, hashes)
            for name, t in tables.items():
                out.add(name, t)
        for msg in bad:
            out.add("events", self._warning(msg))

    def _map(self, meta: dict[str, Any], data: pa.Buffer, key: str, val: str) -> tuple[np.ndarray, np.ndarray]:
        assert self.abi is not None
        return self._split(meta, data, struct_dtype(self.abi, key), struct_dtype(self.abi, val))

    @staticmethod
    def _split(meta: dict[str, Any], data: pa.Buffer, kdt: np.dtype, vdt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        n = int(meta.get("n", -1))
        if n < 0 or n * (kdt.itemsize + vdt.itemsize) != data.size:
            raise RawRowError(f"{n} map entries of {kdt.itemsize}+{vdt.itemsize} bytes do not fill the row's "
                              f"{data.size} bytes (truncated?)")
        b = data.to_pybytes()
        cut = n * kdt.itemsize
        return np.frombuffer(b[:cut], kdt).copy(), np.frombuffer(b[cut:], vdt).copy()

    def _warning(self, message: str) -> pa.Table:
        info = self.info
        row = {"host_id": info.host_id if info else self.host_name, "host_name": self.host_name,
               "boot_id": info.boot_id if info else "unknown", "ts": time.time_ns(), "event_kind": "event",
               "event_category": "agent", "event_action": "decode-warning", "message": message}
        log.warning("%s: %s", self.host_name, message)
        return pa.Table.from_pylist([row], schema=schema.EVENTS)


def _with_hashes(tables: dict[str, pa.Table], hashes: list[list[Any]]) -> dict[str, pa.Table]:
    """The executable hashes the agent's artifact collector found, on the exec rows (as the
    decoding agent's collector puts them)."""
    by_key = {(int(e), int(t)): str(h) for e, t, h in hashes}
    by_entity = {int(e): str(h) for e, _, h in hashes}
    out = dict(tables)
    ev = tables.get("events")
    if ev is not None:
        is_exec = pc.and_(pc.fill_null(pc.equal(ev["event_action"], "exec"), False),
                          pc.is_null(ev["syscall"]))
        ents, tss = ev["process_entity_id"].to_pylist(), ev["ts"].to_pylist()
        col = [by_key.get((e, t)) if x else None
               for e, t, x in zip(ents, tss, is_exec.to_pylist(), strict=True)]
        idx = ev.schema.get_field_index("process_hash_sha256")
        out["events"] = ev.set_column(idx, ev.schema.field(idx), pa.array(col, pa.string()))
    procs = tables.get("processes")
    if procs is not None:
        col_p = [by_entity.get(e) if s == "exec" else None
                 for e, s in zip(procs["entity_id"].to_pylist(), procs["source"].to_pylist(), strict=True)]
        idx = procs.schema.get_field_index("hash_sha256")
        out["processes"] = procs.set_column(idx, procs.schema.field(idx), pa.array(col_p, pa.string()))
    return out


class RawDecoders:
    """The log host's decoders, one per (host, stream)."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], StreamDecoder] = {}
        self._lock = threading.Lock()

    def get(self, host: str, stream: str) -> StreamDecoder:
        with self._lock:
            d = self._by.get((host, stream))
            if d is None:
                d = self._by[(host, stream)] = StreamDecoder(host, stream)
            return d

    def checkpoint_all(self, streams: Iterable[StreamLog], every: float) -> None:
        """At a clean stop (the store holds every frame now), each raw stream's decoder state:
        the next start decodes none of its frames again."""
        if every <= 0:
            return
        for s in streams:
            with self._lock:
                dec = self._by.get((s.host, s.stream))
            if dec is None or dec.decoder is None:
                continue
            try:
                dec.take_checkpoint()
                dec.write_checkpoint(s.dir, s.ingested())
            except OSError as e:  # the next start decodes the stream again instead
                log.warning("cannot write the decoder checkpoint of %s/%s: %s", s.host, s.stream, e)

    def all(self) -> list[StreamDecoder]:
        with self._lock:
            return list(self._by.values())
