"""Bytes on a socket join the node of the connection they travelled on (one node per TCP
connection, unix socket or pipe), recorded by the real sensor both ways sockets are counted
(--socket-flows counters and per call, see test_flow_modes_bpf).

The recorder names a socket's flows ``socket:[inode]``; a graph that kept them as file nodes
of that name cut the data path at the server: backward from what the server wrote, the
client was reached only through the accept edge, and the bytes hung off a dangling
``socket:[N]`` node (the closing note of 2026-12-06 suspected as much)."""

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
from forensix.testing.scenario import free_port

pytestmark = pytest.mark.bpf

CASE = Path(__file__).with_name("socket_nodes_case.sh")
SIZE = {name: len(f"{name} data\n" * 300) for name in ("secret", "secret2", "secret3", "secret4")}


def _record(tmp: Path, mode: str) -> dict[str, Any]:
    work = tmp / mode
    work.mkdir()
    os.chmod(work, 0o755)
    for name in SIZE:
        (work / name).write_text(f"{name} data\n" * 300)
    port = free_port()
    store = work / "s.duckdb"
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--no-rules", "--store", str(store),
                        "--socket-flows", mode, "--", "bash", str(CASE), str(work), str(port)],
                       check=False, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "unix.txt").read_text() == (work / "secret2").read_text()
    return {"reader": open_reader(store), "work": work, "port": port}


@pytest.fixture(scope="module", params=["counters", "socket"])
def rec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _record(tmp_path_factory.mktemp("socket-nodes"), request.param)


def _back(rec: dict[str, Any], name: str) -> Graph:
    return backtrack(rec["reader"], Target("file", path=str(rec["work"] / name)), TrackOptions(depth=3))


def _edges(g: Graph) -> set[tuple[str, str, str, int]]:
    return {(g.nodes[e.src].label, e.kind, g.nodes[e.dst].label, e.bytes) for e in g.edges}


def _no_bare_sockets(g: Graph) -> None:
    bare = [n.label for n in g.nodes.values() if n.label.startswith("socket:[")]
    assert not bare, bare


def _proc(g: Graph, exe: str) -> str:
    """The one process node of ``exe`` in the graph (cat and tr are unique within three hops)."""
    hits = [n.label for n in g.node_by("process") if Path(n.attrs.get("executable") or "").name == exe]
    assert len(hits) == 1, (exe, sorted(n.label for n in g.node_by("process")))
    return hits[0]


def _writer(g: Graph, path: Path, nbytes: int) -> str:
    """The process that wrote ``nbytes`` into ``path`` (the case's server)."""
    hits = [s for s, k, d, b in _edges(g) if k == "write" and d == str(path) and b == nbytes]
    assert len(hits) == 1, sorted(_edges(g))
    return hits[0]


def test_tcp_bytes_join_the_connection(rec: dict[str, Any]) -> None:
    """Backward from the file the server wrote: client -> one 4-tuple connection -> server."""
    g = _back(rec, "tcp.txt")
    _no_bare_sockets(g)
    conns = [n for n in g.node_by("connection") if f":{rec['port']}" in n.label]
    assert len(conns) == 1, [n.label for n in g.node_by("connection")]
    conn = conns[0].label
    assert conn.count("127.0.0.1:") == 2, conn  # both ends: the 4-tuple
    server, client = _writer(g, rec["work"] / "tcp.txt", SIZE["secret"]), _proc(g, "cat")
    edges = _edges(g)
    assert (conn, "read", server, SIZE["secret"]) in edges, sorted(edges)  # the bytes, on the connection
    assert (client, "connect", conn, 0) in edges, sorted(edges)
    # and the bytes the client wrote into it (before, backward from a connection followed
    # connect/accept only: the client's write was not drawn)
    assert (client, "write", conn, SIZE["secret"]) in edges, sorted(edges)


def test_unix_socket_bytes_join_its_node(rec: dict[str, Any]) -> None:
    g = _back(rec, "unix.txt")
    _no_bare_sockets(g)
    # the client's connection, labelled by the path (and the client's socket when the accept
    # named it: the client here may close before the server accepts, analysis.sockets)
    socks = [n.label for n in g.node_by("unix")]
    assert len(socks) == 1 and socks[0].split(" [client ")[0] == f"unix {rec['work']}/u.sock", socks
    sock = socks[0]
    server = _writer(g, rec["work"] / "unix.txt", SIZE["secret2"])
    edges = _edges(g)
    assert (sock, "read", server, SIZE["secret2"]) in edges, sorted(edges)
    clients = [s for s, k, d, _ in edges if k == "connect" and d == sock]
    assert len(clients) == 1 and clients[0] != server, sorted(edges)
    assert (clients[0], "write", sock, SIZE["secret2"]) in edges, sorted(edges)


def test_pipe_is_one_node(rec: dict[str, Any]) -> None:
    g = _back(rec, "pipe.txt")
    pipes = [n.label for n in g.nodes.values() if n.label.startswith("fifo:[")]
    assert len(pipes) == 1, sorted(n.label for n in g.nodes.values())
    edges = _edges(g)
    tr, cat = _proc(g, "tr"), _proc(g, "cat")
    assert (cat, "write", pipes[0], SIZE["secret3"]) in edges and (pipes[0], "read", tr, SIZE["secret3"]) in edges


def test_socketpair_is_one_node(rec: dict[str, Any]) -> None:
    """Both ends of a socketpair (two inodes) are one object: the child's bytes reach the parent."""
    g = _back(rec, "pair.txt")
    _no_bare_sockets(g)
    parent = _writer(g, rec["work"] / "pair.txt", SIZE["secret4"])
    (pair,) = [n.label for n in g.node_by("unix")]
    edges = _edges(g)
    assert (pair, "read", parent, SIZE["secret4"]) in edges, sorted(edges)
    senders = [s for s, k, d, b in edges if d == pair and k == "write" and b == SIZE["secret4"]]
    assert len(senders) == 1 and senders[0] != parent, sorted(edges)


def test_forward_from_the_secret_crosses_the_connection(rec: dict[str, Any]) -> None:
    g = forward(rec["reader"], Target("file", path=str(rec["work"] / "secret")), TrackOptions(depth=4))
    _no_bare_sockets(g)
    conns = [n.label for n in g.node_by("connection") if f":{rec['port']}" in n.label]
    assert len(conns) == 1, [n.label for n in g.node_by("connection")]
    edges = _edges(g)
    assert (_proc(g, "cat"), "write", conns[0], SIZE["secret"]) in edges, sorted(edges)
    server = _writer(g, rec["work"] / "tcp.txt", SIZE["secret"])
    assert (conns[0], "read", server, SIZE["secret"]) in edges, sorted(edges)  # out of the connection: its bytes
    assert str(rec["work"] / "tcp.txt") in {n.label for n in g.nodes.values()}
