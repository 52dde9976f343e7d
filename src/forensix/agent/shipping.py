"""``ShippingSink``: the recorder's sink that seals, spools and ships batches to a log host.

``write`` joins small batches for up to ``coalesce_s`` (or ``coalesce_rows``), then seals
them with the current epoch's key, appends the frame to the spool and fsyncs; that is all
the recorder waits for (disk, never network). Raw rows (the kernel's records, agent/raw.py)
are sealed at once: write() returns once the spool holds them. A ``Shipper`` thread delivers the spool.
When the spool is full, new batches are *not* spooled (what is spooled is evidence from
before, and it is kept): they are counted, and once a quarter of the spool is free again
a ``gaps`` record (reason ``spool-full``, the window, ``count`` = lost rows,
``event_class`` = ``batches:N``) is sealed into the stream first.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix import __version__
from forensix.agent.frame import RAW_TABLE, table_schema
from forensix.agent.sealer import Sealer
from forensix.agent.shipper import Shipper
from forensix.agent.spool import Spool
from forensix.errors import ForensixError, StoreError
from forensix.model.host import HostInfo, local_host
from forensix.pki.sealkey import SealState
from forensix.store import schema
from forensix.store.journal import conform

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
    # Small batches are joined (per table) into one frame of up to coalesce_rows rows or
    # coalesce_s seconds: each frame costs two fsyncs, a MAC, an ack and a store append.
    # Rows waiting here are not yet spooled (a kill -9 loses at most coalesce_s of them).
    coalesce_rows: int = 8192
    coalesce_bytes: int = 32 << 20  # and bytes: artifact chunks are 1 MiB a row (frames stay far below MAX_RAW)
    coalesce_s: float = 0.2
    # who records (boot, host id): a network namespace recorded as a host has its own
    # (sensor/netns.py); None: this machine
    info: HostInfo | None = None


# the seal timer's sleep while no rows wait (a write wakes it): only a bound, for a sink closed by hand
_TIMER_IDLE_S = 5.0


def gap_batch(info: HostInfo, host: str, ts_from: int, ts_to: int, count: int | None, reason: str,
              event_class: str = "all") -> pa.Table:
    """``count`` None: how much was lost is not known (an agent that was down), never 0."""
    return pa.Table.from_pylist(
        [{"host_id": info.host_id, "host_name": host, "boot_id": info.boot_id, "ts_from": ts_from,
          "ts_to": ts_to, "cpu": -1, "event_class": event_class, "count": count or 0, "reason": reason,
          "count_unknown": count is None}],
        schema=schema.GAPS,
    )


class ShippingSink:
    """A Sink (agent/sink.py) that delivers every batch to the log host, sealed."""

    evidence = True  # where the agent's record goes: a batch it refuses is kept and retried
    sink_name = "the agent's spool"

    def __init__(self, config: ShippingConfig, *, start: bool = True) -> None:
        self.config = config
        self.info = config.info or local_host()
        seg = max(64 << 10, min(16 << 20, config.spool_max_bytes // 8))
        enrollment = SealState.load(config.seal_key).enrollment
        self.spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes, segment_bytes=seg,
                           enrollment=enrollment)
        if self.spool.retired is not None:
            log.warning("new enrollment (seal key %s): a new stream starts; the spool of the previous "
                        "enrollment is kept in %s", enrollment, self.spool.retired)
        self.sealer = Sealer(config.seal_key, config.host, self.spool.stream, self.spool.next_seq,
                             self.spool.last_hash, self.spool.last_seal_ns)
        self.rows = 0
        self.batches = 0
        self._host_name = pa.scalar(config.host, pa.string())
        self._lock = threading.RLock()
        self._timer_cv = threading.Condition(self._lock)  # wakes the seal timer: rows wait, or the sink closes
        self._pending: dict[str, list[pa.Table]] = {}
        self._durable: list[Callable[[], None]] = []  # run once the rows pending now are spooled
        self._pending_rows = 0
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._refused: pa.Table | None = None  # the batch a failed write() kept pending, given again
        self._closed = threading.Event()
        self.dropped_batches = 0
        self.dropped_rows = 0
        self._drop_from = 0
        self._drop_to = 0
        self.lost_rows_total = 0  # never reset (the metrics); dropped_* are the current window
        self.lost_batches_total = 0
        self.started_ns = time.time_ns()
        if self.spool.entries and not self.spool.was_clean:
            # The agent died without a clean stop: what happened meanwhile was not recorded.
            self._spool(
                "gaps",
                gap_batch(self.info, config.host, self.spool.last_seal_ns, self.started_ns, None, "agent-down"),
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
        if config.coalesce_s > 0:
            threading.Thread(target=self._timer, name="fx-seal-timer", daemon=True).start()
        if start:
            threading.Thread(target=self._status_loop, name="fx-status", daemon=True).start()

    def status(self, state: str | None = None) -> dict[str, Any]:
        """What ``forensix agent-status`` shows: delivery, the spool, refusals, losses."""
        st = self.shipper.stats
        oldest = self.spool.oldest_unacked_ns()
        return {
            "state": state or ("connected" if st.connected else "disconnected"),
            "host": self.config.host, "server": "{}:{}".format(*self.config.server), "pid": os.getpid(),
            "stream": self.spool.stream.hex(), "started_ns": self.started_ns, "updated_ns": time.time_ns(),
            "connects": st.connects, "last_error": st.last_error, "last_refusal": st.last_refusal,
            "last_ack_ns": st.last_ack_ns, "acked_seq": self.spool.acked, "next_seq": self.sealer.next_seq,
            "unacked_frames": self.spool.unacked(), "oldest_unacked_ns": oldest,
            "spool_bytes": self.spool.bytes + self.spool.refused_bytes,
            "spool_max_bytes": self.spool.max_bytes,
            "frames_sealed": self.spool.frames_spooled, "frames_sent": st.sent,
            "frames_acked": self.spool.frames_acked, "frames_refused": len(self.spool.refused),
            "lost_batches": self.lost_batches_total, "lost_rows": self.lost_rows_total,
        }

    def _status_loop(self) -> None:
        every = max(1.0, min(self.config.heartbeat_s, 10.0))
        while not self._closed.wait(every):
            try:
                self.spool.write_status(self.status())
            except OSError as e:  # a full disk must not stop recording; the spool says so itself
                log.debug("cannot write the agent status: %s", e)

    def _timer(self) -> None:
        """Seal the rows that waited ``coalesce_s`` for more to join them. Asleep while none wait
        (the write that makes rows wait wakes it): it woke every ``coalesce_s / 2`` to look, ~0.7 ms
        of CPU a second in this VM whether anything was recorded or not, and a raw agent's rows
        rarely wait (a drain tick's are sealed at once), so that was most of its CPU when idle."""
        with self._timer_cv:
            while not self._closed.is_set():
                if not self._pending_rows:
                    self._timer_cv.wait(_TIMER_IDLE_S)
                    continue
                left = self._pending_since + self.config.coalesce_s - time.monotonic()
                if left > 0:
                    self._timer_cv.wait(left)
                    continue
                try:
                    self._seal_pending()
                except OSError as e:  # kept pending: the next write, or this timer, retries it
                    log.warning("cannot spool in %s (kept, retried): %s", self.spool.dir, e)
                    self._timer_cv.wait(self.config.coalesce_s)

    def _tick(self) -> dict[str, Any]:
        epoch = self.sealer.tick()  # evolve (and erase) on time even when nothing is recorded
        return {"epoch": epoch, "dropped_batches": self.dropped_batches}

    def _spool(self, table: str, data: pa.Table) -> bool:
        seq, raw, seal_ns, epoch = self.sealer.seal(table, data)
        if not self.spool.append(seq, raw, seal_ns, epoch):
            return False
        self.sealer.commit(raw, seal_ns, self.spool.last_hash)
        return True

    def write(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        given = data
        # The recorder's writer gives a batch this refused (a full disk) again: it is pending already
        retry, self._refused = given is self._refused, None
        want = table_schema(table)
        if want is not None and not data.schema.equals(want):
            # rows made beside the kernel's (the system-log follower's) carry only the columns
            # they fill; the log host takes a table's whole schema, as the local store's journal does
            try:
                data = conform(data, want, table)
            except StoreError:
                pass  # a column no schema knows: sent as it is, the log host refuses it for good and
                # the spool keeps it in refused/ with the reason (retrying here would stop recording)
        idx = data.schema.get_field_index("host_name")
        if idx >= 0:
            # Rows travel under the enrolled name; the log host accepts no other. Built in
            # C (a Python list of the name per row was per-event Python on every batch).
            data = data.set_column(idx, data.schema.field(idx), pa.repeat(self._host_name, data.num_rows))
        try:
            self._write(table, data, given, retry)
        except OSError as e:  # the spool's disk: said with its fix; the recorder's writer retries
            if isinstance(e, ForensixError):
                raise
            raise StoreError(f"cannot write the agent's spool in {self.spool.dir}: {e}",
                             f"free disk space in {self.spool.dir} (or fix its permissions); the batch "
                             "is kept and retried meanwhile") from e

    def _write(self, table: str, data: pa.Table, given: pa.Table, retry: bool) -> None:
        with self._lock:
            if self.config.coalesce_s <= 0:
                self._write_now(table, data)
                return
            first = not self._pending_rows
            if not retry:
                if first:
                    self._pending_since = time.monotonic()
                self._pending.setdefault(table, []).append(data)
                self._pending_rows += data.num_rows
                self._pending_bytes += data.nbytes
            # A raw row is a whole drain tick (agent/raw.py): it is sealed at once, with what
            # waits before it. The recorder gives the ring's space back to the kernel when
            # write() returns: a tick held here for coalesce_s was released from the (pinned)
            # ring before the spool held it, and a kill -9 meanwhile lost it.
            try:
                if (table == RAW_TABLE or self._pending_rows >= self.config.coalesce_rows
                        or self._pending_bytes >= self.config.coalesce_bytes):
                    try:
                        self._seal_pending()
                    except BaseException:
                        self._refused = given
                        raise
            finally:
                # the seal timer sleeps while nothing waits: woken only by rows left waiting (a
                # refused seal's too). Every raw tick woke it, ~2 context switches, for nothing
                if first and self._pending_rows:
                    self._timer_cv.notify()

    def _seal_pending(self) -> None:
        """Spool what waits, table by table; a table leaves ``_pending`` only once spooled,
        so a refusal (a full disk) keeps the rest for the retry, none sealed twice."""
        while self._pending:
            table, parts = next(iter(self._pending.items()))
            self._write_now(table, pa.concat_tables(parts) if len(parts) > 1 else parts[0])
            del self._pending[table]
        self._pending_rows = self._pending_bytes = 0
        done, self._durable = self._durable, []
        for fn in done:
            fn()

    def when_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every row written so far is in the spool: now, sealing the rows that
        wait to be joined first. The recorder gives the kernel's ring space back then
        (sensor/writer.py): an agent killed meanwhile leaves those records in the pinned ring."""
        with self._lock:
            if self._pending_rows:
                # Sealed now, not when coalesce_s ends: ``fn`` comes at the end of a drain tick
                # whose other tables may be spooled already (a big one is sealed at once). A
                # kill -9 while the rest waited left those frames shipped and the ring's space
                # held, and the agent that adopted the ring shipped them again (CI, under load:
                # hundreds of events twice, tests/transport/test_raw_agent_upgrade_bpf.py).
                try:
                    self._seal_pending()
                except OSError as e:  # kept pending, and ``fn`` with it: the timer retries
                    log.warning("cannot spool in %s (kept, retried): %s", self.spool.dir, e)
                    self._durable.append(fn)
                    return
        fn()

    def _write_now(self, table: str, data: pa.Table) -> None:
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
        self.lost_batches_total += 1
        self.lost_rows_total += data.num_rows
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
        with self._lock:
            self._seal_pending()
        self.spool.save_acked()

    def close(self) -> None:
        """Seal what waits, deliver for up to ``drain_s``, mark a clean stop. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            self._timer_cv.notify()
            self._seal_pending()
            if self.dropped_batches:
                self._flush_gap(time.time_ns())
        self.shipper.stop(self.config.drain_s)
        if self.spool.refused:
            log.warning("%d frame(s) refused by the log host are kept in %s/refused "
                        "(forensix agent-status --spool %s)", len(self.spool.refused), self.spool.dir,
                        self.spool.dir)
        try:
            self.spool.write_status(self.status("stopped"), durable=True)
        except OSError as e:
            log.warning("cannot write the agent status: %s", e)
        self.spool.close(clean=True)
