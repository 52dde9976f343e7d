"""The agent's sealing state: evolves the key per epoch, numbers and chains the frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa

from forensix.agent.frame import (
    RAW_FLAG,
    RAW_TABLE,
    SEED_FLAG,
    ZERO_HASH,
    RawEncoder,
    encode_batch,
    seal_frame,
)
from forensix.pki.sealkey import SealKeyError, SealState, mac_key

__all__ = ["Sealer"]


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
        self._raw = RawEncoder()
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
        # raw frames (~1-4 MB of ring bytes a tick) at frame.RAW_LEVEL, other tables at level 3
        compressed = self._raw.encode(data) if table == RAW_TABLE else None
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

    def commit(self, raw: bytes, seal_ns: int, digest: bytes | None = None) -> None:
        """The frame was spooled: the next one follows it in the chain. ``digest``: its hash,
        if the spool computed it already (SHA-256 of a frame twice was ~5% of a raw agent's CPU)."""
        from forensix.agent.frame import frame_hash

        with self.lock:
            self.next_seq += 1
            self.prev = digest if digest is not None else frame_hash(raw)
            self.last_seal_ns = seal_ns
