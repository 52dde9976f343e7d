"""A file read or written right after a socket transfer of the same thread, with the same call,
is an edge of its own, and sendfile(2) from a file into a socket is a read of the file as well
as a write of the socket: whichever program counts the socket side (the syscall's exit or the
socket layer), the file side is never taken for part of it, and the socket side is counted once.
Guards the hot path of fx_exit_rw and fx_sock_flow, where a socket transfer is told from a file's
(bpf/sensor.bpf.c): a shortcut there that let a socket call's mark stand for the next call would
drop these file edges."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import record, rows, subtree

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("rw_after_socket_case.py")
ROUNDS = 40


def _edges(d: Path, mode: str) -> dict[str, dict[str, Any]]:
    d.mkdir()
    os.chmod(d, 0o755)
    (d / "read.txt").write_bytes(b"r" * 5 * ROUNDS)
    (d / "sent.txt").write_bytes(b"s" * 8 * ROUNDS)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    out = d / "inodes.json"
    res = record(d / "s.duckdb", "python3", str(CASE), str(out), str(d), str(ROUNDS), marker,
                 extra=("--no-rules", "--socket-flows", mode))
    assert res.returncode == 0, res.stdout + res.stderr
    ino = json.loads(out.read_text())
    st, ids = subtree(d / "s.duckdb", marker)
    got = rows(st, """SELECT file_inode AS ino, read_count AS rc, read_bytes AS rb, write_count AS wc,
                             write_bytes AS wb
                      FROM flows WHERE entity_id IN (SELECT unnest($ids)) AND file_inode IN (SELECT unnest($inos))""",
               ids=ids, inos=list(ino.values()))
    role = {v: k for k, v in ino.items()}
    edges: dict[str, dict[str, Any]] = {}
    for g in got:  # an edge may be flushed in parts: add them up
        e = edges.setdefault(role[g["ino"]], {"rc": 0, "rb": 0, "wc": 0, "wb": 0})
        for k in ("rc", "rb", "wc", "wb"):
            e[k] += g[k]
    return edges


@pytest.mark.parametrize("mode", ["socket", "counters"])
def test_file_edges_right_after_socket_calls(tmp_path: Path, mode: str) -> None:
    e = _edges(tmp_path / mode, mode)
    n = ROUNDS
    # the files: every call counted, with its bytes, nothing taken for the socket call before it
    assert e.get("written") == {"rc": 0, "rb": 0, "wc": n, "wb": 7 * n}, e
    assert e.get("read") == {"rc": n, "rb": 5 * n, "wc": 0, "wb": 0}, e
    assert e.get("vec") == {"rc": 0, "rb": 0, "wc": n, "wb": 4 * n}, e
    assert e.get("sent") == {"rc": n, "rb": 8 * n, "wc": 0, "wb": 0}, e  # sendfile's read of the file
    # the sockets: their bytes once each way (counted at one place, not at both)
    assert (e["client"]["wb"], e["client"]["rb"]) == (13 * n, 8 * n), e
    assert (e["server"]["wb"], e["server"]["rb"]) == (8 * n, 13 * n), e
    if mode == "socket":  # per call: write + writev, and one sendfile a round
        assert (e["client"]["wc"], e["server"]["wc"]) == (2 * n, n), e
