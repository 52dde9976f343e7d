"""The decoder's string gather (Arrow string views over the drained bytes) gives what an
index per byte gives: every length around the 12 bytes a view holds inline, absent
strings, strings at the very end of the buffer, and bytes that are not UTF-8; mostly absent strings
(built only where present), and task names made once per distinct name."""

from __future__ import annotations

import numpy as np
import pytest

from forensix.sensor.strings import _comm_strings, _gather, _gather_bytes, comm_names


@pytest.mark.parametrize("seed", range(5))
def test_view_gather_equals_byte_gather(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(32, 127, 5000, dtype=np.uint8)
    n = 400
    ln = rng.choice([0, 1, 2, 12, 13, 14, 40, 200], n).astype(np.int64)  # ln counts the NUL
    start = rng.integers(0, len(raw) - 201, n)
    start[-1], ln[-1] = len(raw) - 5, 5  # a short string ending at the buffer's end
    got = _gather(raw, start, ln)
    assert got.equals(_gather_bytes(raw, start, ln))
    assert got.null_count == int((ln == 0).sum())
    assert got[int(np.argmax(ln == 200))].as_py() == raw[start[ln == 200][0]: start[ln == 200][0] + 199].tobytes().decode()


def test_bytes_that_are_not_utf8_are_escaped_not_lost() -> None:
    raw = np.frombuffer(b"ok\x00caf\xe9-long-enough-name\x00", np.uint8)
    got = _gather(raw, np.array([0, 3]), np.array([3, 22]))
    assert got.to_pylist() == ["ok", "caf\\xe9-long-enough-name"]


@pytest.mark.parametrize("present", [0.0, 0.003, 0.3, 0.7, 0.8, 1.0])
def test_mostly_absent_strings_equal_the_byte_gather(present: float) -> None:
    rng = np.random.default_rng(7)
    raw = rng.integers(32, 127, 5000, dtype=np.uint8)
    n = 2000
    ln = np.where(rng.random(n) < present, rng.choice([1, 2, 13, 40], n), 0).astype(np.int64)
    start = rng.integers(0, len(raw) - 41, n)
    got = _gather(raw, start, ln)
    assert got.type == _gather_bytes(raw, start, ln).type
    assert got.equals(_gather_bytes(raw, start, ln))
    assert got.null_count == int((ln == 0).sum())


def test_a_sparse_string_that_is_not_utf8_is_escaped() -> None:
    raw = np.frombuffer(b"ok\x00caf\xe9-long-enough-name\x00", np.uint8)
    start = np.zeros(100, np.int64)
    ln = np.zeros(100, np.int64)
    start[[10, 90]], ln[[10, 90]] = [0, 3], [3, 22]
    got = _gather(raw, start, ln).to_pylist()
    assert got[10] == "ok" and got[90] == "caf\\xe9-long-enough-name"
    assert got.count(None) == 98


def test_task_names_made_once_each_equal_row_by_row() -> None:
    rng = np.random.default_rng(3)
    names = [b"nginx", b"wrk", b"", b"exactly16bytes!!", b"caf\xe9", b"a\x00b"]
    comm = np.array([names[i] for i in rng.integers(0, len(names), 5000)], dtype="S16")
    b = np.ascontiguousarray(comm).view(np.uint8).reshape(len(comm), -1)
    got = comm_names(comm)
    assert got.equals(_comm_strings(b))
    assert got.to_pylist()[:50] == _comm_strings(b).to_pylist()[:50]
    assert comm_names(comm[:10]).equals(_comm_strings(b[:10]))  # small batches row by row
