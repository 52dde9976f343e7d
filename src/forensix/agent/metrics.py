"""The agent's Prometheus metrics: what it recorded, lost, spooled, shipped and had refused.

Read at scrape time from the shipping sink, its spool and its shipper thread (their own
counters), so shipping pays nothing per frame for them. Shipping lag is the age of the
oldest frame the log host has not acknowledged: zero while the log host keeps up, growing
while it is unreachable or refuses the connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from forensix import __version__
from forensix.agent.shipping import ShippingSink
from forensix.metrics import RowCounter, lost_family

__all__ = ["AgentCollector"]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class AgentCollector(Collector):
    def __init__(self, sink: ShippingSink, rows: RowCounter) -> None:
        self.sink = sink
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        yield from self._recorded()
        yield from self._spool()
        yield from self._shipping()

    def _recorded(self) -> Iterator[Metric]:
        yield from (m for m in self.rows.collect() if m.name != "forensix_lost_events")
        _, lost = self.rows.snapshot()
        if self.sink.lost_rows_total:  # rows the full spool could not keep (the gap says when)
            key = ("any", "spool-full")
            lost[key] = lost.get(key, 0) + self.sink.lost_rows_total
        yield lost_family("forensix_lost_events", lost)

    def _spool(self) -> Iterator[Metric]:
        sp = self.sink.spool
        yield _gauge("forensix_agent_spool_bytes", "Bytes in the spool (unacknowledged frames, the "
                     "chain's last segment, refused frames)", sp.bytes + sp.refused_bytes)
        yield _gauge("forensix_agent_spool_limit_bytes", "The spool's size limit (--spool-max)", sp.max_bytes)
        yield _gauge("forensix_agent_spool_unacked_frames", "Frames spooled and not yet acknowledged",
                     sp.unacked())
        yield _gauge("forensix_agent_spool_refused_frames", "Frames the log host refused, kept in "
                     "SPOOL/refused and not resent", len(sp.refused))
        yield _counter("forensix_agent_spool_full_batches", "Batches not spooled because the spool "
                       "was full", self.sink.lost_batches_total)

    def _shipping(self) -> Iterator[Metric]:
        st = self.sink.shipper.stats
        sp = self.sink.spool
        oldest = sp.oldest_unacked_ns()
        lag = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest else 0.0
        yield _gauge("forensix_agent_shipping_lag_seconds", "Age of the oldest frame the log host has "
                     "not acknowledged (0 when all are)", lag)
        yield _counter("forensix_agent_frames_sealed", "Frames sealed and spooled", sp.frames_spooled)
        yield _counter("forensix_agent_frames_sent", "Frames sent to the log host (resends included)",
                       st.sent)
        yield _counter("forensix_agent_frames_acked", "Frames the log host acknowledged (durably stored)",
                       sp.frames_acked)
        yield _counter("forensix_agent_frames_refused", "Frames the log host refused for good",
                       st.refused)
        yield _gauge("forensix_agent_connected", "1 while connected to the log host", int(st.connected))
        yield _counter("forensix_agent_connects", "Connections made to the log host", st.connects)
        yield _gauge("forensix_agent_last_ack_timestamp_seconds", "When the log host last acknowledged "
                     "a frame (Unix time; 0: never since start)", st.last_ack_ns / 1e9)
        info = InfoMetricFamily("forensix_agent", "This agent: its enrolled name, log host, stream")
        info.add_metric([], {"host": self.sink.config.host, "server": "{}:{}".format(*self.sink.config.server),
                             "stream": sp.stream.hex(), "version": __version__})
        yield info
