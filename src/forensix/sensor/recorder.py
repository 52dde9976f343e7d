"""The recording pipeline: sensor -> drain -> decode -> sinks, with loss accounting.

One thread drains the three ring buffers every ``batch_interval`` (sooner when a ring is
a quarter full: the sensor wakes it, sensor/pacing.py) and decodes whole
batches; a writer thread hands the tables to the sinks through a bounded queue. When
the sinks fall behind, the queue fills, draining the main ring waits (the network ring's
records go to a bounded hold in the agent meanwhile: sensor/hold.py), the kernel's rings
fill and the kernel counts what it could not record: losses become gap records, never silence.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from forensix import __version__
from forensix.agent.sink import Sink
from forensix.artifacts.defer import HeldWriter
from forensix.imports.journal import SystemLogFollower
from forensix.model.host import HostInfo, local_host
from forensix.nice import nice_for_child
from forensix.sensor import libbpf as lb
from forensix.sensor.abi import enum, struct_dtype
from forensix.sensor.accounts import AccountWatcher
from forensix.sensor.clock import Clock
from forensix.sensor.decode import (
    CLASS_NAMES,
    Decoder,
)
from forensix.sensor.hold import RingHold
from forensix.sensor.hold import hold_bytes as default_hold_bytes
from forensix.sensor.loader import (
    ACC_FLOW_INSERTS,
    ACC_OPEN_INSERTS,
    Sensor,
    SensorConfig,
    is_pinned,
    preflight,
    unpin,
)
from forensix.sensor.losses import LossAccounting
from forensix.sensor.maprows import flow_rows, reopen_rows
from forensix.sensor.pacing import (
    IDLE_FLOW_INTERVAL,
    STRETCH,
    Pacer,
    give_back_free_memory,
)
from forensix.sensor.priority import LAG_NICE, Yielding
from forensix.sensor.procfs import open_files, snapshot
from forensix.sensor.ringbuf import Drained, RingBuffer
from forensix.sensor.slots import SlotCaches, merge_flows, merge_reopens
from forensix.sensor.survival import (
    ACC_EARLY,
    ACC_LAST_WRITE,
    OrphanWatch,
    orphan_gap,
    read_accounted,
    read_slot,
    restart_gap,
    stop_watch,
    write_accounted,
)
from forensix.sensor.writer import EVIDENCE_RETRY_S, QUEUE_BYTES, BatchWriter
from forensix.stopflag import StopFlag
from forensix.store import schema
from forensix.store.private import user_umask

if TYPE_CHECKING:
    from forensix.artifacts import Collector

__all__ = ["BATCH_INTERVAL", "RecordStats", "Recorder"]

log = logging.getLogger("forensix.recorder")

# The kernel's rings, in drain order (parents before children).
_RINGS = ("rb_proc", "rb_net", "rb_main")

# Seconds between drains while the rings have room: one batch per flow-map flush. Each
# batch costs the decoder, the store and the rules ~10 ms of CPU whatever its size: on a
# bash build, drains every 0.5 s cost 0.2-0.3 s more agent CPU per 30 s and the build
# ~0.4% more time, for alerts ~0.3 s sooner (median 0.6 s against 0.9 s; bench/notes.md).
BATCH_INTERVAL = 1.0
# Seconds between heartbeats (a quarter of the orphan timeout if that is shorter): also how
# soon an agent that stalled past the timeout notices and writes the pause as a gap.
_BEAT_INTERVAL = 10.0


@dataclass
class RecordStats:
    started_ns: int = 0
    events: int = 0
    processes: int = 0
    flows: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    warnings: int = 0
    ring_bytes: int = 0
    rate: float = 0.0  # events/s over the last interval
    # CPU seconds of the agent's threads while recording (start-up excluded): the
    # drainer (drain, decode, map flushes), the writer (store and inline sinks), the process
    cpu_s: dict[str, float] = field(default_factory=dict)
    skipped_syscalls: list[str] = field(default_factory=list)
    boosts: int = 0  # times a backlog made the recorder stop yielding the CPU (sensor/priority.py)
    # the drainer's CPU seconds by stage: drain, decode, artifacts, queue, flow maps, flows, losses
    stages: dict[str, float] = field(default_factory=dict)
    drains: int = 0  # drains that brought records (each a batch: decode, rules round, appends)
    flushes: int = 0  # flow-map flushes
    walks_skipped: int = 0  # hash map takes skipped: the programs inserted nothing since the last (flush_flows)
    hold_peak: int = 0  # most bytes of network records the agent held at once (sensor/hold.py)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


def use_system_allocator() -> None:
    """Make glibc's malloc pyarrow's default memory pool, for the whole process.

    pyarrow's own default (mimalloc 3 in pyarrow 26) gave the batches the recorder freed
    back to the kernel during the second between drains and faulted in fresh, zeroed pages
    for the next: ~15% of the recorder's CPU during a build went to page faults (perf:
    ``clear_page_erms`` under ``mi_page_free_list_extend``). glibc keeps and reuses them:
    recorder CPU over a configure+make of bash 182 -> 149 ticks, peak RSS 595 -> 550 MB.
    """
    pa.set_memory_pool(pa.system_memory_pool())


class Recorder(LossAccounting):
    counted = "events"  # what stats.events counts, for the stop record (agent/raw.py counts records)
    # a batch whose big executables are read later is held until they are (artifacts/defer.py)
    holds_batches = True

    def __init__(
        self,
        sinks: Sequence[Sink],
        config: SensorConfig | None = None,
        host: HostInfo | None = None,
        poll_interval: float = 0.05,
        batch_interval: float = BATCH_INTERVAL,
        flow_interval: float = 1.0,
        clock_interval: float = 10.0,
        accounts_interval: float = 1.0,
        on_stats: Callable[[RecordStats], None] | None = None,
        queue_depth: int = 64,
        queue_bytes: int = QUEUE_BYTES,
        detach_in_background: bool = True,
        notes: Sequence[str] = (),
        system_logs: Sequence[str] = (),
        artifacts: Collector | None = None,
        on_ready: Callable[[], None] | None = None,
        idle_flow_interval: float = IDLE_FLOW_INTERVAL,
        pacer: type[Pacer] = Pacer,
        evidence_retry_s: float = EVIDENCE_RETRY_S,
        yield_nice: int = LAG_NICE,
        stretched_interval: float | None = None,
        hold_bytes: int | None = None,
    ) -> None:
        """``notes``: what the store had to say on opening (rows an earlier recorder left in its
        journal and this one sealed), written into the record as warnings after the start."""
        self.detach_in_background = detach_in_background
        self.notes = list(notes)
        self.system_logs = list(system_logs)  # journald / log files followed beside the kernel (imports.journal)
        self.artifacts = artifacts  # preserves what each exec ran, and hashes it, before a batch is stored
        self.config = config or SensorConfig()
        self.host = host or local_host()
        self.sinks = list(sinks)
        self.poll_interval = poll_interval
        self.batch_interval = batch_interval
        self.flow_interval = flow_interval
        self.clock_interval = clock_interval
        self.accounts_interval = accounts_interval
        self.on_stats = on_stats
        self.on_ready = on_ready  # called once every program is attached and the start record is out
        self.idle_flow_interval = idle_flow_interval  # flow flushes back off to this when nothing happens
        # the drain period while few records arrive (sensor/pacing.py); None: STRETCH batch intervals
        self.stretched_interval = batch_interval * STRETCH if stretched_interval is None else stretched_interval
        self._pacer_cls = pacer  # when the loop wakes (sensor/pacing.py); forensix.testing has one that never ticks
        self.queue_depth = queue_depth
        self.queue_bytes = queue_bytes  # decoded bytes waiting for the sinks before the rings wait instead
        # network ring records the agent may hold while the writer has no room (sensor/hold.py)
        self.hold_bytes = default_hold_bytes() if hold_bytes is None else hold_bytes
        self.evidence_retry_s = evidence_retry_s  # how long the store may refuse batches before we stop
        # nice while the backlog is small (sensor/priority.py); 0: always at the workload's priority
        self.yielding = Yielding(yield_nice)
        self.stats = RecordStats()
        self._count_lock = threading.Lock()  # a held batch is counted on the artifacts reader's thread
        self.sensor: Sensor | None = None
        self._watch: OrphanWatch | None = None  # detaches our pinned sensor if we die and nobody adopts it
        self._stop = StopFlag()  # set by signal handlers: takes no lock (forensix/stopflag.py)
        self._pace: Pacer | None = None
        self.stop_reason = "stopped"
        self._flush_drained = 0  # records the last flush_flows drained
        self._map_buffers: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # _take_map's batch buffers, by map
        # the programs count their inserts into flows and reopens (_take_inserted), and the counts
        # at each map's last take (None: not taken yet, or counted by nobody)
        self._counting = False
        self._inserts_seen: dict[str, int | None] = {}
        # the programs writing the rings are this tree's: they wake the loop past a quarter
        # (bpf/sensor.bpf.c fx_wake_flags); an adopted sensor's may be older
        self._kernel_wakes = False

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        use_system_allocator()  # page faults were ~15% of the recorder's CPU: see there
        self.sensor = Sensor(self.config)
        pin = self.config.pin_dir
        adopt = pin is not None and is_pinned(pin)
        if adopt:
            assert pin is not None
            preflight()
            self.sensor.adopt(pin, stop_watch=lambda fd: stop_watch(pin, fd))
        else:
            if pin is not None and pin.exists():  # half-pinned by an agent that died pinning
                for fd in unpin(pin):
                    os.close(fd)
            self.sensor.open_and_load()
        self.clock = Clock()
        self.abi = self.sensor.abi
        self.decoder = Decoder(self.abi, self.host, self.clock.offset_ns)
        self._writer = BatchWriter(self.sinks, self.queue_depth, self.queue_bytes,
                                   on_warning=lambda msg: self._agent_event("warning", msg),
                                   evidence_retry_s=self.evidence_retry_s)
        self._writer.start()
        if self.artifacts is not None and self.holds_batches:
            # a batch whose executables are still being read is held, in order (artifacts/defer.py)
            held = HeldWriter(self._writer, self._count, self._artifacts_failed)
            self.artifacts.on_read = held.release
            self._writer = held  # type: ignore[assignment]  # the writer as the drain and emits use it
        # executed files held from their exec on (artifacts/exechold.py): before the attach
        hold_note = self.artifacts.start_hold() if self.artifacts is not None else None
        # Snapshot first, attach right after: a process that starts in between is seen
        # by both (same entity id), one that exits in between is in the snapshot only.
        self._snapshot()
        self._kernel_wakes = not adopt or self.sensor.reattach
        if not adopt or self.sensor.reattach:
            self.sensor.attach()
            if pin is not None and adopt:
                self.sensor.pin_links(pin)  # onto its maps, pinned already; its timer still runs
            elif pin is not None:
                self.sensor.pin(pin)
                self.sensor.arm_heartbeat()
        self._watch = (OrphanWatch(pin, self.sensor.map_fd("accounted"), self.abi, self.config.orphan_timeout_s)
                       if pin is not None and self.config.orphan_timeout_s > 0 else None)
        self.rings = [RingBuffer(self.sensor.map_fd(n), self.sensor.ring_size(n)) for n in _RINGS]
        self._hold = RingHold(self.hold_bytes, self.rings[1].pos)
        self._acc_lock = threading.Lock()  # FXACC_EARLY is set by the drainer, cleared by the writer
        self._ncpu = lb.lib.libbpf_num_possible_cpus()
        self._cdt = struct_dtype(self.abi, "fx_counter")
        self._fkdt = struct_dtype(self.abi, "fx_flow_key")
        self._fvdt = struct_dtype(self.abi, "fx_flow")
        self._okdt = struct_dtype(self.abi, "fx_open_key")
        self._ovdt = struct_dtype(self.abi, "fx_open_rep")
        self._dkdt = struct_dtype(self.abi, "fx_drop_key")
        self._slots = (SlotCaches(self.sensor.map_fd("accounted"), self._ncpu, {
            "flow_slots": (self.sensor.map_fd("flow_slots"), self._fkdt, self._fvdt),
            "open_slots": (self.sensor.map_fd("open_slots"), self._okdt, self._ovdt),
        }, spill_fd=self.sensor.map_fd("flow_spill") if self.sensor.has_map("flow_spill") else None)
            if all(self.sensor.has_map(n) for n in ("flow_slots", "open_slots")) else None)
        # per-CPU slots of detached programs (an older forensix's) this sensor loaded new ones
        # beside: taken whole at the first flush (sensor/loader.py legacy_slots)
        dts = {"flow_slots": (self._fkdt, self._fvdt), "open_slots": (self._okdt, self._ovdt)}
        self._legacy_slots = (SlotCaches(self.sensor.map_fd("accounted"), self._ncpu, {
            name: (fd, *dts[name]) for name, fd in self.sensor.legacy_slots.items()}) if self.sensor.legacy_slots else None)
        self._dvdt = struct_dtype(self.abi, "fx_drop")
        self._counting = self.sensor.counts_inserts()
        self._ncls = len(CLASS_NAMES) - 1
        # drops of each (cpu, class) already written as gap rows: named, and not named
        self._named_drops = np.zeros((self._ncpu, self._ncls), np.int64)
        self._unnamed_drops = np.zeros((self._ncpu, self._ncls), np.int64)
        self._classes = {v: k for k, v in enum(self.abi, "fx_class").items()}
        self._last_drops = np.zeros((self._ncpu, self._ncls), np.uint64)
        accounted = self._read_accounted()
        if adopt:  # the drops the dead agent wrote as gaps are not written again
            self._named_drops = accounted[0].astype(np.int64)
            self._last_drops = accounted[0].astype(np.uint64)
        self._last_counter_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self.stats.started_ns = time.time_ns()
        self._cpu0 = (time.thread_time(), time.process_time())
        self.stats.skipped_syscalls = list(self.sensor.skipped)
        self._emit("hosts", self._host_row())
        # the host's users and groups as they are now, then after each change (sensor/accounts.py)
        self.accounts = AccountWatcher(self.host)
        self._poll_accounts()
        msg = f"forensix {__version__} recording; pid {os.getpid()}; lifecycle hooks: {self.sensor.lifecycle}"
        if self.sensor.fallback:
            msg += f" ({self.sensor.fallback})"
        if self.config.netns:  # which machine the namespace is on: its own host id is derived
            msg += f"; network namespace {self.config.netns} of host {local_host().host_id} as host {self.host.host_name}"
        if self.sensor.skipped:
            msg += f"; no tracepoint for: {', '.join(self.sensor.skipped)}"
        if hold_note:
            msg += f"; {hold_note}"
        if pin is not None and self.sensor.no_heartbeat_watch:
            msg += f"; if this agent dies its sensor records until stopped by hand ({self.sensor.no_heartbeat_watch})"
        self._agent_event("start", msg)
        if self._watch is not None:  # recorded like any process: this names it as ours (`forensix ps`, `tree`)
            self._agent_event("orphan-watch", f"forensix {__version__} orphan watch started (pid {self._watch.proc.pid}): "
                              "detaches this recorder's pinned sensor if the recorder dies", pid=self._watch.proc.pid)
        for note in self.notes:
            self._agent_event("warning", f"store recovery: {note}")
        self._agent_event("clock-sync", f"offset_ns={self.clock.offset_ns} error_ns={self.clock.sample.error_ns}")
        self._syslog: SystemLogFollower | None = None
        if self.system_logs:
            from forensix.imports import Host

            self._syslog = SystemLogFollower(Host(self.host.host_id, self.host.host_name, self.host.boot_id),
                                             self.system_logs, lambda t: self._emit("events", t))
            self._syslog.start()
        if adopt:
            self._adopted_gap(accounted[1])
        self.heartbeat()  # resumes an adopted sensor the watch had stopped, with its gap
        self.yielding.start(self._backlog)  # start-up done: the workload comes first while there is room
        if self.on_ready is not None:
            self.on_ready()

    def _snapshot(self) -> None:
        rows = list(snapshot(self.decoder.ids, self.clock.offset_ns, self.config.netns))
        for r in rows:
            self.decoder.remember(r["entity_id"], r["pid"], r["parent_entity_id"], r["executable"], r["args"], r["working_directory"])
        if rows:
            self._emit("processes", self.decoder.process_rows(rows))
        files = list(open_files(self.config.netns))
        if files:
            ino, dev, paths = zip(*files)
            keys = self.decoder.label_key(np.array(ino, np.uint64), np.array(dev, np.uint64)).tolist()
            self.decoder.labels.update(zip(keys, paths))

    def stop(self, reason: str = "stopped") -> None:
        """Stop recording; ``reason`` goes into the stop record (``signal SIGTERM``...)."""
        self.stop_reason = reason
        self._stop.set()
        if self._pace is not None:
            self._pace.wake()

    def run(self, duration: float | None = None, command: Sequence[str] | None = None) -> int | None:
        """Record until stopped, ``duration`` elapses, or ``command`` exits (its code is returned)."""
        self.start()
        child: subprocess.Popen[bytes] | None = None
        rc: int | None = None
        try:
            if command:
                # the workload keeps the user's umask, not the store's narrowed one (store/private.py)
                with nice_for_child(0):  # not the nice the recorder yields at (sensor/priority.py)
                    child = subprocess.Popen(list(command), umask=user_umask())
            deadline = time.monotonic() + duration if duration else None
            rc = self._loop(deadline, child)
        finally:
            if child is not None and child.poll() is None:
                child.terminate()
                rc = child.wait()
            self.finish()
        return rc

    def _loop(self, deadline: float | None, child: subprocess.Popen[bytes] | None) -> int | None:
        """Drain, flush and account until stopped; timers back off when nothing happens
        (sensor/pacing.py). Returns the command's exit code if it ended the recording."""
        pace = self._pace = self._pacer_cls([r.fd for r in self.rings], self.poll_interval, self.batch_interval,
                                            self.flow_interval, self.idle_flow_interval,
                                            stretched_interval=self.stretched_interval)
        beat_every = _BEAT_INTERVAL
        if self.config.orphan_timeout_s > 0:  # the kernel's watch must never see a live agent as gone
            beat_every = min(beat_every, self.config.orphan_timeout_s / 4)
        now = time.monotonic()
        next_flow = next_clock = next_stats = next_beat = next_accounts = now
        last_events = 0
        woke = False
        try:
            while not self._stop.is_set():
                # Decoding has a fixed cost per batch (~100 vectorised calls): drain when
                # a ring is a quarter full or batch_interval has passed, not on every tick.
                # The flow flush takes the maps, then drains (the opens that name the edges'
                # files are in the ring by then): that drain is the tick's batch.
                now = time.monotonic()
                got = 0
                drain = woke or pace.drain_due(now) or self._rings_filling()
                flows_due = pace.flush_due(now, next_flow, draining=drain)
                moved = 0
                if flows_due:  # the flush drains once, after taking the maps: one batch, not two
                    moved = self.flush_flows(drain=True)
                    got = self._flush_drained
                    pace.drained(got, now)
                    self.account_losses()
                    next_flow = now + pace.flushed(moved, now)  # its drain was counted by drained()
                elif drain:
                    got = self.poll_once()
                    pace.drained(got, now)
                if got or moved:  # the live rules evaluate the tick once the writer handed it all over
                    self._writer.after_written(self._tick_written)
                if self.yielding.enabled:  # the experiment (sensor/priority.py), off by default
                    self.yielding.update(self._backlog())
                now = time.monotonic()
                if now >= next_beat:
                    self.heartbeat()
                    next_beat = now + beat_every
                if now >= next_clock:
                    self._resync_clock()
                    give_back_free_memory()
                    next_clock = now + self.clock_interval
                if now >= next_accounts:  # idle, a ring record (the write) or a flush wakes the loop first
                    self._poll_accounts()
                    next_accounts = now + self.accounts_interval
                if self.on_stats and now >= next_stats:
                    self.stats.rate = float(self.stats.events - last_events)
                    last_events = self.stats.events
                    self.on_stats(self.stats)
                    next_stats = now + 1.0
                if child is not None and child.poll() is not None:
                    self.stop_reason = f"command exited ({child.returncode})"
                    return child.returncode
                if deadline is not None and now >= deadline:
                    self.stop_reason = "duration reached"
                    return None
                woke = False
                self.yielding.active(pace.busy(now))  # its watch looks at the backlog while records arrive
                due = [next_flow, next_clock, next_beat] + [d for d in (deadline,) if d is not None]
                if self.on_stats:
                    due.append(next_stats)
                # a command that exits is seen within a second
                wait = min(min(due) - now, 1.0 if child is not None else 3600.0)
                if pace.busy(now):
                    if not got or not self._rings_filling():
                        self._busy_sleep(pace, min(wait, pace.last_drain + pace.drain_every - now))
                else:  # nothing for a batch interval: sleep until a record or a timer
                    if any(r.unread() for r in self.rings) or (len(self._hold) and self._writer.has_room()):
                        woke = True  # records came since the drain (or wait in the hold): take them now
                    else:  # records read and not stored yet: wait for the writer, not the rings
                        woke = pace.sleep_idle(wait, rings=lambda: not any(r.pending() for r in self.rings))
            return None
        finally:
            pace.close()

    def _busy_sleep(self, pace: Pacer, until_due: float) -> None:
        """Between drains while records arrive, until the next drain or timer. Records read
        and not stored yet: a tick every ``poll_interval`` (the writer gives their space
        back, and a ring past a quarter is drained at once). Records unread only: asleep on
        the rings edge-triggered (``Pacer.sleep_busy``): the sensor wakes the loop when a
        record takes a ring past a quarter (bpf/sensor.bpf.c fx_wake_flags), so a build's
        trickle of records no longer wakes it 20 times a second to look (an adopted sensor's
        programs may not force that wake-up: the ticks stay). Every ring empty (drained,
        stored and given back): asleep in epoll, and the kernel wakes it for the first
        record written into an empty ring (flags 0); the record is not drained at once (it
        waits for the drain, as every record of a busy loop does): a kept-alive web server's
        records come in a burst after each flow-map flush, and the loop ticked 20 times a
        second for the 1.5 s after the burst was stored, until it was idle again.

        Records read and not stored yet while the writer has room (its sinks take a while: a
        build's batch is held until the nice-19 reader has read its new executables,
        artifacts/defer.py) need no tick either when the sensor forces its wake-ups: the ring
        past a quarter wakes the loop (the kernel counts the held records in its fill), and
        the writer wakes it once it gave their space back (``_released``). The loop ticked 16
        times a second through a lua build for that wait. The tick stays while the writer has
        no room (a storm: the loop takes the rings again as soon as it has)."""
        held = any(r.pending() > r.unread() for r in self.rings)
        unread = any(r.unread() for r in self.rings)
        if (held and not (self._kernel_wakes and self._writer.has_room())) or (not self._kernel_wakes and unread):
            pace.busy_sleeps += 1
            self._stop.wait(self.poll_interval)
        elif held or unread:
            pace.sleep_busy(max(until_due, self.poll_interval))
        else:
            pace.sleep_idle(max(until_due, self.poll_interval))

    def finish(self) -> None:
        """Take everything still in the kernel, account for it, and close the sinks."""
        if self.sensor is None:
            return
        self.yielding.stop()  # the user waits for the last drain and seal now
        try:
            self.sensor.pause()
            time.sleep(0.05)  # records reserved just before the pause are committed by now
            # until the rings and the hold are empty (a writer that died leaves the hold: its error is raised below)
            while self.poll_once(wait=60.0) or (len(self._hold) and self._writer.is_alive()):
                pass
            follower = getattr(self, "_syslog", None)
            if follower is not None:
                follower.stop()  # its last lines before the stop record
            self.flush_flows(final=True)
            self._flush_tty_cuts()
            self._drop_walks_due = 1  # the last pass walks the per-process drop map whatever the counters say
            self.account_losses()
            self._poll_accounts()  # a change in the last second is stored too
            self._agent_event("counters", self._counters_json())
            if isinstance(self._writer, HeldWriter):
                self._writer.release(wait=True)  # the batches still held: their files read now
            if self.artifacts is not None:
                try:
                    self._ship_artifacts(once=False)
                    self._agent_event("artifacts", self.artifacts.summary())
                    self.artifacts.close()  # its reader: every file read by now
                except Exception as e:  # noqa: BLE001 - logged there; the stop record still goes out
                    self._artifacts_failed(e)
            self.stats.cpu_s = {
                "drainer": round(time.thread_time() - self._cpu0[0], 3),
                "writer": round(self._writer.cpu_s, 3),
                "process": round(time.process_time() - self._cpu0[1], 3),
            }
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in self.stats.cpu_s.items())
            cpu += " (drainer by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in self.stats.stages.items()) + ")"
            cpu += (f"; {self.stats.drains} drains with records, {self.stats.flushes} flow-map flushes "
                    f"({self.stats.walks_skipped} hash map walks skipped: nothing inserted)")
            self.stats.hold_peak = self._hold.peak
            cpu += (f"; network records in the agent's hold: peak {self._hold.peak / 2**20:.1f} MiB "
                    f"(bound {self._hold.limit / 2**20:.0f} MiB)")
            y = self.yielding
            self.stats.boosts = y.boosts
            yielded = (f"; yielded the CPU at nice {y.nice} while the backlog was under {y.boost_at:.1%} "
                       f"(peak {y.peak:.1%}, back at nice 0 {y.boosts} times)" if y.enabled else "")
            self._agent_event(
                "stop",
                f"reason={self.stop_reason}; recorded {self.stats.events} {self.counted}, "
                f"{self.stats.dropped} lost in the kernel, {self.stats.gaps} gap records; "
                f"agent CPU s since start: {cpu}{yielded}",
            )
            self._writer.finish()
            self._writer.end_sinks()
        finally:
            for r in getattr(self, "rings", []):
                r.close()
            slots = getattr(self, "_slots", None)
            if slots is not None:
                slots.close()
            if self._watch is not None:
                self._watch.close()
            if self.config.pin_dir is not None:
                self.sensor.release_pins(self.config.pin_dir)  # a clean stop: nothing outlives us
            if self.detach_in_background:
                self.sensor.detach_in_background()
            self.sensor.close()
            self.sensor = None

    # -- the hot loop --------------------------------------------------------------
    def _backlog(self) -> list[float]:
        """How full each ring and the writer's queue are (what the rings hold until stored)."""
        return [r.pending() / r.size for r in self.rings] + [self._writer.backlog()]

    def _rings_filling(self) -> bool:
        """A ring a quarter full, or a hold of as many network records (their ring space
        given back) while the writer has room for them: the hold is caught up at once."""
        hold = getattr(self, "_hold", None)
        return (any(r.pending() > r.size // 4 for r in self.rings)
                or bool(hold is not None and hold.nbytes > self.rings[1].size // 4 and self._writer.has_room()))

    def poll_once(self, wait: float = 0.0) -> int:
        """Drain the process ring, the network ring into the hold, then the held network
        records and the main ring if the writer has room for them.

        The process ring goes first so that parents precede children, and always, so
        that back-pressure from bulk file events never reaches it. The network ring is
        taken whatever the writer's room, into a bounded hold (sensor/hold.py): its records
        are distinct facts, and the kernel counts no repeats of them as it does of the main
        ring's opens. ``wait``: how long to wait for room for the rest (the final drain
        waits). Returns the records taken from the rings and the hold.
        """
        proc_ring, net_ring, main_ring = self.rings
        hold = self._hold
        t0 = time.thread_time()
        proc = proc_ring.drain(max_bytes=16 << 20, hold=True)
        took = len(proc) + hold.fill(net_ring)
        bulk_drains: list[Drained] = []
        if self._writer.has_room() or self._writer.wait_for_room(wait):
            bulk_drains = [hold.take(16 << 20)]
            # a hold past half its bound has the writer's room to itself: the main ring's
            # records wait in the kernel, which counts their repeats (not those of the network's)
            if hold.nbytes <= hold.limit // 2:
                bulk_drains.append(main_ring.drain(max_bytes=16 << 20, hold=True))
                # an exec committed after the process ring's drain has file and network records
                # of its new image in the rings drained since: its record comes in this batch
                # too (the sensor submits it before the image runs), or the rules would see
                # them a tick before the image and evaluate them without it (an allow-list by
                # image raising for an allowed tool, a rule on the image missing). Contiguous
                # with the first drain, so the join still starts at that drain's position.
                later = proc_ring.drain(max_bytes=16 << 20, hold=True)
                if len(later):
                    took += len(later)
                    proc = Drained.join([proc, later])
        # else the kernel rings and the hold keep them meanwhile; the rings count what they cannot
        named = [(i, d) for i, d in enumerate((proc, *bulk_drains)) if len(d)]  # (ring index, drain)
        drains = [d for _, d in named]
        if self.artifacts is not None:  # every drained exec's file is in its queue by now
            unheld = self.artifacts.poll_hold()
            if unheld:
                self._agent_event("warning", unheld)
        self._stage("drain", time.thread_time() - t0)
        self._release_early()
        if not drains:
            return took
        took += sum(len(d) for d in bulk_drains[1:])
        bulk = any(len(d) for d in bulk_drains)
        self.stats.drains += 1
        self.stats.ring_bytes += sum(len(d.data) for d in drains)
        self._handle_drains(named, bulk)
        t1 = time.thread_time()
        took += hold.fill(net_ring)  # what came during the decode (~0.3 s a tick on web-conn; longer starved)
        self._release_early()
        self._stage("drain", time.thread_time() - t1)
        held = [(proc_ring, proc_ring.pos), (net_ring, hold.handed), (main_ring, main_ring.pos)]
        self._writer.after_written(lambda: self._released(held))
        return took

    def _release_early(self) -> None:
        """The space goes back to the kernel once the records are in the store: an agent
        killed before that leaves them in the (pinned) ring for the next one. Unless a ring
        is half full with records read and not yet stored (held, or with the writer): then
        the kernel needs the space more than a crash would (a storm, a connection flood,
        while the writer is behind), and a next agent is told that it cannot know what
        this one held (FXACC_EARLY)."""
        early = [r for r in self.rings if r.pos - r.released() > r.size // 2]
        if early:
            with self._acc_lock:
                self._write_accounted({ACC_EARLY: 1})
                for r in early:
                    r.release()

    def _tick_written(self) -> None:
        """On the writer thread, once a drain tick's batches are all with the sinks: a sink
        that gathers batches for a while (the live rules: ``tick_end``) need not wait for
        more. Without this the rules waited ``max_delay`` (0.25 s) after the first batch of
        every tick, which the stretched drain period (sensor/pacing.py) cannot afford."""
        for s in self._writer.live_sinks():
            end = getattr(s, "tick_end", None)
            if end is None:
                continue
            try:
                end()
            except Exception as e:  # a hint only: the sink's own timer still evaluates
                log.debug("tick_end of a sink failed", exc_info=e)

    def _stage(self, name: str, cpu_s: float) -> None:
        """The drainer's CPU by stage, for the stop record (what a build pays for, and where)."""
        self.stats.stages[name] = self.stats.stages.get(name, 0.0) + cpu_s

    def _handle_drains(self, named: list[tuple[int, Drained]], bulk: bool) -> None:
        """Decode a drain tick's records (ring index, drain) and hand them on (agent/raw.py
        ships them as they are)."""
        drains = [d for _, d in named]
        t1 = time.thread_time()
        # One batch for both rings: decoding costs ~1.5 ms per batch whatever its size,
        # and a drain of the process ring holds a few dozen records.
        tables = self.decoder.decode(Drained.join(drains))
        t2 = time.thread_time()
        self._stage("decode", t2 - t1)
        if self.artifacts is not None:
            try:
                later = self.artifacts.annotate_later(tables)  # big files opened now, read at nice 19
                held = self._writer if isinstance(self._writer, HeldWriter) else None
                if held is not None and not later.ready():
                    ev = tables.get("events")
                    held.hold(later, bulk, 0 if ev is None else ev.num_rows)
                    self.artifacts.overdue(held)
                    self._ship_artifacts(once=True)
                    self._stage("artifacts", time.thread_time() - t2)
                    return
                tables = later.tables()  # new tables: on a raise the decoded ones go on
                if held is not None:
                    self.artifacts.overdue(held)
                self._ship_artifacts(once=True)
            except Exception as e:  # noqa: BLE001 - logged there: a bug keeping executables must not stop recording
                self._artifacts_failed(e)
        t3 = time.thread_time()
        self._stage("artifacts", t3 - t2)
        for table, data in tables.items():
            self._emit(table, data, bulk=bulk and table != "processes")
        self._stage("queue", time.thread_time() - t3)

    def _released(self, held: list[tuple[RingBuffer, int]]) -> None:
        """On the writer thread: the records read up to each ring's ``held`` position are
        stored; their space goes back to the kernel."""
        with self._acc_lock:  # an early release (the drainer) and this write FXACC_EARLY in turn
            for ring, pos in held:
                if pos > ring.released():
                    ring.release(pos)
            slots = {ACC_LAST_WRITE: time.clock_gettime_ns(time.CLOCK_BOOTTIME)}
            if all(pos >= ring.released() for ring, pos in held):
                # every record whose space went back is stored: those read since are still in the ring
                slots[ACC_EARLY] = 0
            self._write_accounted(slots)
        pace = self._pace
        # an idle loop waits for the space to sleep on the rings again (``awaiting_writer``); any
        # other sleep of the loop ends at its drain or a kernel wake-up, so it is woken only if
        # that cannot wait (a ring a quarter full, a hold to hand on): woken at every give-back,
        # a build's loop woke ~once a tick for nothing (~70-100 µs of CPU a wake-up in this VM)
        if pace is not None and (pace.awaiting_writer or not self._kernel_wakes or len(self._hold)
                                 or self._rings_filling()):
            pace.wake()

    # -- what survives the agent: the `accounted` map (sensor/survival.py) ------------
    def _read_accounted(self) -> tuple[np.ndarray, int]:
        """Drops already written as gaps, per (cpu, class), and the last write's boot ns."""
        assert self.sensor is not None
        out, last_write, self._early_before = read_accounted(self.sensor.map_fd("accounted"), self._ncpu, self._ncls)
        return out, last_write

    def _write_accounted(self, slots: dict[int, int]) -> None:
        if self.sensor is not None:
            write_accounted(self.sensor.map_fd("accounted"), slots)

    def _adopted_gap(self, last_write_boot: int) -> None:
        rows, message, ts = restart_gap(self.host, self.clock.offset_ns, last_write_boot, self._early_before)
        self.stats.gaps += rows.num_rows
        self._emit("gaps", rows)
        self._agent_event("gap", message, ts=ts)

    def heartbeat(self) -> None:
        """Tell the kernel's heartbeat watch that an agent runs the sensor (bpf/sensor.bpf.c).

        If the watch stopped recording meanwhile (this agent stalled longer than the orphan
        timeout), the pause is written as a gap with its cause, and recording resumes."""
        if self.sensor is None or self.config.pin_dir is None:
            return
        ctl = self.sensor.read_control()
        self._orphan_gap(ctl)
        self.sensor.beat(ctl)

    def _orphan_gap(self, ctl: dict[str, int]) -> None:
        gap = orphan_gap(ctl, self.host, self.clock.offset_ns, self.sensor.detached_at if self.sensor else 0)
        if self.sensor is not None:
            self.sensor.detached_at = 0
        if gap is not None:
            rows, message, ts = gap
            self.stats.gaps += rows.num_rows
            self._emit("gaps", rows)
            self._agent_event("gap", message, ts=ts)

    def _emit(self, table: str, data: pa.Table, bulk: bool = False) -> None:
        self._count(table, data)
        self._writer.put(table, data, bulk=bulk)

    def _count(self, table: str, data: pa.Table) -> None:
        with self._count_lock:
            if table == "events":
                self.stats.events += data.num_rows
            elif table == "processes":
                self.stats.processes += data.num_rows
            elif table == "flows":
                self.stats.flows += data.num_rows

    # -- flows, losses, clock ------------------------------------------------------
    def flush_flows(self, final: bool = False, drain: bool = False) -> int:
        """Move the aggregated edges out of the kernel maps: reads/writes, and re-opens.

        The per-CPU slots in front of the maps (sensor/slots.py) are taken with them: the
        bank the programs filled until now, and at the end (``final``, recording paused)
        the other one too.

        Rows are named from the open records decoded so far. A file opened and written after
        the last drain has its open still in the ring: drain once more when a regular file's
        edge or count would go out unnamed (taken after the maps, so every open that comes
        before an entry of theirs is in the ring by then). ``drain``: drain in any case, as
        the loop's batch at a flush tick (``_flush_drained`` records); a drain just before
        the flush and one inside it were two batches, each with the decoder's, the
        sinks' and the rules' fixed cost, for records a few ms apart."""
        t0 = time.thread_time()
        self.stats.flushes += 1
        banks = []
        if self._slots is not None:
            banks.append(self._slots.flip())
            if final:
                banks.append(banks[0] ^ 1)
        fk, fv = self._take_inserted("flows", ACC_FLOW_INSERTS, self._fkdt, self._fvdt, final)
        ok, ov = self._take_inserted("reopens", ACC_OPEN_INSERTS, self._okdt, self._ovdt, final)
        for bank in banks:
            assert self._slots is not None
            fk, fv = merge_flows(fk, fv, *self._slots.take("flow_slots", bank))
            ok, ov = merge_reopens(ok, ov, *self._slots.take("open_slots", bank))
        if self._legacy_slots is not None:  # both banks: their programs are detached
            fk, fv, ok, ov = self._take_legacy_slots(self._legacy_slots, fk, fv, ok, ov)
            self._legacy_slots = None
        regular = (fv["imode"] & 0o170000) == 0o100000
        counted = ov["count"] > 0  # an entry without repeats is not written (its open was)
        self._stage("flow maps", time.thread_time() - t0)
        self._flush_drained = 0
        if drain or not (self.decoder.named(fk["ino"][regular], fk["dev"][regular])
                         and self.decoder.named(ok["ino"][counted], ok["dev"][counted])):
            self._flush_drained = self.poll_once()
        t1 = time.thread_time()
        if len(fv):
            self._emit_flows(fk, fv)
        if len(ov):
            self._emit_reopens(ok, ov)
        self._stage("flows", time.thread_time() - t1)
        if not final:  # the end ships all that is left anyway
            self._ship_quiet()
        return len(fv) + len(ov)

    def _take_inserted(self, name: str, key: int, kdt: np.dtype, vdt: np.dtype,
                       final: bool) -> tuple[np.ndarray, np.ndarray]:
        """``_take_map`` of the flows or reopens hash map, unless the programs inserted nothing
        since the last take: they count their inserts (bpf/events.h FX_ACC_*_INSERTS), after
        each one, and the count is read before the walk, so an entry the walk misses moves the
        count and is taken at the next flush. A build's edges stay in the slots and the spill:
        the flows map's walk of 65,536 empty buckets, ~0.2 ms with its copies, found nothing in
        every flush. The count of programs that do not keep it (an adopted older sensor's) is
        not trusted: their maps are walked every flush; so is every map at the first flush
        and the last."""
        n = None
        if self._counting and self.sensor is not None:  # read by the bank's flip, or here
            n = self._slots.words.get(key) if self._slots is not None else None
            n = read_slot(self.sensor.map_fd("accounted"), key) if n is None else n
        if n is not None and not final and self._inserts_seen.get(name) == n:
            self.stats.walks_skipped += 1
            return np.empty(0, kdt), np.empty(0, vdt)
        self._inserts_seen[name] = n
        return self._take_map(name, kdt, vdt)

    @staticmethod
    def _take_legacy_slots(slots: SlotCaches, fk: np.ndarray, fv: np.ndarray, ok: np.ndarray,
                           ov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        for bank in (0, 1):
            for name in slots.names:
                if name == "flow_slots":
                    fk, fv = merge_flows(fk, fv, *slots.take(name, bank))
                else:
                    ok, ov = merge_reopens(ok, ov, *slots.take(name, bank))
        slots.close()
        return fk, fv, ok, ov

    # when kept executables' bytes were last handed on (time.monotonic): see _ship_quiet
    _blobs_at = 0.0

    def _ship_artifacts(self, once: bool) -> None:
        """Bytes of newly kept executables for the sinks (an agent ships them), a bounded
        amount per batch; at the end, all that is left."""
        assert self.artifacts is not None
        self._blobs_at = time.monotonic()
        while (blobs := self.artifacts.blobs_to_ship()) is not None:
            self._emit("artifact_blobs", blobs)
            if once:
                return

    def _ship_quiet(self) -> None:
        """A drain tick with no record ships no kept file's bytes (``_handle_drains`` does): on
        a host gone quiet after an intruder's run, the rest of a big tool's bytes stayed on this
        host, its artifacts row shipped without them, until the next record or the agent's stop.
        The flow flush runs every few seconds, records or not, and calls this."""
        if self.artifacts is None or time.monotonic() - self._blobs_at < 1.0:
            return
        try:
            self._ship_artifacts(once=True)
        except Exception as e:  # noqa: BLE001 - logged there: a bug keeping executables must not stop recording
            self._artifacts_failed(e)

    def _artifacts_failed(self, e: Exception) -> None:
        msg = (f"executable preservation (artifacts) failed and is disabled; recording goes on without "
               f"copies of executed files: {type(e).__name__}: {e}; fix: restart the recorder to keep them "
               "again, or record with --no-artifacts (--log-level debug logs the traceback)")
        log.error("%s", msg)
        log.debug("traceback", exc_info=e)
        if self.artifacts is not None:
            self.artifacts.stop_hold()  # its queue would pin executed files for nothing
        self.artifacts = None
        self._agent_event("warning", msg)

    def _flush_tty_cuts(self) -> None:
        """Terminal bytes cut in the last second that no later record reported (sensor/tty.py)."""
        try:
            self._take_tty_cuts()
        except Exception as e:  # the last second's cut terminal bytes; the stop record still goes out
            log.error("the last terminal bytes cut could not be recorded: %s: %s (--log-level debug logs the "
                      "traceback, for a bug report)", type(e).__name__, e)
            log.debug("the traceback", exc_info=e)
            self._agent_event("warning", f"the last terminal bytes cut could not be recorded: {type(e).__name__}: {e}")

    def _take_tty_cuts(self) -> None:
        from forensix.sensor.tty import budget_cuts

        if "fx_tty_budget" not in self.abi["structs"]:
            return
        keys, vals = self._take_map("tty_budget", np.dtype(np.uint32), struct_dtype(self.abi, "fx_tty_budget"))
        cuts = budget_cuts(self.decoder, keys, vals, self.decoder.tty_names)
        if cuts is not None:
            self._emit("tty", cuts)

    def _take_map(self, name: str, kdt: np.dtype, vdt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Look up and delete every entry of a hash map, atomically per entry."""
        assert self.sensor is not None
        fd = self.sensor.map_fd(name)
        n = 4096
        # the batch's buffers, kept: ~0.5 MB for flows, fresh each flush they were mapped and
        # faulted in again by the kernel's copy (~0.1 ms a map and flush)
        if name not in self._map_buffers:
            self._map_buffers[name] = (np.zeros(n, kdt), np.zeros(n, vdt))
        keys, vals = self._map_buffers[name]
        token_in = ctypes.c_uint32(0)
        token_out = ctypes.c_uint32(0)
        first = True
        got_k, got_v = [], []
        while True:
            count = ctypes.c_uint32(n)
            ret = lb.lib.bpf_map_lookup_and_delete_batch(
                fd, None if first else ctypes.byref(token_in), ctypes.byref(token_out),
                keys.ctypes.data, vals.ctypes.data, ctypes.byref(count), None,
            )
            err = -ret if ret < -1 else (ctypes.get_errno() if ret == -1 else 0)
            if count.value:
                got_k.append(keys[: count.value].copy())
                got_v.append(vals[: count.value].copy())
            if ret < 0:
                if err not in (errno.ENOENT, 0):
                    self._agent_event("warning", f"{name} map flush stopped: {os.strerror(err)}")
                break
            token_in.value = token_out.value
            first = False
        if not got_v:
            return keys[:0].copy(), vals[:0].copy()
        if len(got_v) == 1:
            return got_k[0], got_v[0]
        return np.concatenate(got_k), np.concatenate(got_v)

    def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
        """One summary row per (process, file) that re-opened it read-only in the period."""
        rows = reopen_rows(self.decoder, self.host, self.clock.offset_ns, k, v)
        if rows is not None:
            self._emit("events", rows)

    def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
        """The edges flushed from the kernel's map (sensor/maprows.py)."""
        with self._count_lock:
            self.stats.events += len(v)  # each edge is a row of the events view too
        self._emit("flows", flow_rows(self.decoder, self.host, self.clock.offset_ns, k, v))

    def _resync_clock(self) -> None:
        moved = self.clock.resync()
        self.decoder.offset_ns = self.clock.offset_ns
        if moved:
            old, new = moved
            self._agent_event("clock-sync", f"offset_ns {old.offset_ns} -> {new.offset_ns} (error {new.error_ns} ns)")

    # -- agent records ---------------------------------------------------------------
    def _agent_event(self, action: str, message: str, ts: int | None = None, pid: int | None = None) -> None:
        t = time.time_ns() if ts is None else ts
        row = {
            "host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id,
            "ts": t, "event_kind": "event", "event_category": "agent", "event_action": action,
            "process_pid": os.getpid() if pid is None else pid, "message": message,
        }
        self._emit("events", pa.Table.from_pylist([row], schema=schema.EVENTS))

    def _poll_accounts(self) -> None:
        """Store the user and group files if they changed (two stat calls when they did not)."""
        said = len(self.accounts.errors)
        rows = self.accounts.poll()
        if rows is not None:
            self._emit("accounts", rows)
        for msg in self.accounts.errors[said:]:
            self._agent_event("warning", f"users and groups: {msg}; uids of this host are shown as numbers")

    def _host_row(self) -> pa.Table:
        return pa.Table.from_pylist([{
            "host_id": self.host.host_id, "host_name": self.host.host_name, "boot_id": self.host.boot_id,
            "kernel": self.host.kernel, "first_seen": time.time_ns(), "boot_ts": self.clock.offset_ns,
            "agent_version": __version__,
        }], schema=schema.HOSTS)
