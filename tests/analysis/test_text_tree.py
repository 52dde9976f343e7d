"""The text view's object list is a tree: each object under the one it was reached from.

Before, it was a list by distance indented like a tree, so an object printed under whichever
object of the previous distance came last in the list: in a forward walk, a client reached
through the first of two connections read as reached through the second."""

from __future__ import annotations

import io
from pathlib import Path

from forensix.analysis.graph import TrackOptions, forward
from forensix.analysis.graph_compact import compact
from forensix.analysis.targets import Target
from forensix.render.graph import render_graph
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder


def _objects(g: object) -> list[str]:
    buf = io.StringIO()
    render_graph(g, "text", buf)  # type: ignore[arg-type]
    part = buf.getvalue().split("\nobjects:\n", 1)[1].split("\nedges, in time order:\n", 1)[0]
    return [x for x in part.splitlines() if x.strip()]


def _parent_line(lines: list[str], i: int) -> str:
    """The nearest line above ``i`` that is indented less: what a reader takes for its parent."""
    ind = len(lines[i]) - len(lines[i].lstrip())
    return next(x for x in reversed(lines[:i]) if len(x) - len(x.lstrip()) < ind)


def test_each_object_prints_under_the_one_it_was_reached_from(tmp_path: Path) -> None:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/sbin/init")
    src = b.spawn(init, 100, 1, "/usr/bin/dropper")
    b.write_file(src, 2, "/srv/a.txt")
    b.write_file(src, 3, "/srv/b.txt")
    first = b.spawn(init, 200, 4, "/usr/bin/alpha")  # reads a.txt, writes the result
    b.read_file(first, 5, "/srv/a.txt")
    b.write_file(first, 6, "/srv/from-a.txt")
    second = b.spawn(init, 300, 4, "/usr/bin/zulu")  # reads b.txt, nothing further
    b.read_file(second, 5, "/srv/b.txt")
    path = tmp_path / "s.duckdb"
    with open_writer(path) as w:
        b.write(w)
    g = forward(open_reader(path), Target("process", entity=src.entity_id), TrackOptions(filters=()))
    lines = _objects(g)
    i = next(i for i, x in enumerate(lines) if "/srv/from-a.txt" in x)
    assert "alpha [200]" in _parent_line(lines, i), lines  # not zulu, the last process at depth 2
    j = next(i for i, x in enumerate(lines) if "alpha [200]" in x)
    assert "/srv/a.txt" in _parent_line(lines, j), lines
    # the compact graph's text is a tree too
    (c,) = compact([g])
    lines = _objects(c)
    i = next(i for i, x in enumerate(lines) if "/srv/from-a.txt" in x)
    assert "alpha [200]" in _parent_line(lines, i), lines
