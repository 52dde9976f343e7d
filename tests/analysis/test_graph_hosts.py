"""A many-host store (a log host's DuckDB, a fleet store): objects that live on one host are
keyed by that host too. Two hosts that both use /run/docker.sock, the dbus socket, the same
unix socket-pair inode numbers or the same loopback 4-tuple are not linked through them; only
a TCP/UDP connection between two real addresses may cross hosts (analysis.crosshost)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward, node_key
from forensix.analysis.targets import Target, parse_target
from forensix.render.graph import render_json
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.fleet import Lateral, lateral_movement
from forensix.testing.generator import Proc, StoreBuilder

SOCKETS = ("/run/docker.sock", "/run/dbus/system_bus_socket")


@dataclass
class Host:
    b: StoreBuilder
    daemon: Proc  # accepts on the shared unix socket path
    client: Proc  # connects to it, then writes /srv/<host>/out
    pair_peer: Proc  # writes into a socket pair whose other end the client reads
    pg: Proc  # postgres on loopback
    psql: Proc  # talks to it over 127.0.0.1, then writes /srv/<host>/report


def _host(name: str, t0: float, sock: str) -> Host:
    """The same daemons, paths, inode numbers and loopback ports on every host, at shifted times."""
    b = StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")
    init = b.spawn(None, 1, 0, "/sbin/init")
    daemon = b.spawn(init, 300, t0 + 1, "/usr/bin/dockerd")
    client = b.spawn(init, 400, t0 + 3, "/usr/local/bin/client")
    # the connection is the client's socket: its connect's inode, the accept's peer
    b.unix_connect(client, t0 + 4, sock, inode=800)
    b.unix_connect(daemon, t0 + 4.001, sock, action="accept", inode=801, peer_inode=800)
    peer = b.spawn(init, 410, t0 + 3, "/usr/local/bin/peer")
    b.socketpair(peer, t0 + 4.5, 700, 701)  # the client's end passed to it over the socket
    b.flow(peer, t0 + 5, t0 + 6, "sock", write=50, file_type="socket", inode=700)
    b.flow(client, t0 + 5, t0 + 7, "sock", read=50, file_type="socket", inode=701)
    b.write_file(client, t0 + 8, f"/srv/{name}/out")
    pg = b.spawn(init, 500, t0 + 1, "/usr/lib/postgresql/bin/postgres")
    psql = b.spawn(init, 510, t0 + 10, "/usr/bin/psql")
    b.connect(psql, t0 + 11, ("127.0.0.1", 45000), ("127.0.0.1", 5432))
    b.accept(pg, t0 + 11.001, ("127.0.0.1", 5432), ("127.0.0.1", 45000), inode=900)
    b.flow(pg, t0 + 11.1, t0 + 12, "socket:[900]", write=4096, file_type="socket", inode=900)
    b.write_file(psql, t0 + 13, f"/srv/{name}/report")
    return Host(b, daemon, client, peer, pg, psql)


def _two_hosts(tmp_path: Path, sock: str) -> tuple[Reader, dict[str, Host]]:
    path = tmp_path / "fleet.duckdb"
    w = open_writer(path)
    # alpha's events all come before bravo's: a backward walk from bravo would reach them
    hosts = {"alpha": _host("alpha", 0, sock), "bravo": _host("bravo", 100, sock)}
    for h in hosts.values():
        h.b.write(w)
    w.close()
    return open_reader(path), hosts


def _has(g: Graph, p: Proc) -> bool:
    return node_key("process", p.entity_id) in g.nodes


def _procs_of(g: Graph, h: Host) -> list[Proc]:
    return [p for p in (h.daemon, h.client, h.pair_peer, h.pg, h.psql) if _has(g, p)]


@pytest.mark.parametrize("sock", SOCKETS)
def test_backtrack_through_a_unix_socket_stays_on_its_host(tmp_path: Path, sock: str) -> None:
    st, hosts = _two_hosts(tmp_path, sock)
    a, b = hosts["alpha"], hosts["bravo"]
    try:
        g = backtrack(st, Target("file", path="/srv/bravo/out"), TrackOptions(filters=()))
        assert _has(g, b.client) and _has(g, b.daemon) and _has(g, b.pair_peer)
        assert _procs_of(g, a) == []
        # one node per host-local object, still labelled by its path
        assert [n.label for n in g.node_by("unix") if sock in n.label] == [f"unix {sock} [client 800]"]
        assert all(n.attrs.get("host_id") == "bravo-machine-id" for n in g.node_by("unix"))
        # forward from alpha's daemon: alpha's client and its file, nothing of bravo's
        f = forward(st, Target("process", entity=a.daemon.entity_id), TrackOptions(filters=()))
        assert _has(f, a.client) and _procs_of(f, b) == []
        assert any(n.attrs.get("path") == "/srv/alpha/out" for n in f.node_by("file"))
        assert not any(n.attrs.get("path") == "/srv/bravo/out" for n in f.node_by("file"))
    finally:
        st.close()


def test_backtrack_through_loopback_stays_on_its_host(tmp_path: Path) -> None:
    """127.0.0.1:45000 -> 127.0.0.1:5432 on both hosts: each host's psql talked to its own postgres."""
    st, hosts = _two_hosts(tmp_path, SOCKETS[0])
    a, b = hosts["alpha"], hosts["bravo"]
    try:
        g = backtrack(st, Target("file", path="/srv/bravo/report"))
        assert _has(g, b.psql) and _has(g, b.pg)
        assert _procs_of(g, a) == []
        conns = g.node_by("connection")
        assert [n.label for n in conns] == ["127.0.0.1:45000 <-> 127.0.0.1:5432"]
        assert conns[0].attrs["host_id"] == "bravo-machine-id" and "cross_host" not in conns[0].attrs
        f = forward(st, Target("process", entity=a.pg.entity_id))
        assert _has(f, a.psql) and _procs_of(f, b) == []
    finally:
        st.close()


def test_a_real_connection_between_two_hosts_still_crosses(tmp_path: Path) -> None:
    """The generated lateral movement (web01 ssh-es into db01), in the same store as two hosts
    sharing their socket paths: backtrack from db01's planted file crosses to web01 over the
    TCP connection, and only there."""
    path = tmp_path / "fleet.duckdb"
    w = open_writer(path)
    gt: Lateral = lateral_movement(w)
    w.close()
    st = open_reader(path)
    try:
        g = backtrack(st, parse_target(gt.planted))
        assert {node_key("process", e) for e in (gt.db_sshd, gt.ssh_client, gt.web_bash)} <= set(g.nodes)
        cross = [n for n in g.node_by("connection") if n.attrs.get("cross_host")]
        assert [n.attrs["cross_host"] for n in cross] == ["web01 -> db01"]
        assert "host_id" not in cross[0].attrs  # a connection between addresses has no one host
    finally:
        st.close()


def test_the_json_graph_names_each_nodes_host(tmp_path: Path) -> None:
    """The same path on two hosts (network-namespace hosts share one filesystem) is two nodes:
    the JSON (`forward --format json`) tells them apart by ``host.name``/``host.id``, not
    only by their labels."""
    alpha = StoreBuilder(host_id="alpha-machine-id", host_name="alpha", boot_id="boot-alpha")
    bravo = StoreBuilder(host_id="bravo-machine-id", host_name="bravo", boot_id="boot-bravo")
    a_init, b_init = alpha.spawn(None, 1, 0, "/sbin/init"), bravo.spawn(None, 1, 0, "/sbin/init")
    sshd = bravo.spawn(b_init, 500, 1, "/usr/sbin/sshd")
    dropper = alpha.spawn(a_init, 400, 10, "/usr/bin/dropper")
    alpha.write_file(dropper, 11, "/tmp/payload")
    alpha.connect(dropper, 12, ("10.0.0.1", 40001), ("10.0.0.2", 22))
    bravo.accept(sshd, 12.001, ("10.0.0.2", 22), ("10.0.0.1", 40001))
    child = bravo.spawn(sshd, 510, 13, "/usr/bin/bash")
    bravo.write_file(child, 14, "/tmp/payload")
    path = tmp_path / "fleet.duckdb"
    w = open_writer(path)
    alpha.write(w)
    bravo.write(w)
    w.close()
    st = open_reader(path)
    try:
        g = forward(st, Target("process", entity=dropper.entity_id), TrackOptions(filters=()))
        out = io.StringIO()
        render_json(g, out)
    finally:
        st.close()
    nodes = json.loads(out.getvalue())["nodes"]
    payloads = sorted((n["host.name"], n["host.id"]) for n in nodes if n.get("file.path") == "/tmp/payload")
    assert payloads == [("alpha", "alpha-machine-id"), ("bravo", "bravo-machine-id")], nodes
    procs = {n["process.executable"]: n["host.name"] for n in nodes if n["kind"] == "process"}
    assert procs["/usr/bin/dropper"] == "alpha" and procs["/usr/bin/bash"] == "bravo", procs
    conns = [n for n in nodes if n["kind"] == "connection"]
    assert conns and all("host.name" not in n for n in conns)  # between two hosts: on neither
