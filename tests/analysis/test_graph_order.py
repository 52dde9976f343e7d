"""The text graph, DOT and JSON of a walk do not depend on the order the store returns rows
in (a query without ORDER BY promises none: DuckDB's threads and a cluster's shards each
answer in their own): two reader opens, each returning unordered results in another order
(``forensix.testing.order.ShuffledReader``), render byte for byte the same."""

from __future__ import annotations

import io
from pathlib import Path

from forensix.analysis.graph import TrackOptions, backtrack, forward
from forensix.analysis.graph_compact import compact
from forensix.analysis.report import build_report
from forensix.analysis.targets import Target
from forensix.render.graph import render_graph
from forensix.render.report import render_markdown
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder
from forensix.testing.order import ShuffledReader


def _store(tmp_path: Path) -> tuple[Path, StoreBuilder]:
    """Many objects at one depth with ties everywhere: processes started in the same tick
    that only forked, sibling files with one writer, a file known by two names, libraries
    read at the same time, several connections of one process at one instant."""
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    sh = b.spawn(init, 100, 1, "/usr/bin/bash", ["bash"])
    idle = [b.spawn(sh, 200 + i, 2, "/usr/bin/bash", ["bash", "-c", f"job{i % 2}"]) for i in range(4)]
    tool = b.spawn(idle[0], 300, 3, "/usr/bin/tool", ["tool"])
    for i in range(8):
        b.write_file(sh, 4, f"/srv/in/part{i}")
        b.read_file(tool, 5, f"/srv/in/part{i}")
    for lib in ("libc.so.6", "libm.so.6", "libz.so.1", "libssl.so.3"):
        b.mmap(tool, 5, f"/usr/lib/x86_64-linux-gnu/{lib}")
    b.write_file(sh, 4, "/srv/cfg.tmp")
    b.rename(sh, 4.5, "/srv/cfg.tmp", "/srv/cfg")
    b.read_file(tool, 5, "/srv/cfg")
    for i in range(3):
        b.connect(tool, 5, ("10.0.0.5", 41000 + i), ("203.0.113.9", 443))
    b.write_file(tool, 6, "/srv/out")
    for i in range(6):
        b.read_file(b.spawn(init, 400 + i, 7, "/usr/bin/reader", ["reader", str(i)]), 8, "/srv/out")
    path = tmp_path / "s.duckdb"
    w = open_writer(path)
    b.write(w)
    w.close()
    return path, b


def _render(path: Path, seed: int) -> str:
    reader = ShuffledReader(open_reader(path), seed)
    try:
        out = io.StringIO()
        opts = TrackOptions(filters=())
        g = backtrack(reader, Target("file", path="/srv/out"), opts)
        f = forward(reader, Target("file", path="/srv/cfg"), opts)
        for graph in (g, f):
            for fmt in ("text", "json", "dot"):
                render_graph(graph, fmt, out)
            render_graph(compact([graph])[0], "text", out)
            render_graph(compact([graph])[0], "dot", out)
        rep = build_report(reader, Target("file", path="/srv/out"), names=lambda u: {})
        render_markdown(rep, out)
        return out.getvalue()
    finally:
        reader.close()


def test_two_opens_render_the_same(tmp_path: Path) -> None:
    path, _ = _store(tmp_path)
    first = _render(path, 1)
    assert "/srv/in/" in first and "reader [40" in first
    for seed in (2, 3):
        assert _render(path, seed) == first, f"seed {seed} drew the graph differently"
