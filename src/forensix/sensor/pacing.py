"""When the recorder's loop wakes up: often while records arrive, rarely when nothing happens.

While records arrive, the loop drains every ``batch_interval`` and a ring a quarter full at
once (a storm must not wait for the batch timer). Between drains it sleeps on the rings
edge-triggered (``sleep_busy``): the sensor forces a wake-up when a record takes a ring past
a quarter, and past each sixteenth after it (bpf/sensor.bpf.c ``fx_wake_flags``), so the
records that wait in the rings do not wake it; a build's trickle woke it 20 times a second
to look (``poll_interval``), ~2-4 ms of CPU a second. It still ticks every ``poll_interval``
while records are read and not stored yet and the writer has no room (a storm), and while it
drains an adopted sensor whose programs may not force wake-ups (``Recorder._busy_sleep``). With every
ring empty (drained, stored, given back) it sleeps in epoll until its next drain, and the
first record wakes it. Once a whole batch interval has brought nothing, it sleeps in epoll on
the rings: the kernel wakes it for the first record written into an empty ring (the
sensor submits with flags 0, bpf/sensor.bpf.c), so the first event after a quiet spell is
drained at once; otherwise it wakes only for its timers. The flow-map flush, which needs
no ring record to have work (a process writing to a file it opened long ago makes none),
backs off from ``flow_interval`` to ``idle_flow_interval`` while the host is calm: fewer
than ``CALM_PER_S`` map rows and ring records a second since the last flush (nothing at
all on an idle host). That is the longest an edge waits to be stored.

Why calm and not only idle: on a busy server that touches the same objects all the time (a
kept-alive web server serving the same 200 files), what the recorder stores is per flush
period, not per call: each file's first open of the period, one re-open count and one edge
per (process, object). A 1-s period made ~700 rows a second out of 120 k requests, and the
recorder's fixed cost per flush (take the maps, decode, name, store, evaluate the rules) was
most of its CPU there (docs/benchmarks.md, "Flushing less when the maps are far from full").
At ``idle_flow_interval`` the maps hold at most ~4 x CALM_PER_S rows between flushes, 1/16 of
the flows map; a storm of records (opens, connects: every new object comes with one) brings
the next flush back to ``flow_interval`` from the last one at once (``flush_due``).

While records arrive at fewer than ``FEW_PER_S`` a second (a build: ~1,300-4,000), the loop
drains (and flushes) every ``stretched_interval`` instead of every ``batch_interval``. Each
tick has a fixed cost whatever it carries (a decode ~1.5 ms, a rules round ~2.5 ms plus the
detectors, the flow flush's map calls, a journal append and fsync per table): on lua's 2.5-s
build that fixed part, not the events, was most of the recorder's CPU per busy second. A
record waits at most one drain period for the rules: with the recorder telling the live
engine when a tick's batches are all handed over (``LiveEngine.tick_end``), an alert comes
at most ``stretched_interval`` plus the evaluation after its event (docs/build-cost.md).
At ``FEW_PER_S`` and more the period is ``batch_interval`` again, from the next drain on;
a ring a quarter full is drained at once whatever the period.

An idle recorder on this machine woke ~30 times a second (20 of them this loop's ticks).
"""

from __future__ import annotations

import ctypes
import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CALM_PER_S", "FEW_PER_S", "IDLE_FLOW_INTERVAL", "STRETCH", "STRETCHED_INTERVAL", "Pacer",
           "give_back_free_memory"]

# Longest time between flow-map flushes while the host is calm: the latency bound of a flow
# edge (records in the rings wake the loop at once).
IDLE_FLOW_INTERVAL = 4.0
# Map rows plus ring records a second under which the flush period stretches: at
# IDLE_FLOW_INTERVAL that leaves the flows and reopens maps (65,536 entries each) at most
# ~1/16 full between flushes, and a web server's per-period rows were ~700 a second.
CALM_PER_S = 1024
# The drain period while records arrive at fewer than FEW_PER_S a second, as a multiple of the
# batch interval (a recorder asked to drain every 0.2 s drains every 0.3 s, not every 1.5 s),
# and what it is at the recorder's 1-s batch interval: the bound of an alert's wait for its
# drain (the goal is 2 s at worst: bench/alert_latency.py measured it).
STRETCH = 1.5
STRETCHED_INTERVAL = 1.0 * STRETCH
# Ring records a second from which the drain period is batch_interval again: 1.5 s of them is
# ~12 k records, ~1/5 of the flow maps' 65,536 entries if each made an edge, ~5 MB of a ring.
FEW_PER_S = 8192


class Pacer:
    def __init__(self, ring_fds: Sequence[int], poll_interval: float, batch_interval: float,
                 flow_interval: float, idle_flow_interval: float = IDLE_FLOW_INTERVAL,
                 stretched_interval: float | None = None) -> None:
        """``stretched_interval``: the drain period while few records arrive (module doc);
        None: always ``batch_interval``."""
        self.poll_interval = poll_interval
        self.batch_interval = batch_interval
        self.stretched_interval = max(stretched_interval or batch_interval, batch_interval)
        self.drain_every = batch_interval  # the drain period now: batch_interval or stretched_interval
        self.flow_interval = flow_interval
        self.idle_flow_interval = max(idle_flow_interval, flow_interval)
        self.flow_every = flow_interval
        self.last_records = self.last_flush = self.last_drain = time.monotonic()
        self.records_since_flush = 0  # ring records drained since the last flow-map flush
        self._epoll = select.epoll()
        # the same rings edge-triggered: woken by the kernel's wake-ups only, not by records
        # that wait in them (sleep_busy)
        self._edges = select.epoll()
        for fd in ring_fds:
            self._epoll.register(fd, select.EPOLLIN)
            self._edges.register(fd, select.EPOLLIN | select.EPOLLET)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._edges.register(self._wake_r, select.EPOLLIN)
        self.wakeups = 0  # times the kernel woke an idle loop with a record
        self.busy_sleeps = 0  # times a busy loop slept between drains (sleep_busy and Recorder._busy_sleep)
        # about to wait, or waiting, for the writer's give-back (sleep_idle with the rings left
        # out): the only sleep its wake() must end (Recorder._released)
        self.awaiting_writer = False
        self._closed = False

    def drained(self, records: int, now: float) -> None:
        """A drain took ``records``: the next drain comes ``drain_every`` later, stretched
        while they came at fewer than FEW_PER_S a second (over the time since the last
        drain, at least a batch interval: a ring drained early for being a quarter full
        holds many records in little time)."""
        if records:
            self.last_records = now
            self.records_since_flush += records
        seconds = max(now - self.last_drain, self.batch_interval)
        self.last_drain = now
        self.drain_every = self.batch_interval if records >= FEW_PER_S * seconds else self.stretched_interval

    def drain_due(self, now: float) -> bool:
        return now - self.last_drain >= self.drain_every

    def flushed(self, rows: int, now: float | None = None) -> float:
        """Seconds until the next flow-map flush, given the map rows this one moved and the
        records drained since the last: the period doubles (up to ``idle_flow_interval``)
        while both come at fewer than CALM_PER_S a second, and is the drain period again
        (``flow_interval`` or more: the flush drains, one tick for both) as soon as they do
        not."""
        now = time.monotonic() if now is None else now
        seconds = max(now - self.last_flush, self.flow_interval)
        calm = rows + self.records_since_flush < CALM_PER_S * seconds
        busy = max(self.flow_interval, self.drain_every)
        self.flow_every = min(max(self.flow_every, busy) * 2, self.idle_flow_interval) if calm else busy
        self.last_flush = now
        self.records_since_flush = 0
        return self.flow_every

    def flush_due(self, now: float, next_flow: float, draining: bool = False) -> bool:
        """The flush is due at ``next_flow``, or one drain period (at least ``flow_interval``)
        after the last one once the records since then say the host is no longer calm (a
        storm of new objects must not wait for a stretched period: their edges would fill
        the maps). ``draining``: a drain is due now; a flush due within half a drain period
        comes with it (one tick, not a drain and a flush apart: a stretched flush period fell
        between drains, and each is a tick with its fixed cost); one due later waits for the
        drain after, at most half a period late (taken at the nearer drain, so the flush
        period keeps its length on average)."""
        if draining and next_flow - now <= self.drain_every / 2:
            return True
        # while busy a drain comes within half a period of next_flow: the flush waits for it
        # (a loop that stopped draining still flushes a period late); idle, it is due on time
        if now >= next_flow + (self.drain_every if self.busy(now) else 0.0):
            return True
        stormy = self.records_since_flush >= CALM_PER_S * self.flow_interval
        return stormy and now - self.last_flush >= max(self.flow_interval, self.drain_every)

    def busy(self, now: float) -> bool:
        """Records came within the last drain period: keep ticking (an idle loop drains at
        once what waits in the rings: with a shorter bound, the stretched period would end
        at batch_interval)."""
        return now - self.last_records < max(self.batch_interval, self.drain_every)

    def sleep_idle(self, timeout: float, rings: bool | Callable[[], bool] = True) -> bool:
        """Sleep until a ring gets a record (``rings``), ``wake()`` is called, or ``timeout``;
        True if a ring woke it. The rings' epoll is level-triggered on records whose space
        is not given back yet: while the writer holds some, wait for its ``wake()`` only.
        ``rings`` a callable: asked once ``awaiting_writer`` is set, so that a give-back
        after its answer finds the flag and wakes this sleep."""
        timeout = max(timeout, 0.0)
        self.awaiting_writer = True
        try:
            watch = rings() if callable(rings) else rings
            self.awaiting_writer = not watch  # asleep on the rings, it needs no give-back's wake-up
            return self._sleep_idle(timeout, watch)
        finally:
            self.awaiting_writer = False

    def _sleep_idle(self, timeout: float, rings: bool) -> bool:
        if rings:
            events = self._epoll.poll(timeout)
        else:
            # poll, not select: select refuses a descriptor >= 1024, which a recorder with many
            # files open gets for its wake pipe (the loop would raise and stop draining)
            waker = select.poll()
            waker.register(self._wake_r, select.POLLIN)
            events = waker.poll(timeout * 1000)
        ring = False
        for fd, _ in events:
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 1 << 16)  # every wake-up pending
                except BlockingIOError:
                    pass
            else:
                ring = True
        if ring:
            self.wakeups += 1
        return ring

    def sleep_busy(self, timeout: float) -> bool:
        """Between drains while records arrive: sleep until ``timeout`` (the next drain), a
        ``wake()``, or a wake-up from the kernel, which the sensor forces when a record takes a
        ring past a quarter and each sixteenth after it (bpf/sensor.bpf.c fx_wake_flags), and
        gives for a record written into an empty ring. The rings are edge-triggered here: the
        records waiting in them do not wake it, so a build's steady trickle costs ~2 wake-ups a
        drain period instead of one every ``poll_interval``. True if a ring woke it (a wake-up
        that came while the loop was awake is reported by the next sleep, at once)."""
        self.busy_sleeps += 1
        ring = False
        for fd, _ in self._edges.poll(max(timeout, 0.0)):
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 1 << 16)
                except BlockingIOError:
                    pass
            else:
                ring = True
        return ring

    def wake(self) -> None:
        """Wake a loop asleep in ``sleep_idle``: stop() (safe in a signal handler), and the
        writer once it gave ring space back."""
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already, or the pacer is closed

    def close(self) -> None:
        self._closed = True
        self._epoll.close()
        self._edges.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


_malloc_trim: Any
try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def give_back_free_memory() -> None:
    """Return to the kernel what glibc's malloc holds free (pyarrow allocates there:
    recorder.use_system_allocator). A busy second leaves tens of MB of freed batches in
    malloc's arenas, resident until reused: ~30 MB of an idle recorder's RSS after a few
    thousand events/s. A few ms, every clock resync."""
    if _malloc_trim is not None:
        _malloc_trim(0)
