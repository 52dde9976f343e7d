"""Dependency graphs as text, JSON, CSV, Graphviz DOT and GraphML."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from forensix.analysis.graph import Edge, Graph, Node, graph_tables
from forensix.analysis.graph_model import edge_order, end_label, node_order
from forensix.analysis.images import SPAN_MARK
from forensix.analysis.processes import FOREVER
from forensix.model.timefmt import format_ns
from forensix.render.printable import printable
from forensix.render.tables import display_value, field_name, render_csv

__all__ = ["GRAPH_RENDERERS", "group_text", "render_graph", "size_line", "to_dot"]

_SHAPES = {"process": "box", "file": "note", "connection": "diamond", "unix": "hexagon", "group": "folder"}
_COLORS = {"process": "#dbe9f6", "file": "#fdf2d0", "connection": "#f8d7da", "unix": "#e2e3f3",
           "group": "#eeeeee"}


def _short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _lines(out: Any) -> Callable[[str], None]:
    """A writer of text lines whose recorded parts (names, command lines) may hold any character:
    each is written escaped (render/printable.py), so no name can forge a line or a colour."""
    def write(text: str) -> None:
        out.write(printable(text) + "\n")
    return write


def _when(ns: int | None) -> str:
    return format_ns(ns) if ns and 0 < ns < FOREVER else ""


def life_line(life: dict[str, Any]) -> str:
    """Which life of a name a walk started from, in words."""
    ino = (f"inode {life['file_inode']}" + (f" generation {life['file_generation']}" if life.get("file_generation")
                                            else "")) if life.get("file_inode") else "inode not recorded"
    start = _when(life.get("start_ts")) or "before the record"
    end = _when(life.get("end_ts")) or "the end of the record"
    how = f", ended by {life['ended_by']} (pid {life['ended_pid']})" if life.get("ended_by") else ""
    return f"life {life['life']} of {life['lives']} of {life['file_path']}: {ino}, from {start} to {end}{how}"


def hidden_line(g: Graph) -> str:
    if not g.hidden:
        return ""
    counts = ", ".join(f"{n} by {k}" for k, n in g.hidden.items())
    flags = " ".join(f"--no-filter {k}" for k in g.hidden)
    return f"noise filters hid {sum(g.hidden.values())} edges ({counts}); show them with {flags}"


def group_text(n: Node) -> str:
    """What a group node of a compact graph (analysis.graph_compact) holds, in words: its
    count by kind of system file, or its first members."""
    parts = n.attrs.get("parts")
    if parts:
        return n.label + ": " + ", ".join(f"{k} {v}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    labels = list(n.attrs.get("member_labels") or [])
    return n.label + ": " + ", ".join(labels[:3]) + (", …" if len(labels) > 3 else "")


def size_line(g: Graph) -> str:
    """How many objects and edges a graph shows, and of how many when it is compact."""
    if g.full is None:
        return f"{len(g.nodes)} objects, {len(g.edges)} edges"
    groups = g.node_by("group")
    if not groups:
        return f"{len(g.nodes)} objects, {len(g.edges)} edges ({g.full[1]} before merging; --full lists them apart)"
    folded = sum(len(n.attrs.get("members") or ()) for n in groups)
    return (f"{len(g.nodes) - len(groups)} of {g.full[0]} objects drawn, {folded} folded into {len(groups)}"
            f" counted group{'s' if len(groups) > 1 else ''}, {len(g.edges)} edges (of {g.full[1]});"
            " --full lists every object")


def _parent(g: Graph, n: Node, group_of: dict[str, str]) -> str | None:
    """The object ``n`` was first reached from (the walk's ``via``; a group's, its nearest
    member's), seen through the groups that folded it. None: a root, or no parent nearer the
    target (the tree never turns back toward a farther object)."""
    via = n.attrs.get("via")
    via = group_of.get(via, via) if via else None
    if via is None or via not in g.nodes or via == n.key or g.nodes[via].depth >= n.depth:
        return None
    return str(via)


def tree_order(g: Graph) -> list[tuple[Node, int]]:
    """The objects as a tree: each under the object it was reached from (siblings in
    node_order), with its level of indent; so a client reached through the second of two
    connections prints under that one, not under whichever came last in a list by distance."""
    group_of = {m: n.key for n in g.node_by("group") for m in n.attrs.get("members") or ()}
    kids: dict[str | None, list[Node]] = {}
    for n in g.nodes.values():
        kids.setdefault(_parent(g, n, group_of), []).append(n)
    out: list[tuple[Node, int]] = []

    def visit(n: Node, level: int) -> None:
        out.append((n, level))
        for c in sorted(kids.get(n.key, []), key=node_order):
            visit(c, level + 1)

    for n in sorted(kids.get(None, []), key=node_order):
        visit(n, n.depth if n.key not in g.roots and n.depth else 0)
    return out


def _edge_kind(e: Edge) -> str:
    return "+".join(e.kinds) if e.kinds else e.kind


def render_text(g: Graph, out: Any) -> None:
    w = _lines(out)
    w(f"{g.direction} from {g.target}: {size_line(g)}"
              f"; noise filters: {', '.join(g.filters) or 'off'}"
              f"{'; TRUNCATED (raise --depth/--max-nodes)' if g.truncated else ''}")
    if g.life:
        w(life_line(g.life))
        for o in g.other_lives:
            w(f"  other life {o['life']}: from {_when(o.get('start_ts')) or 'before the record'}"
                      f" to {_when(o.get('end_ts')) or 'the end'}"
                      + (f" ({o['ended_by']})" if o.get("ended_by") else "") + "; pick it with --at TIME")
    if g.hidden:
        w(hidden_line(g))
    if any(e.name_matched for e in g.edges):
        w("edges marked (by name) were joined to the file by its name and time, not its inode")
    w("")
    w("objects:")
    for n, level in tree_order(g):
        extra = ""
        if n.kind == "process":
            extra = (f"  {display_value('entity_id', n.attrs.get('entity_id'))} uid {n.attrs.get('user_id')}"
                     f"  {_short(' '.join(n.attrs.get('args') or []))}")
            if len(n.attrs.get("images") or ()) > 1:  # the edges name the image of their time
                extra += "  images " + f" {SPAN_MARK} ".join(n.attrs["images"])
        label = _short(group_text(n)) if n.kind == "group" else n.label
        w(f"  {'  ' * level}[{n.depth}] {n.kind:<10} {label}{extra}")
    w("")
    w("edges, in time order:")
    for e in sorted(g.edges, key=edge_order):
        size = f" {e.bytes} B" if e.bytes else ""
        times = (f" x{e.count}" if e.count > 1 else "") + (" (by name)" if e.name_matched else "")
        w(f"  {_when(e.t_start):<27}  {end_label(g, e, 'src')}  --{_edge_kind(e)}{size}{times}-->  "
                  f"{end_label(g, e, 'dst')}")


def render_json(g: Graph, out: Any) -> None:
    nodes, edges = graph_tables(g)
    doc = {
        "direction": g.direction, "target": g.target, "truncated": g.truncated, "filters": list(g.filters),
        "hidden": g.hidden,
        **({"life": _ecs_life(g.life), "other_lives": [_ecs_life(x) for x in g.other_lives]} if g.life else {}),
        "nodes": [{field_name(k): display_value(k, v) for k, v in r.items() if v is not None}
                  for r in nodes.to_pylist()],
        "edges": [{field_name(k): display_value(k, v) for k, v in r.items() if v is not None}
                  for r in edges.to_pylist()],
    }
    out.write(json.dumps(doc, default=str, indent=1) + "\n")


_LIFE_NAMES = {"start_ts": "held_from", "end_ts": "held_until"}  # a name's hold, not a process's start


def _ecs_life(life: dict[str, Any]) -> dict[str, Any]:
    return {_LIFE_NAMES.get(k) or field_name(k): display_value(k, v) for k, v in life.items() if v is not None}


def render_csv_edges(g: Graph, out: Any) -> None:
    render_csv(graph_tables(g)[1], out)


def _dot_id(key: str) -> str:
    return json.dumps(key)


def to_dot(g: Graph, title: str | None = None) -> str:
    lines = ["digraph forensix {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10, style=filled];',
             '  edge [fontname="Helvetica", fontsize=8];']
    if title:
        lines.append(f"  label={json.dumps(title)}; labelloc=t;")
    roots = set(g.roots)
    for n in sorted(g.nodes.values(), key=node_order):  # the layout follows the order given
        label = printable(n.label)  # a name's newline is at most a line break of the drawing; no control gets through
        if n.kind == "process" and n.attrs.get("user_id") is not None:
            label += f"\\nuid {n.attrs['user_id']}"
        attrs = {"shape": _SHAPES.get(n.kind, "ellipse"), "fillcolor": _COLORS.get(n.kind, "white"),
                 "label": label}
        if n.key in roots:
            attrs |= {"penwidth": "3", "color": "red"}
        body = ", ".join(f"{k}={json.dumps(v) if k != 'label' else _dot_label(v)}" for k, v in attrs.items())
        lines.append(f"  {_dot_id(n.key)} [{body}];")
    pairs = {(e.src, e.dst, e.kind) for e in g.edges}
    for e in sorted(g.edges, key=edge_order):
        both = (e.dst, e.src, e.kind) in pairs
        if both and e.src > e.dst:
            continue  # drawn once, with arrows both ways
        lab = _edge_kind(e) + (f" {e.bytes}B" if e.bytes else "") + (" (by name)" if e.name_matched else "")
        lab += "".join(f"\\n{printable(x)}" for x in _other_image(g, e))
        lab += "\\n" + format_ns(e.t_start, precision=3)[11:]
        extra = ", dir=both" if both else ""
        lines.append(f"  {_dot_id(e.src)} -> {_dot_id(e.dst)} [label={_dot_label(lab)}{extra}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _other_image(g: Graph, e: Edge) -> list[str]:
    """The image a process end ran at the edge's time, where the node is drawn by another
    (its last): a shell's write before it exec'd chmod is drawn from the chmod node, "by bash"."""
    out = []
    for side in ("src", "dst"):
        n = g.nodes[e.src if side == "src" else e.dst]
        image = e.src_image if side == "src" else e.dst_image
        if n.kind == "process" and image and image != n.label.split(" [")[0]:
            # the acting end is "by"; the forked, killed or traced one "to"
            to = side == "dst" and g.nodes[e.src].kind in ("process", "group")
            out.append(("to " if to else "by ") + end_label(g, e, side))
    return out


def _dot_label(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n") + '"'


def render_dot(g: Graph, out: Any) -> None:
    out.write(to_dot(g, f"{g.direction} from {g.target}"))


def render_graphml(g: Graph, out: Any) -> None:
    keys = [("kind", "node"), ("label", "node"), ("depth", "node"), ("time", "node"),
            ("ekind", "edge"), ("first_ts", "edge"), ("last_ts", "edge"), ("bytes", "edge")]
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n'
              '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n')
    for k, where in keys:
        out.write(f'  <key id="{k}" for="{where}" attr.name="{k}" attr.type="string"/>\n')
    out.write('  <graph id="forensix" edgedefault="directed">\n')
    for n in sorted(g.nodes.values(), key=node_order):
        out.write(f"    <node id={quoteattr(n.key)}>"
                  f'<data key="kind">{n.kind}</data><data key="label">{escape(n.label)}</data>'
                  f'<data key="depth">{n.depth}</data><data key="time">{_when(n.time)}</data></node>\n')
    for i, e in enumerate(sorted(g.edges, key=edge_order)):
        out.write(f'    <edge id="e{i}" source={quoteattr(e.src)} target={quoteattr(e.dst)}>'
                  f'<data key="ekind">{e.kind}</data><data key="first_ts">{_when(e.t_start)}</data>'
                  f'<data key="last_ts">{_when(e.t_end)}</data><data key="bytes">{e.bytes}</data></edge>\n')
    out.write("  </graph>\n</graphml>\n")


GRAPH_RENDERERS: dict[str, Callable[[Graph, Any], None]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv_edges,
    "dot": render_dot,
    "graphml": render_graphml,
}


def render_graph(g: Graph, fmt: str, out: Any) -> None:
    GRAPH_RENDERERS[fmt](g, out)
