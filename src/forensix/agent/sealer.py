"""The agent's sealing state: evolves the key per epoch, numbers and chains the frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import zstandard
from pyarrow import ipc

from forensix.agent.frame import (
    RAW_FLAG,
    RAW_TABLE,
    SEED_FLAG,
    ZERO_HASH,
    encode_batch,
    seal_frame,
)
from forensix.pki.sealkey import SealKeyError, SealState, mac_key

__all__ = ["RAW_LEVEL", "Sealer"]

# zstd level of raw frames (a drain tick's ring bytes, ~1-3 MB): zstd is the raw agent's
# largest CPU cost (~a third of it on a build). Level -1 ("fast") over the IPC bytes at once
# takes ~20% less CPU than Arrow's streaming level 1 did, for ~7% more bytes (build:
# 24.9 -> 26.6 B/event shipped; docs/benchmarks.md, agentcpu); any log host reads it (a
# zstd frame that declares its size, as the other tables' frames).
RAW_LEVEL = -1

# The raw frames' IPC bytes are written into one buffer kept from frame to frame: a fresh
# buffer of a tick's ~1-4 MB cost a page fault per 4 KiB written (~2.5 µs each in a VM under
# load, ~2 ms for a 3 MB frame, as much as a third of its zstd). A buffer grown past this
# by an unusual tick is let go once used (an idle agent keeps no more than this).
_SCRATCH_KEEP = 8 << 20


def _flags(table: str, data: pa.Table) -> int:
    if table != RAW_TABLE:
        return 0
    # a raw frame holds a few rows (a drain tick's ring row and map rows): reading their
    # kinds costs less than a compute kernel's call (~0.1 ms each, three frames a tick)
    return RAW_FLAG | (SEED_FLAG if "seed" in data.column("kind").to_pylist() else 0)


class Sealer:
    """Seals batches for one stream; the key file is overwritten when the epoch advances."""

    def __init__(self, key_path: Path, host: str, stream: bytes, next_seq: int, prev: bytes | None,
                 last_seal_ns: int) -> None:
        self.key_path = key_path
        self.state = SealState.load(key_path)
        if self.state.host != host:
            raise SealKeyError(
                f"seal key {key_path} belongs to {self.state.host!r}, not {host!r}",
                "use the bundle issued for this host",
            )
        self.host = host
        self.stream = stream
        self.next_seq = next_seq
        self.prev = prev if prev is not None else ZERO_HASH
        self.last_seal_ns = last_seal_ns
        self.lock = threading.Lock()
        self._zraw = zstandard.ZstdCompressor(level=RAW_LEVEL)  # not thread-safe: used under _zlock
        self._zlock = threading.Lock()
        self._scratch: pa.ResizableBuffer | None = None  # the raw frames' IPC bytes (_SCRATCH_KEEP)
        self.tick()

    def tick(self, now_ns: int | None = None) -> int:
        """Advance the key to the current epoch, erasing the old one; returns the epoch."""
        with self.lock:
            return self._advance(now_ns if now_ns is not None else time.time_ns())

    def _advance(self, now_ns: int) -> int:
        epoch = self.state.epoch_of(now_ns)
        if self.state.advance_to(epoch):
            self.state.save(self.key_path)  # atomic replace: the old key is gone from the file
        return self.state.epoch

    def seal(self, table: str, data: pa.Table) -> tuple[int, bytes, int, int]:
        """(seq, frame bytes, seal time, epoch) for a batch; does not consume the sequence."""
        # raw frames (~1-3 MB of ring bytes a tick) at RAW_LEVEL; other tables at level 3
        # (frame.py); both one-shot zstd frames that declare their size
        compressed = self._compress_raw(data) if table == RAW_TABLE else None
        ipc_bytes = None if compressed is not None else encode_batch(data)
        with self.lock:
            seal_ns = max(time.time_ns(), self.last_seal_ns)
            epoch = self._advance(seal_ns)
            # After a clock step back the key may already be in a later epoch than the
            # clock says; the sealing time must lie in the key's epoch, so it moves forward.
            seal_ns = max(seal_ns, self.state.window(epoch)[0])
            frame = seal_frame(
                host=self.host, stream=self.stream, seq=self.next_seq, epoch=epoch, seal_ns=seal_ns,
                table=table, rows=data.num_rows, prev=self.prev, key=mac_key(self.state.key),
                flags=_flags(table, data), ipc_bytes=ipc_bytes, compressed=compressed,
            )
            return self.next_seq, frame, seal_ns, epoch

    def _compress_raw(self, data: pa.Table) -> tuple[int, bytes]:
        """(IPC length, zstd body at RAW_LEVEL) of a raw batch, its IPC written into the kept
        scratch buffer (grown to fit: the IPC stream is the buffers' bytes, each padded to 64,
        and a little metadata per batch)."""
        need = data.nbytes + 64 * (data.num_columns * 4 + 8) * (len(data.to_batches()) + 1) + (64 << 10)
        with self._zlock:
            buf = self._scratch
            if buf is None or buf.size < need:  # twice what is needed: a tick a little larger fits
                buf = pa.allocate_buffer(max(need, min(2 * need, _SCRATCH_KEEP)), resizable=True)
            sink = pa.FixedSizeBufferWriter(buf)
            with ipc.new_stream(sink, data.schema) as w:
                w.write_table(data)
            n = sink.tell()
            body = self._zraw.compress(memoryview(buf)[:n])
            self._scratch = buf if buf.size <= _SCRATCH_KEEP else None
        return n, body

    def commit(self, raw: bytes, seal_ns: int, digest: bytes | None = None) -> None:
        """The frame was spooled: the next one follows it in the chain. ``digest``: its hash,
        if the spool computed it already (SHA-256 of a frame twice was ~5% of a raw agent's CPU)."""
        from forensix.agent.frame import frame_hash

        with self.lock:
            self.next_seq += 1
            self.prev = digest if digest is not None else frame_hash(raw)
            self.last_seal_ns = seal_ns
