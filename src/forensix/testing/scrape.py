"""Reading a Prometheus ``/metrics`` page in tests, the way a Prometheus server would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "sample", "scrape"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page over HTTP, by (name, sorted labels)."""
    text = httpx.get(url, timeout=5).text
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value (``name`` as exposed, e.g. ``..._total``), or None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))
