"""The dependency graph is the same whether a TCP connection's own process is counted by
the connection's sequence numbers (--socket-flows counters) or every call is counted
(--socket-flows socket): one real scenario (client -> server -> file written, a reader of
that file, a second client only after the write, with a conversation long enough for the
counters to take over) recorded once each way, then backtracked and tracked forward; the
nodes and edges agree, and the second client is in neither backward answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward
from forensix.analysis.targets import Target
from forensix.store.embedded import open_reader
from forensix.testing.scenario import free_port

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("flow_modes_case.sh")
FORENSIX = [sys.executable, "-m", "forensix"]


def _record(tmp: Path, mode: str) -> dict[str, Any]:
    work = tmp / mode
    work.mkdir()
    os.chmod(work, 0o755)
    (work / "secret").write_text("the secret\n" * 300)
    (work / "other").write_text("unrelated\n" * 30)
    port = free_port()
    store = work / "s.duckdb"
    r = subprocess.run([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store), "--socket-flows", mode,
                        "--", "bash", str(CASE), str(work), str(port), f"marker-{uuid.uuid4().hex[:8]}"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "copy.txt").read_text() == (work / "secret").read_text()
    return {"reader": open_reader(store), "work": work, "port": port}


def _norm(g: Graph, rec: dict[str, Any]) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """Nodes and edges with what differs between two runs taken out: the work directory, the
    ports, pids and entity ids (a process is its executable)."""
    work, port = str(rec["work"]), rec["port"]

    def name(key: str) -> tuple[str, str]:
        n = g.nodes[key]
        if n.kind == "process":
            return n.kind, Path(n.attrs.get("executable") or "?").name
        label = n.label.replace(work, "W").replace(f":{port}", ":PORT")
        label = re.sub(r"[0-9a-f]*\d[0-9a-f]*", "N", label)  # inodes, ports, pids in names
        if n.kind == "connection":  # the endpoints' order follows the ports, which differ per run
            label = " <-> ".join(sorted(label.split(" <-> ")))
        return n.kind, label

    nodes = {name(k) for k in g.nodes}
    edges = {(name(e.src)[1], name(e.dst)[1], e.kind) for e in g.edges}
    return nodes, edges


def _same(got: dict[str, tuple[set[Any], set[Any]]]) -> None:
    (n0, e0), (n1, e1) = got["counters"], got["socket"]
    assert (n0, e0) == (n1, e1), {"nodes, counters only": sorted(n0 - n1), "nodes, per call only": sorted(n1 - n0),
                                  "edges, counters only": sorted(e0 - e1), "edges, per call only": sorted(e1 - e0)}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("flow-modes")
    return {mode: _record(tmp, mode) for mode in ("counters", "socket")}


def test_backtrack_from_the_copy_is_the_same(both: dict[str, dict[str, Any]]) -> None:
    got = {}
    for mode, rec in both.items():
        g = backtrack(rec["reader"], Target("file", path=str(rec["work"] / "copy.txt")), TrackOptions(depth=20))
        got[mode] = _norm(g, rec)
        nodes = got[mode][0]
        # the chain back to the secret: the reader, the file, the server, the connection, the client
        assert ("file", "W/received.txt") in nodes and ("file", "W/secret") in nodes, (mode, sorted(nodes))
        assert any(k == "connection" and "PORT" in lbl for k, lbl in nodes), (mode, sorted(nodes))
        # the second client came after the write: not an ancestor
        assert ("file", "W/other") not in nodes, (mode, sorted(nodes))
    _same(got)


def test_forward_from_the_secret_is_the_same(both: dict[str, dict[str, Any]]) -> None:
    got = {}
    for mode, rec in both.items():
        g = forward(rec["reader"], Target("file", path=str(rec["work"] / "secret")), TrackOptions(depth=20))
        got[mode] = _norm(g, rec)
        nodes = got[mode][0]
        assert ("file", "W/received.txt") in nodes and ("file", "W/copy.txt") in nodes, (mode, sorted(nodes))
    _same(got)


def test_tcp_bytes_are_the_same(both: dict[str, dict[str, Any]]) -> None:
    """Bytes each way on the two connections, per process, as the store has them."""
    got = {}
    for mode, rec in both.items():
        t = rec["reader"].query(
            f"""SELECT f.process_name AS exe, sum(f.read_bytes) AS rb, sum(f.write_bytes) AS wb
                FROM flows f WHERE f.file_inode IN (
                    SELECT file_inode FROM events WHERE event_action IN ('connect', 'accept')
                      AND (destination_port = {rec['port']} OR source_port = {rec['port']}))
                GROUP BY 1 ORDER BY 1""")
        got[mode] = sorted(zip(*(t.column(c).to_pylist() for c in ("exe", "rb", "wb")), strict=True))
    assert got["counters"] == got["socket"], got
    # the secret, the late client's 80 questions and 100 bytes, the server's "go" and 80 answers
    assert sum(r[2] for r in got["counters"]) == len("the secret\n" * 300) + 180 + 82, got
