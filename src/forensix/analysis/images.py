"""Which image a process ran when it acted.

A process keeps its entity (one graph node) across execs, and the store keeps one
``processes`` row per image (fork = image 0, each exec the next, ``image_ts`` its start). A
shell that writes a file and then ``exec chmod``s it is one node whose last image is chmod:
named by that image, its write edge read "chmod wrote 3 bytes". So each edge names the
image current at each of its rows' first time, and a row that spans an exec (a transfer
counted before and after it) names every image it spans, "bash→chmod". The walk joins the
rows of one (source, destination, kind); they are split here into one edge per image.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from forensix.analysis.graph_model import Edge, Graph
from forensix.analysis.processes import FOREVER
from forensix.store.base import Reader

__all__ = ["Image", "images_at", "process_images", "split_by_image"]

SPAN_MARK = "→"  # between the images an edge spans


@dataclass(frozen=True)
class Image:
    ts: int  # when it began (the fork for image 0, else the exec)
    seq: int
    name: str  # the executable's file name (what a label shows)
    executable: str


def process_images(reader: Reader, entities: Iterable[int]) -> dict[int, list[Image]]:
    """Every image of each entity, in order."""
    ents = sorted(set(entities))
    if not ents:
        return {}
    t = reader.query(
        """SELECT entity_id, image_seq, min(image_ts) AS ts, any_value(executable) AS exe, any_value(args) AS args
           FROM processes WHERE entity_id IN (SELECT unnest($e)) GROUP BY 1, 2 ORDER BY 1, 2""", {"e": ents})
    out: dict[int, list[Image]] = {}
    for r in t.to_pylist():
        exe = r["exe"] or ((r["args"] or [None])[0]) or "?"
        out.setdefault(r["entity_id"], []).append(Image(r["ts"], r["image_seq"], exe.rsplit("/", 1)[-1], exe))
    return out


def images_at(images: list[Image], t0: int, t1: int) -> list[Image]:
    """The images a process ran from ``t0`` to ``t1``: the one current at ``t0`` (the first,
    before any began) and every one begun by ``t1``. An open end (a connect or accept, an
    edge from its time on) is its start: the image that made the call."""
    if not images:
        return []
    if t1 >= FOREVER or t1 < t0:
        t1 = t0
    starts = [i.ts for i in images]
    first = max(bisect_right(starts, t0) - 1, 0)
    last = max(bisect_right(starts, t1) - 1, first)
    return images[first:last + 1]


def _name(images: list[Image], t0: int, t1: int) -> str:
    return SPAN_MARK.join(i.name for i in images_at(images, t0, t1))


def split_by_image(g: Graph, images: dict[str, list[Image]]) -> None:
    """Name each edge's process ends by the image at the edge's time, one edge per image
    (``images``: a process node's key -> its images). An edge whose rows were not kept
    (``spans`` empty: built by hand) is named over its whole time."""
    out: list[Edge] = []
    for e in g.edges:
        si, di = images.get(e.src) or [], images.get(e.dst) or []
        if not (si or di) or not e.spans:
            e.src_image, e.dst_image = _name(si, e.t_start, e.t_end), _name(di, e.t_start, e.t_end)
            e.spans = []
            out.append(e)
            continue
        parts: dict[tuple[str, str], list[tuple[int, int, int, bool]]] = {}
        for s in sorted(e.spans):
            key = (_name(si, s[0], s[1]), _name(di, s[0], s[1]))
            parts.setdefault(key, []).append(s)
        for (sname, dname), ss in parts.items():
            out.append(Edge(e.src, e.dst, e.kind, min(s[0] for s in ss), max(s[1] for s in ss),
                            sum(s[2] for s in ss), len(ss), name_matched=ss[0][3], kinds=e.kinds,
                            src_image=sname, dst_image=dname))
    g.edges = out
