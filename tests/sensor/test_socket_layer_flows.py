"""Socket data counted at the socket layer (tp_btf sock_send_length / sock_recv_length,
which spare every send/recv call a syscall tracepoint) gives the same flow edges as
counting it at the syscalls' exits: the same objects, directions, counts, bytes and
descriptors, so the dependency graph built on them is the same."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("flow_case.py")
# (read count, read bytes, write count, write bytes) of each object, as the case moves them
EXPECTED = {
    "file": (2, 2048, 1, 1024),       # read back whole, then read again by the sendfile
    "pipe": (1, 300, 1, 300),
    "client": (None, 1224, 2, 600),   # a recv may return part of what was sent: counts vary
    "server": (None, 600, 2, 1224),   # send 200, then sendfile 1024
    "unix_a": (0, 0, 1, 64),
    "unix_b": (1, 64, 0, 0),
}


def _edges(tmp: Path, mode: str) -> dict[str, dict[str, Any]]:
    d = tmp / mode
    d.mkdir()
    os.chmod(d, 0o755)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    out = d / "inodes.json"
    res = record(d / "s.duckdb", "python3", str(CASE), str(out), marker,
                 extra=("--no-rules", "--socket-flows", mode))
    assert res.returncode == 0, res.stdout + res.stderr
    ino = json.loads(out.read_text())
    st, ids = subtree(d / "s.duckdb", marker)
    got = rows(st, """SELECT file_inode AS ino, fd, file_type, read_count AS rc, read_bytes AS rb,
                             write_count AS wc, write_bytes AS wb
                      FROM flows WHERE entity_id IN (SELECT unnest($ids)) AND file_inode IN (SELECT unnest($inos))""",
               ids=ids, inos=list(ino.values()))
    role = {v: k for k, v in ino.items()}
    edges: dict[str, dict[str, Any]] = {}
    for g in got:  # an edge may be flushed in parts (one per second): add them up
        e = edges.setdefault(role[g["ino"]], {"fd": g["fd"], "type": g["file_type"], "rc": 0, "rb": 0, "wc": 0, "wb": 0})
        for k in ("rc", "rb", "wc", "wb"):
            e[k] += g[k]
    return edges


def test_socket_layer_edges_equal_the_syscall_edges(tmp_path: Path) -> None:
    at_socket = _edges(tmp_path, "socket")
    at_syscall = _edges(tmp_path, "syscall")
    assert set(at_socket) == set(EXPECTED), at_socket
    for role, (rc, rb, wc, wb) in EXPECTED.items():
        e = at_socket[role]
        assert (e["rb"], e["wc"], e["wb"]) == (rb, wc, wb), (role, e)
        if rc is not None:
            assert e["rc"] == rc, (role, e)
        assert e["fd"] >= 0, (role, e)  # the descriptor that moved the data, as at the syscall
    assert {r: e["type"] for r, e in at_socket.items()} == {r: e["type"] for r, e in at_syscall.items()}
    strip = {r: {k: v for k, v in e.items() if not (k == "rc" and EXPECTED[r][0] is None)}
             for r, e in at_syscall.items()}
    assert {r: {k: v for k, v in e.items() if k in strip[r]} for r, e in at_socket.items()} == strip


def test_tcp_counters_give_the_same_edges(tmp_path: Path) -> None:
    """A TCP connection's own process counted by the connection's sequence numbers (the
    default, --socket-flows counters) moves the same bytes each way on the same objects, by
    the same descriptor, as every call counted at the socket layer; its counts are data
    segments, not calls, so they are not compared."""
    by_counters = _edges(tmp_path, "counters")
    per_call = _edges(tmp_path, "socket")
    assert set(by_counters) == set(per_call) == set(EXPECTED), by_counters
    for role, e in by_counters.items():
        p = per_call[role]
        assert (e["rb"], e["wb"], e["fd"], e["type"]) == (p["rb"], p["wb"], p["fd"], p["type"]), (role, e, p)
        if role not in ("client", "server"):  # not TCP: still per call
            assert (e["rc"], e["wc"]) == (p["rc"], p["wc"]), (role, e, p)
        else:
            assert (e["rc"] > 0) == (e["rb"] > 0) and (e["wc"] > 0) == (e["wb"] > 0), (role, e)
