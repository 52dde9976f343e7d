"""The live rule engine, a ``Sink``: the recorder hands it every batch, it raises alerts.

Rules are grouped by log source; a batch is first cut down to the rows of each log
source (one vectorised predicate), only those rows get the derived columns, and each
rule's detection is evaluated on them. Alerts go to every output (the store sink, a
print callback, JSON lines, a webhook) as soon as the batch is evaluated.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from forensix.rules import fields as F
from forensix.rules.alerts import AlertOutput, RuleMeta, build_alerts, empty_alerts
from forensix.rules.compile import CompiledRule, Node, columns_of
from forensix.rules.detectors import Detector
from forensix.rules.live import Evaluator, ProcessContext, enrich
from forensix.rules.sql import SUMMARY_DERIVED

__all__ = ["EngineStats", "LiveEngine", "meta_of"]


def meta_of(rule: CompiledRule) -> RuleMeta:
    return RuleMeta(rule.rule_id, rule.title, rule.level, tuple(rule.tags))


@dataclass
class EngineStats:
    batches: int = 0
    events: int = 0
    alerts: int = 0
    cpu_s: float = 0.0


@dataclass
class _Group:
    scope: Node
    rules: list[CompiledRule]
    derived: list[str]


class LiveEngine:
    """Evaluates rules and detectors on every batch it is given (implements ``Sink``)."""

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        *,
        detectors: Sequence[Detector] = (),
        outputs: Sequence[AlertOutput] = (),
        source: str = "live",
        context: ProcessContext | None = None,
    ) -> None:
        self.rules = [r for r in rules if r.ok]
        self.detectors = list(detectors)
        self.outputs = list(outputs)
        self.source = source
        self.context = context or ProcessContext()
        self.stats = EngineStats()
        self._groups = self._group(self.rules)

    @staticmethod
    def _group(rules: Sequence[CompiledRule]) -> list[_Group]:
        groups: dict[Node, list[CompiledRule]] = {}
        for r in rules:
            groups.setdefault(r.scope, []).append(r)
        out = []
        for scope, rs in groups.items():
            cols: set[str] = set()
            for r in rs:
                cols |= columns_of(r.body)
            out.append(_Group(scope, rs, [d for d in F.DERIVED if d in cols]))
        return out

    # -- Sink -------------------------------------------------------------------------
    def write(self, table: str, data: pa.Table) -> None:
        t0 = time.process_time()
        alerts = [self.observe(table, data)]
        alerts = [a for a in alerts if a.num_rows]
        self.stats.cpu_s += time.process_time() - t0
        if alerts:
            self._emit(pa.concat_tables(alerts))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        for o in self.outputs:
            o.close()

    # -- evaluation -------------------------------------------------------------------
    def observe(self, table: str, data: pa.Table) -> pa.Table:
        """Alerts raised by one batch (without emitting them)."""
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        parts = []
        if table == "processes":
            self.context.add_processes(data)
        elif table == "events":
            self.stats.batches += 1
            self.stats.events += data.num_rows
            self.context.add_events(data)
            parts.append(self.evaluate(data))
        for d in self.detectors:
            parts.append(d.observe(table, data, self.source))
        parts = [p for p in parts if p.num_rows]
        return pa.concat_tables(parts) if parts else empty_alerts()

    def evaluate(self, events: pa.Table) -> pa.Table:
        """Alerts of the Sigma rules for one events batch."""
        if events.num_rows == 0 or not self._groups:
            return empty_alerts()
        top = Evaluator(events)
        found = []
        for g in self._groups:
            mask = top.mask(g.scope)
            if not pc.any(mask).as_py():
                continue
            sub = events.filter(mask)
            ev = Evaluator(enrich(sub, g.derived, self.context))
            for rule in g.rules:
                m = ev.mask(rule.body)
                if not pc.any(m).as_py():
                    continue
                hits = enrich(ev.table.filter(m), SUMMARY_DERIVED, self.context)
                found.append(build_alerts(meta_of(rule), hits, self.source))
        return pa.concat_tables(found) if found else empty_alerts()

    def _emit(self, alerts: pa.Table) -> None:
        self.stats.alerts += alerts.num_rows
        for o in self.outputs:
            o.emit(alerts)
