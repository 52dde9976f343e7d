"""Operating a fleet's log host: revocation cut-off, idle cost of open connections, scrape time.

    python bench/ops_bench.py [--hosts 200] [--revocations 5] [--out docs/benchmarks-ops.md]

One log host (`LogServer`, in this process) with one open, idle, authenticated TLS connection
per enrolled host (real certificates from a fresh CA). Measures
  1. revocation cut-off: from `Authority.revoke(HOST)` returning to HOST's client reading the
     log host's `E` (its connection closed), for a few hosts, one at a time, among the rest;
  2. the log host's CPU while every connection is idle (threads waiting in select on their
     socket and the shared wake-up pipe; the monitor and the CRL watcher running);
  3. one scrape of the log host's /metrics over HTTP with that many hosts.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import ssl
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from forensix.agent import wire
from forensix.metrics import serve_metrics
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.server.listener import LogServer, ServerConfig
from forensix.store.embedded import open_writer


def _connect(pki: Authority, host: str, addr: tuple[str, int]) -> ssl.SSLSocket:
    b = pki.bundle(host)
    ctx = client_context(b.ca, b.cert, b.key)
    s = ctx.wrap_socket(socket.create_connection(addr, timeout=30), server_hostname="forensix-server")
    wire.send(s, b"H", {"host": host, "stream": os.urandom(16).hex(), "agent_start_ns": time.time_ns()})
    kind, _ = wire.recv(s)
    assert kind == b"W", kind
    return s


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run(hosts: int, revocations: int, tmp: Path) -> dict[str, Any]:
    pki = Authority(tmp / "pki")
    pki.init()
    names = [f"h{i:04d}" for i in range(hosts)]
    for n in names:
        pki.issue(n)
    store = open_writer(tmp / "fleet.duckdb")
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), tmp / "evidence", silence_s=600), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    ep = serve_metrics(srv.metrics.registry, ("127.0.0.1", 0))
    try:
        t0 = time.monotonic()
        conns = {n: _connect(pki, n, addr) for n in names}
        connect_s = time.monotonic() - t0
        time.sleep(1.0)
        c0, w0 = _cpu(), time.monotonic()
        time.sleep(5.0)
        idle_cpu = (_cpu() - c0) / (time.monotonic() - w0)
        scrapes = []
        for _ in range(5):
            s0 = time.perf_counter()
            body = httpx.get(ep.url, timeout=30).text
            scrapes.append(time.perf_counter() - s0)
        assert body.count("forensix_server_host_connections{") == hosts
        cut = []
        for n in names[:revocations]:
            s = conns.pop(n)
            s.settimeout(10)
            pki.revoke(n)
            r0 = time.monotonic()
            kind, why = wire.recv(s)
            cut.append(time.monotonic() - r0)
            assert kind == b"E" and b"was revoked" in why, (kind, why)
            s.close()
        for s in conns.values():
            s.close()
    finally:
        ep.stop()
        srv.stop()
        t.join(timeout=10)
        store.close()
    return {"hosts": hosts, "connect_s": connect_s, "idle_cpu": idle_cpu, "scrape_ms": statistics.median(scrapes) * 1e3,
            "scrape_bytes": len(body), "cut_ms": [c * 1e3 for c in cut]}


def render(r: dict[str, Any], a: argparse.Namespace) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cut = r["cut_ms"]
    load = os.getloadavg()[0]
    return "\n".join([
        "# Operating a log host: revocation, idle connections, metrics",
        "",
        (f"Measured {now} on {platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}, load "
         f"average {load:.1f} at the end) with `python bench/ops_bench.py --hosts {a.hosts} "
         f"--revocations {a.revocations}`."),
        f"One log host in process, {r['hosts']} enrolled hosts each holding one idle authenticated TLS 1.3",
        f"connection (opened in {r['connect_s']:.1f} s).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| revocation cut-off, `revoke` returned → the host read `E` (median of {len(cut)}) | {statistics.median(cut):.0f} ms |",
        f"| revocation cut-off, slowest | {max(cut):.0f} ms |",
        f"| log host CPU with {r['hosts']} idle connections | {r['idle_cpu'] * 100:.2f} % of one core |",
        f"| one /metrics scrape with {r['hosts']} hosts (median of 5) | {r['scrape_ms']:.1f} ms, {r['scrape_bytes']:,} bytes |",
        "",
        "The cut-off is bounded by the CRL poll (0.2 s) plus one wake-up; idle connections are threads",
        "waiting in `select` on their socket and one shared wake-up pipe, so they cost nothing until",
        "something happens. The CPU figure includes the monitor (checkpoints, silence) and the CRL watcher.",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--revocations", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks-ops.md")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fx-ops-bench-"))
    try:
        r = run(a.hosts, a.revocations, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = render(r, a)
    Path(a.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
