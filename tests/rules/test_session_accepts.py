"""An ssh session's source address: the latest accept of its daemons at or before the session
began, whatever the batches the accepts came in (rules/evidence.py keeps them as arrays per
batch, a busy server's accepts cost no Python object each)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from forensix.rules.evidence import SessionContext
from forensix.rules.live import ProcessContext


def _batch(rng: np.random.Generator, n: int) -> pa.Table:
    eid = rng.choice([0, 11, 12, 13], n)
    return pa.table({
        "event_action": pa.array(rng.choice(["accept", "connect", "open"], n)),
        "process_entity_id": pa.array(eid, pa.uint64(), mask=eid == 0),
        "ts": pa.array(rng.integers(0, 50, n), pa.int64()),  # ties on purpose
        "destination_ip": pa.array([None if x == 0 else ("" if x == 1 else f"10.0.0.{x}")
                                    for x in rng.integers(0, 9, n)], pa.string()),
        "network_transport": pa.array(rng.choice(["tcp", "unix", None], n).tolist(), pa.string()),
    })


def _reference(batches: list[pa.Table], eids: list[int], before: int) -> str | None:
    """The rule as a loop over rows: accepts with an entity, an address and not unix; the
    latest at or before ``before``, the first of equal times."""
    best: tuple[int, str] | None = None
    for e in eids:
        for b in batches:
            for r in b.to_pylist():
                if (r["event_action"] == "accept" and r["process_entity_id"] == e and r["destination_ip"]
                        and r["network_transport"] != "unix" and r["ts"] <= before
                        and (best is None or r["ts"] > best[0])):
                    best = (r["ts"], r["destination_ip"])
    return best[1] if best else None


def test_source_address_equals_the_row_by_row_rule() -> None:
    rng = np.random.default_rng(5)
    batches = [_batch(rng, int(n)) for n in rng.integers(0, 60, 12)]
    sess = SessionContext()
    for b in batches:
        sess.add_events(b)
    for eids in ([11], [12, 13], [13, 11, 12], [99], []):
        for before in (-1, 0, 7, 25, 49, 100):
            assert sess.source_ip(eids, before) == _reference(batches, eids, before), (eids, before)


def test_only_ssh_daemons_accepts_are_kept_by_the_live_engine() -> None:
    """The live engine knows the images: a web server's accepts are never a session's
    source and are not kept (they grew without bound); an ssh daemon's, and those of a
    process whose image is not known, are."""
    ctx = ProcessContext()
    ctx.images[11] = [(0, "/usr/sbin/nginx", None, "nginx")]
    ctx.images[12] = [(0, "/usr/sbin/sshd", None, "sshd")]
    batch = pa.table({"event_action": ["accept"] * 3, "process_entity_id": pa.array([11, 12, 13], pa.uint64()),
                      "ts": pa.array([5, 5, 5], pa.int64()), "destination_ip": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                      "network_transport": ["tcp"] * 3})
    sess = SessionContext()
    sess.add_events(batch, ctx)
    assert sorted(sess.accepts) == [12, 13]
    assert sess.source_ip([12], 9) == "10.0.0.2"
