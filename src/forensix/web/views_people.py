"""Sessions, one session (its tree and the commands typed), one process, the tree at a time."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute

from forensix.analysis.filehistory import sql_ints
from forensix.analysis.processes import add_user_names, tree
from forensix.analysis.report import files_changed, network_peers
from forensix.analysis.sessions import find_session
from forensix.errors import UsageError
from forensix.model.identity import format_entity, parse_entity
from forensix.web.context import Context, at_once
from forensix.web.jsonrows import jsonable, rows
from forensix.web.jsonrows import row as json_row
from forensix.web.params import PAGE, ApiError, NotFound, Param
from forensix.web.views_terminal import has_terminal, recording, terminal_text

__all__ = ["PROCESS", "SESSION", "SESSIONS", "TREE", "process", "session", "session_list", "tree_at"]

KINDS = ("sshd", "console", "login", "cron", "systemd", "container", "daemon", "init", "kernel", "unknown")
MAX_SESSION_TREE = 2000  # processes of one session shown at most (a build farm's cron job has more)


def _page(t: pa.Table, p: dict[str, Any]) -> tuple[pa.Table, dict[str, Any]]:
    return t.slice(p["offset"], p["limit"]), {"total": t.num_rows, "limit": p["limit"], "offset": p["offset"]}


def _entity(text: str) -> int:
    try:
        return parse_entity(text)
    except UsageError as e:
        raise ApiError(e.message, e.hint) from None


# -- sessions --------------------------------------------------------------------------
SESSIONS = (Param("kind", "choice", choices=KINDS, many=True),) + PAGE


def session_list(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    t = ctx.sessions()
    if p["kind"]:
        t = t.filter(pa.compute.is_in(t.column("kind"), pa.array(p["kind"])))
    # the interesting entries first: people (ssh, console, login) before daemons and cron
    order = {k: i for i, k in enumerate(KINDS)}
    t = t.take(sorted(range(t.num_rows), key=lambda i: (order.get(t.column("kind")[i].as_py(), 99),
                                                          -(t.column("start_ts")[i].as_py() or 0))))
    page, meta = _page(t, p)
    return {"sessions": rows(page), **meta, "kinds": list(KINDS)}


SESSION: tuple[Param, ...] = (
    Param("commands", "int", 500, 1, 5000, help="commands at most"),
    Param("part", "choice", "all", choices=("all", "head", "rest", "terminal"),
          help="head: the session, its tree and commands (the page's first paint); rest: its files and connections;"
               " terminal: what was typed and shown on its terminal (when recorded)"))


def session(ctx: Context, p: dict[str, Any], sid: str) -> dict[str, Any]:
    att = ctx.attribution()
    try:
        leader, att = find_session(ctx.reader, sid, att)
    except UsageError as e:
        raise NotFound(e.message, e.hint) from None
    members = att.members(leader)
    st = ctx.sessions()
    srow = st.filter(pa.compute.equal(st.column("leader_entity_id"), pa.scalar(leader, pa.uint64()))).to_pylist()[0]
    r, ints = ctx.reader, sql_ints(members)
    parts: dict[str, Any] = {}
    if p["part"] in ("all", "head"):
        parts |= {
            "tree": lambda: tree(r, members=members),
            "commands": lambda: r.query(f"""
                SELECT ts, process_entity_id, process_pid, process_parent_pid, user_id, user_effective_id,
                       process_executable, process_args, process_working_directory, ret
                FROM events WHERE event_action = 'exec' AND process_entity_id IN ({ints})
                ORDER BY ts LIMIT {p['commands']}""")}
    if p["part"] in ("all", "rest"):
        parts |= {"written": lambda: files_changed(r, members, written=True).slice(0, 500),
                  "deleted": lambda: files_changed(r, members, written=False).slice(0, 500),
                  "connections": lambda: network_peers(r, members).slice(0, 500)}
    if p["part"] in ("all", "terminal") and srow["recording"]:
        parts["terminal"] = lambda: terminal_text(recording(ctx, leader), f"/session/{format_entity(leader)}.cast")
    got = at_once(**parts)
    out: dict[str, Any] = {"session": json_row(srow)}
    if "terminal" in got or p["part"] == "terminal":
        out["terminal"] = got.get("terminal")
    if "tree" in got:
        tr = got["tree"]
        out |= {"tree": rows(tr.slice(0, MAX_SESSION_TREE)), "tree_total": tr.num_rows,
                "commands": rows(got["commands"])}
    if "written" in got:
        out |= {"files_written": rows(got["written"]), "files_deleted": rows(got["deleted"]),
                "connections": rows(got["connections"])}
    return out


# -- one process -----------------------------------------------------------------------
PROCESS: tuple[Param, ...] = (
    Param("part", "choice", "head", choices=("head", "terminal"),
          help="head: the process (the page's first paint); terminal: its session's terminal (when it used one)"),)
_CRED = ("setuid", "setgid", "setreuid", "setresuid", "setregid", "setresgid", "setfsuid", "setfsgid", "capset")


def process(ctx: Context, p: dict[str, Any], eid: str) -> dict[str, Any]:
    e = _entity(eid)
    if p["part"] == "terminal":
        if not has_terminal(ctx, e):
            raise NotFound(f"process {format_entity(e)} used no recorded terminal",
                           "its session's view shows the session's terminal, if one was recorded")
        return {"entity_id": format_entity(e),
                "terminal": terminal_text(recording(ctx, e), f"/process/{format_entity(e)}.cast")}
    images = ctx.query("""SELECT image_seq, image_ts, pid, parent_entity_id, parent_pid, executable, args,
                                 working_directory, user_id, user_effective_id, group_id, user_audit_id,
                                 session_id, tty, source, host_id
                          FROM processes WHERE entity_id = $e ORDER BY image_seq""", {"e": e})
    if images.num_rows == 0:
        raise NotFound(f"no process with entity id {format_entity(e)} in this store",
                       "search for it by pid or command, or list processes in the tree view")
    q, cred = ctx.query, ", ".join(repr(c) for c in _CRED)
    got = at_once(
        end=lambda: q("""SELECT min(ts) AS end_ts, arg_min(process_exit_code, ts) AS exit_code,
                                arg_min(process_exit_signal, ts) AS exit_signal
                         FROM events WHERE event_action = 'exit' AND process_entity_id = $e""", {"e": e}),
        creds=lambda: q(f"""SELECT ts, event_action, user_id, user_effective_id, group_id, group_effective_id, ret,
                                   host_id
                            FROM events WHERE process_entity_id = $e AND event_action IN ({cred})
                            ORDER BY ts LIMIT 200""", {"e": e}),
        files=lambda: q("""
            SELECT coalesce(file_path, coalesce(file_type, 'fd') || ':[' || file_inode::VARCHAR || ']') AS file_path,
                   list(DISTINCT event_action ORDER BY event_action) AS actions, min(ts) AS first_ts,
                   count(*) AS events, sum(coalesce(flow_read_bytes, 0))::BIGINT AS bytes_read,
                   sum(coalesce(flow_write_bytes, 0))::BIGINT AS bytes_written
            FROM events WHERE process_entity_id = $e AND event_category IN ('file', 'flow', 'memory')
              AND event_action <> 'exec'
            GROUP BY 1 ORDER BY first_ts LIMIT 500""", {"e": e}),
        children=lambda: q("""SELECT entity_id, pid, start_ts, executable, args FROM processes
                              WHERE parent_entity_id = $e AND image_seq = 0 ORDER BY start_ts LIMIT 500""", {"e": e}),
        sockets=lambda: network_peers(ctx.reader, [e]).slice(0, 500),
        att=ctx.attribution, terminal=lambda: has_terminal(ctx, e))
    att = got["att"]
    leader = att.leader_of.get(e)
    first = images.to_pylist()[0]
    images, creds = _named(ctx, images, "image_ts"), _named(ctx, got["creds"], "ts")
    return {"entity_id": format_entity(e), "pid": first["pid"], "images": rows(images),
            "end": rows(got["end"])[0] if got["end"].num_rows else None, "credential_changes": rows(creds),
            "files": rows(got["files"]), "sockets": rows(got["sockets"]), "children": rows(got["children"]),
            "session": format_entity(leader) if leader is not None else None,
            "session_kind": att.kind_of.get(leader) if leader is not None else None,
            "recording": got["terminal"]}


def _named(ctx: Context, t: pa.Table, at: str) -> pa.Table:
    """uid and euid named as the process's host had them at ``at`` (analysis.users), beside the numbers."""
    t = add_user_names(t, None, ctx.reader, column="user_id", at=at)
    t = add_user_names(t, None, ctx.reader, column="user_effective_id", at=at, name="user_effective_name")
    return t.drop_columns(["host_id"])


# -- the tree at a time ----------------------------------------------------------------
TREE = (Param("at", "time", help="the moment: ISO 8601 UTC, epoch, or -5m (default: the whole record)"),
        Param("alive", "flag", False), Param("root", "entity", help="an entity id: only its subtree"),
        Param("session", "text", help="a session (leader entity id or audit session id)")) + PAGE


def tree_at(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    members = None
    if p["session"]:
        try:
            leader, att = find_session(ctx.reader, p["session"], ctx.attribution())
        except UsageError as e:
            raise NotFound(e.message, e.hint) from None
        members = att.members(leader)
    if p["root"] is not None and not ctx.query("SELECT 1 FROM processes WHERE entity_id = $e LIMIT 1",
                                               {"e": p["root"]}).num_rows:
        raise NotFound(f"no process with entity id {format_entity(p['root'])}", "pick one from the tree")
    # kept: the next pages of a tree of 10^5 processes come from it, not from the recursion again
    key = ("tree", p["at"], p["root"], p["session"], bool(p["alive"]))
    t = ctx.kept(key, lambda: tree(ctx.reader, at=p["at"], root=p["root"], members=members,
                                   alive_only=bool(p["alive"])))
    page, meta = _page(t, p)
    return {"at": jsonable("ts", p["at"]),
            "processes": rows(page), **meta}
