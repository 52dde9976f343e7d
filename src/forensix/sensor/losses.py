"""Loss is evidence too: the kernel's drop counters become gap records, per process where
the kernel could name it, and the final counters (attempted, lost) go into the record.

A part of the Recorder (sensor/recorder.py), kept apart because it is one concept: what
was not recorded, and the proof that stored + lost = attempted for every class and CPU.
"""

from __future__ import annotations

import ctypes
import errno
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from forensix.sensor import libbpf as lb
from forensix.sensor.decode import CLASS_NAMES, comm_names
from forensix.store import schema

if TYPE_CHECKING:
    from forensix.model.host import HostInfo
    from forensix.sensor.clock import Clock
    from forensix.sensor.decode import Decoder
    from forensix.sensor.loader import Sensor
    from forensix.sensor.ringbuf import RingBuffer
    from forensix.sensor.writer import BatchWriter

__all__ = ["LossAccounting"]

# The ring of each event class (the recorder's drain order: process, network, main).
_RING_OF_CLASS = {"process": 0, "network": 1, "other": 1, "file": 2, "flow": 2}


class LossAccounting:
    """Gap records from the kernel's counters; mixed into the Recorder, whose state it reads."""

    host: HostInfo
    clock: Clock
    decoder: Decoder
    sensor: Sensor | None
    rings: list[RingBuffer]
    stats: Any
    _writer: BatchWriter
    _ncpu: int
    _ncls: int
    _cdt: np.dtype
    _dkdt: np.dtype
    _dvdt: np.dtype
    _named_drops: np.ndarray
    _unnamed_drops: np.ndarray
    _last_drops: np.ndarray
    _last_counter_boot: int
    # walks of proc_drops still due whatever the counters say (the first, the one after drops
    # moved, the last: ``_account_losses``), and the walks skipped (tests)
    _drop_walks_due = 1
    drop_walks_skipped = 0

    # the Recorder's own (sensor/recorder.py)
    def _take_map(self, name: str, kdt: np.dtype, vdt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _emit(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        raise NotImplementedError

    def _agent_event(self, action: str, message: str, ts: int | None = None, pid: int | None = None) -> None:
        raise NotImplementedError

    def _write_accounted(self, slots: dict[int, int]) -> None:
        raise NotImplementedError

    def read_counters(self) -> np.ndarray:
        """Per CPU and class counters from the kernel: shape (ncpu, classes). One batch lookup
        (a bpf() call is ~20-45 µs of CPU in this VM: one per class was ~0.2 ms a flush)."""
        assert self.sensor is not None
        fd = self.sensor.map_fd("counters")
        if self._cdt.itemsize % 8 == 0:  # per-CPU values come 8-byte aligned, as the dtype then is
            vals = np.zeros((self._ncls, self._ncpu), self._cdt)
            keys = np.zeros(self._ncls, np.uint32)
            token, count = ctypes.c_uint32(0), ctypes.c_uint32(self._ncls)
            ret = lb.lib.bpf_map_lookup_batch(fd, None, ctypes.byref(token), keys.ctypes.data, vals.ctypes.data,
                                              ctypes.byref(count), None)
            if (ret == 0 or -ret == errno.ENOENT) and count.value == self._ncls and \
                    (keys == np.arange(self._ncls)).all():
                return np.ascontiguousarray(vals.T)
        out = np.zeros((self._ncpu, self._ncls), self._cdt)
        per = np.zeros(self._ncpu, self._cdt)
        for cls in range(self._ncls):
            key = ctypes.c_uint32(cls)
            lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), per.ctypes.data)
            out[:, cls] = per
        return out

    def account_losses(self) -> None:
        """``_account_losses``, its CPU counted as the drainer's "losses" stage."""
        t0 = time.thread_time()
        try:
            self._account_losses()
        finally:
            self.stats.stages["losses"] = self.stats.stages.get("losses", 0.0) + time.thread_time() - t0

    def _account_losses(self) -> None:
        """Turn new kernel drops into gap records: when, which CPU, class and process, how many.

        The counters are read before the per-process drop map is taken: the kernel counts a
        drop in the counter first, so every drop counted by then has its process entry too.
        Per (CPU, class), the rows written add up to the kernel's counter: one row per
        process that lost records, and a row of no named process for drops the per-process
        map had no room for (written once the counter shows they are not just late)."""
        c = self.read_counters()
        # The per-process drop map is walked (~0.25 ms, its buckets) only while drops move: the
        # kernel counts a drop before it adds its process's entry, so an entry this walk misses
        # was counted in this read, and the next flush walks too, after its flip's grace
        # period (every program that counted before it has returned). The last pass walks.
        moved = not np.array_equal(c["drops"], self._last_drops)
        if moved or self._drop_walks_due > 0:
            self._drop_walks_due = 1 if moved else self._drop_walks_due - 1
            dk, dv = self._take_map("proc_drops", self._dkdt, self._dvdt)
        else:
            self.drop_walks_skipped += 1
            dk, dv = np.empty(0, self._dkdt), np.empty(0, self._dvdt)
        drops = c["drops"].astype(np.int64)
        delta = drops - self._last_drops.astype(np.int64)
        # A ring that stayed under half full in the window had room for any record: the
        # kernel refused the reservation for another reason (on 6.15+ the ring's lock is
        # a resilient spinlock that gives up on a stalled holder), so do not call it full.
        reasons = ["ringbuf-full" if r.take_peak() >= r.size // 2 else "reserve-failed" for r in self.rings]
        rows = self._named_gaps(dk, dv, reasons)
        unnamed = drops - self._named_drops - self._unnamed_drops
        for cpu, cls in zip(*np.nonzero(unnamed > 0)):
            cpu, cls = int(cpu), int(cls)
            frm = max(int(c["first_drop"][cpu, cls]), self._last_counter_boot)
            to = int(c["last_drop"][cpu, cls])
            rows.append(self._gap_row(cpu, cls, int(unnamed[cpu, cls]), frm, max(to, frm), reasons))
            self._unnamed_drops[cpu, cls] += unnamed[cpu, cls]
        for cpu, cls in zip(*np.nonzero(delta)):
            name = str(CLASS_NAMES[int(cls)])
            self.stats.drops[name] = self.stats.drops.get(name, 0) + int(delta[cpu, cls])
        self._last_drops = c["drops"].copy()
        self._last_counter_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if rows:
            self.stats.gaps += len(rows)
            self._emit("gaps", pa.Table.from_pylist(rows, schema=schema.GAPS))
            self._gap_events(rows)
            done = self._named_drops + self._unnamed_drops
            slots = {cpu * self._ncls + cls: int(done[cpu, cls]) for cpu in range(self._ncpu) for cls in range(self._ncls)}
            self._writer.after_written(lambda: self._write_accounted(slots))

    def _gap_row(self, cpu: int, cls: int, count: int, frm: int, to: int, reasons: list[str]) -> dict[str, Any]:
        name = str(CLASS_NAMES[cls])
        # flow edges are not ring records: the kernel counts an edge its map had no room for
        reason = "flowmap-full" if name == "flow" else reasons[_RING_OF_CLASS.get(name, 2)]
        return {
            "host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id,
            "ts_from": frm + self.clock.offset_ns, "ts_to": to + self.clock.offset_ns,
            "cpu": cpu, "event_class": name, "count": count, "reason": reason,
        }

    def _named_gaps(self, k: np.ndarray, v: np.ndarray, reasons: list[str]) -> list[dict[str, Any]]:
        """One gap row per (process, CPU, class) that lost records since the last pass."""
        if not len(v):
            return []
        ids = self.decoder.ids.ids(k["pid"], k["start"]).tolist()
        names = comm_names(v["comm"]).to_pylist()
        rows = []
        for i in range(len(v)):
            cpu, cls = int(k["cpu"][i]), int(k["cls"][i])
            if cpu >= self._ncpu or cls >= self._ncls:
                continue
            count = int(v["count"][i])
            self._named_drops[cpu, cls] += count
            row = self._gap_row(cpu, cls, count, int(v["first"][i]), int(v["last"][i]), reasons)
            row.update(process_pid=int(k["pid"][i]), process_entity_id=ids[i], process_name=names[i])
            rows.append(row)
        return rows

    def _gap_events(self, rows: list[dict[str, Any]]) -> None:
        """One timeline row per (CPU, class): how many were lost, and whose were the most."""
        why = {"ringbuf-full": "ring buffer full", "flowmap-full": "flow map full"}
        by: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in rows:
            by.setdefault((r["cpu"], r["event_class"]), []).append(r)
        for (cpu, cls), rs in sorted(by.items()):
            total = sum(r["count"] for r in rs)
            named = sorted((r for r in rs if r.get("process_pid") is not None), key=lambda r: -r["count"])
            who = ""
            if named:
                top = named[0]
                who = f"; most of them ({top['count']}) by {top['process_name']} (pid {top['process_pid']})"
                if len(named) > 1:
                    who += f" and {len(named) - 1} other processes"
            reason = why.get(rs[0]["reason"], "reservation refused, ring not full")
            self._agent_event("gap", f"{total} {cls} records lost on cpu {cpu} ({reason}){who}",
                              ts=max(r["ts_to"] for r in rs))

    def _counters_json(self) -> str:
        """The kernel's final counters: records attempted (seq) and lost, per class and CPU.

        For every class and CPU, records stored + records lost = attempted; a reader of
        the evidence can check that nothing went missing without a trace.
        """
        import json

        c = self.read_counters()
        out: dict[str, dict[str, list[int]]] = {}
        for cls in range(c.shape[1]):
            per = {str(cpu): [int(c["seq"][cpu, cls]), int(c["drops"][cpu, cls])] for cpu in range(c.shape[0])}
            out[str(CLASS_NAMES[cls])] = per
        return json.dumps({"attempted_lost": out}, sort_keys=True)
