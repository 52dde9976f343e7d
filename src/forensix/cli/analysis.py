"""Investigation commands: tree, sessions, session, timeline, file, backtrack, forward, report.

Each runs one analysis (``forensix.analysis``) over the store and hands the result to a
renderer (``forensix.render``); nothing here computes, and nothing below here prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import pyarrow as pa

from forensix.analysis.crosshost import across_hosts
from forensix.analysis.filehistory import file_history
from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward
from forensix.analysis.graph_compact import compact
from forensix.analysis.noise import FILTER_NAMES, FILTERS
from forensix.analysis.processes import process_exists, tree
from forensix.analysis.report import build_report
from forensix.analysis.sessions import find_session, sessions
from forensix.analysis.targets import TARGET_HELP, NotFound, Target, nearest_matches, parse_target
from forensix.analysis.timeline import TimelineFilter, timeline
from forensix.cli.options import TIME, reader, store_option
from forensix.errors import UsageError
from forensix.model.identity import format_entity, parse_entity
from forensix.render.graph import GRAPH_RENDERERS, hidden_line, render_graph, to_dot
from forensix.render.report import draw, render_html, render_markdown
from forensix.render.tables import render
from forensix.render.tree import (
    render_timeline_text,
    render_timesketch,
    render_tree_text,
    user_label,
    user_notes,
)

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _fmt(*choices: str) -> Callable[[F], F]:
    return click.option("--format", "fmt", type=click.Choice(list(choices)), default=choices[0],
                        show_default=True, help="Output format.")


def _out() -> Any:
    return sys.stdout


# -- tree ------------------------------------------------------------------------------
@click.command("tree", epilog="""\b
Examples:
  forensix tree --store host.duckdb
  forensix tree --at 2026-11-26T05:00:00Z --alive
  forensix tree --pid 1234 --at -10m          # the subtree of pid 1234 as it ran ten minutes ago
  forensix tree --session 4f3a9c0d12e4b7a1    # one session (a leader or member entity id, or audit id)
""")
@store_option
@click.option("--at", type=TIME, default=None, help="The tree as it stood at this time (default: everything).")
@click.option("--alive", is_flag=True, help="Only processes still running at --at.")
@click.option("--session", "session", default=None, help="Only this session's processes.")
@click.option("--entity", default=None, help="Only the subtree of this entity id.")
@click.option("--pid", type=int, default=None, help="Only the subtree of the process with this pid at --at.")
@_fmt("text", "json", "csv")
def tree_cmd(store: str, at: int | None, alive: bool, session: str | None, entity: str | None,
             pid: int | None, fmt: str) -> None:
    """The process tree, exited processes included, with user, start and end."""
    r = reader(store)
    root = None
    if entity:
        root = parse_entity(entity)
        if not process_exists(r, root):
            raise UsageError(f"no process with entity id {entity} in this store", "see `forensix tree`")
    elif pid is not None:
        from forensix.analysis.targets import resolve

        when = at if at is not None else 2**62
        root = resolve(r, Target("process", pid=pid, at=when)).entity
    members = None
    if session:
        leader, att = find_session(r, session)
        members = att.members(leader)
    t = tree(r, at=at, root=root, members=members, alive_only=alive)
    if fmt == "text":
        render_tree_text(t, _out())
    else:
        render(t, fmt, _out())


# -- sessions --------------------------------------------------------------------------
@click.command("sessions", epilog="""\b
Examples:
  forensix sessions --store host.duckdb
  forensix sessions --kind sshd --kind console --format json
""")
@store_option
@click.option("--kind", "kinds", multiple=True,
              type=click.Choice(["sshd", "console", "login", "cron", "systemd", "container", "daemon", "init",
                                 "kernel", "unknown"]), help="Only sessions of these kinds.")
@_fmt("text", "json", "csv")
def sessions_cmd(store: str, kinds: tuple[str, ...], fmt: str) -> None:
    """Every entry point into the host (ssh, console, cron, systemd unit, container, daemon)."""
    t = sessions(reader(store), kinds=set(kinds) or None)
    render(t.drop_columns(["transitions"]) if fmt == "csv" else t, fmt, _out())
    if fmt == "text":
        for note in user_notes(t):
            _out().write(note + "\n")


@click.command("session", epilog="""\b
Examples:
  forensix session 4f3a9c0d12e4b7a1          # by leader (or any member) entity id
  forensix session 7                         # by audit session id
""")
@store_option
@click.argument("session")
@click.option("--limit", type=int, default=2000, show_default=True, help="Timeline rows at most.")
@_fmt("text", "json")
def session_cmd(store: str, session: str, limit: int, fmt: str) -> None:
    """What one session did: its tree, files written, connections, and timeline."""
    from forensix.analysis.report import files_changed, network_peers

    r = reader(store)
    leader, att = find_session(r, session)
    members = att.members(leader)
    row = next(x for x in sessions(r, att).to_pylist() if x["leader_entity_id"] == leader)
    parts = {
        "tree": tree(r, members=members), "files_written": files_changed(r, members, written=True),
        "files_deleted": files_changed(r, members, written=False), "connections": network_peers(r, members),
        "timeline": timeline(r, TimelineFilter(entities=members, noise=FILTER_NAMES, limit=limit)),
    }
    out = _out()
    if fmt == "json":
        import json

        from forensix.render.tables import display_value, field_name

        doc: dict[str, Any] = {"session": {field_name(k): display_value(k, v) for k, v in row.items()}}
        for k, t in parts.items():
            doc[k] = [{field_name(c): display_value(c, v) for c, v in x.items() if v is not None}
                      for x in t.to_pylist()]
        out.write(json.dumps(doc, default=str, indent=1) + "\n")
        return
    user = user_label(row.get("user_name"), row["user_id"], row.get("user_name_source"))
    out.write(f"session {format_entity(leader)}: {row['kind']} — {row['description']}, user "
              f"{user}, {row['processes']} processes\n")
    for note in user_notes(pa.Table.from_pylist([row])):
        out.write(note + "\n")
    if row["transitions"]:
        out.write(f"su/sudo: {', '.join(row['transitions'])}\n")
    out.write("\nprocess tree:\n")
    render_tree_text(parts["tree"], out)
    for title in ("files_written", "files_deleted", "connections"):
        out.write(f"\n{title.replace('_', ' ')}:\n")
        render(parts[title], "text", out)
    out.write("\ntimeline (reads of libraries, hub and pseudo files left out):\n")
    render_timeline_text(parts["timeline"], out)


# -- timeline --------------------------------------------------------------------------
@click.command("timeline", epilog="""\b
Examples:
  forensix timeline --from -15m
  forensix timeline --from 2026-11-26T05:00Z --to 2026-11-26T05:10Z --category network
  forensix timeline --session 7 --quiet --format timesketch > case.jsonl
""")
@store_option
@click.option("--from", "since", type=TIME, default=None, help="Start time.")
@click.option("--to", "until", type=TIME, default=None, help="End time.")
@click.option("--pid", type=int, default=None, help="Only events of processes with this pid.")
@click.option("--entity", default=None, help="Only events of this process (entity id).")
@click.option("--session", default=None, help="Only events of this session's processes.")
@click.option("--category", "categories", multiple=True, help="process, file, network, memory, flow, ...")
@click.option("--action", "actions", multiple=True, help="exec, open, connect, rename, ...")
@click.option("--path", default=None, help="Only events whose path contains this text.")
@click.option("--ip", default=None, help="Only events to or from this address.")
@click.option("--quiet", is_flag=True, help="Leave out reads of libraries, hub files and pseudo-files.")
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@_fmt("text", "json", "csv", "timesketch")
def timeline_cmd(store: str, since: int | None, until: int | None, pid: int | None, entity: str | None,
                 session: str | None, categories: tuple[str, ...], actions: tuple[str, ...], path: str | None,
                 ip: str | None, quiet: bool, limit: int | None, fmt: str) -> None:
    """Every recorded event in time order, one readable line each."""
    r = reader(store)
    ents = None
    if entity:
        ents = [parse_entity(entity)]
    if session:
        leader, att = find_session(r, session)
        ents = att.members(leader)
    f = TimelineFilter(since=since, until=until, entities=ents, pid=pid, categories=list(categories) or None,
                       actions=list(actions) or None, path=path, ip=ip,
                       noise=FILTER_NAMES if quiet else (), limit=limit)
    t = timeline(r, f)
    {"text": render_timeline_text, "timesketch": render_timesketch}.get(
        fmt, lambda t, o: render(t, fmt, o))(t, _out())


# -- file ------------------------------------------------------------------------------
@click.command("file", epilog="""\b
Examples:
  forensix file /etc/passwd                   # who wrote /etc/passwd, and when
  forensix file /tmp/.x --format json
""")
@store_option
@click.argument("path")
@_fmt("text", "json", "csv")
def file_cmd(store: str, path: str, fmt: str) -> None:
    """The whole history of a file, followed by inode across renames."""
    if not path.startswith("/"):
        raise UsageError(f"{path!r} is not an absolute path", "give the path as the kernel saw it: /etc/...")
    try:
        render(file_history(reader(store), path), fmt, _out())
    except NotFound as e:
        _not_found(e)


# -- backtrack / forward ---------------------------------------------------------------
def _track_limits(f: F) -> F:
    f = click.option("--depth", type=int, default=12, show_default=True, help="Hops from the target at most.")(f)
    f = click.option("--max-nodes", type=int, default=2000, show_default=True, help="Objects at most.")(f)
    f = click.option("--since", type=TIME, default=None, help="Backward: ignore what happened before this.")(f)
    f = click.option("--until", type=TIME, default=None,
                     help="Backward: the detection time; forward: ignore what happened after this.")(f)
    f = click.option("--at", type=TIME, default=None,
                     help="A file target: the life of the name at this time (a deleted or replaced file;"
                          " default: the last life that had the name).")(f)
    f = click.option("--full", is_flag=True,
                     help="Every object (text, dot, report). By default read-only system files, runs of sibling"
                          " files, a process's many leaf objects and fork-only ancestors are folded into counted"
                          " group nodes (json, csv and graphml always hold every object).")(f)
    f = click.option("--no-filter", "off", multiple=True, type=click.Choice(list(FILTER_NAMES) + ["all"]),
                     help="Turn a noise filter off: " + "; ".join(f"{x.name}: {x.description}" for x in FILTERS))(f)
    return f


def _track_options(f: F) -> F:
    return _fmt(*GRAPH_RENDERERS)(_track_limits(f))


def _opts(depth: int, max_nodes: int, since: int | None, until: int | None, off: tuple[str, ...],
          at: int | None = None) -> TrackOptions:
    filters = () if "all" in off else tuple(x for x in FILTER_NAMES if x not in off)
    return TrackOptions(depth=depth, max_nodes=max_nodes, since=since, until=until, filters=filters, at=at)


def _not_found(e: NotFound) -> NoReturn:
    """An empty answer: what was looked for, what is near it, and a distinct exit code."""
    click.secho(f"forensix: {e.message}", fg="red", err=True)
    if e.hint:
        click.echo(f"  hint: {e.hint}", err=True)
    for line in e.nearest:
        click.echo(f"  near: {line}", err=True)
    sys.exit(e.exit_code)


def _shown(g: Graph, fmt: str, full: bool) -> Graph:
    """The graph as printed: compact for people (text, dot) unless --full; whole for tools."""
    return g if full or fmt not in ("text", "dot") else compact([g])[0]


def _graph_or_not_found(store: str, target: str, g: Graph) -> None:
    """A graph with nothing but its detection point answered nothing: say so, exit non-zero."""
    if g.edges:
        return
    hint = "widen --since/--until or --depth"
    if g.hidden:
        hint = hidden_line(g)
    near: list[str] = []
    t = parse_target(target)
    if t.kind == "file" and t.path:
        near = nearest_matches(reader(store), t.path)
    if g.life and g.other_lives:
        near = [f"other life {o['life']} of the name: pick it with --at" for o in g.other_lives] + near
    raise NotFound(f"nothing recorded is linked to {g.target} ({g.direction})", hint, near)


@click.command("backtrack", epilog=f"""\b
TARGET is {TARGET_HELP}.
Examples:
  forensix backtrack /etc/cron.d/evil
  forensix backtrack 4f3a9c0d12e4b7a1 --format dot | dot -Tsvg > graph.svg
  forensix backtrack 203.0.113.7:443 --no-filter hubs
  forensix backtrack /etc/cron.d/evil --full          # every library and locale file, not counted groups
""")
@store_option
@click.argument("target")
@_track_options
def backtrack_cmd(store: str, target: str, depth: int, max_nodes: int, since: int | None, until: int | None,
                  at: int | None, off: tuple[str, ...], full: bool, fmt: str) -> None:
    """What could have caused TARGET: BackTracker's backward dependency graph.

    A file that was deleted or replaced is still a detection point: the walk starts from the
    life of its name at --at (default: the last one) and says which life it chose. Exits 3
    when the detection point matches nothing, with the nearest matches in the record."""
    try:
        t, opts = parse_target(target), _opts(depth, max_nodes, since, until, off, at)
        g = across_hosts(reader(store), t, lambda r: backtrack(r, t, opts), lambda g: [g])
        render_graph(_shown(g, fmt, full), fmt, _out())
        _graph_or_not_found(store, target, g)
    except NotFound as e:
        _not_found(e)


@click.command("forward", epilog=f"""\b
SOURCE is {TARGET_HELP}.
Examples:
  forensix forward session:7                  # everything an ssh session touched, and who used it later
  forensix forward 4f3a9c0d12e4b7a1 --format graphml > impact.graphml
""")
@store_option
@click.argument("source")
@_track_options
def forward_cmd(store: str, source: str, depth: int, max_nodes: int, since: int | None, until: int | None,
                at: int | None, off: tuple[str, ...], full: bool, fmt: str) -> None:
    """What SOURCE affected: what it touched and spawned, and what others later used of it."""
    try:
        t, opts = parse_target(source), _opts(depth, max_nodes, since, until, off, at)
        g = across_hosts(reader(store), t, lambda r: forward(r, t, opts), lambda g: [g])
        render_graph(_shown(g, fmt, full), fmt, _out())
        _graph_or_not_found(store, source, g)
    except NotFound as e:
        _not_found(e)


# -- report ----------------------------------------------------------------------------
@click.command("report", epilog=f"""\b
TARGET is {TARGET_HELP}.
Examples:
  forensix report /etc/cron.d/evil --output case42      # case42.md, case42.html, case42.svg, case42.dot
  forensix report session:7 --format html > report.html
  forensix report --alert ids-5c1e0d2b9a3f4e61     # from an imported IDS alert (forensix import suricata)
""")
@store_option
@click.argument("target", required=False)
@click.option("--alert", "alert", default=None, help="Start from a stored alert (an IDS alert's process or peer).")
@click.option("--output", "output", default=None, type=click.Path(dir_okay=False),
              help="Write OUTPUT.md, OUTPUT.html and the graph (OUTPUT.svg, OUTPUT.dot) instead of printing.")
@_track_limits
@_fmt("markdown", "html", "dot")
def report_cmd(store: str, target: str | None, alert: str | None, output: str | None, depth: int, max_nodes: int,
               since: int | None, until: int | None, at: int | None, off: tuple[str, ...], full: bool,
               fmt: str) -> None:
    """An incident report (Markdown and HTML, graph drawn by Graphviz) from a detection point."""
    if alert is not None:
        from forensix.imports.eve import alert_target

        target = alert_target(reader(store), alert)
    if target is None:
        raise click.UsageError("give a TARGET or --alert ID")
    try:
        t, opts = parse_target(target), _opts(depth, max_nodes, since, until, off, at)
        rep = across_hosts(reader(store), t, lambda r: build_report(r, t, opts=opts, full=full),
                           lambda rep: [rep.graph, rep.impact])
    except NotFound as e:
        _not_found(e)
    if output is None:
        if fmt == "markdown":
            render_markdown(rep, _out())
        elif fmt == "dot":
            _out().write(to_dot(rep.drawn[0]))
        else:
            render_html(rep, _out())
        return
    base = Path(output)
    base = base.with_suffix("") if base.suffix in (".md", ".html") else base
    dot = to_dot(rep.drawn[0])
    svg = draw(dot, "svg")
    base.with_suffix(".dot").write_text(dot)
    base.with_suffix(".svg").write_bytes(svg)
    with base.with_suffix(".md").open("w") as f:
        render_markdown(rep, f, image=base.with_suffix(".svg").name)
    with base.with_suffix(".html").open("w") as f:
        render_html(rep, f, svg=svg)
    click.echo(f"wrote {base}.md, {base}.html, {base}.svg, {base}.dot", err=True)


COMMANDS = [tree_cmd, sessions_cmd, session_cmd, timeline_cmd, file_cmd, backtrack_cmd, forward_cmd, report_cmd]
