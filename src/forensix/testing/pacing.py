"""A recorder loop that is idle whatever the host does (tests of the idle path).

On a shared host a recorder is never idle: somebody's records always arrive, and the loop
keeps ticking. ``AlwaysIdle`` makes it behave as on a quiet host: no tick and no batch
timer, so records are drained only when the kernel wakes the loop (epoll on the rings)
or a flow-map flush falls due. What such a loop stores, and how soon, is what an idle
recorder delivers.
"""

from __future__ import annotations

from forensix.sensor.pacing import Pacer

__all__ = ["AlwaysBusy", "AlwaysIdle"]


class AlwaysIdle(Pacer):
    def busy(self, now: float) -> bool:
        return False


class AlwaysBusy(Pacer):
    """A loop that believes records keep arriving, whatever the host does (tests of the busy
    path's wake-ups: with its sensor paused, its rings stay empty)."""

    def busy(self, now: float) -> bool:
        return True
