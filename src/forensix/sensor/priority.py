"""An experiment, off by default (``forensix record --yield-nice 19``, hidden): the recorder
yields the CPU to the workload while it can lag, and stops yielding once its backlog grows.

Why it is off: measured on this machine kind (2 cores, load 5-18 from other work), nicing
the recorder's own threads is not safe in one Python process.
- The GIL: a niced thread that holds it and is not scheduled (both cores busy at nice 0)
  holds up every other thread of the recorder, the drain included, for a scheduling period
  of a nice-19 task (tens of ms) per hand-over.
- The heartbeat: with ``--orphan-timeout 3`` the niced loop missed it and the kernel's watch
  paused the sensor (tests/sensor/test_orphan.py: agent-absent gaps, records not taken).
- A storm bigger than the rings: an 8 MiB ring under two CPU hogs lost about as much with it
  as without it (41k and 49k of ~110k records); a 64 MiB ring lost nothing either way.
What is safe is a separate process: the store keeper seals at nice 19 (store/keeper.py) and
cannot hold the drain up; its start-up, its queries and the final seal run at 0.

The design, for a later recorder whose drain does not share a GIL with the rest:

Why: on this machine kind (2 cores) a `make -j2` uses both cores, and every CPU-second the
recorder spends at the workload's priority comes out of the build (the zstd library built
+4.8% slower, issue 25). Most of the recorder's work can wait seconds without harm: the
kernel's rings hold the records (64 MiB main ring on 24 GiB), the writer's queue holds
decoded batches, journals hold stored rows. So while there is room, every thread of the
recorder runs at nice ``TRY_NICE``: the scheduler gives it the cores the workload leaves
idle (a build's serial steps, its I/O waits, the end of a build), and only a ~1.5% share
of a busy core. Once a ring or the writer's queue fills past ``BOOST_AT`` of its size, the
recorder goes back to nice 0 at once (until it is below ``CALM_AT``): nothing is lost that
would not be lost at nice 0, and the rings still have 7/8 of their room left.

Scope: nice values count between the threads of one scheduling group. `forensix record --
COMMAND`, a bench that starts both, or a service in the same cgroup as the workload share
it; with autogroups on (sched_autogroup_enabled), a recorder started from another terminal
session competes as its own group whatever its threads' nice, and a unit's CPUWeight= is
what decides under systemd.

Raising the priority again needs CAP_SYS_NICE (root has it). Where it is refused, the
recorder never lowers it in the first place: a thread that could not get back to nice 0
would hold the rings in a storm.

Who notices the backlog: not the niced threads themselves. A batch the drainer decodes at
nice 19 while both cores are busy at nice 0 takes ~70x its CPU time in wall time, and the
ring filled meanwhile (an 8 MiB ring lost 28k of 60k records under two CPU hogs when only
the drainer looked, between batches). A watch thread that stays at nice 0 looks every
``WATCH_S`` while records arrive, and blocks while the recorder is idle (no wake-ups).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

__all__ = ["BOOST_AT", "CALM_AT", "LAG_NICE", "TRY_NICE", "Yielding", "thread_nice"]

# nice of the recorder's threads while it may lag (weight 15 against a build's 1024 per task);
# 0: the recorder does not yield (the default, see above)
LAG_NICE = 0
TRY_NICE = 19  # what the experiment was measured with
# fraction of a ring (or the writer's queue) in use past which the recorder stops yielding;
# it yields again once every one is under CALM_AT
BOOST_AT = 1 / 8
CALM_AT = 1 / 32
# seconds between the watch's looks while records arrive: an 8 MiB eighth of a 64 MiB ring
# takes a storm of ~1 M records/s longer than this to fill
WATCH_S = 0.02


def thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _tids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: only the calling thread
        return [threading.get_native_id()]


class Yielding:
    """Sets the nice value of every thread of this process (threads started later inherit
    their creator's): ``LAG_NICE`` while the backlog is small, 0 while it is not."""

    def __init__(self, nice: int = LAG_NICE, boost_at: float = BOOST_AT, calm_at: float = CALM_AT,
                 watch_s: float = WATCH_S) -> None:
        self.nice = nice
        self.boost_at = boost_at
        self.calm_at = calm_at
        self.watch_s = watch_s
        self.enabled = nice > 0 and self._can_come_back()
        self.boosted = True  # at nice 0 until start()
        self.boosts = 0  # times the backlog made it stop yielding
        self.peak = 0.0  # largest backlog fraction seen
        self._lock = threading.Lock()
        self._active = threading.Event()  # records arrive: the watch looks
        self._done = threading.Event()
        self._watch: threading.Thread | None = None
        self._watch_tid = 0

    def _can_come_back(self) -> bool:
        """Whether this process may go back to nice 0 after lowering itself (CAP_SYS_NICE)."""
        me = threading.get_native_id()
        was = thread_nice(me)
        if was != 0:  # started niced by the user: their choice, left alone
            return False
        try:
            os.setpriority(os.PRIO_PROCESS, me, 1)
            os.setpriority(os.PRIO_PROCESS, me, 0)
        except OSError:
            try:
                os.setpriority(os.PRIO_PROCESS, me, was)
            except OSError:
                pass
            return False
        return True

    def start(self, backlog: Callable[[], Iterable[float]] | None = None) -> None:
        """Begin yielding (after start-up: the sensor is attached and the start record out);
        ``backlog``: what the watch thread reads (the fractions ``update`` takes)."""
        if not self.enabled:
            return
        if backlog is not None:
            ready = threading.Event()
            self._watch = threading.Thread(target=self._watching, args=(backlog, ready), name="fx-yield", daemon=True)
            self._watch.start()
            ready.wait()
        with self._lock:
            self._set(self.nice)
            self.boosted = False

    def active(self, busy: bool) -> None:
        """Whether records arrive (the watch looks) or the recorder is idle (it blocks)."""
        if busy != self._active.is_set():
            self._active.set() if busy else self._active.clear()

    def update(self, fractions: Iterable[float]) -> None:
        """The backlog now, as fractions of each ring's and queue's room in use."""
        if not self.enabled:
            return
        worst = max(fractions, default=0.0)
        with self._lock:
            if self._done.is_set():
                return
            self.peak = max(self.peak, worst)
            if not self.boosted and worst >= self.boost_at:
                self._set(0)
                self.boosted = True
                self.boosts += 1
            elif self.boosted and worst < self.calm_at:
                self._set(self.nice)
                self.boosted = False

    def stop(self) -> None:
        """Back to nice 0 for good: the final drain and the seal of the last journals run
        while the user waits for `forensix record` to exit."""
        with self._lock:
            self._done.set()
            if self.enabled and not self.boosted:
                self._set(0)
            self.boosted = True
        self._active.set()  # a watch blocked on it ends
        if self._watch is not None:
            self._watch.join(5)

    def _watching(self, backlog: Callable[[], Iterable[float]], ready: threading.Event) -> None:
        from forensix.threadname import name_native_thread

        name_native_thread()
        self._watch_tid = threading.get_native_id()
        ready.set()
        while not self._done.is_set():
            self._active.wait()
            self.update(backlog())
            self._done.wait(self.watch_s)

    def _set(self, nice: int) -> None:
        for tid in _tids():
            if tid == self._watch_tid:  # the watch stays at nice 0: it is what notices a storm
                continue
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:  # a thread that just exited
                pass
