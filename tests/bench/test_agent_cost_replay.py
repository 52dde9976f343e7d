"""The agent-cost bench replays a capture as the tree's recorder would have drained it:
a capture by a recorder that drained twice at each flow-map flush (once in the loop, once
in the flush) is replayed with those two drains joined into one batch, in order, every
record kept; drains at other times stay apart (bench/agent_cost.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from forensix.sensor.ringbuf import Drained

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.agent_cost import _flush_drains_joined


def _drain(*records: bytes) -> Drained:
    """A drain of whole ring records: 8-byte header (length), payload padded to 8 bytes."""
    data, offs, lens = b"", [], []
    for r in records:
        offs.append(len(data) + 8)
        lens.append(len(r))
        data += len(r).to_bytes(4, "little") + bytes(4) + r + bytes(-len(r) % 8)
    return Drained(data, np.array(offs, np.int64), np.array(lens, np.int64))


def _payloads(d: Drained) -> list[bytes]:
    return [d.data[o:o + n] for o, n in zip(d.offsets.tolist(), d.lengths.tolist())]


def test_the_two_drains_of_a_flush_tick_become_one_batch_in_order() -> None:
    woke, loop, flush, later = _drain(b"w1"), _drain(b"a1", b"a22"), _drain(b"b1", b"b333333333"), _drain(b"c")
    maps = ("flows", ("k", "v"))
    inputs = [("table:processes", "snapshot"), ("ring", woke), ("ring", loop), ("ring", flush), maps,
              ("reopens", ("k2", "v2")), ("ring", later)]
    out = _flush_drains_joined(inputs)
    assert [k for k, _ in out] == ["table:processes", "ring", "ring", "flows", "reopens", "ring"]
    assert _payloads(out[1][1]) == [b"w1"]  # a drain before the tick's two stays alone
    assert _payloads(out[2][1]) == [b"a1", b"a22", b"b1", b"b333333333"]
    assert out[3] == maps and _payloads(out[5][1]) == [b"c"]
    records = [p for k, x in inputs if k == "ring" for p in _payloads(x)]
    assert [p for k, x in out if k == "ring" for p in _payloads(x)] == records  # nothing lost or reordered


def test_a_flush_after_a_single_drain_is_left_as_it_was() -> None:
    one = _drain(b"x" * 20)
    inputs = [("ring", one), ("flows", ("k", "v")), ("flows", ("k", "v"))]
    assert _flush_drains_joined(inputs) == inputs


def test_two_drains_larger_than_the_drain_bound_stay_two_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder's one drain at a flush tick stops at its byte bound and the next tick
    takes the rest: two captured drains larger than that together are not joined."""
    import bench.agent_cost as ac

    first, second = _drain(b"a" * 40), _drain(b"b" * 40)
    monkeypatch.setattr(ac, "_DRAIN_BYTES", len(first.data) + len(second.data) - 8)
    inputs = [("ring", first), ("ring", second), ("flows", ("k", "v"))]
    assert _flush_drains_joined(inputs) == inputs
    monkeypatch.setattr(ac, "_DRAIN_BYTES", len(first.data) + len(second.data))
    assert len(_flush_drains_joined(inputs)) == 2
