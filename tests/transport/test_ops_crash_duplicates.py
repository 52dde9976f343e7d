"""A real ``forensix server`` on a DuckDB store killed (as by kill -9: ``forensix.testing.crash``)
right after the store commit of a frame and before its ``ingested`` mark is written: at the
restart, the frame is re-ingested from the evidence. This test says whether the store then
holds its rows once or twice. Real TLS with the real CA (conftest), the real agent shipping
sink, real server processes, a real DuckDB file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.model.host import HostInfo
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.server.ledger import IngestLedger, committed_frames
from forensix.store import schema
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.batches import events_batch
from forensix.testing.crash import CRASH_EXIT, crash_after_store
from forensix.testing.scenario import wait_for

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


def _start(pki: Authority, store: Path, log: Path, env: dict[str, str] | None = None) -> tuple[
        subprocess.Popen[bytes], tuple[str, int]]:
    p = subprocess.Popen(FX + ["server", "--pki", str(pki.dir), "--listen", "127.0.0.1:0", "--store", str(store),
                               "--no-rules", "--checkpoint-interval", "0.2"],
                         stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env or dict(os.environ))
    found = wait_for(lambda: re.findall(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()) or p.poll() is not None,
                     30, "the server listening")
    assert p.poll() is None, log.read_text()
    return p, ("127.0.0.1", int(found[-1]))


def test_a_frame_stored_before_a_crash_is_stored_once_after_the_restart(pki: Authority, tmp_path: Path) -> None:
    store, log = tmp_path / "fleet.duckdb", tmp_path / "server.log"
    p, addr = _start(pki, store, log, crash_after_store(1))
    log2 = tmp_path / "server-restarted.log"
    b = pki.bundle("alpha")
    seal = tmp_path / "alpha.seal"
    shutil.copy(b.seal, seal)
    sink = ShippingSink(ShippingConfig(host="alpha", server=addr, context=client_context(b.ca, b.cert, b.key),
                                       seal_key=seal, spool_dir=tmp_path / "spool", heartbeat_s=0.5, coalesce_s=0))
    try:
        sink.write("events", events_batch(500, host=HostInfo("id-alpha", "alpha", "boot-alpha", "6.18")))
        assert p.wait(timeout=30) == CRASH_EXIT, log.read_text()  # died right after the store's commit
        (sdir,) = [d for d in (store.with_name(store.name + ".evidence") / "alpha").iterdir() if d.is_dir()]
        assert not (sdir / "ingested").exists()  # the mark was never written
        p, _ = _start(pki, store, log2)  # replays the evidence into the store
    finally:
        sink.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, log2.read_text()
    assert "1 frame(s) already in the store are not ingested again" in log2.read_text()
    r = open_reader(store)
    try:
        n = r.query("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM events "
                    "WHERE host_name = 'alpha' AND event_category <> 'agent'").to_pylist()
    finally:
        r.close()
    assert n == [{"n": 500, "d": 500}], f"{n}: the frame re-ingested after the crash is stored twice"


def _alerts(n: int) -> pa.Table:
    """An agent's live alerts: each finding's first row and one update (same id, a new count)."""
    rows = []
    for i in range(n):
        first = {"host_id": "id-alpha", "host_name": "alpha", "boot_id": "boot-alpha", "alert_id": f"a{i:04d}",
                 "ts": 1_000 + i, "detected_ts": 2_000 + i, "rule_id": "r", "rule_title": "test rule",
                 "rule_level": "high", "source": "live", "alert_count": 1, "last_ts": 1_000 + i}
        rows += [first, {**first, "alert_count": 2, "last_ts": 1_500 + i}]
    return pa.Table.from_pylist(rows, schema=schema.ALERTS)


def test_an_alerts_frame_stored_before_a_crash_is_stored_once_after_the_restart(pki: Authority,
                                                                                tmp_path: Path) -> None:
    """``alerts`` is written by others than the ingest thread too, so its row count proves
    nothing: the intent names the rows themselves."""
    store, log = tmp_path / "fleet.duckdb", tmp_path / "server.log"
    p, addr = _start(pki, store, log, crash_after_store(1))
    log2 = tmp_path / "server-restarted.log"
    b = pki.bundle("alpha")
    seal = tmp_path / "alpha.seal"
    shutil.copy(b.seal, seal)
    sink = ShippingSink(ShippingConfig(host="alpha", server=addr, context=client_context(b.ca, b.cert, b.key),
                                       seal_key=seal, spool_dir=tmp_path / "spool", heartbeat_s=0.5, coalesce_s=0))
    try:
        sink.write("alerts", _alerts(50))
        assert p.wait(timeout=30) == CRASH_EXIT, log.read_text()
        p, _ = _start(pki, store, log2)
    finally:
        sink.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, log2.read_text()
    assert "1 frame(s) already in the store are not ingested again" in log2.read_text()
    r = open_reader(store)
    try:
        n = r.query("SELECT count(*) AS n, count(DISTINCT (alert_id, alert_count)) AS d FROM alerts "
                    "WHERE host_name = 'alpha' AND rule_id = 'r'").to_pylist()
    finally:
        r.close()
    assert n == [{"n": 100, "d": 100}], f"{n}: the alerts frame re-ingested after the crash is stored twice"


def test_an_alerts_frame_not_stored_before_a_crash_is_stored_after_the_restart(tmp_path: Path) -> None:
    """The other way round: an intent whose alert rows are not all in the store (the group's
    append never committed) leaves its frames to be ingested again, never skipped."""
    w = open_writer(tmp_path / "s.duckdb")
    ev = tmp_path / "evidence"
    ev.mkdir()
    try:
        ledger = IngestLedger(w, ev)
        alerts = _alerts(3)
        w.append("alerts", alerts.slice(0, 5))  # rows of the group with the same ids, not all of them
        ledger.before([("alpha", "s1", 7, "alerts")], {"alerts": 6}, shared={"alerts": [alerts]})
        ledger.close()
        assert committed_frames(w, ev) == {}
        ledger = IngestLedger(w, ev)
        w.append("alerts", alerts)
        ledger.before([("alpha", "s1", 8, "alerts")], {"alerts": 6}, shared={"alerts": [alerts]})
        ledger.close()
        assert committed_frames(w, ev) == {("alpha", "s1"): {8: {"alerts"}}}
    finally:
        w.close()
