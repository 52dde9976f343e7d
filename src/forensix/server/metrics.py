"""The log host's Prometheus metrics.

Events as they happen (frames, bytes, refusals, rows stored, store insert latency, events
the agents lost) are prometheus-client counters and a histogram; the state of the fleet
(connections, each host's last message and last frame, silence, evidence bytes, the ingest
queue) is read from the server at scrape time. A host that stops reporting is one query:

    forensix_server_host_silent == 1
    time() - forensix_server_host_last_seen_timestamp_seconds > 60
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from forensix.server.listener import LogServer

__all__ = ["ServerMetrics"]

# DuckDB's append costs ~11 ms whatever its size here; ClickHouse inserts are slower.
_INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics(Collector):
    def __init__(self, server: LogServer) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("forensix_server_frames_received", "Frames received, per host (resends "
                              "included)", ["host"], registry=r)
        self.acked = Counter("forensix_server_frames_acked", "Frames written to evidence and "
                             "acknowledged, per host", ["host"], registry=r)
        self.bytes = Counter("forensix_server_evidence_written_bytes", "Bytes of frames written to "
                             "evidence, per host", ["host"], registry=r)
        self.refused = Counter("forensix_server_refused", "Connections and frames refused, per host and "
                               "kind (revoked, connections, streams, quota, disk, frame, protocol, ...)",
                               ["host", "kind"], registry=r)
        self.evidence_errors = Counter("forensix_server_evidence_write_errors", "Failed writes into the "
                                       "evidence directory (frames, checkpoints, stream files), per host and "
                                       "errno (ENOSPC, EIO, EROFS, EACCES, ...)", ["host", "error"], registry=r)
        self.cutoffs = Counter("forensix_server_revocation_cutoffs", "Open connections closed because "
                               "their certificate was revoked", ["host"], registry=r)
        self.rows = Counter("forensix_server_rows_stored", "Rows appended to the store, per table "
                            "(events/s: rate of table=events)", ["table"], registry=r)
        self.lost = Counter("forensix_server_lost_events", "Events the agents report lost (their gaps "
                            "records), per host, class and reason", ["host", "class", "reason"], registry=r)
        self.insert = Histogram("forensix_server_store_insert_seconds", "Time of one store append (one "
                                "table, coalesced frames)", ["table"], buckets=_INSERT_BUCKETS, registry=r)
        self.quarantined = Counter("forensix_server_store_quarantined_frames", "Frames the store refused "
                                   "--store-attempts times, set aside (kept in evidence, not ingested; "
                                   "forensix server --reingest tries them again), per host and table",
                                   ["host", "table"], registry=r)
        self.store_errors = Counter("forensix_server_store_append_errors", "Failed store appends, by kind: "
                                    "transient (the store away: retried for ever) or refused (the rows: "
                                    "retried, then quarantined)", ["kind", "error"], registry=r)
        r.register(self)

    def store_error(self, err: BaseException, transient: bool) -> None:
        self.store_errors.labels("transient" if transient else "refused", type(err).__name__).inc()

    def appended(self, table: str, rows: int, seconds: float) -> None:
        self.rows.labels(table).inc(rows)
        self.insert.labels(table).observe(seconds)

    def lost_events(self, host: str, lost: dict[tuple[str, str], int]) -> None:
        for (cls, reason), n in lost.items():
            self.lost.labels(host, cls, reason).inc(n)

    def collect(self) -> Iterator[Metric]:
        srv = self.server
        silence = srv.config.silence_s
        now = time.time_ns()
        conns = GaugeMetricFamily("forensix_server_host_connections", "Open agent connections, per host",
                                  labels=["host"])
        seen = GaugeMetricFamily("forensix_server_host_last_seen_timestamp_seconds", "When a host last "
                                 "sent anything (frame, heartbeat, hello), Unix time", labels=["host"])
        frame = GaugeMetricFamily("forensix_server_host_last_frame_timestamp_seconds", "When a host's "
                                  "last frame was stored, Unix time (0: none since start)", labels=["host"])
        silent = GaugeMetricFamily("forensix_server_host_silent", f"1 when a host has said nothing for "
                                   f"more than --silence ({silence:g} s)", labels=["host"])
        ev = GaugeMetricFamily("forensix_server_host_evidence_bytes", "Bytes of evidence a host keeps "
                               "on the log host (limit: forensix_server_limit{limit=\"host_evidence_bytes\"})",
                               labels=["host"])
        total = 0
        for host, st in srv.host_states():
            n = len(st.sessions)
            total += n
            conns.add_metric([host], n)
            seen.add_metric([host], st.last_seen / 1e9)
            frame.add_metric([host], st.last_frame_ns / 1e9)
            silent.add_metric([host], int(now - st.last_seen > silence * 1e9))
            if st.evidence_bytes is not None:
                ev.add_metric([host], st.evidence_bytes)
        yield GaugeMetricFamily("forensix_server_connected_agents", "Authenticated agent connections "
                                "open now", value=total)
        yield from (conns, seen, frame, silent, ev)
        yield GaugeMetricFamily("forensix_server_ingest_queue", "Batches acknowledged and waiting for "
                                "the store", value=srv.ingest.queued())
        held = GaugeMetricFamily("forensix_server_host_not_ingested_frames", "Frames of a host quarantined "
                                 "(in the evidence, not in the store), per host", labels=["host"])
        for host, n in sorted(srv.not_ingested().items()):
            held.add_metric([host], n)
        yield held
        lim = GaugeMetricFamily("forensix_server_limit", "Per-host limits (0: none)", labels=["limit"])
        lim.add_metric(["host_connections"], srv.limits.connections)
        lim.add_metric(["host_streams"], srv.limits.streams)
        lim.add_metric(["host_evidence_bytes"], srv.limits.evidence_bytes)
        lim.add_metric(["min_free_bytes"], srv.limits.min_free_bytes)
        lim.add_metric(["evidence_attempts"], srv.limits.evidence_attempts)
        lim.add_metric(["store_attempts"], srv.config.store_attempts)
        yield lim
