"""Arrow tables and graphs as the JSON the browser reads.

Times leave as UTC ISO strings (``ts``) with, where a chart needs a number, epoch
milliseconds; entity ids as 16 hex digits (as the CLI prints them); integers a browser
cannot hold exactly (above 2^53: inodes, devices) as strings.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from forensix.analysis.graph import Graph
from forensix.analysis.processes import FOREVER
from forensix.model.identity import format_entity
from forensix.render.tables import display_value

__all__ = ["graph_json", "jsonable", "row", "rows", "target_of_node"]

_JS_SAFE = 1 << 53


def jsonable(name: str, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= FOREVER and (
            name.endswith("_ts") or name in ("ts", "time")):
        return None  # "never ended": the analyses' sentinel
    v = display_value(name, value)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= _JS_SAFE:
        return str(v)
    if isinstance(v, list):
        return [str(x) if isinstance(x, int) and abs(x) >= _JS_SAFE else x for x in v]
    return v


def row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: jsonable(k, v) for k, v in r.items()}


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return [row(r) for r in table.to_pylist()]


def target_of_node(kind: str, key: str, attrs: dict[str, Any]) -> str | None:
    """The detection point (as ``forensix backtrack`` takes it) a graph node stands for."""
    if kind == "process" and attrs.get("entity_id") is not None:
        return format_entity(int(attrs["entity_id"]))
    if kind == "file" and attrs.get("path"):
        return str(attrs["path"])
    if kind == "connection":
        ends = attrs.get("endpoints") or []
        # the far end: the later endpoint of the pair is as good as the other for a target
        for e in reversed(ends):
            if e and not e.startswith("?"):
                host, _, port = e.rpartition(":")
                return f"[{host}]:{port}" if ":" in host else e
    return None


def graph_json(g: Graph, direction: str) -> dict[str, Any]:
    nodes = []
    for n in g.nodes.values():
        attrs = {k: jsonable(k if k != "start_ts" else "start_ts", v) for k, v in n.attrs.items()
                 if k in ("entity_id", "pid", "executable", "args", "user_id", "start_ts", "path", "inode",
                          "endpoints", "names", "file_type", "host_id", "host_name", "group", "count",
                          "members", "member_labels", "parts", "of")}
        nodes.append({"id": n.key, "kind": n.kind, "label": n.label, "depth": n.depth,
                      "time": jsonable("time", n.time) if 0 < n.time < FOREVER else None,
                      "direction": direction, "target": target_of_node(n.kind, n.key, n.attrs),
                      "root": n.key in g.roots, **attrs})
    # one edge per image of its process ends (analysis.images): the id names them
    edges = [{"id": f"{e.src}>{e.kind}>{e.dst}" + (f">{e.src_image}>{e.dst_image}" if e.src_image or e.dst_image else ""),
              "source": e.src, "target": e.dst, "kind": e.kind,
              "first_ts": jsonable("first_ts", e.t_start), "last_ts": jsonable("last_ts", e.t_end),
              "bytes": e.bytes, "count": e.count, "direction": direction, "kinds": list(e.kinds or (e.kind,)),
              "src_image": e.src_image or None, "dst_image": e.dst_image or None}
             for e in g.edges]
    out = {"nodes": nodes, "edges": edges, "truncated": g.truncated, "roots": list(g.roots),
           "filters": list(g.filters), "hidden": dict(g.hidden), "compact": g.full is not None}
    if g.full is not None:
        out["full"] = {"nodes": g.full[0], "edges": g.full[1]}
    return out
