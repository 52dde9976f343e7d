"""Summaries of repeated measurements: median, min, max, ratio to the baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summarize(values: list[float]) -> Summary | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base
