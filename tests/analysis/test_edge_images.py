"""An edge names the image its process ran at the edge's time, not the process's last one.

A process keeps one node across execs (its entity id), but a shell that wrote a file and
then exec'd chmod did not write it as chmod: every view that names a process beside an
action (graph text, DOT, JSON, the compact graph, the report, the file history) names the
image of that time, and an edge whose row spans an exec names both. Generated histories
(forensix.testing.generator); the recorded case is test_edge_images_bpf.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.filehistory import file_history
from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward, graph_tables, node_key
from forensix.analysis.graph_compact import compact
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.render.graph import render_graph, to_dot
from forensix.render.report import render_markdown
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reader, dict[str, Any]]:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    # a shell writes out.sh, then exec's chmod on it (one process, two images)
    sh = b.spawn(init, 500, 5, "/usr/bin/bash", ["bash", "-c", "echo hi > out.sh; exec chmod +x out.sh"])
    b.write_file(sh, 10, "/tmp/out.sh", 3)
    b.exec(sh, 12, "/usr/bin/chmod", ["chmod", "+x", "/tmp/out.sh"])
    b.file_op(sh, 12.5, "chmod", "/tmp/out.sh", file_mode=0o755)
    # a shell whose write to a log is counted as one row across its exec of python
    # (a transfer before and after it in one flush period)
    lg = b.spawn(init, 600, 5, "/usr/bin/bash", ["bash", "run.sh"])
    b.open(lg, 19, "/tmp/run.log", 0o1 | 0o100)
    b.exec(lg, 25, "/usr/bin/python3.11", ["python3", "job.py"])
    b.flow(lg, 20, 30, "/tmp/run.log", write=50)
    # and rows of one kind in each image: two edges, bytes apart
    b.flow(lg, 22, 23, "/tmp/two.txt", write=7)
    b.flow(lg, 40, 41, "/tmp/two.txt", write=11)
    # a shell that read out.sh, then exec'd sleep
    rd = b.spawn(init, 700, 5, "/usr/bin/bash", ["bash", "-c", "cat out.sh; exec sleep 9"])
    b.read_file(rd, 50, "/tmp/out.sh", 3)
    b.exec(rd, 55, "/usr/bin/sleep", ["sleep", "9"])
    path = tmp_path_factory.mktemp("edge-images") / "s.duckdb"
    with open_writer(path) as w:
        b.write(w)
    return open_reader(path), {"sh": sh, "lg": lg}


def _lines(g: Graph) -> list[str]:
    out = io.StringIO()
    render_graph(g, "text", out)
    return out.getvalue().splitlines()


def _edges(g: Graph) -> set[tuple[str, str, str, int]]:
    t = graph_tables(g)[1].to_pylist()
    return {(r["src_label"], r["kind"], r["dst_label"], r["bytes"]) for r in t}


def test_write_before_exec_is_the_shells(store: tuple[Reader, dict[str, Any]]) -> None:
    reader, p = store
    g = backtrack(reader, Target("file", path="/tmp/out.sh"), TrackOptions(filters=()))
    edges = _edges(g)
    assert ("bash [500]", "write", "/tmp/out.sh", 3) in edges, sorted(edges)
    assert ("bash [500]", "create/trunc", "/tmp/out.sh", 0) in edges, sorted(edges)
    assert ("chmod [500]", "chmod", "/tmp/out.sh", 0) in edges, sorted(edges)
    assert not [e for e in edges if e[0] == "chmod [500]" and e[1] != "chmod"], sorted(edges)
    # one process node, named by its last image, the edges beside it by theirs
    procs = [n for n in g.node_by("process") if n.attrs.get("pid") == 500]
    assert [n.key for n in procs] == [node_key("process", p["sh"].entity_id)]
    # (the generator gives a fork's image 0 the child's executable; the kernel, the parent's)
    assert procs[0].label == "chmod [500]" and procs[0].attrs["images"] == ["bash", "bash", "chmod"]
    text = _lines(g)
    assert any("bash [500]  --write 3 B-->  /tmp/out.sh" in line for line in text), text
    assert not any("chmod [500]  --write" in line for line in text), text
    # compact: the shell's write and create stay apart from chmod's chmod
    (c,) = compact([g])
    merged = {(e.src_image, e.kinds) for e in c.edges if e.dst == g.roots[0]}
    assert merged == {("bash", ("write", "create/trunc")), ("chmod", ("chmod",))}, merged
    dot = to_dot(c)
    assert "by bash [500]" in dot and "write+create/trunc 3B" in dot, dot
    doc = io.StringIO()
    render_graph(g, "json", doc)
    writes = [e for e in json.loads(doc.getvalue())["edges"] if e["kind"] == "write"]
    assert [(e["src_label"], e["src_image"]) for e in writes] == [("bash [500]", "bash")], writes


def test_an_edge_spanning_an_exec_names_both(store: tuple[Reader, dict[str, Any]]) -> None:
    reader, _ = store
    g = backtrack(reader, Target("file", path="/tmp/run.log"), TrackOptions(filters=()))
    edges = _edges(g)
    assert ("bash→python3.11 [600]", "write", "/tmp/run.log", 50) in edges, sorted(edges)
    # the open before the exec is bash's alone
    assert ("bash [600]", "create", "/tmp/run.log", 0) in edges, sorted(edges)
    g2 = backtrack(reader, Target("file", path="/tmp/two.txt"), TrackOptions(filters=()))
    assert {e for e in _edges(g2) if e[1] == "write"} == {
        ("bash [600]", "write", "/tmp/two.txt", 7), ("python3.11 [600]", "write", "/tmp/two.txt", 11)}


def test_forward_names_the_reader_image(store: tuple[Reader, dict[str, Any]]) -> None:
    reader, _ = store
    g = forward(reader, Target("file", path="/tmp/out.sh"), TrackOptions(filters=()))
    edges = _edges(g)
    assert ("/tmp/out.sh", "read", "bash [700]", 3) in edges, sorted(edges)
    assert not [e for e in edges if e[2] == "sleep [700]"], sorted(edges)


def test_report_and_file_history_name_the_image(store: tuple[Reader, dict[str, Any]], tmp_path: Path) -> None:
    reader, _ = store
    rep = build_report(reader, Target("file", path="/tmp/out.sh"), opts=TrackOptions(filters=()))
    assert [(label, kinds) for _, label, kinds in rep.actors] == [
        ("chmod [500]", ["chmod"]), ("bash [500]", ["create/trunc", "write"])], rep.actors
    md = io.StringIO()
    render_markdown(rep, md)
    assert "bash [500]" in md.getvalue()
    h = {(r["event_action"], r["process_executable"]) for r in file_history(reader, "/tmp/out.sh").to_pylist()
         if r["process_pid"] == 500}
    assert h == {("open", "/usr/bin/bash"), ("flow", "/usr/bin/bash"), ("chmod", "/usr/bin/chmod")}, h
