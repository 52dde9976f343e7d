"""Prometheus metrics shared by the recorder, the agent and the log host.

Each process keeps its own ``CollectorRegistry`` (never the global one: tests run several
servers and agents in one process) and serves it over HTTP with prometheus-client's own
server, on loopback unless told otherwise (the metrics name hosts and show what is lost).
Off loopback they are served only over mutual TLS 1.3 (``MetricsAccess``): the scraper
presents a certificate of the fleet's CA whose name is on the allow-list, not revoked.
Counts live in plain attributes of the objects that do the work and are read at scrape
time by collectors (``forensix.agent.metrics``, ``forensix.server.metrics``); the hot paths
pay an integer increment, never a label lookup.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pyarrow as pa
from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from forensix.errors import UsageError

__all__ = [
    "DEFAULT_METRICS_HOST",
    "MetricsAccess",
    "MetricsEndpoint",
    "RowCounter",
    "lost_by_class",
    "parse_metrics_address",
    "serve_metrics",
]

DEFAULT_METRICS_HOST = "127.0.0.1"


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``; a bare port binds to loopback."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_METRICS_HOST, text
    host = host.strip("[]") or DEFAULT_METRICS_HOST
    try:
        p = int(port)
        if not 0 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"{text!r} is not a metrics address",
                         "give PORT (on 127.0.0.1) or HOST:PORT, e.g. --metrics 127.0.0.1:9514") from None
    return host, p


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server; ``address`` is the bound one (port 0 resolved)."""

    server: Any
    thread: threading.Thread
    address: tuple[str, int]
    tls: bool = False

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


@dataclass
class MetricsAccess:
    """Who may scrape: TLS 1.3 with a client certificate of the fleet's CA (``context``, from
    ``forensix.pki.tls.server_context``), whose common name is in ``clients`` and, when the
    CRL is at hand (the log host), not revoked."""

    context: ssl.SSLContext
    clients: frozenset[str]
    revocations: Any = None  # forensix.pki.tls.RevocationList | None


_log = logging.getLogger("forensix.metrics")
_HANDSHAKE_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TLSServer(ThreadingMixIn, WSGIServer):
    """The handshake and the certificate checks run in the request's thread: a client that
    stalls its handshake holds only its own thread, for at most ``_HANDSHAKE_S``."""

    daemon_threads = True
    access: MetricsAccess

    def finish_request(self, request: Any, client_address: Any) -> None:
        from forensix.pki.authority import PKIError
        from forensix.pki.tls import peer_identity

        request.settimeout(_HANDSHAKE_S)
        try:
            request.do_handshake()
            name, serial = peer_identity(request)
        except (OSError, PKIError) as e:
            _log.info("metrics: refused %s: %s", client_address[0], e)
            return
        revoked = self.access.revocations is not None and self.access.revocations.is_revoked(serial)
        if name not in self.access.clients or revoked:
            why = "its certificate is revoked" if revoked else f"{name!r} is not an allowed metrics client"
            _log.warning("metrics: refused %s (%s): %s", client_address[0], name, why)
            body = f"forbidden: {why}\n".encode()
            try:
                request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            except OSError:
                pass
            return
        request.settimeout(None)
        super().finish_request(request, client_address)


class _TLSServer6(_TLSServer):
    address_family = socket.AF_INET6


def serve_metrics(registry: CollectorRegistry, address: tuple[str, int],
                  access: MetricsAccess | None = None) -> MetricsEndpoint:
    """Serve ``/metrics``: plain HTTP (loopback), or mutual TLS with ``access``."""
    host, port = address
    try:
        if access is None:
            server, thread = start_http_server(port, addr=host, registry=registry)
        else:
            cls = _TLSServer6 if ":" in host else _TLSServer
            server = make_server(host, port, make_wsgi_app(registry), cls, handler_class=_QuietHandler)
            server.access = access
            server.socket = access.context.wrap_socket(server.socket, server_side=True,
                                                       do_handshake_on_connect=False)
            thread = threading.Thread(target=server.serve_forever, name="fx-metrics", daemon=True)
            thread.start()
    except OSError as e:
        raise UsageError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}",
                         "pick a free port (or 0 for any) with --metrics HOST:PORT") from e
    bound = server.server_address
    return MetricsEndpoint(server, thread, (str(bound[0]), int(bound[1])), tls=access is not None)


def lost_by_class(gaps: pa.Table) -> dict[tuple[str, str], int]:
    """Rows a ``gaps`` batch says were lost, by (event class, reason)."""
    if gaps.num_rows == 0 or "count" not in gaps.column_names:
        return {}
    out: dict[tuple[str, str], int] = {}
    for cls, reason, n in zip(gaps.column("event_class").to_pylist(), gaps.column("reason").to_pylist(),
                              gaps.column("count").to_pylist(), strict=True):
        # spool-full gaps name the lost batches in their class ("batches:12"): the rows are of any class
        key = ("any" if cls is None or str(cls).startswith("batches") else str(cls), str(reason))
        out[key] = out.get(key, 0) + int(n or 0)
    return out


class RowCounter(Collector):
    """A sink (``forensix.agent.sink.Sink``) that counts what passes through it.

    Placed among the recorder's sinks it sees every batch: rows per table (events/s is
    ``rate(forensix_rows_total{table="events"}[1m])``) and, from the ``gaps`` batches the
    recorder writes when the kernel ring overflows, the events lost per class and reason.
    """

    def __init__(self, prefix: str = "forensix") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.rows: dict[str, int] = {}
        self.lost: dict[tuple[str, str], int] = {}

    def write(self, table: str, data: pa.Table) -> None:
        if table == "raw":  # a raw agent's kernel records (agent/raw.py): counted as the rows they become
            self._raw(data)
            return
        with self._lock:
            self.rows[table] = self.rows.get(table, 0) + data.num_rows
        if table == "gaps":
            self.add_lost(lost_by_class(data))

    def _raw(self, data: pa.Table) -> None:
        import json

        for kind, meta in zip(data.column("kind").to_pylist(), data.column("meta").to_pylist(), strict=True):
            table = {"ring": "events", "flows": "flows", "reopens": "events"}.get(kind)
            if table is not None:
                n = int(json.loads(meta).get("records" if kind == "ring" else "n", 0))
                with self._lock:
                    self.rows[table] = self.rows.get(table, 0) + n

    def add_lost(self, lost: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for k, n in lost.items():
                self.lost[k] = self.lost.get(k, 0) + n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        with self._lock:
            return dict(self.rows), dict(self.lost)

    def collect(self) -> Iterator[Metric]:
        rows, lost = self.snapshot()
        r = CounterMetricFamily(f"{self.prefix}_rows", "Rows recorded, per store table "
                                "(events/s: rate of table=events)", labels=["table"])
        for table in ("events", "processes", "flows", "gaps", "hosts", "alerts"):
            r.add_metric([table], rows.get(table, 0))
        yield r
        yield lost_family(f"{self.prefix}_lost_events", lost)


def lost_family(name: str, lost: dict[tuple[str, str], int]) -> CounterMetricFamily:
    f = CounterMetricFamily(name, "Events lost before they were stored, per event class and reason "
                            "(ringbuf-full, flowmap-full, spool-full, ...)", labels=["class", "reason"])
    for (cls, reason), n in sorted(lost.items()):
        f.add_metric([cls, reason], n)
    return f

