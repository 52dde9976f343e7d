"""The incident view: from an alert, a file, a process, a socket or a session, the report's
content and its dependency graph both ways.

The page asks for it in parts (``part=summary``, then ``graph`` and ``report`` at once), so
it paints what it knows at once while the graph is built; ``part=all`` (the default) is the
whole of it for a script. The graphs are kept (``Context.graph``) so that the parts and an
"expand" do not build them twice.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward
from forensix.analysis.graph_compact import compact
from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.processes import tree
from forensix.analysis.report import files_changed, network_peers, persistence_touched
from forensix.analysis.sessions import find_session
from forensix.analysis.targets import Target, parse_target, resolve
from forensix.analysis.timeline import TimelineFilter, timeline
from forensix.errors import UsageError
from forensix.model.identity import format_entity
from forensix.web.context import Context
from forensix.web.jsonrows import graph_json, row, rows
from forensix.web.params import ApiError, NotFound, Param

__all__ = ["GRAPH", "INCIDENT", "graph", "incident"]

_TRACK = (Param("depth", "int", 12, 1, 30, help="hops, 1 to 30"),
          Param("max_nodes", "int", 400, 10, 3000, help="objects in the graph, 10 to 3000"),
          Param("noise", "flag", False, help="1: keep what the noise filters drop"))
_FORM = "compact: the causal chain, the rest counted in group nodes (analysis.graph_compact); full: every object"
INCIDENT = (Param("alert", "text", help="an alert id"),
            Param("target", "text", help="a path, entity id, pid@TIME, ip:port or session:S"),
            Param("part", "choice", "all", choices=("all", "summary", "graph", "report")),
            Param("graph", "choice", "compact", choices=("compact", "full"), help=_FORM)) + _TRACK
GRAPH = (Param("target", "text"), Param("direction", "choice", "backward", choices=("backward", "forward")),
         Param("graph", "choice", "full", choices=("compact", "full"), help=_FORM)) + _TRACK
_SHOWN = 500  # rows of each report table at most


def _opts(p: dict[str, Any]) -> TrackOptions:
    return TrackOptions(depth=p["depth"], max_nodes=p["max_nodes"], filters=() if p["noise"] else FILTER_NAMES)


def _graph(ctx: Context, target: Target, p: dict[str, Any], backward: bool) -> Graph:
    key = ("backward" if backward else "forward", target, p["depth"], p["max_nodes"], bool(p["noise"]))
    fn = backtrack if backward else forward
    return ctx.graph(key, lambda: fn(ctx.reader, target, _opts(p)))


def _target(ctx: Context, p: dict[str, Any]) -> tuple[Target, dict[str, Any] | None]:
    if p["alert"]:
        t = ctx.query("""SELECT alert_id, ts, rule_id, rule_title, rule_level, summary, process_entity_id,
                                process_pid, tags, host_name FROM alerts WHERE alert_id = $a LIMIT 1""",
                      {"a": p["alert"]})
        if not t.num_rows:
            raise NotFound(f"no alert {p['alert'][:80]!r} in this store", "pick one from the alerts view")
        alert = t.to_pylist()[0]
        if alert["process_entity_id"] is None:
            raise ApiError(f"alert {p['alert']} names no process", "open the timeline at its time instead")
        return Target("process", entity=alert["process_entity_id"]), row(alert)
    if not p["target"]:
        raise ApiError("an incident needs alert=ID or target=...",
                       "a path, entity id, pid@TIME, ip:port or session:S")
    try:
        target = parse_target(p["target"])
    except UsageError as e:  # not a target at all
        raise ApiError(e.message, e.hint) from None
    try:
        if target.kind != "session":
            target = resolve(ctx.reader, target)
    except UsageError as e:  # a target the store never saw
        raise NotFound(e.message, e.hint) from None
    return target, None


def _actor(ctx: Context, target: Target, p: dict[str, Any]) -> int | None:
    """The acting process: the target process, the session's leader, or the nearest
    process of the backward graph (the writer of a file, the owner of a connection)."""
    if target.kind == "process":
        return target.entity
    if target.kind == "session":
        return find_session(ctx.reader, target.session or "", ctx.attribution())[0]
    procs = _graph(ctx, target, p, True).node_by("process")
    if not procs:
        return None
    near = min(n.depth for n in procs)
    first = min((n for n in procs if n.depth == near), key=lambda n: n.attrs.get("start_ts") or 0)
    return int(first.attrs["entity_id"]) if "entity_id" in first.attrs else None


def _session(ctx: Context, actor: int | None) -> tuple[dict[str, Any] | None, list[int]]:
    if actor is None:
        return None, []
    att = ctx.attribution()
    leader = att.leader_of.get(actor)
    if leader is None:
        return None, []
    st = ctx.sessions()
    hit = st.filter(pc.equal(st.column("leader_entity_id"), pa.scalar(leader, pa.uint64()))).to_pylist()
    return (row(hit[0]) if hit else None), att.members(leader)


def _summary(ctx: Context, target: Target, alert: dict[str, Any] | None, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"title": f"Incident: {target.describe()}", "target": target.describe(), "alert": alert}
    if target.kind in ("process", "session"):  # known without the graph
        actor = _actor(ctx, target, p)
        out["actor"] = format_entity(actor) if actor is not None else None
        out["session"] = _session(ctx, actor)[0]
    return out


def _graph_part(ctx: Context, target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """Both graphs drawn as one; compact unless ``graph=full`` (folded together, so an object
    on both sides is folded on both or on neither)."""
    sides = [_graph(ctx, target, p, True), _graph(ctx, target, p, False)]
    full_nodes = len({k for g in sides for k in g.nodes})
    full_edges = len({(e.src, e.kind, e.dst) for g in sides for e in g.edges})
    if p["graph"] == "compact":
        sides = compact(sides)
    back, ahead = graph_json(sides[0], "backward"), graph_json(sides[1], "forward")
    nodes = {n["id"]: n for n in ahead["nodes"]}
    for n in back["nodes"]:  # a node on both sides is drawn once
        if n["id"] in nodes:
            n["direction"] = "both"
        nodes[n["id"]] = n
    edges = {e["id"]: e for e in ahead["edges"] + back["edges"]}
    hidden = {k: back["hidden"].get(k, 0) + ahead["hidden"].get(k, 0) for k in back["hidden"] | ahead["hidden"]}
    return {"graph": {"nodes": list(nodes.values()), "edges": list(edges.values()),
                      "truncated": back["truncated"] or ahead["truncated"], "filters": back["filters"],
                      "compact": p["graph"] == "compact", "full": {"nodes": full_nodes, "edges": full_edges},
                      "hidden": hidden}}


def _report_part(ctx: Context, target: Target, p: dict[str, Any]) -> dict[str, Any]:
    actor = _actor(ctx, target, p)
    session, members = _session(ctx, actor)
    r = ctx.reader
    notes = [] if session else ["no recorded process is linked to the target; session unknown"]
    if _graph(ctx, target, p, True).truncated:
        notes.append("the dependency graph was cut at the depth or size limit")
    ms = members or [0]
    return {
        "actor": format_entity(actor) if actor is not None else None, "session": session, "notes": notes,
        "tree": rows(tree(r, members=ms).slice(0, _SHOWN)),
        "files_written": rows(files_changed(r, ms, written=True).slice(0, _SHOWN)),
        "files_deleted": rows(files_changed(r, ms, written=False).slice(0, _SHOWN)),
        "persistence": rows(persistence_touched(r, ms).slice(0, _SHOWN)),
        "network": rows(network_peers(r, ms).slice(0, _SHOWN)),
        "timeline": rows(timeline(r, TimelineFilter(entities=ms, noise=FILTER_NAMES, limit=400))),
    }


def incident(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    target, alert = _target(ctx, p)
    part = p["part"]
    try:
        out = _summary(ctx, target, alert, p)
        if part in ("all", "graph"):
            out |= _graph_part(ctx, target, p)
        if part in ("all", "report"):
            out |= _report_part(ctx, target, p)
    except UsageError as e:
        raise NotFound(e.message, e.hint) from None
    return out


def graph(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """One node's neighbourhood, for "expand": the graph from it, one way, a few hops."""
    if not p["target"]:
        raise ApiError("graph needs target=...", "a path, entity id, pid@TIME, ip:port or session:S")
    try:
        target = parse_target(p["target"])
    except UsageError as e:
        raise ApiError(e.message, e.hint) from None
    try:
        g = _graph(ctx, target, p, p["direction"] == "backward")
    except UsageError as e:
        raise NotFound(e.message, e.hint) from None
    return graph_json(compact([g])[0] if p["graph"] == "compact" else g, p["direction"])
