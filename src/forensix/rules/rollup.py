"""A hunt's findings rolled up per rule: what an investigator reads first.

A fleet hunt can return tens of thousands of findings (a rule matching every exec of a
fleet: one per process). Read one line each, the few that matter drown. The roll-up says
per rule how many findings and matching events, on how many hosts, from when to when, and
which hosts have most of them; the findings themselves are asked for on purpose
(``forensix hunt --detail`` / ``--limit``). Most severe rules first, then the noisiest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = ["ROLLUP", "TOP_HOSTS", "rollup"]

TOP_HOSTS = 3  # hosts named per rule; the rest are counted
_SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4}

ROLLUP = pa.schema([
    pa.field("level", pa.string()),
    pa.field("rule", pa.string()),
    pa.field("rule_id", pa.string()),
    pa.field("findings", pa.uint64()),
    pa.field("matches", pa.uint64()),  # matching events the findings stand for
    pa.field("hosts", pa.uint64()),
    pa.field("first_ts", pa.int64()),
    pa.field("last_ts", pa.int64()),
    pa.field("top_hosts", pa.string()),  # "web01 (40), db02 (3), +12 more hosts"
])


@dataclass
class _Rule:
    level: str
    rule: str
    rule_id: str
    first_ts: int
    last_ts: int
    findings: int = 0
    matches: int = 0
    hosts: Counter[str] = field(default_factory=Counter)  # host -> its findings


def _top(findings: Counter[str], top: int) -> str:
    ranked = sorted(findings.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{h} ({n})" for h, n in ranked[:top])
    more = len(ranked) - top
    return text + (f", +{more} more host{'s' if more > 1 else ''}" if more > 0 else "")


def rollup(alerts: pa.Table, top: int = TOP_HOSTS, counted: pa.Table | None = None) -> pa.Table:
    """One row per rule of ``alerts`` (a hunt's findings, or their heads: ``grouping.HEADS``)
    and ``counted`` (findings counted per rule and host, without a row each: rule_id,
    rule_title, rule_level, host_name, findings, matches, ts, last_ts): findings, matching
    events, hosts, first and last time, the ``top`` hosts with most findings. Sorted by
    level (critical first), then findings (most first), then rule title."""
    per: dict[str, _Rule] = {}

    def add(rid: str, title: str | None, level: str | None, host: str, ts: int, last: int, n: int, m: int) -> None:
        r = per.get(rid)
        if r is None:
            r = per[rid] = _Rule(level or "", title or rid, rid, ts, last)
        r.findings += n
        r.matches += m
        r.first_ts = min(r.first_ts, ts)
        r.last_ts = max(r.last_ts, last)
        r.hosts[host] += n

    cols = ("rule_id", "rule_title", "rule_level", "host_name", "host_id", "ts", "last_ts", "alert_count")
    for rid, title, level, name, hid, ts, last, count in zip(*(alerts.column(c).to_pylist() for c in cols),
                                                              strict=True):
        add(rid, title, level, name or hid or "?", ts, last or ts, 1, int(count or 1))
    if counted is not None:
        cols = ("rule_id", "rule_title", "rule_level", "host_name", "ts", "last_ts", "findings", "matches")
        for rid, title, level, host, ts, last, n, m in zip(*(counted.column(c).to_pylist() for c in cols),
                                                            strict=True):
            add(rid, title, level, host or "?", ts, last, int(n), int(m))
    ranked = sorted(per.values(), key=lambda r: (_SEVERITY.get(r.level.lower(), 5), -r.findings, r.rule))
    return pa.Table.from_pylist([
        {"level": r.level, "rule": r.rule, "rule_id": r.rule_id, "findings": r.findings, "matches": r.matches,
         "hosts": len(r.hosts), "first_ts": r.first_ts, "last_ts": r.last_ts, "top_hosts": _top(r.hosts, top)}
        for r in ranked], schema=ROLLUP)
