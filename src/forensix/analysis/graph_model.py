"""The dependency graph's shape: objects (nodes), what moved between them (edges), and the
options of a walk (analysis.graph builds it).

Objects are processes (entity ids), files and pipes (device + inode, with the path last
seen), network connections (the unordered pair of endpoints, so a local client and its
local server meet at one node) and unix stream connections (their client's socket, see
analysis.sockets). Every object that lives on one host
(files, pipes, terminals, unix sockets, loopback connections) is keyed by its host as well:
on a store of many hosts, only a connection between two addresses joins two hosts
(analysis.crosshost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.processes import FOREVER
from forensix.model.identity import format_entity

__all__ = ["WRITE_ACTIONS", "Edge", "Graph", "Node", "TrackOptions", "edge_order", "end_label", "graph_tables", "node_key",
           "node_order"]

WRITE_ACTIONS = ("truncate", "rename", "chmod", "chown", "link", "symlink", "unlink", "utimes",
                 "setxattr", "removexattr", "mkdir", "rmdir")


@dataclass
class Node:
    key: str
    kind: str  # process | file | connection | unix | group (analysis.graph_compact)
    label: str
    depth: int
    time: int  # backward: latest time it mattered; forward: first time it was affected
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edge:
    src: str
    dst: str
    kind: str
    t_start: int
    t_end: int
    bytes: int = 0
    count: int = 1
    name_matched: bool = False  # joined to the file by name and time, not by inode (see analysis.lives)
    kinds: tuple[str, ...] = ()  # a compact graph's edge: every kind it stands for (analysis.graph_compact)
    # A process end's image at the edge's time (its executable's name; "bash→chmod" when the
    # edge spans an exec): a process keeps one node across execs, but a write made by the
    # shell before it exec'd chmod was not made by chmod (analysis.images). "" for other ends.
    src_image: str = ""
    dst_image: str = ""
    # the rows the walk joined into this edge, (first, last, bytes, by name): split by image
    # once the images are known (analysis.images.split_by_image), then emptied
    spans: list[tuple[int, int, int, bool]] = field(default_factory=list, repr=False, compare=False)


@dataclass
class Graph:
    direction: str  # backward | forward
    target: str
    nodes: dict[str, Node]
    edges: list[Edge]
    roots: list[str]
    truncated: bool = False
    filters: tuple[str, ...] = ()
    # a file target: the life of its name the walk started from, and the name's other lives
    life: dict[str, Any] | None = None
    other_lives: list[dict[str, Any]] = field(default_factory=list)
    hidden: dict[str, int] = field(default_factory=dict)  # edges the noise filters dropped, by filter
    full: tuple[int, int] | None = None  # a compact graph: the full graph's (nodes, edges)

    def node_by(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]


@dataclass
class TrackOptions:
    depth: int = 12  # hops from the detection point
    max_nodes: int = 2000  # stop growing past this many objects (the graph is marked truncated)
    since: int | None = None  # backward: ignore edges that began before this
    until: int | None = None  # forward: ignore edges after this; backward: the detection time
    filters: tuple[str, ...] = FILTER_NAMES  # noise filters on (see analysis.noise)
    at: int | None = None  # a file target: the life that held the name then (default: the last one)


def node_key(kind: str, *parts: Any) -> str:
    if kind == "process":
        return "p:" + format_entity(parts[0])
    if kind == "file":  # (host, device, inode[, generation]): one life of an inode number
        gen = parts[3] if len(parts) > 3 else 0
        return f"f:{parts[0]}:{parts[1]}:{parts[2]}" + (f"~{gen}" if gen else "")
    return str(parts[0])



def node_order(n: Node) -> tuple[int, str, str, str]:
    """How objects are listed: by distance, kind and label; the key breaks ties (two lives
    of one name), so a listing never follows the order the store returned rows in."""
    return n.depth, n.kind, n.label, n.key


def edge_order(e: Edge) -> tuple[int, str, str, str, int, str, str]:
    """How edges are listed: in time order, ties by their ends and kind."""
    return e.t_start, e.src, e.dst, e.kind, e.t_end, e.src_image, e.dst_image


def end_label(g: Graph, e: Edge, side: str) -> str:
    """How an edge's end is named beside the action: a process by the image it ran at the
    edge's time and its pid (the node's own label names its last image), anything else
    by its node's label."""
    n = g.nodes[e.src if side == "src" else e.dst]
    image = e.src_image if side == "src" else e.dst_image
    if n.kind != "process" or not image or n.attrs.get("pid") is None:
        return n.label
    return f"{image} [{n.attrs['pid']}]"


def graph_tables(g: Graph) -> tuple[pa.Table, pa.Table]:
    """The graph as two tables (nodes, edges) for the table renderers."""
    nodes = pa.Table.from_pylist([
        {"node": n.key, "kind": n.kind, "label": n.label, "depth": n.depth,
         "time": n.time if 0 < n.time < FOREVER else None,
         "entity_id": n.attrs.get("entity_id"), "pid": n.attrs.get("pid"),
         "user_id": n.attrs.get("user_id"), "executable": n.attrs.get("executable"),
         "file_path": n.attrs.get("path"), "file_inode": n.attrs.get("inode"),
         "host_id": n.attrs.get("host_id"), "host_name": n.attrs.get("host_name")}
        for n in sorted(g.nodes.values(), key=node_order)
    ], schema=pa.schema([("node", pa.string()), ("kind", pa.string()), ("label", pa.string()),
                         ("depth", pa.int32()), ("time", pa.int64()), ("entity_id", pa.uint64()),
                         ("pid", pa.uint32()), ("user_id", pa.uint32()), ("executable", pa.string()),
                         ("file_path", pa.string()), ("file_inode", pa.uint64()),
                         ("host_id", pa.string()), ("host_name", pa.string())]))
    edges = pa.Table.from_pylist([
        {"first_ts": e.t_start, "last_ts": e.t_end if e.t_end < FOREVER else None, "src": e.src,
         "src_label": end_label(g, e, "src"), "kind": e.kind, "dst": e.dst, "dst_label": end_label(g, e, "dst"),
         "bytes": e.bytes, "count": e.count, "name_matched": e.name_matched,
         "src_image": e.src_image or None, "dst_image": e.dst_image or None}
        for e in sorted(g.edges, key=edge_order)
    ], schema=pa.schema([("first_ts", pa.int64()), ("last_ts", pa.int64()), ("src", pa.string()),
                         ("src_label", pa.string()), ("kind", pa.string()), ("dst", pa.string()),
                         ("dst_label", pa.string()), ("bytes", pa.int64()), ("count", pa.int64()),
                         ("name_matched", pa.bool_()), ("src_image", pa.string()), ("dst_image", pa.string())]))
    return nodes, edges
