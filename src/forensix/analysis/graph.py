"""BackTracker: dependency graphs backward from a detection point, and forward for impact.

The objects and edges are described in analysis.graph_model and analysis.graph_hop.

Time-window rule (King & Chen, "Backtracking Intrusions", SOSP 2003): going backward, an
edge into an object counts only if it began before the latest time that object affected
what we already hold; the source then matters only up to the end of that edge. Going
forward, an edge out of an object counts only if it ended after the object was first
affected; a connect or accept is an edge at its own time (a connection a server accepted
before it was reached is not affected by it, unless it wrote into it later). Each hop is a
few SQL queries joined on the frontier (analysis.graph_hop), so the
graph is built from the store without loading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from forensix.analysis.crosshost import HostNames, follow, link_hosts
from forensix.analysis.graph_hop import Frontier, hop_params, hop_sql, ints
from forensix.analysis.graph_model import (
    WRITE_ACTIONS,
    Edge,
    Graph,
    Node,
    TrackOptions,
    graph_tables,
    node_key,
)
from forensix.analysis.graph_rows import (
    add_names,
    drop_read_only_system_files,
    end_key,
    inode_reused,
    label_nodes,
    latest_accepts,
    near_key,
    sockets_to_connections,
)
from forensix.analysis.lives import (
    NAME_COLUMNS,
    NameIndex,
    name_matched_rows,
    name_sql,
    start_lives,
)
from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.processes import FOREVER
from forensix.analysis.sockets import SOCK_KEY
from forensix.analysis.targets import Target, resolve
from forensix.store.base import Reader

__all__ = [
    "WRITE_ACTIONS",
    "Edge",
    "Graph",
    "Node",
    "TrackOptions",
    "backtrack",
    "forward",
    "forward_processes",
    "graph_tables",
    "node_key",
]


# -- the walk --------------------------------------------------------------------------
def _walk(reader: Reader, start: Frontier, backward: bool, opts: TrackOptions, target: str) -> Graph:
    active = set(opts.filters) & set(FILTER_NAMES)
    written: dict[tuple[str, int, int], bool] = {}
    nodes: dict[str, Node] = {}
    edges: dict[tuple[str, str, str], Edge] = {}
    ident: dict[str, tuple[str, Any]] = {}
    index = start.index or HostNames(reader)
    hidden: dict[str, int] = {}
    for kind, items in (("process", start.procs), ("file", start.files), ("sock", start.socks),
                        ("file", start.named)):
        for obj, thr in items.items():
            key = obj if isinstance(obj, str) and kind == "file" else node_key(
                kind, *(obj if isinstance(obj, tuple) else (obj,)))
            k = ("connection" if key.startswith("c:") else "unix") if kind == "sock" else kind
            nodes[key] = _node(key, k, obj, 0, thr)
            if obj in start.paths:
                nodes[key].attrs.update(path=target.split(" ", 1)[-1], names=set(start.paths[obj]))
            ident[key] = (k, obj)
    roots = list(nodes)
    frontier, depth, truncated = start, 0, False
    while not frontier.empty() and depth < opts.depth:
        depth += 1
        # a connection to a host outside a fleet slice: that host joins before the hop reads it
        follow(reader, frontier.socks, index, backward)
        sql = hop_sql(backward, active, frontier)
        # backward, the names of the frontier's files are asked within the hop's query (one
        # round trip): who held them when, and the path-resolved calls made on them
        ask = index.unasked(_frontier_names(frontier, nodes)) if backward else []
        if ask:
            nsql = f"SELECT {', '.join(f'{c} AS nm_{c}' for c in NAME_COLUMNS)}, TRUE AS name_row FROM ({name_sql(ask)})"
            sql = f"{sql}\nUNION ALL BY NAME\n{nsql}" if sql else nsql
        params = {k: v for k, v in hop_params(frontier).items() if f"${k}" in sql}
        rows = reader.query(sql, params).to_pylist() if sql else []
        if ask:
            index.ingest(ask, [{c: r[f"nm_{c}"] for c in NAME_COLUMNS} for r in rows if r.get("name_row")])
            rows = [r for r in rows if not r.get("name_row")]
        for r in rows:
            if r.get("hidden_by"):
                hidden[r["hidden_by"]] = hidden.get(r["hidden_by"], 0) + int(r["hidden_n"])
        rows = [r for r in rows if not r.get("hidden_by")]
        # the store returns rows in any order (threads, shards): the first row to reach an
        # object names it and the size limit keeps the first ones, so take them in one order
        rows.sort(key=_row_order)
        rows = _by_name(index, rows, frontier, nodes, backward)
        if "libraries" in active:
            n = len(rows)
            rows = drop_read_only_system_files(reader, rows, written)
            hidden["libraries"] = hidden.get("libraries", 0) + n - len(rows)
        rows = sockets_to_connections(reader, rows)
        if backward and "servers" in active:
            n = len(rows)
            rows = latest_accepts(rows)
            hidden["servers"] = hidden.get("servers", 0) + n - len(rows)
        nxt = Frontier()
        for r in rows:
            near, far = ("dst", "src") if backward else ("src", "dst")
            nkey = near_key(r, near, nodes)
            fkey, fkind, fobj = end_key(r, far)
            if nkey not in nodes or fkey == nkey:
                continue
            if not _in_window(r, backward, opts) or inode_reused(r, nodes):
                continue
            base = nodes[nkey].time
            t = min(_far_end(r, fkind), base) if backward else max(r["t_start"], base)
            _add_edge(edges, r, *((fkey, nkey) if backward else (nkey, fkey)))
            old = nodes.get(fkey)
            if old is None:
                if len(nodes) >= opts.max_nodes:
                    truncated = True
                    continue
                nodes[fkey] = _node(fkey, fkind, fobj, depth, t)
                nodes[fkey].attrs["via"] = nkey  # reached from: its parent in the text's tree
                add_names(nodes[fkey], r)
                ident[fkey] = (fkind, fobj)
            elif (backward and t > old.time) or (not backward and t < old.time):
                old.time = t  # reached with a wider window: look again
                add_names(old, r)
            else:
                add_names(old, r)
                continue
            if fkind == "file" and isinstance(fobj, str):
                nxt.named[fobj] = nodes[fkey].time
                continue
            bucket = nxt.procs if fkind == "process" else nxt.files if fkind == "file" else nxt.socks
            bucket[fobj] = nodes[fkey].time
            if fkind != "process" and not backward:  # reached by its handshake, or by bytes later
                if r["kind"] in ("connect", "accept"):
                    nxt.established.add(fobj)  # its other end's handshake counts (graph_hop._sock_sql)
                else:
                    nxt.established.discard(fobj)
        frontier = nxt
    if not frontier.empty():
        truncated = True
    kept = [e for e in edges.values() if e.src in nodes and e.dst in nodes]
    g = Graph("backward" if backward else "forward", target, nodes, kept, roots, truncated,
              tuple(sorted(active)), life=start.chosen, other_lives=start.others,
              hidden={k: v for k, v in sorted(hidden.items()) if v})
    label_nodes(reader, g, ident)
    return g



_ORDER_COLS = ("kind", "src_kind", "src_eid", "src_dev", "src_ino", "src_key", "dst_kind", "dst_eid", "dst_dev",
               "dst_ino", "dst_key", "path", "tpath", "gen", "nbytes")


def _row_order(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["t_start"], r["t_end"], *(("", "") if r.get(c) is None else (type(r[c]).__name__, r[c])
                                         for c in _ORDER_COLS))


def _frontier_files(fr: Frontier) -> dict[str, int]:
    return {node_key("file", *life): t for life, t in fr.files.items()} | fr.named


def _frontier_names(fr: Frontier, nodes: dict[str, Node]) -> set[str]:
    return {x for k in _frontier_files(fr) if k in nodes
            for x in (set(nodes[k].attrs.get("names") or ()) | {nodes[k].attrs.get("path")}) if x}


def _by_name(index: NameIndex, rows: list[dict[str, Any]], fr: Frontier, nodes: dict[str, Node],
             backward: bool) -> list[dict[str, Any]]:
    """Path-resolved calls, joined to the life that held their name then (analysis.lives)."""
    if not backward:
        return name_matched_rows(index, rows, {}, set(), backward)
    return name_matched_rows(index, rows, _frontier_files(fr), _frontier_names(fr, nodes), backward)



def _node(key: str, kind: str, obj: Any, depth: int, t: int) -> Node:
    """A new node; a file of a known life carries its generation (see inode_reused)."""
    n = Node(key, kind, key, depth, t)
    if kind == "file" and isinstance(obj, tuple) and obj[3]:
        n.attrs["generation"] = obj[3]
    return n



def _far_end(r: dict[str, Any], far_kind: str) -> int:
    """Backward, how long the edge's source matters: to the edge's end; a process that
    connected or accepted a connection, only up to that call. What it wrote into the
    connection afterwards are edges of their own (its flows), and a server that forked a
    handler for one client and then read another's bytes did not send those to the first
    (a connect/accept edge is open-ended: the connection affects the process from then on)."""
    if far_kind == "process" and r["kind"] in ("connect", "accept"):
        return int(r["t_start"])
    return int(r["t_end"])


def _in_window(r: dict[str, Any], backward: bool, opts: TrackOptions) -> bool:
    if backward and opts.since is not None and r["t_end"] < opts.since:
        return False
    return not (not backward and opts.until is not None and r["t_start"] > opts.until)



def _add_edge(edges: dict[tuple[str, str, str], Edge], r: dict[str, Any], src: str, dst: str) -> None:
    k = (src, dst, r["kind"])
    e = edges.get(k)
    if e is None:
        edges[k] = e = Edge(src, dst, r["kind"], r["t_start"], r["t_end"], int(r["nbytes"] or 0),
                            name_matched=bool(r.get("nm")))
    else:
        e.t_start, e.t_end = min(e.t_start, r["t_start"]), max(e.t_end, r["t_end"])
        e.bytes += int(r["nbytes"] or 0)
        e.count += 1
    # each row's own time: which image the process ran then (analysis.images)
    e.spans.append((r["t_start"], r["t_end"], int(r["nbytes"] or 0), bool(r.get("nm"))))



# -- entry points ----------------------------------------------------------------------
def _start(reader: Reader, target: Target, backward: bool, opts: TrackOptions,
           members: Iterable[int] = ()) -> Frontier:
    fr = Frontier()
    t0 = (opts.until if opts.until is not None else FOREVER) if backward else (opts.since or 0)
    if target.kind == "file":
        _start_file(reader, target.path or "", opts.at, t0, fr)
    elif target.kind == "process":
        fr.procs[target.entity or 0] = t0 if backward else _start_ts(reader, target.entity or 0)
    elif target.kind == "endpoint":
        t = reader.query(
            f"""SELECT DISTINCT {SOCK_KEY} AS key FROM events
                WHERE event_category = 'network' AND event_action IN ('connect', 'accept')
                  AND ((destination_ip = $ip AND destination_port = $port)
                       OR (source_ip = $ip AND source_port = $port))""",
            {"ip": target.ip, "port": target.port})
        for k in t.column("key").to_pylist():
            fr.socks[k] = t0
    members = list(members)
    if members and not backward:
        t = reader.query(f"""SELECT entity_id, min(start_ts) AS s FROM processes
                             WHERE entity_id IN ({ints(members)}) GROUP BY 1""")
        fr.procs.update(zip(t.column("entity_id").to_pylist(), t.column("s").to_pylist()))
    for e in members:
        fr.procs.setdefault(e, t0)
    return fr


def _start_file(reader: Reader, path: str, at: int | None, t0: int, fr: Frontier) -> None:
    """The life of the name at ``at`` (default: the last one that had it) starts the walk."""
    fr.index = HostNames(reader)
    st = start_lives(fr.index, path, at)
    for obj, names in st.files.items():
        (fr.named if isinstance(obj, str) else fr.files)[obj] = t0
        fr.paths[obj] = names
    fr.chosen, fr.others = st.chosen, st.others


def _start_ts(reader: Reader, entity: int) -> int:
    t = reader.query("SELECT min(start_ts) AS s FROM processes WHERE entity_id = $e", {"e": entity})
    v = t.column("s")[0].as_py()
    return int(v) if v is not None else 0


def _session_target(reader: Reader, target: Target) -> tuple[Target, list[int]]:
    from forensix.analysis.sessions import find_session

    leader, att = find_session(reader, target.session or "")
    return target, att.members(leader)


def _track(reader: Reader, target: Target, opts: TrackOptions | None, backward: bool) -> Graph:
    opts = opts or TrackOptions()
    members: list[int] = []
    if target.kind == "session":
        target, members = _session_target(reader, target)
    elif target.kind != "file":
        target = resolve(reader, target)
    g = _walk(reader, _start(reader, target, backward, opts, members), backward, opts, target.describe())
    return link_hosts(reader, g)  # a connection between two hosts of the store: the right peer only


def backtrack(reader: Reader, target: Target, opts: TrackOptions | None = None) -> Graph:
    """Everything that could have caused ``target``, as a dependency graph."""
    return _track(reader, target, opts, backward=True)


def forward(reader: Reader, target: Target, opts: TrackOptions | None = None) -> Graph:
    """Everything ``target`` affected: what it touched and spawned, and who later used that."""
    return _track(reader, target, opts, backward=False)


def forward_processes(reader: Reader, entities: list[int], label: str,
                      opts: TrackOptions | None = None) -> Graph:
    """Forward from a set of processes (a session whose members are already known)."""
    opts = opts or TrackOptions()
    start = _start(reader, Target("session", session=label), False, opts, entities)
    return link_hosts(reader, _walk(reader, start, False, opts, label))

