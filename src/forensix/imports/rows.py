"""What every parser produces: store rows, warnings, and process identities.

A parser turns lines into ``Row`` objects (a table name and a dict of store columns, ECS
names as in ``forensix.store.schema``). ``Batcher`` gathers them into Arrow tables of the
store's schemas, so a parser never touches Arrow or the store. ``Processes`` gives each
process an entity id built the way the recorder builds it (``model.identity``) from what
a log has: host, boot, pid and the time the process was first seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.model.identity import host_key
from forensix.store import schema

__all__ = ["BadLine", "Batcher", "Host", "Nodes", "Processes", "Row", "fast_entity_id", "guid_entity", "json_object"]


class BadLine(ValueError):
    """This line cannot be imported; ``reason`` says why (it becomes a warning, not a crash)."""


def json_object(line: bytes) -> dict[str, Any]:
    """One JSON-lines record (EVE, LAUREL, a journal export), or the BadLine that says why not."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadLine(f"not a JSON object ({str(e)[:60]})") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    return obj


@dataclass(frozen=True)
class Row:
    table: str  # events | processes | alerts
    values: dict[str, Any]


@dataclass(frozen=True)
class Host:
    """Where imported rows say they come from (a log rarely names its boot)."""

    host_id: str
    host_name: str
    boot_id: str = "imported"
    # the log's own name of its host (auditd's node=) wins: a central log of many hosts
    # (audisp-remote) keeps them apart. False when the user named the host.
    from_log: bool = False

    @property
    def key(self) -> int:
        return host_key(self.host_id, self.boot_id)

    def origin(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "host_name": self.host_name, "boot_id": self.boot_id}


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    # model.identity's splitmix64 finaliser on one Python int: a numpy call per process cost
    # 0.1 ms, an eighth of an import's CPU (test_entity_ids_are_the_recorders checks they agree)
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def fast_entity_id(hkey: int, pid: int, start_ns: int) -> int:
    """``model.identity.entity_id`` for one process, without numpy."""
    x = _mix(_mix((hkey ^ pid) & _MASK) ^ (start_ns & _MASK))
    return x or 1


def guid_entity(hkey: int, guid: str) -> int:
    """An entity id from a source's own process identity (Sysmon's ProcessGuid encodes pid and start)."""
    d = hashlib.blake2b(guid.encode(), digest_size=8).digest()
    return fast_entity_id(hkey, 0, int.from_bytes(d, "little") >> 1)


@dataclass
class _Life:
    eid: int
    pid: int
    ppid: int | None
    parent_eid: int | None
    start_ts: int
    image_seq: int = -1  # the last image row written (-1: none yet)
    exited: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # the last image's columns


_UNSET_ID = 4294967295  # auid of a process no login set
_NO_NAMES = frozenset({"", "?", "unset", "(none)", "(unknown)"})


class Processes:
    """Entity ids and ``processes`` rows for sources that know pids but not start times.

    A process's life begins when the log first shows its pid (a fork's child, or any record
    of it) and ends at its exit; a pid seen again after its exit, or with another parent
    while the old parent still lives, is a new process. Its entity id is the recorder's mix
    of (host, boot, pid, start) with the first-seen time as start: stable across imports
    of the same log, distinct for reused pids.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.hkey = host.key
        self._lives: dict[int, _Life] = {}
        self._named: dict[int, str] = {}  # uid -> the name the log last gave it

    def _new(self, pid: int, ppid: int | None, ts: int, parent_eid: int | None) -> _Life:
        life = _Life(fast_entity_id(self.hkey, pid, ts), pid, ppid, parent_eid, ts)
        self._lives[pid] = life
        return life

    def _parent(self, ppid: int | None, ts: int) -> int | None:
        if ppid is None or ppid == 0:
            return None
        p = self._lives.get(ppid)
        if p is None or p.exited:
            p = self._new(ppid, None, ts, None)  # known only as a parent: a row at the end
        return p.eid

    def life(self, pid: int, ppid: int | None, ts: int) -> _Life:
        cur = self._lives.get(pid)
        if cur is not None and not cur.exited:
            if ppid is None or cur.ppid is None or cur.ppid == ppid:
                if cur.ppid is None and ppid is not None:
                    cur.ppid, cur.parent_eid = ppid, self._parent(ppid, ts)
                return cur
            old_parent = self._lives.get(cur.ppid)
            if ppid == 1 or old_parent is None or old_parent.exited:
                return cur  # re-parented to init or a subreaper when its parent died
        return self._new(pid, ppid, ts, self._parent(ppid, ts))

    def image(self, life: _Life, ts: int, source: str, **cols: Any) -> Row:
        """A new ``processes`` row for ``life`` (fork = image 0, then one per exec)."""
        life.image_seq += 1
        if source == "exec" and life.image_seq == 0:
            source = "snapshot"  # first seen at its exec: its fork was not in the log
        base = {k: v for k, v in life.last.items() if k not in cols}
        base.update({k: v for k, v in cols.items() if v is not None})
        life.last = base
        values = {**self.host.origin(), **base, "entity_id": life.eid, "image_seq": life.image_seq,
                  "pid": life.pid, "parent_entity_id": life.parent_eid, "parent_pid": life.ppid,
                  "start_ts": life.start_ts, "image_ts": ts, "source": source}
        return Row("processes", values)

    def seen(self, life: _Life, ts: int, **cols: Any) -> Row | None:
        """The first row of a process met in the middle of its life (no fork, no exec)."""
        if life.image_seq >= 0:
            return None
        return self.image(life, ts, "snapshot", **cols)

    def exit(self, pid: int) -> None:
        life = self._lives.get(pid)
        if life is not None:
            life.exited = True

    def child(self, parent: _Life, child_pid: int, ts: int) -> Row:
        """A fork: the child's life begins, image 0 a copy of the parent's image."""
        old = self._lives.get(child_pid)
        if old is not None and not old.exited and old.image_seq < 0 and old.ppid in (None, parent.pid):
            life = old  # met before as someone's parent only
            life.ppid, life.parent_eid = parent.pid, parent.eid
        else:
            life = self._new(child_pid, parent.pid, ts, parent.eid)
        life.last = dict(parent.last)
        return self.image(life, ts, "fork")

    def finish(self) -> list[Row]:
        """Rows for processes known only as parents: their pid, and nothing else."""
        rows = [self.image(life, life.start_ts, "snapshot") for life in self._lives.values()
                if life.image_seq < 0]
        return rows

    def named(self, uid: int | None, name: Any, ts: int, source: str) -> Row | None:
        """An ``accounts`` row when the log names ``uid`` (auditd's interpreted ``UID=``,
        LAUREL's ``UID``) otherwise than it last did: the host's own name for it from then
        on, kept with the import (``analysis.users`` shows it, never this machine's)."""
        if uid is None or uid == _UNSET_ID or not isinstance(name, str) or name in _NO_NAMES \
                or name.startswith("unknown("):
            return None
        if self._named.get(uid) == name:
            return None
        self._named[uid] = name
        return Row("accounts", {**self.host.origin(), "valid_from": ts, "recorded_ts": ts, "kind": "user",
                                "uid": uid, "name": name, "source": source})

    def drop_exited(self) -> None:
        """Forget exited processes (bounded memory on long logs)."""
        for pid in [p for p, life in self._lives.items() if life.exited]:
            del self._lives[pid]


class Nodes:
    """One ``Processes`` per host a log names (auditd ``node=``), when the log is to name them."""

    def __init__(self, procs: Processes) -> None:
        self.default = procs
        self._by_node: dict[str, Processes] = {}

    def of(self, node: str | None) -> Processes:
        host = self.default.host
        if node is None or not host.from_log:
            return self.default
        procs = self._by_node.get(node)
        if procs is None:
            procs = self._by_node[node] = Processes(Host(node, node, host.boot_id, True))
        return procs

    def finish(self) -> list[Row]:
        """The rows of processes known only as parents, on every node's host."""
        return [r for p in self._by_node.values() for r in p.finish()]


class Batcher:
    """Rows into Arrow tables of the store's schemas, ``size`` events at a time."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._rows: dict[str, list[dict[str, Any]]] = {"events": [], "processes": [], "alerts": [], "accounts": []}

    def add(self, row: Row) -> None:
        self._rows[row.table].append(row.values)

    @property
    def full(self) -> bool:
        return sum(len(v) for v in self._rows.values()) >= self.size

    def __len__(self) -> int:
        return sum(len(v) for v in self._rows.values())

    def take(self) -> dict[str, pa.Table]:
        out = {}
        for name, rows in self._rows.items():
            if rows:
                out[name] = _table(name, rows)
        self._rows = {"events": [], "processes": [], "alerts": [], "accounts": []}
        return out


def _table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    sch = schema.TABLES[name]
    names = set().union(*(r.keys() for r in rows))
    fields = [f for f in sch if f.name in names]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
