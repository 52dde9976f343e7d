"""PIDs are reused, entity ids are not."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import numpy as np

from forensix.model.identity import SnapshotIds, entity_id, host_key

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf

# Forces the kernel to hand out the same pid twice: ns_last_pid = P-1 before each spawn.
REUSE = """
import os, subprocess, sys, time
marker = sys.argv[1]
for attempt in range(50):
    p1 = subprocess.Popen(["/bin/sleep", "0.01"]); pid = p1.pid; p1.wait()
    open("/proc/sys/kernel/ns_last_pid", "w").write(str(pid - 1))
    p2 = subprocess.Popen(["/bin/echo", marker + "-second"], stdout=subprocess.DEVNULL)
    p2.wait()
    if p2.pid == pid:
        print(pid); sys.exit(0)
sys.exit(7)
"""


def test_reused_pid_gives_two_entities(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "reuse.py"
    script.write_text(REUSE)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    res = record(tmp_path / "s.duckdb", "python3", str(script), marker)
    assert res.returncode == 0, f"could not force pid reuse: {res.stderr}"
    # the pid the script got twice; on a loaded host another process can take the pid
    # between the two spawns, and the script tries again: one "-second" echo per attempt,
    # each with its own pid. The one that reused the pid is the one to look at.
    pid = int(res.stdout.split()[-1])
    st, ids = subtree(tmp_path / "s.duckdb", marker)
    second = rows(st, "SELECT pid, entity_id FROM processes WHERE list_contains(args, $a) AND source = 'exec' "
                      "AND entity_id IN (SELECT unnest($ids))", a=marker + "-second", ids=ids)
    assert [s["pid"] for s in second if s["pid"] == pid] == [pid], second  # the reusing echo, once
    same_pid = rows(st, "SELECT DISTINCT entity_id FROM processes WHERE pid = $p AND entity_id IN (SELECT unnest($ids))",
                    p=pid, ids=ids)
    assert len(same_pid) == 2, "two processes with one pid must stay two entities"
    execs = rows(st, "SELECT process_entity_id, process_args FROM events WHERE event_action = 'exec' "
                     "AND process_pid = $p AND process_entity_id IN (SELECT unnest($ids)) ORDER BY ts", p=pid, ids=ids)
    assert [e["process_args"][0] for e in execs] == ["/bin/sleep", "/bin/echo"]
    assert execs[0]["process_entity_id"] != execs[1]["process_entity_id"]


def test_snapshot_and_kernel_agree_on_entity_ids() -> None:
    # /proc knows a start time to the tick; the kernel to the ns. A kernel event of a
    # snapshotted process gets the snapshot's id; everyone else keeps exact-start ids.
    hk = host_key("h", "b")
    tick = 10**9 // os.sysconf("SC_CLK_TCK")
    ids = SnapshotIds(hk)
    snap = ids.add(np.array([42, 7]), np.array([5, 3]))
    got = ids.ids(np.array([42, 42, 43, 7]), np.array([5 * tick + 1234, 6 * tick + 1, 5 * tick + 1234, 3 * tick]))
    assert got[0] == snap[0]  # same pid, same tick: the snapshotted process
    assert got[1] != snap[0]  # a later process with that pid
    assert got[2] != snap[0]  # another pid
    assert got[3] == snap[1]
    # two processes given one pid within the same tick stay two entities
    assert entity_id(hk, 42, 5 * tick + 1000) != entity_id(hk, 42, 5 * tick + 2000)
    assert entity_id(hk, 42, 5 * tick) != entity_id(host_key("h", "other-boot"), 42, 5 * tick)
