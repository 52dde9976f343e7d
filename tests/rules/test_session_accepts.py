"""An ssh session's source address: the latest accept of its daemons at or before the session
began, whatever the batches the accepts came in (rules/evidence.py keeps them as arrays per
batch, a busy server's accepts cost no Python object each)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from forensix.rules.evidence import SessionContext


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
