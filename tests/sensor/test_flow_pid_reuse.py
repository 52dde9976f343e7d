"""A pid taken by a new process before the agent's flush: the kernel's aggregated rows of
the pid's previous holder (flow edges, re-open counts) still describe that process, and
none of them is lost."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf


def test_an_edge_handed_over_on_pid_reuse_keeps_its_own_process(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "shared.txt"
    target.write_bytes(b"")
    os.chmod(target, 0o666)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    reused_file = tmp_path / "reused"
    res = record(tmp_path / "s.duckdb", "python3", str(Path(__file__).with_name("pid_reuse.py")), str(target), marker,
                 str(reused_file))
    assert res.returncode == 0, res.stdout + res.stderr
    reused = [int(x) for x in reused_file.read_text().split()]
    assert len(reused) == 3, reused
    st, ids = subtree(tmp_path / "s.duckdb", marker)
    edges = rows(st, """SELECT f.entity_id, f.pid, f.process_name, f.user_id, f.reason, f.write_bytes,
                               e.user_effective_id, e.group_id, e.process_tid
                        FROM flows f LEFT JOIN events e
                          ON e.event_action = 'flow' AND e.process_entity_id = f.entity_id AND e.file_inode = f.file_inode
                        WHERE f.file_inode = $ino AND f.entity_id IN (SELECT unnest($ids))""",
                 ino=target.stat().st_ino, ids=ids)
    # under load another process sometimes took the pid before the second writer: that
    # attempt's first writer wrote alone, its edge its own (checked below with the others)
    alone = [e for e in edges if e["pid"] not in reused]
    assert all(e["process_name"] == "fx-first" and e["reason"] != "superseded" for e in alone), alone
    assert len({e["entity_id"] for e in edges if e["pid"] in reused}) == 6, edges
    assert {e["pid"] for e in edges} - {e["pid"] for e in alone} == set(reused), edges
    by_name = {}
    for e in edges:
        by_name.setdefault(e["process_name"], []).append(e)
    # every edge names the program that moved the data, and the uid it moved it as
    assert {n: {e["user_id"] for e in es} for n, es in by_name.items()} == {"fx-first": {0}, "fx-second": {0}}, edges
    # each pair of writers shared a pid before a flush: the first one's edge is still its own
    # (not the name, euid or gid of the pid's new holder), whether the kernel handed it over
    # through the ring (it met the new holder in the flows map) or kept both apart (a slot
    # of the per-CPU cache, given up to the map, and the new holder's slot)
    firsts = {e["entity_id"] for e in edges if e["process_name"] == "fx-first"}
    assert len({e["entity_id"] for e in edges if e["process_name"] == "fx-first" and e["pid"] in reused}) == 3, edges
    for e in edges:
        if e["entity_id"] in firsts:
            assert e["process_name"] == "fx-first" and e["user_id"] == 0, e
        if e["reason"] == "superseded":
            assert e["process_name"] == "fx-first", e
            assert e["user_effective_id"] is None and e["group_id"] is None, e
    # the re-opens each process counted are flushed as its own summary row, named by it,
    # whether or not the pid had a new holder before the flush
    counted = rows(st, """SELECT process_entity_id AS e, process_name AS name, event_count AS n FROM events
                          WHERE event_action = 'open' AND event_count IS NOT NULL AND file_inode = $ino
                            AND process_entity_id IN (SELECT unnest($ids))""", ino=target.stat().st_ino, ids=ids)
    names = {e["entity_id"]: e["process_name"] for e in edges}
    n_alone = len({e["entity_id"] for e in alone})
    assert sorted((names[c["e"]], c["n"]) for c in counted) == [("fx-first", 1)] * (3 + n_alone) + [("fx-second", 1)] * 3, \
        counted
