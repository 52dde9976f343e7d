"""Recording fixtures: run the real `forensix record` (root, real kernel) around a workload."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import DuckDBStore

FORENSIX = [sys.executable, "-m", "forensix"]


def record(store: Path, *command: str, extra: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FORENSIX, "record", "-q", "--store", str(store), *extra, "--", *command],
        capture_output=True, text=True, timeout=timeout,
    )


def subtree(store: Path, marker: str) -> tuple[DuckDBStore, list[int]]:
    """Open a recorded store; the entity ids of the process whose args hold marker (first) and its descendants."""
    st = DuckDBStore(store, read_only=True)
    roots = st.query(
        "SELECT entity_id FROM processes WHERE list_contains(args, $m) ORDER BY image_ts LIMIT 1", {"m": marker}
    ).column(0).to_pylist()
    assert roots, f"no process with {marker!r} in its args was recorded"
    ids = [roots[0]] + [e for e in st.query(
        # the root is often the recorder itself (the marker is in its command line): its
        # store keeper and its orphan watch (which outlives the recording, so its exit is
        # never recorded) are its children too, and are not the workload's
        """WITH RECURSIVE t(e) AS (SELECT $root::UBIGINT UNION SELECT p.entity_id FROM processes p JOIN t ON p.parent_entity_id = t.e
                                  WHERE p.entity_id NOT IN (SELECT entity_id FROM processes
                                                            WHERE list_contains(args, 'forensix.store.keeper')
                                                               OR list_contains(args, 'forensix-orphan-watch')))
           SELECT DISTINCT e FROM t""",
        {"root": roots[0]},
    ).column(0).to_pylist() if e != roots[0]]
    return st, ids


def rows(st: DuckDBStore, sql: str, **params: Any) -> list[dict[str, Any]]:
    return st.query(sql, params).to_pylist()


@pytest.fixture(autouse=True)
def _no_sensor_left_pinned(tmp_path: Path) -> Iterator[None]:
    """A test that fails after killing a recorder leaves its sensor pinned, recording the
    whole host for nobody: detach the sensors of this test's stores (only those)."""
    yield
    for store in tmp_path.rglob("*.duckdb"):
        pin = pin_dir_for(store)
        if pin.exists():
            subprocess.run([*FORENSIX, "record", "--stop", "--store", str(store)], capture_output=True,
                           timeout=120, check=False)


@pytest.fixture(autouse=True)
def _need_root() -> None:
    # CI runs as root; a developer without root gets a reason, not a failure storm.
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")


# (python -c OPENS DIR N PAUSE) N files created and closed in DIR, one every PAUSE seconds (0: as fast as Python goes)
OPENS = """
import os, sys, time
d, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(n):
    fd = os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    if pause:
        time.sleep(pause)
"""
