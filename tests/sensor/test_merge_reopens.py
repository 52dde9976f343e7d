"""The flush's merge of re-open counts from the hash map and the slots (sensor/slots.py).

One (process, file, flags) may have a row in the hash map (made at its first open of the
period, with no repeats yet) and rows in slots of several CPUs. ``merge_reopens`` makes one row
of each: the repeats summed, the first and last repeat the earliest and latest of the rows that
counted any, the name the hash map's row's (the first open's), else the slot row that began
first. It groups only rows whose hash another row shares, in hash order, and falls back to the
key columns when two keys share a hash; compared here with a plain dictionary over every row,
on the rows the recorder keeps (a count of repeats).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import forensix.sensor
from forensix.sensor.abi import struct_dtype
from forensix.sensor.slots import merge_reopens

_ABI = json.loads((Path(forensix.sensor.__file__).parent / "_bpf" / "abi.json").read_text())
KD, VD = struct_dtype(_ABI, "fx_open_key"), struct_dtype(_ABI, "fx_open_rep")


def _rows(rng: np.random.Generator, n: int, keys: np.ndarray, counted: float) -> tuple[np.ndarray, np.ndarray]:
    k = keys[rng.integers(0, len(keys), n)]
    v = np.zeros(n, VD)
    v["count"] = np.where(rng.random(n) < counted, rng.integers(1, 1000, n), 0)
    v["first"] = rng.permutation(n).astype(np.uint64) * 7 + 1 + rng.integers(0, 5, n).astype(np.uint64)
    v["last"] = v["first"] + rng.integers(0, 1000, n).astype(np.uint64)
    names = b"".join(f"c{i}".encode().ljust(16, b"\0") for i in rng.integers(0, 1 << 30, n))
    v["comm"] = np.frombuffer(names, v["comm"].dtype.base).reshape(n, -1)
    return k, v


def _keys(rng: np.random.Generator, distinct: int) -> np.ndarray:
    ek = np.zeros(distinct, KD)
    ek["ino"] = rng.permutation(np.arange(1, distinct + 1, dtype=np.uint64) << np.uint64(4))
    ek["dev"] = rng.integers(1, 3, distinct)
    ek["pid"] = rng.integers(1, 30, distinct)
    ek["flags"] = rng.choice([0, 0o100000, 0o2000000], distinct)
    ek["start"] = ek["pid"].astype(np.uint64) * 1000 + 1
    ek["uid"] = rng.integers(0, 2, distinct)
    return ek


def _expected(ok: np.ndarray, ov: np.ndarray, sk: np.ndarray, sv: np.ndarray) -> dict[bytes, tuple[int, int, int, bytes]]:
    groups: dict[bytes, list[tuple[int, int, int, int, bytes]]] = {}
    for src, (k, v) in enumerate(((ok, ov), (sk, sv))):
        for kr, vr in zip(k, v, strict=True):
            groups.setdefault(kr.tobytes(), []).append(
                (src, int(vr["first"]), int(vr["last"]), int(vr["count"]), vr["comm"].tobytes()))
    out = {}
    for key, rs in groups.items():
        count = sum(r[3] for r in rs)
        if not count:
            continue
        named = min(rs, key=lambda r: (r[0], r[1]))  # the map's row, else the slot that began first
        first = min(r[1] for r in rs if r[3])
        last = max(r[2] for r in rs if r[3])
        out[key] = (count, first, last, named[4])
    return out


def _got(k: np.ndarray, v: np.ndarray) -> dict[bytes, tuple[int, int, int, bytes]]:
    out = {}
    seen = set()
    for kr, vr in zip(k, v, strict=True):
        key = kr.tobytes()
        assert key not in seen, "one key in two rows after the merge"
        seen.add(key)
        if vr["count"]:
            out[key] = (int(vr["count"]), int(vr["first"]), int(vr["last"]), vr["comm"].tobytes())
    return out


def _colliding(k: np.ndarray, start: np.ndarray) -> np.ndarray:
    return k["pid"].astype(np.uint64)  # distinct keys of one pid share a hash


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("hashes", [None, _colliding], ids=["hash", "colliding"])
def test_merge_reopens_as_a_dictionary_would(seed: int, hashes: object) -> None:
    rng = np.random.default_rng(seed)
    keys = _keys(rng, 3000)
    # the hash map: one row per key (its first open, mostly without repeats); slots: repeats of some of them
    ok = keys[rng.permutation(3000)[:2000]]
    ov = _rows(rng, 2000, ok, 0.1)[1]
    sk, sv = _rows(rng, 2500, keys, 0.8)
    kw = {} if hashes is None else {"hashes": hashes}
    k, v = merge_reopens(ok, ov, sk, sv, **kw)
    assert _got(k, v) == _expected(ok, ov, sk, sv)


def test_merge_reopens_with_every_key_once() -> None:
    rng = np.random.default_rng(7)
    keys = _keys(rng, 1000)
    ok, ov = keys[:400], _rows(rng, 400, keys[:400], 0.5)[1]
    sk, sv = keys[400:], _rows(rng, 600, keys[400:], 0.5)[1]
    k, v = merge_reopens(ok, ov, sk, sv)
    assert _got(k, v) == _expected(ok, ov, sk, sv)
