"""Loss is evidence: a storm beyond what can be recorded is accounted for exactly."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import record, rows

pytestmark = pytest.mark.bpf

STORM = """
import os, subprocess, sys, time
from multiprocessing import Process
def storm():
    t = time.time()
    while time.time() - t < 2.0:
        for _ in range(1000):
            os.close(os.open("/dev/null", os.O_WRONLY | os.O_TRUNC))  # a truncating open: always one record
ps = [Process(target=storm) for _ in range(2)]
[p.start() for p in ps]
for i in range(40):                      # process lifecycle during the storm
    subprocess.run(["/bin/true", sys.argv[1]])
[p.join() for p in ps]
"""


def test_storm_losses_add_up_and_lifecycle_survives(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    (tmp_path / "storm.py").write_text(STORM)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "s.duckdb"
    res = record(store, "python3", str(tmp_path / "storm.py"), marker, extra=("--ring-mb", "1"))
    assert res.returncode == 0, res.stderr
    st = DuckDBStore(store, read_only=True)
    msg = rows(st, "SELECT message FROM events WHERE event_action = 'counters'")
    assert len(msg) == 1
    counters = json.loads(msg[0]["message"])["attempted_lost"]
    stored = {(r["event_class"], r["cpu"]): r["n"] for r in rows(
        st, "SELECT event_class, cpu, count(*) n FROM events WHERE seq IS NOT NULL GROUP BY ALL "
            "UNION ALL SELECT 'tty', cpu, count(*) FROM tty WHERE seq IS NOT NULL GROUP BY ALL")}  # terminal bytes
    gaps = {(r["event_class"], r["cpu"]): int(r["n"]) for r in rows(
        st, "SELECT event_class, cpu, sum(count) n FROM gaps GROUP BY ALL")}
    total_lost = 0
    for cls, per_cpu in counters.items():
        for cpu, (attempted, lost) in per_cpu.items():
            key = (cls, int(cpu))
            # every record the kernel tried to write is either in the store or in a gap
            assert stored.get(key, 0) + lost == attempted, (key, stored.get(key), lost, attempted)
            assert gaps.get(key, 0) == lost, (key, gaps.get(key), lost)
            total_lost += lost
    assert total_lost > 0, "the storm did not overflow a 1 MiB ring; the test proves nothing"
    # the process ring is separate: no lifecycle record was lost
    assert all(lost == 0 for _, lost in counters["process"].values())
    true_run = "source = 'exec' AND args = ['/bin/true', $m]"
    n = rows(st, f"SELECT count(*) n FROM processes WHERE {true_run}", m=marker)
    assert n[0]["n"] == 40
    ex = rows(st, "SELECT count(*) n FROM events WHERE event_action = 'exit' AND process_entity_id IN "
                  f"(SELECT entity_id FROM processes WHERE {true_run})", m=marker)
    assert ex[0]["n"] == 40
    seen = rows(st, "SELECT count(*) n FROM events WHERE event_action = 'gap'")
    assert seen[0]["n"] >= 1  # the gaps are in the timeline too
