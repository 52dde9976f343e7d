"""The compact graph (analysis.graph_compact) on a small hand-built history: what it folds, that
it folds without losing an object, and that it stays within its bound."""

from __future__ import annotations

import pytest

from forensix.analysis.graph import Edge, Graph, Node, TrackOptions, backtrack, node_key
from forensix.analysis.graph_compact import compact
from forensix.analysis.targets import Target
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder

LIBS = [f"/usr/lib/x86_64-linux-gnu/lib{i}.so.1" for i in range(12)]
LOCALE = ["/usr/lib/locale/C.utf8/LC_CTYPE", "/usr/lib/locale/C.utf8/LC_TIME", "/etc/locale.alias"]
STAGE = [f"/tmp/stage/part{i}" for i in range(4)]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, dict[str, object]]:
    """init -> two daemons -> a shell, which runs a dropper (loads 12 libraries, 3 locale
    files and the loader cache, writes 4 parts under /tmp/stage) and a joiner (reads the
    parts, writes /data/out). Backward from /data/out with the noise filters off."""
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    d1 = b.spawn(init, 2, 1, "/usr/sbin/d1")
    d2 = b.spawn(d1, 3, 2, "/usr/sbin/d2")
    shell = b.spawn(d2, 4, 3, "/usr/bin/shell")
    dropper = b.spawn(shell, 10, 10, "/opt/dropper")
    for i, path in enumerate([*LIBS, *LOCALE, "/etc/ld.so.cache"]):
        b.read_file(dropper, 11 + i / 100, path)
    for i, path in enumerate(STAGE):
        b.write_file(dropper, 12 + i / 100, path)
    joiner = b.spawn(shell, 20, 20, "/opt/joiner")
    for i, path in enumerate(STAGE):
        b.read_file(joiner, 21 + i / 100, path)
    b.write_file(joiner, 22, "/data/out")
    path = tmp_path_factory.mktemp("compact") / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    g = backtrack(open_reader(path), Target("file", path="/data/out"), TrackOptions(filters=()))
    return g, {"init": init, "d1": d1, "d2": d2, "shell": shell, "dropper": dropper, "joiner": joiner}


def _drawn_or_folded_once(full: Graph, small: Graph) -> None:
    """No object is lost: each is drawn, or a member of exactly one group."""
    members = [m for n in small.node_by("group") for m in n.attrs["members"]]
    assert len(members) == len(set(members))
    drawn = {k for k, n in small.nodes.items() if n.kind != "group"}
    assert drawn | set(members) == set(full.nodes) and not drawn & set(members)
    assert all(e.src in small.nodes and e.dst in small.nodes for e in small.edges)


def test_noise_siblings_and_ancestors_are_folded_with_counts(history: tuple[Graph, dict[str, object]]) -> None:
    g, p = history
    (c,) = compact([g])
    _drawn_or_folded_once(g, c)
    labels = {n.label for n in c.nodes.values()}
    # the chain: dropper -> its parts -> joiner -> /data/out, drawn
    assert "/data/out" in labels
    for name in ("dropper", "joiner"):
        assert node_key("process", p[name].entity_id) in c.nodes, name  # type: ignore[attr-defined]
    groups = {n.attrs["group"]: n for n in c.node_by("group")}
    system = groups["system"]
    assert system.attrs["parts"]["libraries"] == 12 and system.attrs["parts"]["locale"] == 3
    assert system.attrs["parts"]["configuration"] == 1  # ld.so.cache
    assert system.attrs["count"] == sum(system.attrs["parts"].values()) == len(system.attrs["members"])
    assert groups["directory"].label == "4 files in /tmp/stage/"
    assert sorted(groups["directory"].attrs["member_labels"]) == STAGE
    # init, the two daemons and the shell did nothing here but fork: one node
    assert groups["processes"].attrs["count"] == 4 and groups["processes"].label.startswith("4 ancestor processes")
    # the parts are one edge each way: written by the dropper, read by the joiner
    d = groups["directory"].key
    kinds = {(c.nodes[e.src].label.split(" [")[0], e.kind, c.nodes[e.dst].label.split(" [")[0]) for e in c.edges
             if d in (e.src, e.dst)}
    assert kinds == {("dropper", "write", "4 files in /tmp/stage/"), ("4 files in /tmp/stage/", "read", "joiner")}
    assert len(c.nodes) <= 8 < len(g.nodes)
    assert c.full == (len(g.nodes), len(g.edges))


def test_the_bound_keeps_the_target_and_writers_first(history: tuple[Graph, dict[str, object]]) -> None:
    g, p = history
    (c,) = compact([g], limit=6)  # three groups drawn already: three objects left
    _drawn_or_folded_once(g, c)
    drawn = [n for n in c.nodes.values() if n.kind != "group"]
    assert len(drawn) <= 3 and len(c.nodes) <= 6 + 4
    assert {n.label for n in drawn} >= {"/data/out"}
    assert node_key("process", p["joiner"].entity_id) in c.nodes  # type: ignore[attr-defined]
    assert any(n.attrs["group"] == "more" for n in c.node_by("group"))


def test_two_way_edges_keep_the_way_toward_the_target() -> None:
    """A process and its connection joined both ways: backward, the edge into the nearer one."""
    def node(k: str, kind: str, depth: int) -> Node:
        return Node(k, kind, k, depth, 0)

    nodes = {"f": node("f", "file", 0), "srv": node("srv", "process", 1), "c": node("c", "connection", 2),
             "cli": node("cli", "process", 3)}
    edges = [Edge("srv", "f", "write", 5, 5, 10), Edge("c", "srv", "read", 4, 4, 10), Edge("srv", "c", "accept", 3, 9),
             Edge("c", "srv", "accept", 3, 9), Edge("cli", "c", "connect", 2, 9), Edge("c", "cli", "connect", 2, 9)]
    (c,) = compact([Graph("backward", "file f", nodes, edges, ["f"])])
    got = {(e.src, e.dst, e.kinds) for e in c.edges}
    assert got == {("srv", "f", ("write",)), ("c", "srv", ("read", "accept")), ("cli", "c", ("connect",))}
