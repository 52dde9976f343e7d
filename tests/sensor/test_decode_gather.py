"""The decoder's string gather (Arrow string views over the drained bytes) gives what an
index per byte gives: every length around the 12 bytes a view holds inline, absent
strings, strings at the very end of the buffer, and bytes that are not UTF-8."""

from __future__ import annotations

import numpy as np
import pytest

from forensix.sensor.decode import _gather, _gather_bytes


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
