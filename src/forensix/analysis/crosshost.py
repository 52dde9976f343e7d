"""Cross-host provenance: a dependency graph that follows a TCP connection from one host to another.

The graph walk keys a connection by its two endpoints (``c:IP:PORT|IP:PORT``), so when both
hosts of a connection are in one store (a log host's fleet store, ClickHouse) it already
reaches the connecting process on host A from the accepting process on host B. Two things
make that link wrong unless they are checked, and this module checks them on the walk's
graph:

* **time**: a 4-tuple is reused (ephemeral ports wrap): a connect is the peer of an accept
  only within ``slack`` of it (clock skew between hosts included). Backward, the accept a
  server's process stands for is its latest one before the time it mattered; only the
  connects paired with it stay. Forward, symmetric: the accepts paired with the connects.
* **loopback**: 127.0.0.0/8 and ::1 are every host's own; such a connection never links
  two hosts.

Edges that fail are dropped, and objects no longer connected to the detection point are
pruned. Process nodes are labelled with their host when a graph spans more than one, and
a connection that crosses hosts says so (``cross_host``: "A -> B"): the report and the
graph renderers show it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import pyarrow as pa

from forensix.analysis.lives import NameIndex, name_sql
from forensix.analysis.sockets import sock_host
from forensix.model.identity import parse_entity
from forensix.store.base import Reader
from forensix.store.clickhouse.window import Window

if TYPE_CHECKING:  # graph.py calls link_hosts: only the types are needed here
    from forensix.analysis.graph import Graph
    from forensix.analysis.targets import Target

__all__ = ["DEFAULT_SLACK_NS", "CrossLink", "HostNames", "HostSlice", "across_hosts", "cross_host_links", "follow",
           "link_hosts", "notes"]

T = TypeVar("T")

DEFAULT_SLACK_NS = 5 * 10**9  # connect and accept of one connection, seen by two clocks


@dataclass(frozen=True)
class CrossLink:
    key: str  # the connection node
    client_host: str
    client: str  # process node key
    server_host: str
    server: str
    connect_ts: int
    accept_ts: int


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "0.0.0.0", "::")


def _endpoints(key: str) -> list[tuple[str, int]] | None:
    # a unix socket, or a connection keyed by its host (loopback, an unknown address): the
    # host's own object, never the peer of another host's (analysis.sockets)
    if not key.startswith("c:") or sock_host(key) is not None:
        return None
    out = []
    for end in key[2:].split("|"):
        ip, _, port = end.rpartition(":")
        if not port.isdigit():
            return None
        out.append((ip, int(port)))
    return out if len(out) == 2 else None


def _sock_events(reader: Reader, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """connect/accept events of each connection key: host, entity, action, time."""
    conds: list[str] = []
    params: dict[str, Any] = {}
    for i, key in enumerate(keys):
        (ip1, p1), (ip2, p2) = _endpoints(key) or [("", 0), ("", 0)]
        params |= {f"a{i}": ip1, f"b{i}": p1, f"c{i}": ip2, f"d{i}": p2}
        conds.append(f"((source_ip = $a{i} AND source_port = $b{i} AND destination_ip = $c{i} AND destination_port = $d{i})"
                     f" OR (source_ip = $c{i} AND source_port = $d{i} AND destination_ip = $a{i} AND destination_port = $b{i}))")
    t = reader.query(
        f"""SELECT host_name, process_entity_id, event_action, ts, source_ip, source_port, destination_ip,
                   destination_port FROM events
            WHERE event_category = 'network' AND event_action IN ('connect', 'accept')
              AND network_transport IS DISTINCT FROM 'unix' AND ({' OR '.join(conds)})""", params)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for r in t.to_pylist():
        a = f"{r['source_ip']}:{r['source_port']}"
        b = f"{r['destination_ip']}:{r['destination_port']}"
        key = "c:" + "|".join(sorted((a, b)))
        if key in out:
            out[key].append(r)
    return out


def _process_hosts(reader: Reader, g: Graph) -> dict[int, tuple[str, str | None]]:
    """entity -> (host id, host name) of the graph's processes: as ``label_nodes`` found them
    (analysis.graph_rows), asked of the store only for a process it did not find."""
    out: dict[int, tuple[str, str | None]] = {}
    ask = []
    for k, n in g.nodes.items():
        if n.kind != "process":
            continue
        if n.attrs.get("host_id") is not None:
            out[parse_entity(k[2:])] = (n.attrs["host_id"], n.attrs.get("host_name"))
        else:
            ask.append(parse_entity(k[2:]))
    if ask:
        t = reader.query(f"SELECT DISTINCT entity_id, host_id, host_name FROM processes WHERE entity_id IN "
                         f"({', '.join(str(int(e)) for e in ask)})")
        out |= {e: (h, n) for e, h, n in zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True)}
    return out


def _proc_key(eid: int) -> str:
    return f"p:{eid:016x}"


def link_hosts(reader: Reader, g: Graph, slack_ns: int = DEFAULT_SLACK_NS) -> Graph:
    """``g`` (an ``analysis.graph.Graph``) with its connections checked across hosts (see above),
    and every node that lives on one host named with it (``host_id``, ``host_name``)."""
    by_entity = _process_hosts(reader, g)
    _link(reader, g, {e: n for e, (_, n) in by_entity.items() if n}, slack_ns)
    _name_hosts(reader, g, by_entity)
    return g


def _name_hosts(reader: Reader, g: Graph, by_entity: dict[int, tuple[str, str | None]]) -> None:
    """The host of each node, as data (JSON's ``host.id``/``host.name``), not only in labels:
    hosts that share a filesystem (network namespaces recorded as hosts) have the same path
    as two nodes. Processes by entity id; files and sockets carry their host id already."""
    names = {h: n for h, n in by_entity.values() if n}
    ids = {n.attrs["host_id"] for n in g.nodes.values() if n.attrs.get("host_id")} - names.keys()
    if ids:
        t = reader.query("SELECT host_id, any_value(host_name) AS host_name FROM hosts "
                         "WHERE host_id IN (SELECT unnest($h)) GROUP BY host_id", {"h": sorted(ids)})
        names |= dict(zip(t.column("host_id").to_pylist(), t.column("host_name").to_pylist(), strict=True))
    for k, n in g.nodes.items():
        if n.kind == "process" and (known := by_entity.get(parse_entity(k[2:]))) is not None:
            n.attrs["host_id"] = known[0]
        if (h := n.attrs.get("host_id")) is not None and names.get(h):
            n.attrs["host_name"] = names[h]


def _link(reader: Reader, g: Graph, host_of: dict[int, str], slack_ns: int) -> Graph:
    procs = {parse_entity(k[2:]): k for k, n in g.nodes.items() if n.kind == "process"}
    hosts = {host_of.get(e) for e in procs} - {None}
    conns = [k for k, n in g.nodes.items() if n.kind == "connection" and _endpoints(k)]
    if len(hosts) < 2 or not conns:
        return g
    backward = g.direction == "backward"
    events = _sock_events(reader, conns)
    drop: set[tuple[str, str]] = set()  # (process key, connection key) edges to remove
    for key in conns:
        drop |= _false_edges(g, key, events[key], host_of, backward, slack_ns)
    g.edges = [e for e in g.edges if (e.src, e.dst) not in drop and (e.dst, e.src) not in drop]
    _prune(g)
    for key in conns:
        if key in g.nodes:
            _mark(g, key, events[key], host_of, slack_ns)
    hosts = {host_of.get(parse_entity(k[2:])) for k, n in g.nodes.items() if n.kind == "process"} - {None}
    if len(hosts) > 1:
        for k, n in g.nodes.items():
            h = host_of.get(parse_entity(k[2:])) if n.kind == "process" else None
            if h:
                n.attrs["host"] = h
                n.label = f"{h}: {n.label}"
    return g


def _false_edges(g: Graph, key: str, evs: list[dict[str, Any]], host_of: dict[int, str], backward: bool,
                 slack_ns: int) -> set[tuple[str, str]]:
    """The edges between connection ``key`` and processes that were not its peer at that time."""
    ends = _endpoints(key) or []
    loop = any(_loopback(ip) for ip, _ in ends)
    near_side = "accept" if backward else "connect"
    # the near side's events that the walk stands on: backward, each server's latest accept
    # before its node's time; forward, every connect at or after its node's time
    near: list[dict[str, Any]] = []
    for e in (x for x in evs if x["event_action"] == near_side):
        node = g.nodes.get(_proc_key(e["process_entity_id"]))
        if node is None:
            continue
        if backward and e["ts"] > node.time:
            continue
        if not backward and e["ts"] < node.time:
            continue
        near.append(e)
    if backward:
        latest: dict[int, int] = {}
        for e in near:
            latest[e["process_entity_id"]] = max(latest.get(e["process_entity_id"], 0), e["ts"])
        near = [e for e in near if e["ts"] == latest[e["process_entity_id"]]]
    drop: set[tuple[str, str]] = set()
    if not near:
        return drop  # the peer is not in the store (or the walk came the other way): keep the walk's edges
    # every other process on the connection is kept only if one of its events there is the
    # peer of one the walk stands on (the other end, at that time; another connection that
    # reused the 4-tuple is not)
    mine = {e["process_entity_id"] for e in near}
    others: dict[int, list[dict[str, Any]]] = {}
    for e in evs:
        if e["process_entity_id"] not in mine and _proc_key(e["process_entity_id"]) in g.nodes:
            others.setdefault(e["process_entity_id"], []).append(e)
    for eid, theirs in others.items():
        if not any(_peers(e, n, host_of, loop, slack_ns) for e in theirs for n in near):
            drop.add((_proc_key(eid), key))
    return drop


def _peers(a: dict[str, Any], b: dict[str, Any], host_of: dict[int, str], loop: bool, slack_ns: int) -> bool:
    ha, hb = host_of.get(a["process_entity_id"]), host_of.get(b["process_entity_id"])
    if loop and ha != hb:
        return False
    return abs(int(a["ts"]) - int(b["ts"])) <= slack_ns


def _prune(g: Graph) -> None:
    """Keep the objects still causally tied to the detection point: backward, those with a
    path of edges into it; forward, those a path of edges leads to from it."""
    adj: dict[str, set[str]] = {}
    for e in g.edges:
        a, b = (e.dst, e.src) if g.direction == "backward" else (e.src, e.dst)
        adj.setdefault(a, set()).add(b)
    seen = set(g.roots)
    todo = deque(g.roots)
    while todo:
        for nxt in adj.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    g.nodes = {k: n for k, n in g.nodes.items() if k in seen}
    g.edges = [e for e in g.edges if e.src in seen and e.dst in seen]


def _mark(g: Graph, key: str, evs: list[dict[str, Any]], host_of: dict[int, str], slack_ns: int) -> None:
    procs = [e for e in evs if _proc_key(e["process_entity_id"]) in g.nodes]
    clients = [e for e in procs if e["event_action"] == "connect"]
    servers = [e for e in procs if e["event_action"] == "accept"]
    links = sorted({(host_of.get(c["process_entity_id"]), host_of.get(s["process_entity_id"]))
                    for c in clients for s in servers
                    if abs(int(c["ts"]) - int(s["ts"])) <= slack_ns
                    and host_of.get(c["process_entity_id"]) != host_of.get(s["process_entity_id"])},
                   key=str)
    if links:
        text = ", ".join(f"{a} -> {b}" for a, b in links)
        g.nodes[key].attrs["cross_host"] = text
        g.nodes[key].label = f"{g.nodes[key].label} ({text})"
        # the ends as "client <-> server", the way the hosts read (the key's order is by text:
        # 10.0.0.10 sorts before 10.0.0.9, and "alpha -> beta over beta's end" misleads)
        c = next(c for c in clients if host_of.get(c["process_entity_id"]) == links[0][0])
        g.nodes[key].attrs["cross_ends"] = (f"{c['source_ip']}:{c['source_port']} <-> "
                                            f"{c['destination_ip']}:{c['destination_port']}")


def cross_host_links(reader: Reader, slack_ns: int = DEFAULT_SLACK_NS) -> pa.Table:
    """Every TCP connection whose two ends are recorded on two different hosts of the store."""
    return reader.query(
        """SELECT c.host_name AS client_host, c.process_entity_id AS client_entity_id, c.process_name AS client_name,
                  a.host_name AS server_host, a.process_entity_id AS server_entity_id, a.process_name AS server_name,
                  c.source_ip, c.source_port, c.destination_ip, c.destination_port,
                  c.ts AS connect_ts, a.ts AS accept_ts
           FROM events c JOIN events a
             ON a.event_action = 'accept' AND a.source_ip = c.destination_ip AND a.source_port = c.destination_port
            AND a.destination_ip = c.source_ip AND a.destination_port = c.source_port
            AND a.host_name <> c.host_name AND abs(a.ts - c.ts) <= $slack
           WHERE c.event_action = 'connect' AND c.event_category = 'network'
             AND NOT (c.destination_ip LIKE '127.%' OR c.destination_ip = '::1')
           ORDER BY connect_ts, client_host""", {"slack": slack_ns})


def notes(g: Graph) -> list[str]:
    """One line per connection of the graph that crosses hosts (for the report)."""
    return [f"cross-host: {n.attrs['cross_host']} over {n.attrs.get('cross_ends') or k[2:].replace('|', ' <-> ')}"
            for k, n in g.nodes.items() if n.attrs.get("cross_host")]


Endpoints = tuple[tuple[str, int], tuple[str, int]]


@runtime_checkable
class HostSlice(Protocol):
    """A reader over some hosts of a many-host store that a walk can start small and widen
    (``store.clickhouse.ClickHouseReader`` given no --host). ``follow_in_walk``: the walk
    widens it itself when it reaches a connection (``follow``); False makes ``across_hosts``
    re-walk from the start instead (the reference the tests and the benchmark compare with)."""

    follow_in_walk: bool

    def start_on(self, kind: str, fields: Mapping[str, Any]) -> bool: ...

    def peer_hosts(self, connections: Iterable[Endpoints]) -> set[str]: ...

    def add_hosts(self, hosts: Iterable[str], window: Window | None = None) -> None: ...


@dataclass
class HostNames(NameIndex):
    """A walk's name index (``analysis.lives``) that stays right when its reader gains hosts.

    Names are asked in batches, and a batch's replay depends on which names it holds (a rename
    between two names of one batch links their periods). A name asked before a host joined the
    slice lacks that host's periods; the hosts added are therefore asked again, batch by batch
    as first asked, in one query, and their rows replayed alone: periods and hits are per
    host, so the index is what it would be had the hosts been there from the start."""

    batches: list[list[str]] = dataclasses.field(default_factory=list)

    def ingest(self, new: list[str], rows: list[dict[str, Any]]) -> None:
        self.batches.append(list(new))
        super().ingest(new, rows)

    def add_hosts(self, hosts: Iterable[str]) -> None:
        if not self.batches:
            return
        parts = "\nUNION ALL\n".join(f"SELECT {i} AS fx_batch, * FROM ({name_sql(b)}) AS b{i}"
                                      for i, b in enumerate(self.batches))
        t = self.reader.query(
            f"""SELECT * FROM ({parts}) AS x
                WHERE host_id IN (SELECT host_id FROM processes WHERE host_name IN (SELECT unnest($h)))""",
            {"h": sorted(hosts)})
        by_batch: dict[int, list[dict[str, Any]]] = {}
        for r in t.to_pylist():
            by_batch.setdefault(r.pop("fx_batch"), []).append(r)
        for i, rows in sorted(by_batch.items()):
            NameIndex.ingest(self, self.batches[i], rows)  # a replay, not a new batch


def follow(reader: Reader, socks: Iterable[str], index: NameIndex | None, backward: bool | None = None) -> None:
    """Before a walk expands connections (``socks``: the frontier's keys, or keys -> their
    thresholds), widen a following ``HostSlice`` by the hosts recorded at their other ends,
    so the hop reads those hosts' rows too: the walk goes on from the frontier that crossed
    instead of starting again. Only a connection's keys name two hosts: files, processes,
    pipes, unix sockets and loopback are keyed by their host, so no other hop can reach a
    host not in the slice.

    ``backward`` (the walk's direction, with thresholds): a walk reads a crossed-into host
    only before its crossing (forward: after it), edges' times going one way from there, so
    the host joins with its events and flows of that window in bulk (``window``, the
    thresholds widened by the clock slack); the reader tops the rest up as queries reach it,
    so the answer stays the one over the whole host (store.clickhouse.window)."""
    if not isinstance(reader, HostSlice) or not reader.follow_in_walk:
        return
    crossing = {key: ends for key in socks if (ends := _endpoints(key))}
    conns = {(ends[0], ends[1]) for ends in crossing.values()}
    new = reader.peer_hosts(conns) if conns else set()
    if new:
        reader.add_hosts(new, window=_window(socks, crossing, backward))
        if isinstance(index, HostNames):
            index.add_hosts(new)


def _window(socks: Iterable[str], crossing: Mapping[str, Any], backward: bool | None) -> Window | None:
    if backward is None or not isinstance(socks, Mapping):
        return None
    times = [int(socks[k]) for k in crossing if isinstance(socks.get(k), int)]
    if not times:
        return None
    return Window(hi=max(times) + DEFAULT_SLACK_NS) if backward else Window(lo=min(times) - DEFAULT_SLACK_NS)


def across_hosts(reader: Reader, target: Target, run: Callable[[Reader], T],
                 graphs: Callable[[T], Iterable[Graph | None]], *, restart: bool = False) -> T:
    """``run`` (a walk from ``target``: backtrack, forward, report) on the hosts it reaches.

    On a reader that sees every host of its store this is ``run(reader)``. On a
    ``HostSlice`` the walk starts on the hosts of the detection point; each time a hop is
    about to expand connections whose other end is recorded on a host outside the slice,
    that host is added (each table pulled so far gets its rows, once) and the walk goes on
    (``follow``). The answer is the walk's over the whole store, without pulling the hosts
    it cannot reach. ``restart``: the earlier way, kept as the reference: run the whole
    analysis, add the hosts its graphs reach, and run it again from the start until none
    is new (same graph, more work)."""
    if not isinstance(reader, HostSlice) or not reader.start_on(target.kind, dataclasses.asdict(target)):
        return run(reader)
    if not restart:
        return run(reader)
    reader.follow_in_walk = False
    try:
        while True:
            out = run(reader)
            conns: set[Endpoints] = set()
            for g in graphs(out):
                for key, node in (g.nodes.items() if g is not None else ()):
                    ends = _endpoints(key) if node.kind == "connection" else None
                    if ends:
                        conns.add((ends[0], ends[1]))
            new = reader.peer_hosts(conns)
            if not new:
                return out
            reader.add_hosts(new)
    finally:
        reader.follow_in_walk = True
