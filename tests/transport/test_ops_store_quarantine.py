"""A frame whose rows the store refuses every time (here: a null in ``gaps.event_class``, in a
store whose constraint is stricter than the frames' schema; nulls in a column the schema itself
says is never null are refused at receipt, test_ops_frame_nulls.py) no longer stalls every host's ingest: it is tried
--store-attempts times, then quarantined with its cause (kept in the evidence, listed beside
its stream, counted, logged with the fix, alerted so ``forensix hosts`` shows it, reported by
``verify``), and the other frames, of its host and of the others, go on into the store. A
restart with --reingest tries it again; still refused, it stays quarantined. Real TLS with the
real CA (conftest), the real shipping sink of the agent, a real DuckDB store, real /metrics."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from clickhouse_driver import errors as ch

from forensix.errors import StoreBusyError, StoreError
from forensix.metrics import serve_metrics
from forensix.pki.authority import Authority
from forensix.server.hosts import host_status
from forensix.server.listener import LogServer, ServerConfig
from forensix.server.quarantine import is_transient, read_quarantine
from forensix.server.verify import verify_evidence
from forensix.store import schema
from forensix.store.clickhouse.connection import ClickHouseUnavailable
from forensix.store.embedded import open_writer
from forensix.store.journal import conform
from forensix.testing import disk
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for
from forensix.testing.scrape import sample, scrape
from forensix.testing.shipping import host_info, shipping_sink


def _bad(host: str = "alpha") -> pa.Table:
    """A gaps record the store refuses every time: ``event_class`` null, which the frame's
    schema allows (so the log host accepts and acks it) and the store below does not."""
    row: dict[str, Any] = {f.name: None for f in schema.GAPS}
    row.update(host_id=f"id-{host}", host_name=host, boot_id=f"boot-{host}", ts_from=1, ts_to=2, cpu=0,
               count=1, reason="ringbuf-full")
    return pa.Table.from_pylist([row], schema=schema.GAPS)


def _strict_store(path: Path) -> Any:
    """A DuckDB store whose ``gaps.event_class`` is NOT NULL: stricter than the schema agents
    seal against (e.g. a constraint added by hand), so its refusal comes only at the store."""
    open_writer(path).close()
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE gaps ALTER COLUMN event_class SET NOT NULL")
    con.close()
    return open_writer(path)


def _count(store: Any, host: str) -> int:
    return int(store.query("SELECT count(*) AS n FROM events WHERE host_name = $h AND event_category <> 'agent'",
                           {"h": host}).column("n")[0].as_py())


def _server(pki: Authority, store: Any, ev: Path, **kw: Any) -> tuple[LogServer, threading.Thread, tuple[str, int]]:
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=60, checkpoint_s=0.2, **kw), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, t, addr


def test_a_frame_the_store_refuses_is_quarantined_and_every_other_frame_is_stored(
        pki: Authority, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="forensix.server")
    store = _strict_store(tmp_path / "srv.duckdb")
    ev = tmp_path / "evidence"
    srv, t, addr = _server(pki, store, ev, store_attempts=2)
    ep = serve_metrics(srv.metrics.registry, ("127.0.0.1", 0))
    alpha, beta = shipping_sink(pki, "alpha", tmp_path, addr), shipping_sink(pki, "beta", tmp_path, addr)
    try:
        alpha.write("events", events_batch(100, start_seq=0, host=host_info("alpha")))
        wait_for(lambda: alpha.spool.unacked() == 0, 20, "alpha's first frame acked")
        srv.ingest.flush()
        # alpha's bad frame and beta's good ones wait together: one coalesced append (the
        # ingest thread held at its store lock, a seam of ours, only to group them)
        with srv.ingest.lock:
            alpha.write("gaps", _bad())
            alpha.write("events", events_batch(100, start_seq=100, host=host_info("alpha")))
            for i in range(3):
                beta.write("events", events_batch(100, start_seq=i * 100, host=host_info("beta")))
            wait_for(lambda: alpha.spool.unacked() == beta.spool.unacked() == 0, 20, "all frames acked")
        wait_for(lambda: _count(store, "beta") == 300, 20, "beta's rows stored beside alpha's bad frame")
        wait_for(lambda: _count(store, "alpha") == 200, 20, "alpha's good frames stored around its bad one")
        srv.ingest.flush()
        for i in range(3, 5):  # later frames go straight in: nothing waits behind the quarantined one
            beta.write("events", events_batch(100, start_seq=i * 100, host=host_info("beta")))
        wait_for(lambda: _count(store, "beta") == 500, 20, "beta's later rows stored")
        srv.ingest.flush()
        m = scrape(ep.url)
        assert sample(m, "forensix_server_store_quarantined_frames_total", host="alpha", table="gaps") == 1
        assert sample(m, "forensix_server_host_not_ingested_frames", host="alpha") == 1
        assert not sample(m, "forensix_server_host_not_ingested_frames", host="beta")
        assert (sample(m, "forensix_server_store_append_errors_total", kind="refused", error="ConstraintException")
                or 0) >= 2
    finally:
        alpha.close()
        beta.close()
        ep.stop()
        srv.stop()
        t.join(timeout=5)
    (sdir,) = [p for p in (ev / "alpha").iterdir() if p.is_dir()]
    held = read_quarantine(sdir)
    assert list(held) == [1]
    assert "NOT NULL constraint failed: gaps.event_class" in held[1].cause and "--reingest" in held[1].fix
    assert int((sdir / "ingested").read_text()) == 2  # the stream's mark went past it
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("frame 1 of alpha" in m and "quarantined" in m and "NOT NULL constraint" in m and "Fix:" in m
               for m in errors)
    hosts = {r["host_name"]: r for r in host_status(store, now_ns=0, silence_s=60).to_pylist()}
    assert hosts["alpha"]["not_ingested"] == 1 and "not ingested" in hosts["alpha"]["not_ingested_cause"]
    assert hosts["beta"]["not_ingested"] == 0
    store.close()
    v = verify_evidence(ev)
    assert v.integrity_ok
    gaps = [f for f in v.findings if f["check"] == "not-ingested"]
    assert [(f["host_name"], f["seq"]) for f in gaps] == [("alpha", 1)]
    assert "not ingested: ConstraintException" in gaps[0]["detail"] and "gaps.event_class" in gaps[0]["detail"]

    # a restart re-ingests nothing twice; --reingest tries the frame again: still refused, still set aside
    store = open_writer(tmp_path / "srv.duckdb")
    srv, t, _ = _server(pki, store, ev, reingest=True)
    try:
        assert _count(store, "alpha") == 200 and _count(store, "beta") == 500
        assert list(read_quarantine(sdir)) == [1]
        assert srv.not_ingested() == {"alpha": 1}
    finally:
        srv.stop()
        t.join(timeout=5)
        store.close()

    # the cause fixed (here the store's constraint lifted, with the log host stopped), --reingest
    # stores the frame from the evidence and it is no longer set aside
    con = duckdb.connect(str(tmp_path / "srv.duckdb"))
    con.execute("ALTER TABLE gaps ALTER COLUMN event_class DROP NOT NULL")
    con.close()
    store = open_writer(tmp_path / "srv.duckdb")
    srv, t, _ = _server(pki, store, ev, reingest=True)
    try:
        assert srv.not_ingested() == {}
        assert read_quarantine(sdir) == {}
        got = store.query("SELECT event_class, reason FROM gaps WHERE host_name = 'alpha'").to_pylist()
        assert got == [{"event_class": None, "reason": "ringbuf-full"}]
        assert _count(store, "alpha") == 200 and _count(store, "beta") == 500  # nothing else twice
    finally:
        srv.stop()
        t.join(timeout=5)
        store.close()
    assert not [f for f in verify_evidence(ev).findings if f["check"] == "not-ingested"]


def test_transient_failures_are_told_from_refused_rows(tmp_path: Path) -> None:
    """What is retried for ever (the store away) and what is quarantined (the rows), on the
    real exceptions the stores raise."""
    transient = [ClickHouseUnavailable("shard 2 (ch2:9000) does not answer", "start it"),
                 ch.NetworkError("Connection refused (ch2:9000)"),
                 ch.ServerException("Too many parts (300)", code=ch.ErrorCodes.TOO_MANY_PARTS),
                 StoreBusyError("locked", "stop the other writer"),
                 duckdb.IOException("Could not set lock on file"),
                 OSError(28, "No space left on device")]
    try:
        raise StoreError("cannot write the journal", "free disk space") from OSError(28, "No space left on device")
    except StoreError as e:
        transient.append(e)
    refused: list[BaseException] = []
    nulls = events_batch(3, host=host_info("alpha")).drop_columns(["ts"]).append_column(
        "ts", pa.nulls(3, pa.int64()))
    for attempt in (lambda: conform(nulls, schema.EVENTS, "events"),
                    lambda: conform(pa.table({"nope": [1]}), schema.EVENTS, "events"),
                    lambda: pa.array(["x"]).cast(pa.int64())):
        try:
            attempt()
        except Exception as e:  # noqa: BLE001 - collected
            refused.append(e)
    w = _strict_store(tmp_path / "c.duckdb")
    try:
        w.append("gaps", _bad())
    except duckdb.Error as e:
        refused.append(e)
    finally:
        w.close()
    refused.append(ch.ServerException("Cannot parse input", code=ch.ErrorCodes.CANNOT_PARSE_INPUT_ASSERTION_FAILED))
    assert len(refused) == 5
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in refused] == [False] * len(refused)


def test_a_store_disk_that_is_full_is_waited_out_and_nothing_is_quarantined(
        pki: Authority, tmp_path: Path) -> None:
    """The store's own disk full (a real tmpfs filled to ENOSPC): transient, retried past
    --store-attempts until there is space again, then stored; nothing set aside."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    sdir = tmp_path / "store"
    sdir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "fx-store-test", str(sdir)], check=True)
    try:
        store = open_writer(sdir / "srv.duckdb")
        ev = tmp_path / "evidence"
        srv, t, addr = _server(pki, store, ev, store_attempts=2)
        alpha = shipping_sink(pki, "alpha", tmp_path, addr)
        try:
            alpha.write("events", events_batch(100, start_seq=0, host=host_info("alpha")))
            wait_for(lambda: _count(store, "alpha") == 100, 20, "alpha's first rows stored")
            filler = disk.fill(sdir / "filler")
            alpha.write("events", events_batch(5000, start_seq=100, host=host_info("alpha")))
            wait_for(lambda: srv.ingest.failures >= 4, 20, "appends failing on the full disk")
            assert _count(store, "alpha") == 100
            transient = sum(x.value for x in next(iter(srv.metrics.store_errors.collect())).samples
                            if x.name.endswith("_total") and x.labels["kind"] == "transient")
            assert transient >= 4  # more than --store-attempts, none counted as refused rows
            assert srv.metrics.registry.get_sample_value("forensix_server_store_append_errors_total",
                                                         {"kind": "refused", "error": "StoreError"}) is None
            filler.unlink()
            wait_for(lambda: _count(store, "alpha") == 5100, 30, "the rows stored once there is space")
            srv.ingest.flush()
        finally:
            alpha.close()
            srv.stop()
            t.join(timeout=5)
        assert srv.not_ingested() == {}
        assert not list(ev.glob("alpha/*/quarantined.jsonl"))
        assert _count(store, "alpha") == 5100
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(sdir)], check=False)
