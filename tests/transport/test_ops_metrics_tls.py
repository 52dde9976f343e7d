"""The log host's /metrics off loopback: mutual TLS 1.3, named scrapers only, revocation honoured.

A real CA, a real TLS server (forensix.metrics) scraped with real client certificates."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Counter

from forensix.cli.main import cli
from forensix.metrics import MetricsAccess, serve_metrics
from forensix.pki.authority import Authority
from forensix.pki.tls import RevocationList, client_context, server_context


def _scrape(url: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_only_named_unrevoked_scrapers_read_the_log_hosts_metrics(pki: Authority) -> None:
    pki.issue("prometheus")
    reg = CollectorRegistry()
    Counter("forensix_server_frames", "frames", registry=reg).inc(7)
    access = MetricsAccess(server_context(pki.ca_cert_path, pki.server_cert_path, pki.server_key_path),
                           frozenset({"prometheus", "gamma"}), RevocationList(pki.crl_path, pki.ca_cert_path))
    ep = serve_metrics(reg, ("127.0.0.1", 0), access)
    try:
        assert ep.url.startswith("https://127.0.0.1:")

        def ctx(host: str) -> ssl.SSLContext:
            b = pki.bundle(host)
            return client_context(b.ca, b.cert, b.key)

        code, body = _scrape(ep.url, ctx("prometheus"))
        assert code == 200 and "forensix_server_frames_total 7.0" in body
        code, body = _scrape(ep.url, ctx("alpha"))  # a host of the fleet, not a scraper
        assert code == 403 and "'alpha' is not an allowed metrics client" in body
        code, body = _scrape(ep.url, ctx("gamma"))  # allowed by name, but revoked
        assert code == 403 and "revoked" in body
        anon = ssl.create_default_context(cafile=str(pki.ca_cert_path))  # no client certificate
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _scrape(ep.url, anon)
        plain = ep.url.replace("https://", "http://")  # plain HTTP gets nothing either
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(plain, timeout=10).read()
        # and the server still serves the allowed scraper after all that
        assert _scrape(ep.url, ctx("prometheus"))[0] == 200
    finally:
        ep.stop()


def test_metrics_off_loopback_need_named_scrapers(pki: Authority) -> None:
    r = CliRunner().invoke(cli, ["server", "--pki", str(pki.dir), "--listen", "127.0.0.1:0",
                                 "--metrics", "0.0.0.0:0", "--store", "/nonexistent/x.duckdb"])
    assert r.exit_code == 2
    assert "would be open to anyone" in r.output and "--metrics-client NAME" in r.output
    r = CliRunner().invoke(cli, ["server", "--pki", str(pki.dir), "--metrics-client", "prometheus"])
    assert r.exit_code == 2 and "--metrics-client without --metrics" in r.output
