"""The log host cannot write one host's evidence (its directory on a disk that is full: a real
tmpfs filled to ENOSPC, nothing mocked): the frame is refused with the cause and the fix, a
bounded number of times, then for good, and the agent keeps it in its spool's refused/; the
failures are logged and counted; the other host is served meanwhile; no torn frame is left
in the evidence, and once there is space again the host's next frames are stored. Real TLS
with the real CA (conftest), the real shipping sink of the agent, a real DuckDB store and
the real /metrics endpoint."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.agent.shipping import ShippingSink
from forensix.metrics import serve_metrics
from forensix.pki.authority import Authority
from forensix.server.evidence import iter_segment
from forensix.server.guard import HostLimits
from forensix.server.listener import LogServer, ServerConfig
from forensix.server.verify import verify_evidence
from forensix.store.embedded import open_writer
from forensix.testing import disk
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for
from forensix.testing.scrape import sample, scrape
from forensix.testing.shipping import host_info, shipping_sink


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[Path]:
    """An evidence directory whose host ``alpha`` lives on a 2 MiB tmpfs of the test's own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    ev = tmp_path / "evidence"
    (ev / "alpha").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "fx-evidence-test", str(ev / "alpha")],
                   check=True)
    try:
        yield ev
    finally:
        subprocess.run(["umount", "-l", str(ev / "alpha")], check=False)


def _seqs(ev: Path, host: str) -> list[int]:
    out = []
    for seg in sorted(ev.glob(f"{host}/*/seg-*.fxe")):
        for rec in iter_segment(seg):
            assert rec.frame is not None, f"torn bytes in {seg} at {rec.offset}: {rec.error}"
            out.append(rec.frame.seq)
    return out


def _count(store: Any, host: str) -> int:
    return int(store.query("SELECT count(*) AS n FROM events WHERE host_name = $h AND event_category <> 'agent'",
                           {"h": host}).column("n")[0].as_py())


def _refused(sink: ShippingSink) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((sink.spool.dir / "refused").glob("seq-*.json"))]


def test_a_frame_the_evidence_will_not_take_is_refused_with_why_and_the_others_are_served(
        pki: Authority, tmp_path: Path, evidence: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="forensix.server")
    store = open_writer(tmp_path / "srv.duckdb")
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), evidence, silence_s=60, checkpoint_s=0.2,
                                 limits=HostLimits(evidence_attempts=2)), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    ep = serve_metrics(srv.metrics.registry, ("127.0.0.1", 0))
    alpha, beta = shipping_sink(pki, "alpha", tmp_path, addr), shipping_sink(pki, "beta", tmp_path, addr)
    try:
        for i in range(2):
            alpha.write("events", events_batch(200, start_seq=i * 200, host=host_info("alpha")))
        beta.write("events", events_batch(200, start_seq=0, host=host_info("beta")))
        wait_for(lambda: alpha.spool.unacked() == beta.spool.unacked() == 0, 20, "the first frames acked")
        srv.ingest.flush()
        wait_for(lambda: all(s.checkpointed == s.last_seq for s in srv.evidence.streams()), 10, "checkpoints")

        # frame 2 is in the evidence and acked, but not yet in the store when the disk fills:
        # its ingested mark cannot be written (the ingest thread is held at its store lock, a
        # seam of ours, only to order the two)
        with srv.ingest.lock:
            alpha.write("events", events_batch(200, start_seq=400, host=host_info("alpha")))
            wait_for(lambda: alpha.spool.unacked() == 0, 20, "frame 2 acked")
            filler = disk.fill(evidence / "alpha" / "filler")  # alpha's evidence disk is full from here
        for i in range(3, 5):
            alpha.write("events", events_batch(200, start_seq=i * 200, host=host_info("alpha")))
        for i in range(1, 3):  # beta is served while alpha's frames are refused
            beta.write("events", events_batch(200, start_seq=i * 200, host=host_info("beta")))
        wait_for(lambda: beta.spool.unacked() == 0, 20, "beta's frames acked during alpha's failure")
        # ... and stored: alpha's stream directory (its ingested mark too) holds up no other host
        wait_for(lambda: _count(store, "beta") == 600, 20, "beta's rows stored during alpha's failure")
        wait_for(lambda: alpha.spool.refused == {3, 4}, 40, "alpha's two frames refused for good")
        assert alpha.spool.unacked() == 0  # nothing retried any more

        # the agent kept both frames and knows why: the cause and what to do on the log host
        recs = _refused(alpha)
        assert [r["seq"] for r in recs] == [3, 4]
        for r in recs:
            assert "No space left on device (ENOSPC)" in r["reason"]
            assert "refused for good after 2 attempt(s)" in r["reason"]
            assert "free space on the file system that holds" in r["reason"]
        assert (alpha.spool.dir / "refused" / f"seq-{3:016d}.fxs").stat().st_size > 0
        # the log host said it as an error, with the fix, each attempt
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("cannot write frame 3 of alpha" in m and "attempt 1 of 2" in m and "Fix: free space" in m
                   for m in errors)
        assert any("cannot write frame 4 of alpha" in m and "refused for good" in m for m in errors)
        assert any("ingested mark of alpha" in m and "No space left on device" in m for m in errors)
        m = scrape(ep.url)
        assert (sample(m, "forensix_server_evidence_write_errors_total", host="alpha", error="ENOSPC") or 0) >= 4
        assert (sample(m, "forensix_server_refused_total", host="alpha", kind="evidence") or 0) >= 4
        assert not sample(m, "forensix_server_evidence_write_errors_total", host="beta", error="ENOSPC")
        # no torn frame was left behind: the next frames after the failure follow whole ones
        assert _seqs(evidence, "alpha") == [0, 1, 2]
        assert _count(store, "alpha") == 600  # frame 2 was stored, its mark waits for the disk

        filler.unlink()  # space again: alpha's next frames are stored
        for i in range(5, 7):
            alpha.write("events", events_batch(200, start_seq=i * 200, host=host_info("alpha")))
        wait_for(lambda: alpha.spool.unacked() == 0, 20, "alpha's frames acked after the repair")
    finally:
        alpha.close()
        beta.close()
        ep.stop()
        srv.stop()
        t.join(timeout=5)
    assert _seqs(evidence, "alpha") == [0, 1, 2, 5, 6]
    assert [int(p.read_text()) for p in evidence.glob("alpha/*/ingested")] == [6]
    assert _seqs(evidence, "beta") == [0, 1, 2]
    rows = store.query("SELECT host_name, count(*) AS n FROM events WHERE event_category <> 'agent' "
                       "GROUP BY 1 ORDER BY 1").to_pylist()
    assert rows == [{"host_name": "alpha", "n": 1000}, {"host_name": "beta", "n": 600}]
    gaps = store.query("SELECT reason, count FROM gaps WHERE host_name = 'alpha'").to_pylist()
    assert gaps == [{"reason": "refused", "count": 2}]
    store.close()
    # verify: the evidence holds, and the two frames are a completeness gap that names the cause
    v = verify_evidence(evidence, host="alpha")
    assert v.integrity_ok, [f for f in v.findings if f["status"] == "FAIL"]
    missing = [f for f in v.findings if f["status"] == "gap" and f["check"] == "refused"]
    assert sorted(f["seq"] for f in missing) == [3, 4]
    assert all("No space left on device" in f["detail"] for f in missing)
