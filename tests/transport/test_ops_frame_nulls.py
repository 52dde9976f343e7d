"""A frame whose rows leave a never-null column empty is refused when it arrives, with its
cause, not acknowledged and then refused by the store at seal time: the agent keeps it in
its spool's refused/ with the reason, the refusal is in the evidence, and the frames before
and after it (acked) are stored. Real mutual TLS with the real CA (conftest), the real
shipping sink of an agent, a real DuckDB store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from forensix.agent.spool import read_refused
from forensix.pki.authority import Authority
from forensix.server.guard import read_refusals
from forensix.store import schema
from forensix.testing.batches import events_batch
from forensix.testing.scenario import wait_for
from forensix.testing.shipping import host_info, shipping_sink


def _hostile(n: int) -> pa.Table:
    """Events whose schema is exactly the store's, nulls and all: ``ts`` and ``event_action``
    are declared non-nullable, and Arrow does not enforce that."""
    t = events_batch(n, start_seq=10_000, host=host_info("alpha"))
    for name in ("ts", "event_action"):
        i = schema.EVENTS.get_field_index(name)
        col = t.column(i).to_pylist()
        col[::2] = [None] * len(col[::2])
        t = t.set_column(i, schema.EVENTS.field(i), pa.array(col, schema.EVENTS.field(i).type))
    assert t.schema.equals(schema.EVENTS)
    return t


def _count(srv: Any) -> int:
    return int(srv.store.query("SELECT count(*) AS n FROM events WHERE host_name = 'alpha' "
                               "AND event_category <> 'agent'").column("n")[0].as_py())


def test_nulls_in_never_null_columns_are_refused_at_receipt(pki: Authority, tmp_path: Path,
                                                            log_server: Any) -> None:
    info = host_info("alpha")
    agent = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    try:
        agent.write("events", events_batch(100, start_seq=0, host=info))
        agent.write("events", _hostile(10))
        agent.write("events", events_batch(100, start_seq=100, host=info))
        wait_for(lambda: agent.spool.unacked() == 0, 20, "every frame answered")
        log_server.srv.ingest.flush()
        wait_for(lambda: _count(log_server) == 200, 20, "the good frames stored")
    finally:
        agent.close()
    (refused,) = read_refused(tmp_path / "spool-alpha")
    assert refused["seq"] == 1
    for what in ("events batch has nulls", "'ts' (5 of 10 rows)", "'event_action' (5 of 10 rows)", "never"):
        assert what in refused["reason"], refused["reason"]
    assert (tmp_path / "spool-alpha" / "refused" / f"seq-{1:016d}.fxs").stat().st_size > 0  # the frame itself kept
    # nothing of it stored or waiting in the evidence to be stored; the refusal is on record
    assert log_server.srv.not_ingested() == {}
    assert log_server.store.query("SELECT count(*) AS n FROM events WHERE ts IS NULL").column("n")[0].as_py() == 0
    assert any("never leaves empty" in r for r in log_server.srv.refusals)
    (line,) = [r for _, r in read_refusals(log_server.evidence) if r and r.get("seq") == 1]
    assert line["host"] == "alpha" and line["final"] and "never leaves empty" in line["reason"]
