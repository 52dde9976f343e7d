"""``ShippingSink``: the recorder's sink that seals, spools and ships batches to a log host.

``write`` seals the batch with the current epoch's key, appends it to the spool and
fsyncs; that is all the recorder waits for (disk, never network). A ``Shipper`` thread
delivers the spool. When the spool is full, new batches are *not* spooled (what is
spooled is evidence from before, and it is kept): they are counted, and as soon as room
is free again a ``gaps`` record (reason ``spool-full``, the window, the number of lost
events; ``event_class`` carries the number of lost batches) is sealed into the stream.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix import __version__
from forensix.agent.sealer import Sealer
from forensix.agent.shipper import Shipper
from forensix.agent.spool import Spool
from forensix.model.host import HostInfo, local_host
from forensix.store import schema

__all__ = ["ShippingConfig", "ShippingSink", "gap_batch"]

log = logging.getLogger("forensix.agent")


@dataclass
class ShippingConfig:
    host: str  # the enrolled name (the certificate's common name)
    server: tuple[str, int]
    context: ssl.SSLContext
    seal_key: Path
    spool_dir: Path
    spool_max_bytes: int = 1 << 30
    server_name: str = "forensix-server"
    heartbeat_s: float = 5.0
    drain_s: float = 5.0


def gap_batch(info: HostInfo, host: str, ts_from: int, ts_to: int, count: int, reason: str,
              event_class: str = "all") -> pa.Table:
    return pa.Table.from_pylist(
        [{"host_id": info.host_id, "host_name": host, "boot_id": info.boot_id, "ts_from": ts_from,
          "ts_to": ts_to, "cpu": -1, "event_class": event_class, "count": count, "reason": reason}],
        schema=schema.GAPS,
    )


class ShippingSink:
    """A Sink (agent/sink.py) that delivers every batch to the log host, sealed."""

    def __init__(self, config: ShippingConfig, *, start: bool = True) -> None:
        self.config = config
        self.info = local_host()
        seg = max(64 << 10, min(16 << 20, config.spool_max_bytes // 8))
        self.spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes, segment_bytes=seg)
        self.sealer = Sealer(config.seal_key, config.host, self.spool.stream, self.spool.next_seq,
                             self.spool.last_hash, self.spool.last_seal_ns)
        self.rows = 0
        self.batches = 0
        self.dropped_batches = 0
        self.dropped_rows = 0
        self._drop_from = 0
        self._drop_to = 0
        self.started_ns = time.time_ns()
        if self.spool.entries and not self.spool.was_clean:
            # The agent died without a clean stop: what happened meanwhile was not recorded.
            self._spool(
                "gaps",
                gap_batch(self.info, config.host, self.spool.last_seal_ns, self.started_ns, 0, "agent-down"),
            )
        hello: dict[str, Any] = {
            "host": config.host,
            "agent_start_ns": self.started_ns,
            "boot_id": self.info.boot_id,
            "host_id": self.info.host_id,
            "version": __version__,
            "pid": os.getpid(),
        }
        self.shipper = Shipper(
            self.spool, config.server, config.context, config.server_name, hello,
            heartbeat_s=config.heartbeat_s, on_tick=self._tick,
        )
        if start:
            self.shipper.start()

    def _tick(self) -> dict[str, Any]:
        epoch = self.sealer.tick()  # evolve (and erase) on time even when nothing is recorded
        return {"epoch": epoch, "dropped_batches": self.dropped_batches}

    def _spool(self, table: str, data: pa.Table) -> bool:
        seq, raw, seal_ns, epoch = self.sealer.seal(table, data)
        if not self.spool.append(seq, raw, seal_ns, epoch):
            return False
        self.sealer.commit(raw, seal_ns)
        return True

    def write(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        if "host_name" in data.column_names:
            # Rows travel under the enrolled name; the log host accepts no other.
            idx = data.schema.get_field_index("host_name")
            data = data.set_column(idx, data.schema.field(idx), pa.array([self.config.host] * data.num_rows,
                                                                          pa.string()))
        now = time.time_ns()
        if self.dropped_batches and not (self._has_room() and self._flush_gap(now)):
            self._drop(data, now)
            return
        if self._spool(table, data):
            self.rows += data.num_rows
            self.batches += 1
        else:
            self._drop(data, now)

    def _has_room(self) -> bool:
        # Hysteresis: resume only when a quarter of the spool is free again, so a long outage
        # yields one gap record rather than one per batch that happened to fit.
        return self.spool.bytes <= self.spool.max_bytes * 3 // 4

    def _drop(self, data: pa.Table, now: int) -> None:
        if not self.dropped_batches:
            self._drop_from = now
            log.warning("spool %s is full: new batches are counted, not kept", self.spool.dir)
        self.dropped_batches += 1
        self.dropped_rows += data.num_rows
        self._drop_to = now

    def _flush_gap(self, now: int) -> bool:
        gap = gap_batch(self.info, self.config.host, self._drop_from, self._drop_to, self.dropped_rows,
                        "spool-full", f"batches:{self.dropped_batches}")
        if not self._spool("gaps", gap):
            return False
        log.warning("spool has room again: %d batches (%d rows) were lost, gap recorded",
                    self.dropped_batches, self.dropped_rows)
        self.dropped_batches = self.dropped_rows = 0
        return True

    def flush(self) -> None:
        self.spool.save_acked()

    def close(self) -> None:
        if self.dropped_batches:
            self._flush_gap(time.time_ns())
        self.shipper.stop(self.config.drain_s)
        self.spool.close(clean=True)
