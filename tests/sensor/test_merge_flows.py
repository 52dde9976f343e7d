"""The flush's merge of flow edges from the hash map, the slots and the spill (sensor/slots.py).

One edge, (key, process), may be in several places: the hash map, slots of several CPUs,
the spill. ``merge_flows`` makes one row of each: counts and bytes summed, the last time the
latest, the rest (fd, thread, name, first time) the row that began first. It groups only the
rows whose hash another row shares, so these tests compare it with a plain dictionary over
every row, with many repeats, none, and hashes that collide on purpose (distinct edges must
stay distinct).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import forensix.sensor
from forensix.sensor.abi import struct_dtype
from forensix.sensor.slots import merge_flows

_ABI = json.loads((Path(forensix.sensor.__file__).parent / "_bpf" / "abi.json").read_text())
KD, VD = struct_dtype(_ABI, "fx_flow_key"), struct_dtype(_ABI, "fx_flow")


def _edges(rng: np.random.Generator, n: int, distinct: int, each_once: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``distinct`` edges at most (a key and its process's start); ``each_once``:
    no edge in two rows."""
    ek = np.zeros(distinct, KD)
    ek["ino"] = rng.permutation(np.arange(1, distinct + 1, dtype=np.uint64) << np.uint64(8))  # distinct
    ek["dev"] = rng.integers(1, 4, distinct)
    ek["pid"] = rng.integers(1, 40, distinct)
    ek["exec_id"] = rng.integers(0, 3, distinct)
    ek["igen"] = rng.integers(0, 2, distinct)
    start = ek["pid"].astype(np.uint64) * 1000 + rng.integers(0, 2, distinct).astype(np.uint64)
    pick = rng.permutation(distinct)[:n] if each_once else rng.integers(0, distinct, n)
    k = ek[pick]
    v = np.zeros(n, VD)
    v["start"] = start[pick]
    v["first"] = rng.permutation(n).astype(np.uint64) + 1  # distinct: "began first" is one row
    v["last"] = v["first"] + rng.integers(0, 1000, n).astype(np.uint64)
    for f in ("rcount", "rbytes", "wcount", "wbytes"):
        v[f] = rng.integers(0, 1 << 20, n)
    v["fd"] = rng.integers(0, 100, n)
    v["tid"] = rng.integers(1, 1 << 20, n)
    return k, v


def _expected(k: np.ndarray, v: np.ndarray) -> dict[tuple[bytes, int], tuple[int, ...]]:
    out: dict[tuple[bytes, int], list[int]] = {}
    for kr, vr in zip(k, v, strict=True):
        key = (kr.tobytes(), int(vr["start"]))
        cur = out.get(key)
        row = [int(vr[f]) for f in ("first", "last", "rcount", "rbytes", "wcount", "wbytes", "fd", "tid")]
        if cur is None:
            out[key] = row
            continue
        if row[0] < cur[0]:  # the row that began first names the edge
            cur[0], cur[6], cur[7] = row[0], row[6], row[7]
        cur[1] = max(cur[1], row[1])
        for i in range(2, 6):
            cur[i] += row[i]
    return {key: tuple(r) for key, r in out.items()}


def _got(k: np.ndarray, v: np.ndarray) -> dict[tuple[bytes, int], tuple[int, ...]]:
    got: dict[tuple[bytes, int], tuple[int, ...]] = {}
    for kr, vr in zip(k, v, strict=True):
        key = (kr.tobytes(), int(vr["start"]))
        assert key not in got, "one edge in two rows after the merge"
        got[key] = tuple(int(vr[f]) for f in ("first", "last", "rcount", "rbytes", "wcount", "wbytes", "fd", "tid"))
    return got


def _colliding(k: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Hashes that collide for distinct edges: only the process's pid counts."""
    return k["pid"].astype(np.uint64)


def _constant(k: np.ndarray, start: np.ndarray) -> np.ndarray:
    return np.zeros(len(k), np.uint64)


@pytest.mark.parametrize("hashes", [None, _colliding, _constant], ids=["hashed", "colliding", "all-one-hash"])
@pytest.mark.parametrize("n,distinct", [(3000, 200), (3000, 2900), (3000, 30_000), (1, 1)])
def test_merge_equals_one_row_per_edge(hashes: object, n: int, distinct: int) -> None:
    rng = np.random.default_rng(n + distinct)
    k, v = _edges(rng, n, distinct)
    cut = n // 3  # the hash map's part, then the slots' and the spill's
    args = (k[:cut], v[:cut], k[cut:], v[cut:])
    mk, mv = merge_flows(*args) if hashes is None else merge_flows(*args, hashes=hashes)  # type: ignore[arg-type]
    assert _got(mk, mv) == _expected(k, v)


def test_unique_edges_go_out_as_they_are() -> None:
    """A web server's flush: every edge in one place. The rows are those given, in order."""
    k, v = _edges(np.random.default_rng(7), 5000, 5000, each_once=True)
    mk, mv = merge_flows(k[:10], v[:10], k[10:], v[10:])
    assert (mk == k).all() and (mv == v).all()
