"""A frame the ClickHouse cluster refuses every time is quarantined, end to end on the real
2-shard cluster (the DuckDB case: tests/transport/test_ops_store_quarantine.py).

What ClickHouse refuses for good: a table one shard's schema no longer matches (here the
gaps table without its `reason` column, dropped on every shard: code 16, no such column),
not a shard that is away (retried for ever). The frame is tried --store-attempts times,
kept in evidence, listed beside its stream with the server's own words, and the other
frames, of its host and of another host, are stored; `--reingest` after the fix stores it
once and nothing else twice. Real TLS with the real CA, the agent's real shipping sink."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from forensix.server.listener import LogServer, ServerConfig
from forensix.server.quarantine import read_quarantine
from forensix.server.verify import verify_evidence
from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import local_name, stored_columns
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for
from forensix.testing.shipping import host_info, shipping_sink


def _gap(host: str) -> pa.Table:
    """One ordinary gaps record (a ring buffer overflowed): valid rows, which only a store whose
    gaps table lacks a column refuses."""
    row: dict[str, Any] = {f.name: None for f in schema.GAPS}
    row.update(host_id=f"id-{host}", host_name=host, boot_id=f"boot-{host}", ts_from=1_790_000_000 * 10**9,
               ts_to=1_790_000_001 * 10**9, cpu=0, event_class="events", count=7, reason="ringbuf-full")
    return pa.Table.from_pylist([row], schema=schema.GAPS)


def _count(st: ClickHouseStore, host: str) -> int:
    return int(st.native(f"SELECT count() FROM events WHERE host_name = '{host}' AND event_category != 'agent'")
               .column(0)[0].as_py())


def _server(pki: Any, st: ClickHouseStore, ev: Path, **kw: Any) -> tuple[LogServer, threading.Thread, Any]:
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=60, checkpoint_s=0.2, **kw), st)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, t, addr


def test_a_frame_the_cluster_refuses_is_quarantined_then_reingested_after_the_fix(
        pki: Any, url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="forensix.server")
    st = ClickHouseStore(url, write=True, retry=True, retry_max_s=0.5)
    gaps = local_name("gaps", st.cluster)
    for srv_ in st.shards:  # every shard's gaps table broken the same way (alpha's shard is one of them)
        srv_.execute(f"ALTER TABLE `{st.db}`.`{gaps}` DROP COLUMN reason")
    ev = tmp_path / "evidence"
    srv, t, addr = _server(pki, st, ev, store_attempts=2)
    alpha, beta = shipping_sink(pki, "alpha", tmp_path, addr), shipping_sink(pki, "beta", tmp_path, addr)
    try:
        alpha.write("events", events_batch(100, start_seq=0, host=host_info("alpha")))
        wait_for(lambda: _count(st, "alpha") == 100, 30, "alpha's first frame stored")
        alpha.write("gaps", _gap("alpha"))
        alpha.write("events", events_batch(100, start_seq=100, host=host_info("alpha")))
        for i in range(3):
            beta.write("events", events_batch(100, start_seq=i * 100, host=host_info("beta")))
        wait_for(lambda: _count(st, "beta") == 300, 30, "beta's rows stored beside alpha's refused frame")
        wait_for(lambda: _count(st, "alpha") == 200, 30, "alpha's later frame stored past its refused one")
        srv.ingest.flush()
        assert srv.not_ingested() == {"alpha": 1}
    finally:
        alpha.close()
        beta.close()
        srv.stop()
        t.join(timeout=5)
    (sdir,) = [p for p in (ev / "alpha").iterdir() if p.is_dir()]
    held = read_quarantine(sdir)
    assert list(held) == [1]
    assert "reason" in held[1].cause and "--reingest" in held[1].fix  # ClickHouse's own words: the column
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("frame 1 of alpha" in m and "quarantined" in m for m in errors)
    gaps_found = [f for f in verify_evidence(ev).findings if f["check"] == "not-ingested"]
    assert [(f["host_name"], f["seq"]) for f in gaps_found] == [("alpha", 1)]
    assert int(st.native("SELECT count() FROM gaps").column(0)[0].as_py()) == 0

    # fixed (the column back on every shard, the log host stopped): --reingest stores the frame
    # from evidence, once; the events already stored are not stored again
    (kind,) = [t for c, t in stored_columns("gaps") if c == "reason"]
    for srv_ in st.shards:
        srv_.execute(f"ALTER TABLE `{st.db}`.`{gaps}` ADD COLUMN reason {kind}",
                     settings={"allow_experimental_low_cardinality_type": 1})
    srv, t, _ = _server(pki, st, ev, reingest=True)
    try:
        wait_for(lambda: srv.not_ingested() == {}, 30, "the quarantined frame re-ingested")
        srv.ingest.flush()
    finally:
        srv.stop()
        t.join(timeout=5)
    assert read_quarantine(sdir) == {}
    got = st.native("SELECT host_name, reason, count FROM gaps").to_pylist()
    assert got == [{"host_name": "alpha", "reason": "ringbuf-full", "count": 7}]
    assert _count(st, "alpha") == 200 and _count(st, "beta") == 300
    assert not [f for f in verify_evidence(ev).findings if f["check"] == "not-ingested"]
    st.close()
