"""Clients of one listening unix socket are joined through the server process, not through
the socket's path (unix_clients_case.sh, recorded by the real sensor).

Keyed by its path, /run/docker.sock was one node that every client wrote into and read from:
forward from one client's bytes reached another client's later reads with no server in
between (a false impact path), and backward from what a client received reached every
other client that wrote into the socket before (false ancestors). Each unix stream
connection is now its own node (its client's socket: the connect's inode, the accept's
peer), and the server is a hop of its own: a client it served after reading A's bytes is
reached through it; a client whose handler never saw them is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward
from forensix.analysis.targets import Target
from forensix.store.embedded import open_reader

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("unix_clients_case.sh")


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("unix-clients")
    os.chmod(work, 0o755)
    (work / "a.secret").write_text("the secret of client A\n" * 3)
    store = work / "s.duckdb"
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--no-rules", "--store", str(store),
                        "--", "bash", str(CASE), str(work)], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "b.out").read_bytes() == b"answer to b2"
    assert (work / "a.out").read_text() == (work / "a.secret").read_text()
    return {"reader": open_reader(store), "work": work}


def _labels(g: Graph) -> set[str]:
    return {n.label for n in g.nodes.values()}


def _proc_args(g: Graph) -> dict[str, str]:
    """process node key -> its last command line"""
    return {n.key: " ".join(n.attrs.get("args") or []) for n in g.node_by("process")}


def test_forward_reaches_other_clients_only_through_the_server(rec: dict[str, Any]) -> None:
    w = rec["work"]
    g = forward(rec["reader"], Target("file", path=str(w / "a.secret")), TrackOptions(depth=8))
    labels = _labels(g)
    assert str(w / "a.out") in labels, sorted(labels)  # the server wrote A's bytes
    assert str(w / "c.out") in labels, sorted(labels)  # C was served by the server after that
    assert str(w / "b.out") not in labels, sorted(labels)  # B's handler never saw them
    socks = [n for n in g.node_by("unix") if str(w / "u.sock") in n.label]
    assert len(socks) == 2, [n.label for n in g.node_by("unix")]  # A's and C's connections, apart
    server = next(n for n in g.node_by("process") if (w / "a.out").as_posix() in {
        g.nodes[e.dst].label for e in g.edges if e.src == n.key})
    a_conn, c_conn = sorted(socks, key=lambda n: n.depth)
    assert c_conn.depth > server.depth > a_conn.depth, [(n.label, n.depth) for n in (a_conn, server, c_conn)]
    # C's connection is reached from the server, not from A's connection
    into_c = {g.nodes[e.src].kind for e in g.edges if e.dst == c_conn.key}
    assert into_c == {"process"} and server.key in {e.src for e in g.edges if e.dst == c_conn.key}, into_c


def test_backward_from_one_client_misses_the_others(rec: dict[str, Any]) -> None:
    w = rec["work"]
    g = backtrack(rec["reader"], Target("file", path=str(w / "b.out")), TrackOptions(depth=8))
    labels = _labels(g)
    assert str(w / "a.secret") not in labels, sorted(labels)
    assert not [a for a in _proc_args(g).values() if "a.secret" in a], sorted(_proc_args(g).values())
    assert [n for n in g.node_by("unix") if str(w / "u.sock") in n.label], sorted(labels)
    # C asked the server itself, after it read A's bytes: A is a real ancestor, through it
    g = backtrack(rec["reader"], Target("file", path=str(w / "c.out")), TrackOptions(depth=8))
    assert str(w / "a.secret") in _labels(g), sorted(_labels(g))
