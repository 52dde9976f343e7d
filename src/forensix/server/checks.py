"""Per-frame checks: the seal's, shared by the log host (on receipt) and ``forensix verify``;
the rows', on receipt."""

from __future__ import annotations

import pyarrow as pa

from forensix.agent.frame import Frame
from forensix.pki.sealkey import KeySchedule

__all__ = ["null_problem", "seal_problem"]


def null_problem(table: str, data: pa.Table) -> str | None:
    """Why the rows of a ``table`` batch (already cast to its schema) cannot be stored, or None.

    Arrow lets a field declared non-nullable hold nulls, so the schema check passes them; the
    store's NOT NULL constraint would refuse them only when the journal is sealed, long after
    the agent was told the frame is safe. Refused on receipt instead, the agent keeps the
    frame in its spool's refused/ with this reason."""
    bad = [(f.name, data.column(i).null_count) for i, f in enumerate(data.schema)
           if not f.nullable and data.column(i).null_count]
    if not bad:
        return None
    cols = ", ".join(f"{name!r} ({n} of {data.num_rows} rows)" for name, n in bad)
    return (f"{table} batch has nulls in column(s) the store never leaves empty: {cols}; the agent that "
            "sealed it is broken or not a forensix agent (every forensix agent fills them)")


def seal_problem(frame: Frame, keys: KeySchedule) -> str | None:
    """Why ``frame`` is not authentic under its own epoch's key, or None."""
    key = keys.mac_key(frame.epoch)
    if key is None:
        return f"epoch {frame.epoch} is beyond any epoch the verifier accepts (forged epoch)"
    if not frame.mac_ok(key):
        return f"MAC does not verify with the key of its epoch {frame.epoch} (altered, or sealed with another key)"
    lo, hi = keys.state.window(frame.epoch)
    if not lo <= frame.seal_ns < hi:
        return (f"sealed at {frame.seal_ns} ns, outside its epoch {frame.epoch} "
                f"[{lo}, {hi}): the epoch is not bound to the sealing time")
    return None
