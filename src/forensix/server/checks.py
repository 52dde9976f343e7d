"""Per-frame seal checks, shared by the log host (on receipt) and ``forensix verify``."""

from __future__ import annotations

from forensix.agent.frame import Frame
from forensix.pki.sealkey import KeySchedule

__all__ = ["seal_problem"]


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
