"""A gap says why: a ring that filled is 'ringbuf-full'; a reservation the kernel refused
while the ring had room is 'reserve-failed' (not a capacity problem: no bigger ring helps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import record, rows

pytestmark = pytest.mark.bpf

STORM = """
import os, time
t = time.time()
while time.time() - t < 1.5:
    for _ in range(1000):
        os.close(os.open("/dev/null", os.O_WRONLY | os.O_TRUNC))  # a truncating open: always one record
"""


def test_a_ring_that_overflowed_is_named_full(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    (tmp_path / "storm.py").write_text(STORM)
    store = tmp_path / "s.duckdb"
    res = record(store, "python3", str(tmp_path / "storm.py"), extra=("--ring-mb", "1"))
    assert res.returncode == 0, res.stderr
    st = DuckDBStore(store, read_only=True)
    gaps = rows(st, "SELECT event_class, reason, sum(count) n FROM gaps GROUP BY ALL")
    assert any(g["event_class"] == "file" for g in gaps), "the storm did not overflow a 1 MiB ring"
    assert {g["reason"] for g in gaps if g["event_class"] == "file"} == {"ringbuf-full"}, gaps
    msgs = rows(st, "SELECT message FROM events WHERE event_action = 'gap'")
    assert msgs and all("ring buffer full" in m["message"] for m in msgs if " file records" in m["message"])
