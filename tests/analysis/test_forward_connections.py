"""Forward through a server's connections follows BackTracker's rule: an edge counts only if
it happens after the object was reached.

A server (sshd) is reached late in a forward walk (it re-read a config an intruder wrote).
Connections it accepted before that are not affected by it, unless it wrote into them
afterwards; connections it accepts afterwards are, with the client at their other end (whose
connect the client's kernel may record a moment before the server's accept)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forensix.analysis.graph import Graph, TrackOptions, forward, node_key
from forensix.analysis.targets import Target
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import Proc, StoreBuilder

SRV = "10.0.0.5"


@dataclass
class History:
    sshd: Proc
    early: Proc  # connected at 5 s; the session's bytes all before the reach (60 s)
    ongoing: Proc  # connected at 10 s; sshd wrote into it at 70-80 s, after the reach
    later: Proc  # connected at 100 s, after the reach


def _history(tmp_path: Path) -> tuple[Reader, History]:
    srv = StoreBuilder(host_id="srv-machine-id", host_name="srv01", boot_id="boot-srv")
    cli = StoreBuilder(host_id="cli-machine-id", host_name="cli01", boot_id="boot-cli")
    init = srv.spawn(None, 1, 0, "/sbin/init")
    sshd = srv.spawn(init, 800, 1, "/usr/sbin/sshd", ["sshd", "-D"])
    c_init = cli.spawn(None, 1, 0, "/sbin/init")

    def session(pid: int, port: int, t: float, ino: int, cino: int) -> Proc:
        c = cli.spawn(c_init, pid, t - 0.5, "/usr/bin/ssh", ["ssh", SRV])
        # the client's kernel records its connect a moment before the server's accept
        cli.connect(c, t, (f"198.51.100.{pid % 250}", port), (SRV, 22), inode=cino)
        srv.accept(sshd, t + 0.001, (SRV, 22), (f"198.51.100.{pid % 250}", port), inode=ino)
        return c

    early = session(2001, 40001, 5, 901, 951)
    srv.flow(sshd, 5.1, 6, "sock", write=300, file_type="socket", inode=901)
    cli.flow(early, 5.1, 6, "sock", read=300, file_type="socket", inode=951)
    cli.write_file(early, 7, "/home/u/early.out")
    ongoing = session(2003, 40003, 10, 903, 953)

    intruder = srv.spawn(init, 900, 49, "/usr/bin/vi", ["vi", "/etc/ssh/sshd_config"])
    srv.write_file(intruder, 50, "/etc/ssh/sshd_config")
    srv.read_file(sshd, 60, "/etc/ssh/sshd_config")  # the reload: sshd is reached at 60 s

    srv.flow(sshd, 70, 80, "sock", write=500, file_type="socket", inode=903)
    cli.flow(ongoing, 70, 80, "sock", read=500, file_type="socket", inode=953)
    cli.write_file(ongoing, 85, "/home/u/ongoing.out")
    later = session(2002, 40002, 100, 902, 952)
    cli.write_file(later, 101, "/home/u/later.out")

    path = tmp_path / "two.duckdb"
    w = open_writer(path)
    srv.write(w)
    cli.write(w)
    w.close()
    return open_reader(path), History(sshd, early, ongoing, later)


def _has(g: Graph, p: Proc) -> bool:
    return node_key("process", p.entity_id) in g.nodes


def _conns(g: Graph) -> set[str]:
    return {n.label.split(" (")[0] for n in g.node_by("connection")}


def test_forward_skips_connections_accepted_before_the_reach(tmp_path: Path) -> None:
    st, h = _history(tmp_path)
    try:
        g = forward(st, Target("file", path="/etc/ssh/sshd_config"), TrackOptions(filters=()))
        assert _has(g, h.sshd)
        # accepted after the reach: the connection and the client at its other end
        assert _has(g, h.later)
        assert any("40002" in c for c in _conns(g))
        assert any(n.attrs.get("path") == "/home/u/later.out" for n in g.node_by("file"))
        # accepted before, but sshd wrote into it after the reach: the bytes carry it
        assert _has(g, h.ongoing)
        assert any(n.attrs.get("path") == "/home/u/ongoing.out" for n in g.node_by("file"))
        # accepted and finished before the reach: not affected
        assert not _has(g, h.early)
        assert not any("40001" in c for c in _conns(g))
        assert not any(n.attrs.get("path") == "/home/u/early.out" for n in g.node_by("file"))
    finally:
        st.close()


def test_forward_from_the_client_reaches_the_server_that_accepted_after_it(tmp_path: Path) -> None:
    """The other way round: the client's connect is recorded 1 ms before the accept; the
    accept belongs to the connection the client made, so the server is reached."""
    st, h = _history(tmp_path)
    try:
        g = forward(st, Target("process", entity=h.later.entity_id), TrackOptions(filters=()))
        assert _has(g, h.sshd)
    finally:
        st.close()


def test_forward_takes_a_read_stamped_a_moment_before_the_write_whose_bytes_it_took(tmp_path: Path) -> None:
    """On one host, the client's write is stamped when its call returns, after the kernel
    delivered the bytes; the server on the other core may read them first (CI under load:
    tests/analysis/test_socket_nodes_bpf.py, forward from the client's file stopped at the
    connection). The read counts; a read a long time before the write does not."""
    b = StoreBuilder(host_id="h-machine-id", host_name="h01", boot_id="boot-h")
    init = b.spawn(None, 1, 0, "/sbin/init")
    server = b.spawn(init, 500, 1, "/usr/bin/python3", ["python3", "server.py"])
    old = b.spawn(init, 550, 2, "/usr/bin/python3", ["python3", "old-client.py"])
    b.connect(old, 2.5, ("127.0.0.1", 39000), ("127.0.0.1", 8000), inode=950)
    b.accept(server, 2.5005, ("127.0.0.1", 8000), ("127.0.0.1", 39000), inode=900)
    b.flow(server, 3, 3, "sock", read=10, file_type="socket", inode=900)  # long before: not the secret's
    cat = b.spawn(init, 600, 9, "/usr/bin/cat", ["cat", "/srv/secret"])
    b.connect(cat, 9.5, ("127.0.0.1", 40000), ("127.0.0.1", 8000), inode=951)
    b.accept(server, 9.5005, ("127.0.0.1", 8000), ("127.0.0.1", 40000), inode=901)
    b.read_file(cat, 10, "/srv/secret", nbytes=3600)
    b.flow(cat, 10.005, 10.005, "sock", write=3600, file_type="socket", inode=951)
    b.flow(server, 10.002, 10.002, "sock", read=3600, file_type="socket", inode=901)  # 3 ms "before"
    b.write_file(server, 10.01, "/srv/tcp.txt", nbytes=3600)
    path = tmp_path / "one.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    st = open_reader(path)
    try:
        g = forward(st, Target("file", path="/srv/secret"), TrackOptions(filters=()))
        assert _has(g, server) and "/srv/tcp.txt" in {n.label for n in g.nodes.values()}
        reads = {(g.nodes[e.src].label, e.bytes) for e in g.edges if e.kind == "read" and e.dst == node_key(
            "process", server.entity_id)}
        assert reads == {("127.0.0.1:40000 <-> 127.0.0.1:8000", 3600)}, reads  # not the old client's 10 bytes
    finally:
        st.close()
