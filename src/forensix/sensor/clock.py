"""One clock: the kernel stamps CLOCK_BOOTTIME; we convert to UTC with a measured offset.

The offset is re-measured periodically; every measurement that moves it is written into
the stream (event_action ``clock-sync``) so that a clock step is visible in the evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Clock", "ClockSample"]


@dataclass(frozen=True)
class ClockSample:
    offset_ns: int  # UTC ns minus boot ns
    error_ns: int  # half the bracketing interval
    boot_ns: int


def _sample() -> ClockSample:
    best: ClockSample | None = None
    for _ in range(7):
        r1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        r2 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        s = ClockSample((r1 + r2) // 2 - b, (r2 - r1) // 2, b)
        if best is None or s.error_ns < best.error_ns:
            best = s
    assert best is not None
    return best


class Clock:
    def __init__(self) -> None:
        self.sample = _sample()

    @property
    def offset_ns(self) -> int:
        return self.sample.offset_ns

    def resync(self, tolerance_ns: int = 100_000) -> tuple[ClockSample, ClockSample] | None:
        """Measure again; return (old, new) when the offset moved by more than tolerance."""
        old, new = self.sample, _sample()
        self.sample = new
        if abs(new.offset_ns - old.offset_ns) > tolerance_ns:
            return old, new
        return None

    def boot_to_utc(self, boot_ns: int) -> int:
        return boot_ns + self.sample.offset_ns
