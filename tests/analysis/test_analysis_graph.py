"""BackTracker on small hand-built histories: the time-window rule and each noise filter, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward, node_key
from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.targets import Target
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


def _store(tmp_path: Path, b: StoreBuilder) -> Reader:
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    return open_reader(path)


def _labels(g: Graph) -> set[str]:
    return {n.label for n in g.nodes.values()}


def _proc(g: Graph, p: object) -> bool:
    return node_key("process", p.entity_id) in g.nodes  # type: ignore[attr-defined]


def _base() -> tuple[StoreBuilder, object]:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    return b, init


def test_read_before_write_does_not_link_the_writer(tmp_path: Path) -> None:
    b, init = _base()
    a = b.spawn(init, 10, 1, "/usr/bin/writer")
    r = b.spawn(init, 11, 1, "/usr/bin/reader")
    b.read_file(r, 5, "/data/f")   # reads at t=5
    b.write_file(a, 10, "/data/f")  # written at t=10, after the read
    g = backtrack(_store(tmp_path, b), Target("process", entity=r.entity_id))
    assert "/data/f" in _labels(g)
    assert not _proc(g, a)


def test_read_after_write_links_the_writer(tmp_path: Path) -> None:
    b, init = _base()
    a = b.spawn(init, 10, 1, "/usr/bin/writer")
    r = b.spawn(init, 11, 1, "/usr/bin/reader")
    b.write_file(a, 10, "/data/f")
    b.read_file(r, 15, "/data/f")
    g = backtrack(_store(tmp_path, b), Target("process", entity=r.entity_id))
    assert _proc(g, a)
    e = [e for e in g.edges if e.src == node_key("process", a.entity_id) and e.kind == "write"]
    assert e and e[0].bytes == 100


def test_threshold_propagates_through_the_chain(tmp_path: Path) -> None:
    """B wrote F2 before it read F1: F1's writer cannot have caused C's input."""
    b, init = _base()
    a = b.spawn(init, 10, 1, "/usr/bin/a")
    pb = b.spawn(init, 11, 1, "/usr/bin/b")
    c = b.spawn(init, 12, 1, "/usr/bin/c")
    b.write_file(a, 10, "/data/f1")
    b.write_file(pb, 15, "/data/f2")
    b.read_file(pb, 20, "/data/f1")
    b.read_file(c, 30, "/data/f2")
    g = backtrack(_store(tmp_path, b), Target("process", entity=c.entity_id))
    assert _proc(g, pb)
    assert "/data/f1" not in _labels(g)
    assert not _proc(g, a)


def test_backtrack_until_is_the_detection_time(tmp_path: Path) -> None:
    b, init = _base()
    a = b.spawn(init, 10, 1, "/usr/bin/a")
    late = b.spawn(init, 11, 1, "/usr/bin/late")
    b.write_file(a, 10, "/data/f")
    b.write_file(late, 50, "/data/f", create=False)
    st = _store(tmp_path, b)
    g = backtrack(st, Target("file", path="/data/f"), TrackOptions(until=b.t(20)))
    assert _proc(g, a) and not _proc(g, late)
    g = backtrack(st, Target("file", path="/data/f"))
    assert _proc(g, a) and _proc(g, late)


def test_forward_only_counts_later_edges(tmp_path: Path) -> None:
    b, init = _base()
    a = b.spawn(init, 10, 1, "/usr/bin/a")
    early = b.spawn(init, 11, 1, "/usr/bin/early")
    later = b.spawn(init, 12, 1, "/usr/bin/later")
    b.read_file(early, 5, "/data/f")
    b.write_file(a, 10, "/data/f")
    b.read_file(later, 20, "/data/f")
    g = forward(_store(tmp_path, b), Target("process", entity=a.entity_id))
    assert _proc(g, later)
    assert not _proc(g, early)


def test_forward_children_forked_before_the_read_are_not_affected(tmp_path: Path) -> None:
    b, init = _base()
    w = b.spawn(init, 9, 1, "/usr/bin/w")
    p = b.spawn(init, 10, 2, "/usr/bin/p")
    c1 = b.spawn(p, 20, 5, "/usr/bin/c1")
    b.write_file(w, 8, "/data/f")
    b.read_file(p, 10, "/data/f")
    c2 = b.spawn(p, 21, 15, "/usr/bin/c2")
    g = forward(_store(tmp_path, b), Target("file", path="/data/f"))
    assert _proc(g, p) and _proc(g, c2)
    assert not _proc(g, c1)


def test_fork_exec_kill_ptrace_pipe_edges(tmp_path: Path) -> None:
    b, init = _base()
    sh = b.spawn(init, 10, 1, "/usr/bin/bash")
    tracer = b.spawn(init, 11, 1, "/usr/bin/gdb")
    killer = b.spawn(init, 12, 1, "/usr/bin/kill")
    writer = b.spawn(sh, 13, 2, "/usr/bin/producer")
    reader = b.spawn(sh, 14, 2, "/usr/bin/consumer")
    b.pipe(sh, 1.5, 555)
    b.flow(writer, 3, 4, "pipe", write=10, file_type="fifo", inode=555)
    b.flow(reader, 3, 5, "pipe", read=10, file_type="fifo", inode=555)
    b.ptrace(tracer, 6, reader)
    b.kill(killer, 7, reader, 15)
    g = backtrack(_store(tmp_path, b), Target("process", entity=reader.entity_id))
    kinds = {(g.nodes[e.src].label.split(" ")[0], e.kind) for e in g.edges}
    assert ("bash", "fork") in kinds
    assert ("producer", "write") in kinds  # into the pipe
    assert ("gdb", "ptrace") in kinds and ("kill", "kill") in kinds
    assert any(n.label == "fifo:[555]" for n in g.nodes.values())


def test_local_client_and_server_meet_at_one_connection(tmp_path: Path) -> None:
    b, init = _base()
    server = b.spawn(init, 10, 1, "/usr/bin/python3", ["python3", "-m", "http.server"])
    client = b.spawn(init, 11, 2, "/usr/bin/curl")
    b.accept(server, 3, ("127.0.0.1", 8000), ("127.0.0.1", 40001))
    b.connect(client, 3, ("127.0.0.1", 40001), ("127.0.0.1", 8000))
    b.write_file(client, 4, "/tmp/dl")
    g = backtrack(_store(tmp_path, b), Target("file", path="/tmp/dl"))
    conns = g.node_by("connection")
    assert len(conns) == 1 and "127.0.0.1:8000" in conns[0].label
    assert _proc(g, server)
    g2 = backtrack(_store(tmp_path / "x" if False else tmp_path, b), Target("endpoint", ip="127.0.0.1", port=8000))
    assert _proc(g2, client) and _proc(g2, server)


def test_pid_reuse_keeps_processes_apart(tmp_path: Path) -> None:
    b, init = _base()
    first = b.spawn(init, 4242, 1, "/usr/bin/first")
    b.write_file(first, 2, "/data/one")
    b.exit(first, 3)
    second = b.spawn(init, 4242, 10, "/usr/bin/second")
    b.write_file(second, 11, "/data/two")
    st = _store(tmp_path, b)
    assert first.entity_id != second.entity_id
    g = backtrack(st, Target("file", path="/data/two"))
    assert _proc(g, second) and not _proc(g, first)
    g = forward(st, Target("process", entity=first.entity_id))
    assert "/data/one" in _labels(g) and "/data/two" not in _labels(g)


def test_depth_and_size_limits(tmp_path: Path) -> None:
    b, init = _base()
    prev = init
    for i in range(6):
        prev = b.spawn(prev, 100 + i, 1 + i, f"/usr/bin/p{i}")
    st = _store(tmp_path, b)
    g = backtrack(st, Target("process", entity=prev.entity_id), TrackOptions(depth=2))
    assert max(n.depth for n in g.nodes.values()) == 2 and g.truncated
    g = backtrack(st, Target("process", entity=prev.entity_id), TrackOptions(max_nodes=3))
    assert len(g.nodes) == 3 and g.truncated
    g = backtrack(st, Target("process", entity=prev.entity_id))
    assert len(g.nodes) == 7 and not g.truncated


# -- noise filters: each one on and off ----------------------------------------------
def _noisy(tmp_path: Path) -> tuple[Reader, StoreBuilder, dict[str, object]]:
    b, init = _base()
    p = b.spawn(init, 10, 1, "/usr/bin/tool")
    admin = b.spawn(init, 11, 1, "/usr/sbin/vipw")
    b.mmap(p, 2, "/usr/lib/x86_64-linux-gnu/libc.so.6")
    b.read_file(p, 2.1, "/proc/1/stat")
    b.write_file(p, 2.2, "/dev/null", create=False)
    b.write_file(admin, 1.5, "/etc/passwd", create=False)
    b.read_file(p, 2.3, "/etc/passwd")
    b.read_file(p, 2.4, "/etc/ld.so.cache")
    b.unix_connect(p, 2.5, "/run/systemd/journal/socket")
    evil = b.spawn(init, 12, 1, "/usr/bin/dropper")
    b.write_file(evil, 1.2, "/usr/lib/x86_64-linux-gnu/libevil.so.1")
    b.mmap(p, 2.6, "/usr/lib/x86_64-linux-gnu/libevil.so.1")
    b.write_file(p, 3, "/data/out")
    return _store(tmp_path, b), b, {"p": p, "admin": admin, "evil": evil}


def _back(st: Reader, filters: tuple[str, ...]) -> Graph:
    return backtrack(st, Target("file", path="/data/out"), TrackOptions(filters=filters))


def test_libraries_filter(tmp_path: Path) -> None:
    st, _, _ = _noisy(tmp_path)
    on = _labels(_back(st, ("libraries",)))
    off = _labels(_back(st, ()))
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in off
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" not in on
    assert "/usr/bin/tool" in off and "/usr/bin/tool" not in on  # exec of a system binary
    # a system file that something wrote while recorded is not read-only: kept
    assert "/usr/lib/x86_64-linux-gnu/libevil.so.1" in on
    assert "dropper [12]" in on


def test_pseudo_filter(tmp_path: Path) -> None:
    st, _, objs = _noisy(tmp_path)
    on, off = _labels(_back(st, ("pseudo",))), _labels(_back(st, ()))
    assert "/proc/1/stat" in off and "/proc/1/stat" not in on
    # writes to /dev/null are noise going forward
    p = Target("process", entity=objs["p"].entity_id)  # type: ignore[attr-defined]
    fon = _labels(forward(st, p, TrackOptions(filters=("pseudo",))))
    foff = _labels(forward(st, p, TrackOptions(filters=())))
    assert "/dev/null" in foff and "/dev/null" not in fon
    assert "/data/out" in fon


def test_hubs_filter_drops_reads_but_never_writes(tmp_path: Path) -> None:
    st, _, objs = _noisy(tmp_path)
    on, off = _labels(_back(st, ("hubs",))), _labels(_back(st, ()))
    assert {"/etc/passwd", "/etc/ld.so.cache", "unix /run/systemd/journal/socket"} <= off
    assert not ({"/etc/passwd", "/etc/ld.so.cache", "unix /run/systemd/journal/socket"} & on)
    assert "vipw [11]" in off and "vipw [11]" not in on
    g = backtrack(st, Target("file", path="/etc/passwd"), TrackOptions(filters=FILTER_NAMES))
    assert _proc(g, objs["admin"])  # who wrote /etc/passwd is never noise


def test_servers_filter_keeps_the_latest_accept(tmp_path: Path) -> None:
    b, init = _base()
    sshd = b.spawn(init, 500, 1, "/usr/sbin/sshd")
    for i in range(3):
        b.accept(sshd, 10 + i, ("10.0.0.5", 22), (f"198.51.100.{i + 1}", 40000 + i))
    handler = b.spawn(sshd, 600, 12.5, "/usr/sbin/sshd")
    b.write_file(handler, 13, "/home/u/.ssh/authorized_keys")
    st = _store(tmp_path, b)
    on = backtrack(st, Target("file", path="/home/u/.ssh/authorized_keys"))
    off = backtrack(st, Target("file", path="/home/u/.ssh/authorized_keys"),
                    TrackOptions(filters=tuple(f for f in FILTER_NAMES if f != "servers")))
    assert [n.label for n in on.node_by("connection")] == ["10.0.0.5:22 <-> 198.51.100.3:40002"]
    assert len(off.node_by("connection")) == 3


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "dot", "graphml"])
def test_graph_renderers(tmp_path: Path, fmt: str) -> None:
    import io

    from forensix.render.graph import render_graph

    st, _, _ = _noisy(tmp_path)
    buf = io.StringIO()
    render_graph(_back(st, ()), fmt, buf)
    text = buf.getvalue()
    assert "/data/out" in text
    if fmt == "dot":
        from forensix.render.report import draw

        assert draw(text, "svg").lstrip().startswith(b"<?xml")
    if fmt == "graphml":
        import xml.etree.ElementTree as ET

        ET.fromstring(text)


def test_unix_socket_pair_joins_both_ends(tmp_path: Path) -> None:
    """A socketpair names both ends' inodes (flows carry only their own): both ends meet at one node."""
    b, init = _base()
    client = b.spawn(init, 10, 1, "/usr/bin/client")
    server = b.spawn(init, 11, 1, "/usr/bin/server")
    b.socketpair(client, 1.5, 700, 701)  # then the server got one end (passed over a unix socket)
    b.flow(client, 2, 3, "sock", write=50, file_type="socket", inode=700)
    b.flow(server, 2, 4, "sock", read=50, file_type="socket", inode=701)
    b.write_file(server, 5, "/data/out")
    st = _store(tmp_path, b)
    g = backtrack(st, Target("file", path="/data/out"))
    assert [n.key for n in g.node_by("unix")] == ["u:test-host:700|701"]
    assert _proc(g, client)
    f = forward(st, Target("process", entity=client.entity_id))
    assert _proc(f, server) and "/data/out" in _labels(f)


def test_files_of_two_hosts_with_the_same_inode_stay_apart(tmp_path: Path) -> None:
    """A log host's store: inode numbers are per host, so the same (device, inode) on two
    hosts is two objects."""
    path = tmp_path / "fleet.duckdb"
    w = open_writer(path)
    objs = {}
    for host in ("alpha", "beta"):
        b = StoreBuilder(host_id=host, host_name=host)
        init = b.spawn(None, 1, 0, "/sbin/init")
        writer = b.spawn(init, 10, 1, "/usr/bin/writer")
        b.write_file(writer, 2, "/data/x")
        reader = b.spawn(init, 11, 1, "/usr/bin/reader")
        b.read_file(reader, 3, "/data/x")
        b.write(w)
        objs[host] = (writer, reader)
    w.close()
    st = open_reader(path)
    g = backtrack(st, Target("process", entity=objs["alpha"][1].entity_id))
    assert _proc(g, objs["alpha"][0]) and not _proc(g, objs["beta"][0])
    f = forward(st, Target("process", entity=objs["beta"][0].entity_id))
    assert _proc(f, objs["beta"][1]) and not _proc(f, objs["alpha"][1])


def test_since_and_until_cut_history(tmp_path: Path) -> None:
    b, init = _base()
    old = b.spawn(init, 10, 1, "/usr/bin/old")
    new = b.spawn(init, 11, 1, "/usr/bin/new")
    reader = b.spawn(init, 12, 1, "/usr/bin/reader")
    late = b.spawn(init, 13, 1, "/usr/bin/late")
    b.write_file(old, 5, "/data/f")
    b.write_file(new, 50, "/data/f", create=False)
    b.read_file(reader, 60, "/data/f")
    b.read_file(late, 500, "/data/f")
    st = _store(tmp_path, b)
    g = backtrack(st, Target("process", entity=reader.entity_id), TrackOptions(since=b.t(20)))
    assert _proc(g, new) and not _proc(g, old)
    f = forward(st, Target("process", entity=new.entity_id), TrackOptions(until=b.t(100)))
    assert _proc(f, reader) and not _proc(f, late)


def test_a_file_recreated_on_its_old_inode_number_under_its_old_name_is_another_file(tmp_path: Path) -> None:
    """A deleted file's inode number goes to the next new file at once (ext4), here under the
    same name: the names cannot tell the two files apart, the kernel's generation can. The
    writer of the first file did not write what the reader read."""
    b, init = _base()
    first = b.spawn(init, 10, 1, "/usr/bin/first")
    cleaner = b.spawn(init, 11, 1, "/usr/bin/rm")
    second = b.spawn(init, 12, 1, "/usr/bin/second")
    reader = b.spawn(init, 13, 1, "/usr/bin/reader")
    for p, t, gen in ((first, 2, 101), (second, 4, 202)):
        b.file_op(p, t, "open", "/var/tmp/job", file_flags=0o1101, file_inode=900, file_generation=gen)
        b.flow(p, t + 0.1, t + 0.2, "/var/tmp/job", write=64, inode=900, generation=gen, stored_once=True)
        if p is first:
            b.file_op(cleaner, 3, "unlink", "/var/tmp/job", file_inode=None, file_device=None)
    b.file_op(reader, 5, "open", "/var/tmp/job", file_flags=0, file_inode=900, file_generation=202)
    b.flow(reader, 5.1, 5.2, "/var/tmp/job", read=64, inode=900, generation=202, stored_once=True)
    st = _store(tmp_path, b)
    g = backtrack(st, Target("process", entity=reader.entity_id))
    assert _proc(g, second) and not _proc(g, first)
    f = forward(st, Target("process", entity=first.entity_id))
    assert not _proc(f, reader)
    # backward from the name: the last life that had it, and it says which life it chose
    gf = backtrack(st, Target("file", path="/var/tmp/job"))
    assert _proc(gf, second) and not _proc(gf, first) and not _proc(gf, cleaner)
    assert gf.life is not None and (gf.life["life"], gf.life["lives"]) == (2, 2)
    assert gf.life["file_generation"] == 202 and [x["file_generation"] for x in gf.other_lives] == [101]
    # --at picks the life that had the name then: the deleted one, its writer and its remover
    g1 = backtrack(st, Target("file", path="/var/tmp/job"), TrackOptions(at=b.t(2.5)))
    assert _proc(g1, first) and _proc(g1, cleaner) and not _proc(g1, second)
    assert g1.life is not None and g1.life["ended_by"] == "unlink" and g1.life["file_generation"] == 101
    unlink = [e for e in g1.edges if e.kind == "unlink"]
    assert len(unlink) == 1 and unlink[0].name_matched
    assert not any(e.name_matched for e in g1.edges if e.kind != "unlink")


def test_each_life_of_an_inode_number_is_a_node_of_its_own(tmp_path: Path) -> None:
    """One writer, two files one after the other on the same inode number (the first deleted
    in between), each read by someone: forward from the writer reaches both readers, and
    backward from either reader finds only what that file held."""
    b, init = _base()
    w = b.spawn(init, 10, 1, "/usr/bin/w")
    other = b.spawn(init, 11, 1, "/usr/bin/other")
    r1 = b.spawn(init, 12, 1, "/usr/bin/r1")
    r2 = b.spawn(init, 13, 1, "/usr/bin/r2")
    b.file_op(w, 2, "open", "/srv/a", file_flags=0o1101, file_inode=900, file_generation=1)
    b.flow(w, 2.1, 2.2, "/srv/a", write=10, inode=900, generation=1, stored_once=True)
    b.file_op(other, 2.5, "open", "/srv/a", file_flags=0o2001, file_inode=900, file_generation=1)
    b.flow(other, 2.6, 2.7, "/srv/a", write=10, inode=900, generation=1, stored_once=True)
    b.file_op(r1, 3, "open", "/srv/a", file_flags=0, file_inode=900, file_generation=1)
    b.flow(r1, 3.1, 3.2, "/srv/a", read=20, inode=900, generation=1, stored_once=True)
    b.file_op(w, 4, "unlink", "/srv/a", file_inode=None, file_device=None)
    b.file_op(w, 5, "open", "/srv/b", file_flags=0o1101, file_inode=900, file_generation=2)
    b.flow(w, 5.1, 5.2, "/srv/b", write=10, inode=900, generation=2, stored_once=True)
    b.file_op(r2, 6, "open", "/srv/b", file_flags=0, file_inode=900, file_generation=2)
    b.flow(r2, 6.1, 6.2, "/srv/b", read=10, inode=900, generation=2, stored_once=True)
    st = _store(tmp_path, b)
    f = forward(st, Target("process", entity=w.entity_id))
    assert _proc(f, r1) and _proc(f, r2)
    assert {"/srv/a", "/srv/b"} <= _labels(f)
    g = backtrack(st, Target("process", entity=r2.entity_id))
    assert _proc(g, w) and not _proc(g, other)  # other wrote the first file, not the second
    g1 = backtrack(st, Target("process", entity=r1.entity_id))
    assert _proc(g1, w) and _proc(g1, other)
