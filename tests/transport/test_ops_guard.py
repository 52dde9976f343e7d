"""A log host under hostile or broken agents: per-host caps, refused frames, the disk's floor.

In process, with real TLS and the real CA (conftest), a real DuckDB store and the real
/metrics endpoint; the agents are the real shipping sink or hand-made TLS clients."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.agent import wire
from forensix.metrics import serve_metrics
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.server.evidence import iter_segment
from forensix.server.guard import HostLimits
from forensix.server.listener import LogServer, ServerConfig
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for
from forensix.testing.scrape import sample, scrape
from forensix.testing.shipping import shipping_sink

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


class Guarded:
    def __init__(self, srv: LogServer, store: DuckDBStore, addr: tuple[str, int], evidence: Path,
                 url: str) -> None:
        self.srv, self.store, self.addr, self.evidence, self.url = srv, store, addr, evidence, url

    def alerts(self, host: str) -> list[dict[str, Any]]:
        self.srv.ingest.flush()
        rows: list[dict[str, Any]] = self.store.query(
            "SELECT rule_id, rule_title, summary FROM alerts WHERE host_name = $h AND rule_id = "
            "'forensix-host-refused' ORDER BY ts", {"h": host}).to_pylist()
        return rows

    def refusals(self) -> list[dict[str, Any]]:
        path = self.evidence / "refusals.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def guarded(pki: Authority, tmp_path: Path) -> Iterator[Callable[..., Guarded]]:
    running: list[tuple[LogServer, DuckDBStore, threading.Thread, Any]] = []

    def start(**limits: int) -> Guarded:
        store = open_writer(tmp_path / f"srv{len(running)}.duckdb")
        ev = tmp_path / f"srv{len(running)}.evidence"
        cfg = ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=30, checkpoint_s=0.2,
                           limits=HostLimits(**limits))
        srv = LogServer(cfg, store)
        addr = srv.bind()
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        ep = serve_metrics(srv.metrics.registry, ("127.0.0.1", 0))
        running.append((srv, store, t, ep))
        return Guarded(srv, store, addr, ev, ep.url)

    yield start
    for srv, store, t, ep in running:
        ep.stop()
        srv.stop()
        t.join(timeout=5)
        store.close()


class Client:
    """A hand-made agent connection: TLS with a host's certificate, then a hello."""

    def __init__(self, pki: Authority, host: str, addr: tuple[str, int], stream: str) -> None:
        b = pki.bundle(host)
        ctx = client_context(b.ca, b.cert, b.key)
        raw = socket.create_connection(addr, timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname="forensix-server")
        wire.send(self.sock, b"H", {"host": host, "stream": stream, "agent_start_ns": 1})
        self.kind, self.body = wire.recv(self.sock)

    def next(self) -> tuple[bytes, bytes]:
        try:
            return wire.recv(self.sock)
        except (wire.WireClosed, OSError, ssl.SSLError) as e:
            return b"", str(e).encode()

    def close(self) -> None:
        self.sock.close()


def test_per_host_connection_and_stream_caps(pki: Authority, guarded: Callable[..., Guarded]) -> None:
    g = guarded(connections=2, streams=3)
    a = Client(pki, "alpha", g.addr, "a1" * 16)
    b = Client(pki, "alpha", g.addr, "a2" * 16)
    assert a.kind == b.kind == b"W"
    c = Client(pki, "alpha", g.addr, "a3" * 16)  # a third connection at once: refused, said why
    assert c.kind == b"E" and b"already has 2 connections open (limit 2)" in c.body
    other = Client(pki, "beta", g.addr, "b1" * 16)  # another host is not affected
    assert other.kind == b"W"
    # a reconnect on the same stream replaces the old connection instead of counting against the cap
    a2 = Client(pki, "alpha", g.addr, "a1" * 16)
    assert a2.kind == b"W"
    kind, body = a.next()
    assert kind == b"E" and b"superseded by a new connection" in body
    for x in (a, a2, b, other):
        x.close()
    wait_for(lambda: sample(scrape(g.url), "forensix_server_host_connections", host="alpha") == 0, 10,
             "alpha's connections closed")
    # streams: a1, a2 exist; a third is allowed, a fourth is not
    assert Client(pki, "alpha", g.addr, "a3" * 16).kind == b"W"
    d = Client(pki, "alpha", g.addr, "a4" * 16)
    assert d.kind == b"E" and b"already has 3 streams on the log host (limit 3)" in d.body
    m = scrape(g.url)
    assert sample(m, "forensix_server_refused_total", host="alpha", kind="connections") == 1
    assert sample(m, "forensix_server_refused_total", host="alpha", kind="streams") == 1
    kinds = [(r["host"], r["kind"]) for r in g.refusals()]
    assert ("alpha", "connections") in kinds and ("alpha", "streams") in kinds
    titles = [r["rule_title"] for r in g.alerts("alpha")]
    assert "Log host refused alpha: connections" in titles and "Log host refused alpha: streams" in titles


def test_repeated_refusals_are_counted_not_written_each_time(pki: Authority,
                                                             guarded: Callable[..., Guarded]) -> None:
    g = guarded(streams=1)
    Client(pki, "beta", g.addr, "b0" * 16).close()
    for i in range(1, 8):  # a host trying new streams in a loop
        c = Client(pki, "beta", g.addr, f"{i:02d}" * 16)
        assert c.kind == b"E"
        c.close()
    assert sample(scrape(g.url), "forensix_server_refused_total", host="beta", kind="streams") == 7
    assert len([r for r in g.refusals() if r["host"] == "beta"]) == 1  # one line per 10 s, not per try
    assert len(g.alerts("beta")) == 1


def test_quota_keeps_frames_on_the_agent_until_there_is_room(pki: Authority, guarded: Callable[..., Guarded],
                                                            tmp_path: Path) -> None:
    g = guarded(evidence_bytes=40_000)
    sink = shipping_sink(pki, "alpha", tmp_path, g.addr)
    for i in range(12):
        sink.write("events", events_batch(200, start_seq=i * 200))
    wait_for(lambda: "at its limit of 40000" in sink.shipper.stats.last_error, 15, "the quota refusal")
    held = sink.spool.unacked()
    assert held > 0 and not sink.spool.refused  # nothing refused for good, nothing lost
    stored = sum(p.stat().st_size for p in g.evidence.glob("alpha/*/seg-*.fxe"))
    assert stored <= 40_000
    m = scrape(g.url)
    assert (sample(m, "forensix_server_refused_total", host="alpha", kind="quota") or 0) >= 1
    assert sample(m, "forensix_server_host_evidence_bytes", host="alpha") == stored
    g.srv.limits.evidence_bytes = 0  # the operator raises the limit: delivery resumes
    wait_for(lambda: sink.spool.unacked() == 0, 20, "delivery after the limit was raised")
    sink.close()
    seqs = [r.frame.seq for s in sorted(g.evidence.glob("alpha/*/seg-*.fxe")) for r in iter_segment(s) if r.frame]
    assert seqs == list(range(12))


def test_disk_floor(pki: Authority, guarded: Callable[..., Guarded]) -> None:
    g = guarded(min_free_bytes=1 << 60)
    c = Client(pki, "beta", g.addr, "cd" * 16)
    assert c.kind == b"E" and b"evidence disk has" in c.body


def test_a_refused_frame_is_kept_aside_and_not_resent(pki: Authority, guarded: Callable[..., Guarded],
                                                      tmp_path: Path) -> None:
    g = guarded()
    sink = shipping_sink(pki, "beta", tmp_path, g.addr, start=False)
    for i in range(5):
        sink.write("events", events_batch(50, start_seq=i * 50))
    # frame 2 is damaged in the spool (a bad disk, or an intruder): its MAC no longer holds
    e = next(x for x in sink.spool.entries if x.seq == 2)
    data = bytearray(e.segment.read_bytes())
    data[e.offset + e.length - 40] ^= 0x01
    e.segment.write_bytes(bytes(data))
    sink.shipper.start()
    wait_for(lambda: sink.spool.unacked() == 0, 15, "frames 3 and 4 delivered past the refused one")
    assert sink.spool.refused == {2}
    assert "MAC does not verify" in sink.shipper.stats.last_refusal
    rec = json.loads((sink.spool.dir / "refused" / f"seq-{2:016d}.json").read_text())
    assert rec["seq"] == 2 and "MAC does not verify" in rec["reason"]
    assert (sink.spool.dir / "refused" / f"seq-{2:016d}.fxs").read_bytes() == bytes(
        data[e.offset:e.offset + e.length])  # the frame itself, as it was sent
    for i in range(5, 7):  # shipping goes on
        sink.write("events", events_batch(50, start_seq=i * 50))
    wait_for(lambda: sink.spool.unacked() == 0, 15, "later frames")
    sink.close()
    # a restarted agent does not send it again either
    sink2 = shipping_sink(pki, "beta", tmp_path, g.addr)
    assert sink2.spool.refused == {2}
    sink2.write("events", events_batch(50, start_seq=1000))
    wait_for(lambda: sink2.spool.unacked() == 0, 15, "after the restart")
    sink2.close()
    m = scrape(g.url)
    assert sample(m, "forensix_server_refused_total", host="beta", kind="frame") == 1
    assert sample(m, "forensix_server_frames_received_total", host="beta") == 8  # 0..7 once, 2 never again
    seqs = [r.frame.seq for s in sorted(g.evidence.glob("beta/*/seg-*.fxe")) for r in iter_segment(s) if r.frame]
    assert seqs == [0, 1, 3, 4, 5, 6, 7]
    assert any(r["kind"] == "frame" and r["seq"] == 2 for r in g.refusals())
    g.srv.ingest.flush()
    gaps = g.store.query("SELECT reason, count FROM gaps WHERE host_name = 'beta'").to_pylist()
    assert gaps == [{"reason": "refused", "count": 1}]  # not "never arrived": the log host refused it
    out = subprocess.run(FX + ["agent-status", "--spool", str(sink.spool.dir)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "1 frame(s) refused by the log host" in out.stdout and "MAC does not verify" in out.stdout


def test_a_host_sending_only_bad_frames_is_disconnected(pki: Authority, guarded: Callable[..., Guarded],
                                                        tmp_path: Path) -> None:
    g = guarded(refused_frames=3)
    sink = shipping_sink(pki, "alpha", tmp_path, g.addr, start=False)
    for i in range(5):
        sink.write("events", events_batch(20, start_seq=i * 20))
    c = Client(pki, "alpha", g.addr, sink.spool.stream.hex())
    assert c.kind == b"W"
    answers = []
    for e in sink.spool.entries:
        raw = bytearray(sink.spool.read(e))
        raw[-1] ^= 0xFF  # every MAC broken
        wire.send(c.sock, b"F", bytes(raw))
    while True:
        kind, body = c.next()
        answers.append(kind)
        if kind in (b"E", b""):
            break
    assert answers[:3] == [b"R", b"R", b"R"] and answers[3] == b"E", answers
    assert b"3 frames of alpha refused on one connection" in body
    sink.spool.close(clean=True)


def test_revoke_reaches_every_certificate_ever_issued_to_the_host(tmp_path: Path) -> None:
    from cryptography import x509

    a = Authority(tmp_path / "pki")
    a.init()
    serials = []
    for _ in range(2):  # re-issued: the first certificate may still be on the host
        b = a.issue("h")
        serials.append(x509.load_pem_x509_certificate(b.cert.read_bytes()).serial_number)
    a.issue("other")
    assert sorted(a.revoke("h")) == sorted(serials)
    assert a.revoked_serials() == set(serials)
    assert [(h, r) for h, _, r in a.hosts()] == [("h", True), ("other", False)]


def test_broadcast_ends_every_wait_and_only_then() -> None:
    import select

    from forensix.server.guard import Broadcast

    b = Broadcast()
    woke: list[float] = []

    def waiter() -> None:
        fd = b.fd()
        t0 = time.monotonic()
        if select.select([fd], [], [], 10)[0]:
            woke.append(time.monotonic() - t0)

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert not woke  # nothing polls: the waits are still on
    b.fire()
    for t in threads:
        t.join(5)
    assert len(woke) == 20 and max(woke) < 5
    assert not select.select([b.fd()], [], [], 0)[0]  # the next waits wait again
    b.close()
    b.close()
