"""Sessions: every process attributed to its entry leader.

An entry leader is where a line of work entered the host: an sshd connection (with the
source address of the accepted socket), a console or tty login, a cron job, a systemd
unit, a container, another daemon. The kernel's audit session id (``session_id``, set
with the loginuid by pam_loginuid) says where a login began when it is set; process
lineage (``parent_entity_id``, which survives re-parenting) says it otherwise. su/sudo
do not start a session: they are transitions inside one, listed with the session.

The rules are data (``LEADER_RULES``), tried in order on each process given its parent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from forensix.errors import UsageError
from forensix.model.identity import format_entity
from forensix.store.base import Reader

if TYPE_CHECKING:
    from forensix.analysis.processes import UserNames

__all__ = [
    "LEADER_RULES",
    "TRANSITION_EXES",
    "UNSET",
    "Attribution",
    "attribute",
    "find_session",
    "session_members",
    "sessions",
]

UNSET = 4294967295
SSHD = {"sshd", "sshd-session", "dropbear"}
CRON = {"cron", "crond", "anacron", "atd"}
LOGIN = {"login", "agetty", "getty", "mingetty"}
CONTAINER = {"containerd-shim", "containerd-shim-runc-v2", "runc", "crun", "conmon", "docker-init",
             "lxc-start", "systemd-nspawn"}
INIT = {"systemd", "init"}
TRANSITION_EXES = {"su", "sudo", "doas", "pkexec", "runuser", "setpriv"}


@dataclass
class _P:
    entity: int
    pid: int
    parent: int | None
    start: int
    exe: str
    exes: list[str]
    uid: int | None
    auid: int | None
    sid: int | None
    tty: str | None
    ns_pid: int | None
    leader: int = 0
    kind: str = ""
    base: str = ""  # basename of the current executable
    login: bool = False  # some image was login/agetty

    def __post_init__(self) -> None:
        self.base = _base(self.exe)
        self.login = any(_base(e) in LOGIN for e in self.exes)


def _base(path: str | None) -> str:
    return (path or "").rsplit("/", 1)[-1]


def _sid(p: _P) -> int | None:
    return p.sid if p.sid not in (None, UNSET, 0) else None


# Each rule: (kind, test(process, parent or None)); the first that matches makes the
# process an entry leader of that kind. A process no rule picks joins its parent's leader.
Rule = tuple[str, Callable[[_P, "_P | None"], bool]]
LEADER_RULES: list[Rule] = [
    ("kernel", lambda p, q: q is None and (p.pid == 2 or p.base == "kthreadd")),
    ("init", lambda p, q: q is None and p.pid == 1),
    ("unknown", lambda p, q: q is None),
    ("container", lambda p, q: q is not None and (q.base in CONTAINER or (
        p.ns_pid not in (None, 0) and q.ns_pid not in (None, 0) and p.ns_pid != q.ns_pid))),
    ("sshd", lambda p, q: q is not None and q.base in SSHD and q.kind != "sshd"),
    ("cron", lambda p, q: q is not None and q.base in CRON and q.kind != "cron"),
    ("console", lambda p, q: q is not None and q.kind != "console" and p.login),
    ("login", lambda p, q: q is not None and _sid(p) is not None and _sid(p) != _sid(q)
        and q.kind not in ("sshd", "cron", "console", "login")),
    ("systemd", lambda p, q: q is not None and q.pid == 1 and q.base in INIT),
    ("daemon", lambda p, q: q is not None and q.kind == "init"),
]


@dataclass
class Attribution:
    """Who leads whom: entity -> leader entity, and the leaders' kinds."""

    leader_of: dict[int, int] = field(default_factory=dict)
    kind_of: dict[int, str] = field(default_factory=dict)  # by leader
    procs: dict[int, _P] = field(default_factory=dict)

    def members(self, leader: int) -> list[int]:
        return [e for e, lead in self.leader_of.items() if lead == leader]


_PROCS_SQL = """
SELECT entity_id, arg_min(pid, image_seq) AS pid, arg_min(parent_entity_id, image_seq) AS parent,
       min(start_ts) AS start_ts, arg_max(executable, image_seq) AS exe,
       list(executable ORDER BY image_seq) AS exes, arg_max(user_id, image_seq) AS uid,
       arg_max(user_audit_id, image_seq) AS auid, arg_max(session_id, image_seq) AS sid,
       arg_max(tty, image_seq) AS tty, arg_max(ns_pid, image_seq) AS ns_pid
FROM processes GROUP BY entity_id ORDER BY start_ts, entity_id
"""


def attribute(reader: Reader) -> Attribution:
    """Attribute every recorded process to its entry leader (parents before children)."""
    t = reader.query(_PROCS_SQL)
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    procs: dict[int, _P] = {}
    for i, e in enumerate(cols["entity_id"]):
        procs[e] = _P(e, cols["pid"][i], cols["parent"][i], cols["start_ts"][i], cols["exe"][i] or "",
                      [x for x in cols["exes"][i] if x], cols["uid"][i], cols["auid"][i], cols["sid"][i],
                      cols["tty"][i], cols["ns_pid"][i])
    att = Attribution(procs=procs)
    for p in procs.values():  # start order: parents come first except for clock oddities
        _assign(p, procs, att)
    return att


_SPECIAL_PARENTS = SSHD | CRON | CONTAINER


def _plain_child(p: _P, q: _P | None) -> bool:
    """True when no rule can pick ``p`` (the common case, decided without trying them all)."""
    return (q is not None and q.pid != 1 and q.kind not in ("init", "kernel", "")
            and p.sid == q.sid and q.base not in _SPECIAL_PARENTS and not p.login
            and (p.ns_pid == q.ns_pid or not p.ns_pid or not q.ns_pid))


def _assign(p: _P, procs: dict[int, _P], att: Attribution) -> None:
    chain = []
    cur: _P | None = p
    while cur is not None and not cur.kind and cur.entity not in chain:
        chain.append(cur.entity)
        cur = procs.get(cur.parent) if cur.parent is not None else None
    for e in reversed(chain):
        x = procs[e]
        q = procs.get(x.parent) if x.parent is not None else None
        kind = None if _plain_child(x, q) else next((k for k, rule in LEADER_RULES if rule(x, q)), None)
        if kind is not None or q is None or not q.kind:
            x.leader, x.kind = x.entity, kind or "unknown"
            att.kind_of[x.entity] = x.kind
        else:
            x.leader, x.kind = q.leader, q.kind
        att.leader_of[e] = x.leader


_ACCEPTS_SQL = """
SELECT process_entity_id AS entity_id, ts, destination_ip, destination_port, source_ip, source_port
FROM events WHERE event_action = 'accept' AND network_transport IS DISTINCT FROM 'unix' ORDER BY ts
"""


def sessions(reader: Reader, att: Attribution | None = None, *, kinds: set[str] | None = None,
             names: UserNames | None = None) -> pa.Table:
    """One row per entry leader: kind, user, source address, tty, times, size, transitions."""
    from forensix.analysis.processes import ENDS_SQL, add_user_names

    att = att or attribute(reader)
    ends = reader.query(ENDS_SQL)
    end_of = dict(zip(ends.column("entity_id").to_pylist(), ends.column("end_ts").to_pylist()))
    accepts = reader.query(_ACCEPTS_SQL).to_pylist()
    forks: dict[int, list[int]] = {}  # parent -> its children's start times
    for p in att.procs.values():
        if p.parent is not None:
            forks.setdefault(p.parent, []).append(p.start)
    rows: dict[int, dict[str, Any]] = {}
    running: set[int] = set()
    for e, lead in att.leader_of.items():
        p, leader = att.procs[e], att.procs[lead]
        r = rows.get(lead)
        if r is None:
            r = rows[lead] = _session_row(leader, att, accepts, forks)
        r["processes"] += 1
        end = end_of.get(e)
        if end is None:
            running.add(lead)  # a member never exited while recorded: the session is open
        r["end_ts"] = _max(r["end_ts"], end)
        if r["audit_session_id"] is None and _sid(p) is not None:
            r["audit_session_id"] = p.sid
            r["user_id"] = p.auid if p.auid not in (None, UNSET) else r["user_id"]
        # image 0 of a forked process repeats its parent's executable: only exec'd images count
        hit = next((_base(x) for x in (p.exes[1:] or p.exes) if _base(x) in TRANSITION_EXES), None)
        if hit:
            r["transitions"].append(f"{hit}[{p.pid}]")
    for lead in running:
        rows[lead]["end_ts"] = None
    from forensix.analysis.replay import recorded_entities  # terminal bytes kept (forensix replay)

    for e in recorded_entities(reader) & att.leader_of.keys():
        rows[att.leader_of[e]]["recording"] = True
    out = [r for r in rows.values() if kinds is None or r["kind"] in kinds]
    out.sort(key=lambda r: (r["start_ts"] or 0, r["leader_entity_id"]))
    table = pa.Table.from_pylist(out, schema=_SESSION_SCHEMA)
    from forensix.imports.logins import enrich_sessions  # sshd's log line: user, method, key

    return add_user_names(enrich_sessions(reader, table), names, reader, entity="leader_entity_id")


_SESSION_SCHEMA = pa.schema([
    ("leader_entity_id", pa.uint64()), ("kind", pa.string()), ("description", pa.string()),
    ("user_id", pa.uint32()), ("audit_session_id", pa.uint32()), ("source_ip", pa.string()),
    ("source_port", pa.uint16()), ("tty", pa.string()), ("leader_pid", pa.uint32()),
    ("start_ts", pa.int64()), ("end_ts", pa.int64()), ("processes", pa.int64()),
    ("transitions", pa.list_(pa.string())), ("recording", pa.bool_()),
])


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


# sshd's listener accepts, then forks the connection's process at once: an accept further
# back than this from the fork is not the connection the forked process holds
_ACCEPT_FORK_NS = 10**9


def _own_accept(leader: _P, accepts: list[dict[str, Any]], forks: dict[int, list[int]]) -> dict[str, Any] | None:
    """The accept whose connection the session's leader holds, or None when it was not recorded.

    The leader's own accept counts; otherwise the listener's (its parent's) last accept before
    the leader was forked, if no other child of the listener was forked in between (that
    child took the connection) and the fork came right after it. Never an older accept: that
    is another connection's address, the wrong source of a session in a report."""
    own = [a for a in accepts if a["entity_id"] == leader.entity
           and leader.start <= a["ts"] <= leader.start + _ACCEPT_FORK_NS]
    if own:
        return own[0]
    before = [a for a in accepts if a["entity_id"] == leader.parent and a["ts"] <= leader.start]
    if not before or leader.start - before[-1]["ts"] > _ACCEPT_FORK_NS:
        return None
    last = before[-1]
    sibling = any(last["ts"] <= t < leader.start for t in forks.get(leader.parent or 0, []))
    return None if sibling else last


def _session_row(leader: _P, att: Attribution, accepts: list[dict[str, Any]],
                 forks: dict[int, list[int]]) -> dict[str, Any]:
    src_ip = src_port = None
    hit = _own_accept(leader, accepts, forks) if leader.kind == "sshd" else None
    if hit is not None:
        src_ip, src_port = hit["destination_ip"], hit["destination_port"]
    desc = {
        "sshd": f"ssh from {src_ip}:{src_port}" if src_ip else "ssh connection",
        "cron": "cron job",
        "console": f"console login on {leader.tty or '?'}",
        "login": f"login session {leader.sid}",
        "systemd": f"systemd unit ({_base(leader.exe)})",
        "container": f"container ({_base(leader.exe)})",
        "daemon": f"daemon {_base(leader.exe)}",
    }.get(leader.kind, leader.kind)
    return {
        "leader_entity_id": leader.entity, "kind": leader.kind, "description": desc,
        "user_id": leader.auid if leader.auid not in (None, UNSET) else leader.uid,
        "audit_session_id": _sid(leader), "source_ip": src_ip, "source_port": src_port,
        "tty": leader.tty, "leader_pid": leader.pid, "start_ts": leader.start, "end_ts": None,
        "processes": 0, "transitions": [], "recording": False,
    }


def find_session(reader: Reader, text: str, att: Attribution | None = None) -> tuple[int, Attribution]:
    """A session given as its leader's entity id, any member's entity id, or an audit session id."""
    from forensix.model.identity import parse_entity

    att = att or attribute(reader)
    s = text.strip().removeprefix("session:")
    if s.isdigit() and len(s) < 16:
        sid = int(s)
        leads = sorted({att.leader_of[e] for e, p in att.procs.items() if p.sid == sid},
                       key=lambda e: att.procs[e].start)
        if not leads:
            raise UsageError(f"no process has audit session id {sid}", "list sessions with `forensix sessions`")
        return leads[0], att
    ent = parse_entity(s)
    if ent not in att.leader_of:
        raise UsageError(f"no process with entity id {format_entity(ent)} in this store",
                         "list sessions with `forensix sessions`")
    return att.leader_of[ent], att


def session_members(att: Attribution, leader: int) -> list[int]:
    return att.members(leader)
