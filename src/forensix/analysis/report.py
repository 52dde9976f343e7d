"""An incident report from one detection point: everything the renderers need, as data.

From the target, the report finds the acting process (the writer of a file, the process
itself, the owner of a connection), its session (entry point, user, source address), and
then what that session did: its process tree, files written and deleted, persistence
touched, network peers, a timeline, and the backward dependency graph of the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

from forensix.analysis.crosshost import notes as crosshost_notes
from forensix.analysis.filehistory import sql_ints
from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward_processes
from forensix.analysis.graph_compact import compact
from forensix.analysis.graph_model import end_label
from forensix.analysis.noise import FILTER_NAMES, SYSTEM_WRITES
from forensix.analysis.processes import UserNames, tree
from forensix.analysis.sessions import attribute, find_session, sessions
from forensix.analysis.targets import Target, resolve
from forensix.analysis.timeline import TimelineFilter, message_sql, timeline
from forensix.imports.coverage import unanswered
from forensix.store.base import Reader

__all__ = ["METADATA", "PERSISTENCE", "Report", "build_report", "files_changed", "network_peers", "persistence_touched"]

# Where intruders persist or escalate: (LIKE pattern on the path, what it is).
PERSISTENCE: list[tuple[str, str]] = [
    ("/etc/cron%", "cron"), ("/var/spool/cron/%", "cron"), ("/etc/anacrontab", "cron"),
    ("/etc/systemd/%", "systemd unit"), ("/lib/systemd/system/%", "systemd unit"),
    ("/usr/lib/systemd/system/%", "systemd unit"), ("%/.config/systemd/user/%", "systemd user unit"),
    ("/etc/init.d/%", "init script"), ("/etc/rc.local", "init script"),
    ("%/.bashrc", "shell rc file"), ("%/.bash_profile", "shell rc file"), ("%/.profile", "shell rc file"),
    ("%/.zshrc", "shell rc file"), ("/etc/profile", "shell rc file"), ("/etc/profile.d/%", "shell rc file"),
    ("/etc/bash.bashrc", "shell rc file"), ("%/.ssh/authorized_keys%", "ssh authorized_keys"),
    ("/etc/ld.so.preload", "ld.so.preload"), ("/etc/ld.so.conf%", "loader configuration"),
    ("/etc/sudoers%", "sudoers"), ("/etc/passwd", "accounts"), ("/etc/shadow", "accounts"),
    ("/etc/group", "accounts"), ("/etc/pam.d/%", "PAM"), ("/lib/modules/%", "kernel module"),
    ("/etc/modules-load.d/%", "kernel module"), ("/etc/udev/rules.d/%", "udev rule"),
    # writes that change the running system (never noise: analysis.noise.SYSTEM_WRITES)
    ("/proc/sys/%", "kernel parameter (sysctl)"), ("/sys/kernel/%", "kernel setting"),
    ("/sys/module/%/parameters/%", "module parameter"), ("/sys/fs/bpf/%", "BPF pin"),
    ("/sys/fs/cgroup/%", "cgroup setting"), ("/proc/sysrq-trigger", "sysrq"),
]
# Changes of a file's metadata that hide or escalate, whatever the path: (SQL condition, what it is).
METADATA: list[tuple[str, str]] = [
    ("event_action = 'chmod' AND (coalesce(file_mode, 0) & 3072) <> 0", "setuid/setgid bit"),
    ("event_action = 'setxattr'", "extended attribute (file capability, ACL, label)"),
    # times set to more than a day before the call: timestomping (0 means "now")
    ("event_action = 'utimes' AND coalesce(file_mtime, 0) > 0 AND file_mtime < ts - 86400000000000",
     "times set back"),
]
_CHANGE = ("(event_action IN ('rename', 'unlink', 'chmod', 'chown', 'truncate', 'link', 'symlink', 'utimes',"
           " 'setxattr') OR (event_action = 'open' AND (coalesce(file_flags, 0) & 579) <> 0)"
           " OR (event_action = 'flow' AND coalesce(flow_write_bytes, 0) > 0))")


@dataclass
class Report:
    target: Target
    title: str
    actor: int | None  # entity id of the acting process
    session: dict[str, Any] | None  # the session row (kind, user, source address, ...)
    tree: pa.Table
    files_written: pa.Table
    files_deleted: pa.Table
    persistence: pa.Table
    network: pa.Table
    timeline: pa.Table
    graph: Graph
    impact: Graph | None = None
    notes: list[str] = field(default_factory=list)
    # every process with an edge straight into the detection point: (entity id, label, what it did)
    actors: list[tuple[int, str, list[str]]] = field(default_factory=list)
    full: bool = False  # draw every object (else the compact graphs, analysis.graph_compact)

    @cached_property
    def drawn(self) -> tuple[Graph, Graph | None]:
        """The backward and impact graphs as a reader sees them: compact unless ``full``, both
        folded together (as on the web's incident page), so an object both hold is folded in both."""
        if self.full:
            return self.graph, self.impact
        if self.impact is None:
            return compact([self.graph])[0], None
        g, impact = compact([self.graph, self.impact])
        return g, impact


def _direct(g: Graph) -> list[tuple[int, str, list[str]]]:
    """The processes that acted on the detection point itself, latest first: one line per
    image they ran then (a shell's write and the chmod it exec'd are two, analysis.images)."""
    roots = set(g.roots)
    acts: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for e in sorted(g.edges, key=lambda e: (e.t_end, e.src, e.dst, e.kind, e.src_image)):
        if e.dst in roots and g.nodes[e.src].kind == "process":
            k = (e.src, end_label(g, e, "src"))
            last, kinds = acts.get(k, (0, []))
            acts[k] = (max(last, e.t_end), kinds + [e.kind + (" (by name)" if e.name_matched else "")])
    order = sorted(acts, key=lambda k: (-acts[k][0], k))
    return [(int(g.nodes[k[0]].attrs.get("entity_id") or 0), k[1], sorted(set(acts[k][1]))) for k in order]


def _actor(reader: Reader, target: Target, g: Graph) -> int | None:
    if target.kind == "process":
        return target.entity
    direct = _direct(g)
    if direct and direct[0][0]:
        return direct[0][0]  # the last to change it: for a deleted or replaced file, who did that
    procs = [n for n in g.nodes.values() if n.kind == "process"]
    if not procs:
        return None
    near = min(n.depth for n in procs)
    first = min((n for n in procs if n.depth == near), key=lambda n: (n.attrs.get("start_ts") or 0, n.key))
    return int(first.attrs["entity_id"]) if "entity_id" in first.attrs else None


def build_report(reader: Reader, target: Target, *, opts: TrackOptions | None = None,
                 names: UserNames | None = None, timeline_limit: int = 400, full: bool = False) -> Report:
    opts = opts or TrackOptions()
    att = attribute(reader)
    notes: list[str] = []
    if target.kind == "session":
        leader_id, att = find_session(reader, target.session or "", att)
        leader: int | None = leader_id
        g = backtrack(reader, target, opts)
        actor: int | None = leader_id
    else:
        target = resolve(reader, target)
        g = backtrack(reader, target, opts)
        actor = _actor(reader, target, g)
        leader = att.leader_of.get(actor) if actor is not None else None
    if g.truncated:
        notes.append("the dependency graph was cut at the depth or size limit")
    if g.hidden:
        notes.append("noise filters hid " + ", ".join(f"{n} edges ({k})" for k, n in g.hidden.items())
                     + "; show them with " + " ".join(f"--no-filter {k}" for k in g.hidden))
    notes += crosshost_notes(g)  # the intrusion came over a connection from another host of the store
    notes += unanswered(reader)  # imported logs (forensix.imports): what their source cannot tell
    srow = None
    members: list[int] = []
    if leader is not None:
        srows = sessions(reader, att, names=names).to_pylist()
        srow = next((r for r in srows if r["leader_entity_id"] == leader), None)
        members = att.members(leader)
    else:
        notes.append("no recorded process is linked to the target; session unknown")
    impact = forward_processes(reader, members, f"session {leader:016x}", opts) if leader is not None else None
    return Report(
        target=target, title=f"Incident report: {target.describe()}", actor=actor, session=srow,
        tree=tree(reader, members=members, names=names) if members else tree(reader, members=[0]),
        files_written=files_changed(reader, members, written=True),
        files_deleted=files_changed(reader, members, written=False),
        persistence=persistence_touched(reader, members),
        network=network_peers(reader, members),
        timeline=timeline(reader, TimelineFilter(entities=members or [0], noise=FILTER_NAMES,
                                                 limit=timeline_limit)),
        graph=g, impact=impact, notes=notes, actors=_direct(g), full=full,
    )


def files_changed(reader: Reader, members: list[int], *, written: bool) -> pa.Table:
    cond = f"{_CHANGE} AND event_action <> 'unlink'" if written else "event_action IN ('unlink', 'rmdir')"
    # A write through an inherited or dup'd descriptor has the inode but no path: it is
    # counted with the open that named the same inode.
    system = "(" + " OR ".join(f"file_path LIKE '{p}'" for p in SYSTEM_WRITES) + ")"
    return reader.query(f"""
        WITH ev AS MATERIALIZED (
            SELECT ts, event_action, flow_write_bytes, process_pid, file_device, file_inode,
                   coalesce(file_target_path, file_path) AS p
            FROM events WHERE process_entity_id IN ({sql_ints(members)}) AND {cond}
              AND file_type IS DISTINCT FROM 'char' AND file_type IS DISTINCT FROM 'fifo'
              AND file_type IS DISTINCT FROM 'socket'),
        named AS (
            SELECT *, coalesce(p, max(p) OVER (PARTITION BY file_device, file_inode),
                               'inode ' || file_inode::VARCHAR) AS file_path FROM ev)
        SELECT min(ts) AS first_ts, max(ts) AS last_ts, file_path,
               list(DISTINCT event_action ORDER BY event_action) AS actions,
               sum(coalesce(flow_write_bytes, 0))::BIGINT AS bytes_written,
               list(DISTINCT process_pid ORDER BY process_pid) AS pids
        FROM named WHERE (file_path NOT LIKE '/proc/%' AND file_path NOT LIKE '/dev/%') OR {system}
        GROUP BY file_path ORDER BY 1, file_path""")


def persistence_touched(reader: Reader, members: list[int]) -> pa.Table:
    whens = " ".join(f"WHEN p LIKE '{pat}' THEN '{what}'" for pat, what in PERSISTENCE)
    meta = " ".join(f"WHEN {cond} THEN '{what}'" for cond, what in METADATA)
    # MATERIALIZED: take the session's changes first, then classify; inlined, the optimizer
    # may evaluate the LIKE ladder on every event of the store before the member filter
    return reader.query(f"""
        WITH changes AS MATERIALIZED (
          SELECT * FROM events WHERE process_entity_id IN ({sql_ints(members)}) AND {_CHANGE}),
        classified AS (
          SELECT *, coalesce(file_target_path, file_path) AS p FROM changes)
        SELECT ts, what, p AS file_path, event_action, process_pid, process_entity_id, message FROM (
          SELECT ts, p, event_action, process_pid, process_entity_id, {message_sql()} AS message,
                 CASE {meta} {whens} ELSE NULL END AS what
          FROM classified)
        WHERE what IS NOT NULL ORDER BY ts, file_path, event_action, process_entity_id""")


def network_peers(reader: Reader, members: list[int]) -> pa.Table:
    return reader.query(f"""
        SELECT min(ts) AS first_ts, event_action, network_transport,
               coalesce(destination_ip, unix_path) AS peer_ip, destination_port AS peer_port,
               count(*) AS connections, list(DISTINCT process_pid ORDER BY process_pid) AS pids
        FROM events WHERE process_entity_id IN ({sql_ints(members)})
          AND event_category = 'network' AND event_action IN ('connect', 'accept', 'bind', 'listen')
          AND (coalesce(ret, 0) >= 0 OR ret = -115)
        GROUP BY 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5""")
