"""Operating a fleet: real `forensix server` and `forensix agent` processes, real TLS, their
real /metrics endpoints scraped over HTTP, a revocation made with `forensix pki revoke`
while the host is connected, and `forensix hosts` naming the hosts that stopped reporting."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forensix.pki.authority import Authority
from forensix.testing.scrape import sample, scrape

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


def wait_for(pred: Any, timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            got = pred()
        except (httpx.HTTPError, OSError) as e:
            got, last = None, e
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} ({last})")


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.p = subprocess.Popen(FX + args, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def found(self, pattern: str) -> str:
        m = wait_for(lambda: re.search(pattern, self.text()), what=f"{pattern!r} in {self.log.name}")
        return str(m.group(1))

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(30)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:  # only what this test started, by pid
        p.kill()


def test_metrics_revocation_and_silent_hosts(procs: list[Proc], tmp_path: Path) -> None:
    pki = Authority(tmp_path / "pki")
    pki.init()
    for h in ("h1", "h2"):
        pki.issue(h)
    store = tmp_path / "fleet.duckdb"
    srv = Proc(["server", "--pki", str(pki.dir), "--listen", "127.0.0.1:0", "--store", str(store),
                "--silence", "2", "--checkpoint-interval", "0.3", "--metrics", "127.0.0.1:0"],
               tmp_path / "server.log")
    procs.append(srv)
    port = srv.found(r"listening on 127\.0\.0\.1:(\d+)")
    srv_url = srv.found(r"metrics on (http://\S+)")
    assert srv_url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    agents = {}
    for h in ("h1", "h2"):
        a = Proc(["agent", "--server", f"127.0.0.1:{port}", "--bundle", str(pki.bundle(h).directory),
                  "--spool", str(tmp_path / f"spool-{h}"), "--synthetic", "2000", "--batch-rows", "200",
                  "--heartbeat", "0.5", "--metrics", "0"], tmp_path / f"{h}.log")
        procs.append(a)
        agents[h] = a

    # the log host: both agents connected, frames acked, rows stored, inserts timed
    m = wait_for(lambda: (x := scrape(srv_url)) and sample(x, "forensix_server_connected_agents") == 2
                 and all((sample(x, "forensix_server_frames_acked_total", host=h) or 0) >= 3 for h in agents)
                 and x, what="two agents shipping")
    assert (sample(m, "forensix_server_rows_stored_total", table="events") or 0) >= 600
    assert (sample(m, "forensix_server_store_insert_seconds_count", table="events") or 0) >= 1
    assert sample(m, "forensix_server_host_silent", host="h1") == 0
    assert time.time() - (sample(m, "forensix_server_host_last_frame_timestamp_seconds", host="h1") or 0) < 10
    assert (sample(m, "forensix_server_host_evidence_bytes", host="h1") or 0) > 0

    # an agent: events recorded, frames sealed, sent and acked, connected, no lag to speak of
    a_url = agents["h1"].found(r"metrics on (http://\S+)")
    am = wait_for(lambda: (x := scrape(a_url)) and (sample(x, "forensix_agent_frames_acked_total") or 0) >= 3
                  and x, what="agent metrics")
    assert (sample(am, "forensix_rows_total", table="events") or 0) >= 600
    assert sample(am, "forensix_agent_connected") == 1
    assert (sample(am, "forensix_agent_frames_sent_total") or 0) >= (sample(am, "forensix_agent_frames_acked_total") or 0)
    assert (sample(am, "forensix_agent_spool_bytes") or 0) > 0
    assert (sample(am, "forensix_agent_shipping_lag_seconds") or 0) < 10

    # revoked while connected: cut off at once, not at its next reconnect
    h2_url = agents["h2"].found(r"metrics on (http://\S+)")
    out = subprocess.run(FX + ["pki", "revoke", "h2", "--pki", str(pki.dir)], capture_output=True, text=True,
                         check=True)
    revoked_at = time.monotonic()
    assert "revoked h2" in out.stdout
    wait_for(lambda: sample(scrape(srv_url), "forensix_server_revocation_cutoffs_total", host="h2") == 1,
             timeout=5, what="the open connection of h2 closed")
    assert time.monotonic() - revoked_at < 3.0
    m = scrape(srv_url)
    assert sample(m, "forensix_server_host_connections", host="h2") == 0
    assert sample(m, "forensix_server_host_connections", host="h1") == 1
    assert "was revoked" in agents["h2"].found(r"(refused the connection: certificate of h2 .* was revoked)")
    # its reconnects are refused; the agent keeps recording into its spool, and says why
    wait_for(lambda: (sample(scrape(srv_url), "forensix_server_refused_total", host="h2", kind="revoked")
                      or 0) >= 2, timeout=15, what="a reconnect of h2 refused")
    h2m = scrape(h2_url)
    assert sample(h2m, "forensix_agent_connected") == 0
    assert (sample(h2m, "forensix_agent_spool_unacked_frames") or 0) > 0
    wait_for(lambda: (sample(scrape(h2_url), "forensix_agent_shipping_lag_seconds") or 0) > 1.0, timeout=10,
             what="shipping lag of the cut-off host")

    # h1 stops cleanly: after --silence (2 s) both hosts are silent, in one query each
    assert agents["h1"].stop() == 0
    m = wait_for(lambda: (x := scrape(srv_url)) and sample(x, "forensix_server_host_silent", host="h1") == 1
                 and x, timeout=10, what="h1 silent")
    assert sample(m, "forensix_server_host_silent", host="h2") == 1
    assert sample(m, "forensix_server_connected_agents") == 0

    st = json.loads((tmp_path / "spool-h2" / "status.json").read_text())
    assert st["state"] == "disconnected" and "revoked" in st["last_error"]

    out = subprocess.run(FX + ["hosts", "--store", str(store), "--silence", "2", "--format", "json"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 3, out.stdout + out.stderr  # a host is silent
    rows = {r["host.name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["h1"]["status"] == "stopped" and rows["h1"]["silent"] is True
    assert rows["h2"]["status"] == "silent" and rows["h2"]["refusals"] >= 1
    agents["h2"].kill()
    assert srv.stop() == 0
    # the refusal is in the evidence too
    lines = [json.loads(x) for x in (Path(str(store) + ".evidence") / "refusals.jsonl").read_text().splitlines()]
    assert any(x["host"] == "h2" and x["kind"] == "revoked" and "was revoked" in x["reason"] for x in lines)
