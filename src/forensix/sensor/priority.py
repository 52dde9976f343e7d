"""The recorder yields the CPU to the workload while it can lag, and stops yielding before it
could lose anything.

Why: on this machine kind (2 cores) a `make -j2` uses both cores, and every CPU-second the
recorder spends at the workload's priority comes out of the build (the zstd library built
+4.8% slower, issue 25). Most of the recorder's work can wait seconds without harm: the
kernel's rings hold the records (64 MiB main ring on 24 GiB), the writer's queue holds
decoded batches, journals hold stored rows. So while there is room, every thread of the
recorder runs at nice ``LAG_NICE``: the scheduler gives it the cores the workload leaves
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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

__all__ = ["BOOST_AT", "CALM_AT", "LAG_NICE", "Yielding", "thread_nice"]

# nice of the recorder's threads while it may lag: weight 15 against a build's 1024 per task
LAG_NICE = 19
# fraction of a ring (or the writer's queue) in use past which the recorder stops yielding;
# it yields again once every one is under CALM_AT
BOOST_AT = 1 / 8
CALM_AT = 1 / 32


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

    def __init__(self, nice: int = LAG_NICE, boost_at: float = BOOST_AT, calm_at: float = CALM_AT) -> None:
        self.nice = nice
        self.boost_at = boost_at
        self.calm_at = calm_at
        self.enabled = nice > 0 and self._can_come_back()
        self.boosted = True  # at nice 0 until start()
        self.boosts = 0  # times the backlog made it stop yielding
        self.peak = 0.0  # largest backlog fraction seen

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

    def start(self) -> None:
        """Begin yielding (after start-up: the sensor is attached and the start record out)."""
        if self.enabled:
            self._set(self.nice)
            self.boosted = False

    def update(self, fractions: Iterable[float]) -> None:
        """The backlog now, as fractions of each ring's and queue's room in use."""
        if not self.enabled:
            return
        worst = max(fractions, default=0.0)
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
        if self.enabled and not self.boosted:
            self._set(0)
        self.boosted = True

    def _set(self, nice: int) -> None:
        for tid in _tids():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:  # a thread that just exited
                pass
