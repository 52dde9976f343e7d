"""Which life of a file held a name at a time, and the path-resolved calls that touched it.

Calls that leave no open file behind (unlink, rename, link, symlink, chmod, chown,
setxattr, utimes by path) are recorded with the directory the kernel resolved and the
name as passed (``file_path_resolution = directory``), without the inode: fentry and LSM
hooks, which could give it, are refused by lockdown on this machine kind. Such a call is
joined to a file by name and time: a name is held by one life at a time, from the event
that put it there (the first kernel-resolved event naming it, a rename or link onto it, a
symlink creating it) to the event that took it away (unlink, a rename away from it or over
it). The call belongs to the life that held its name when it ran; edges made so are
marked *name-matched*.

A period whose life no kernel-resolved event ever showed (a file removed before anything
opened it while recording) is still a life: it is known by its name and start, as a node
``fn:HOST:PATH@START``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forensix.analysis.filehistory import FileLife, sql_strings
from forensix.store.base import Reader

__all__ = ["NAME_COLUMNS", "NameHit", "NameIndex", "Period", "Start", "choose", "hit_row", "life_key",
           "name_matched_rows", "name_sql", "start_lives"]

_NAMING = ("rename", "link", "unlink", "rmdir")
# Path-resolved actions that change a file (the graph's process -> file edges).
PATH_ACTIONS = ("unlink", "rmdir", "rename", "link", "symlink", "chmod", "chown", "setxattr", "removexattr",
                "utimes", "truncate", "mkdir")


def life_key(life: FileLife) -> str:
    host, dev, ino, gen = life
    return f"f:{host}:{dev}:{ino}" + (f"~{gen}" if gen else "")


@dataclass(eq=False)
class Period:
    """One life's hold on one name: from ``start`` to ``end`` (None: to the end of the record)."""

    host: str
    name: str
    start: int
    life: FileLife | None = None  # None: no kernel-resolved event showed its inode
    end: int | None = None
    ended_by: str | None = None  # unlink | rename | renamed-over (with the acting pid in ended_pid)
    ended_pid: int | None = None
    ended_entity: int | None = None
    moved_from: Period | None = None  # renamed here from another name: the same object

    @property
    def key(self) -> str:
        if self.life:
            return life_key(self.life)
        if self.moved_from is not None:
            return self.moved_from.key
        return f"fn:{self.host}:{self.name}@{self.start}"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.key, "host_id": self.host, "file_path": self.name, "start_ts": self.start or None,
                             "end_ts": self.end, "ended_by": self.ended_by, "ended_pid": self.ended_pid}
        if self.life:
            d |= {"file_inode": self.life[2], "file_device": self.life[1], "file_generation": self.life[3] or None}
        return d


NAME_COLUMNS = ("host_id", "ts", "eid", "pid", "act", "path", "tpath", "dev", "ino", "gen", "ret")


def name_sql(names: list[str]) -> str:
    """The events that tell who held these names: per life its first sighting (kernel-resolved
    events only show which life holds a name, and a name is held by one life at a time, so a
    hot name such as /etc/passwd costs its lives, not its opens), and the path-resolved calls,
    renames, links and unlinks whole. Each scan is filtered inside the scan (an OR across
    columns is not). Columns: NAME_COLUMNS."""
    lit = sql_strings(names)
    naming = ", ".join(f"'{a}'" for a in _NAMING)
    return f"""
        WITH named AS MATERIALIZED (
            SELECT host_id, ts, process_entity_id AS eid, process_pid AS pid, event_action AS act,
                   file_path AS path, file_target_path AS tpath, file_device AS dev, file_inode AS ino,
                   coalesce(file_generation, 0) AS gen, coalesce(ret, 0) AS ret
            FROM events WHERE file_path IN ({lit}))
        SELECT host_id, min(ts) AS ts, NULL::UBIGINT AS eid, NULL::UINTEGER AS pid, 'seen' AS act, path,
               NULL AS tpath, dev, ino, gen, 0 AS ret
        FROM named WHERE coalesce(ino, 0) <> 0 AND act NOT IN ({naming}) AND ret >= 0
        GROUP BY host_id, path, dev, ino, gen
        UNION ALL
        SELECT * FROM named WHERE (coalesce(ino, 0) = 0 OR act IN ({naming})) AND act <> 'flow'
        UNION ALL
        SELECT host_id, ts, process_entity_id, process_pid, event_action, file_path, file_target_path,
               file_device, file_inode, coalesce(file_generation, 0), coalesce(ret, 0)
        FROM events WHERE file_target_path IN ({lit}) AND file_path NOT IN ({lit})"""


@dataclass
class NameHit:
    """A path-resolved call attributed to the life that held its name when it ran."""

    period: Period
    entity: int
    ts: int
    kind: str  # the action; a rename onto a held name is 'renamed-over' for the life it replaced
    path: str
    tpath: str | None


@dataclass
class NameIndex:
    """Periods and name-matched calls of the names asked so far (asked in batches, cached)."""

    reader: Reader
    periods: dict[tuple[str, str], list[Period]] = field(default_factory=dict)
    hits: list[NameHit] = field(default_factory=list)
    _asked: set[str] = field(default_factory=set)
    _rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> the rows that name it

    def add(self, names: Iterable[str]) -> None:
        new = self.unasked(names)
        if new:
            self.ingest(new, self.reader.query(name_sql(new) + " ORDER BY ts").to_pylist())

    def unasked(self, names: Iterable[str]) -> list[str]:
        return sorted({n for n in names if n} - self._asked)

    def ingest(self, new: list[str], rows: list[dict[str, Any]]) -> None:
        """Take the rows of ``name_sql(new)`` (asked by the caller, perhaps within another query)."""
        self._asked.update(new)
        rows = sorted(rows, key=lambda r: r["ts"])
        for r in rows:
            for name in {r["path"], r["tpath"]} & set(new):
                self._rows.setdefault(name, []).append(r)
        _Replay(self, set(new)).run(rows)

    def rows_for(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The events that name any of ``names`` (each life's first sighting, the rest whole)."""
        names = set(names)
        self.add(names)
        out = {id(r): r for n in names for r in self._rows.get(n, ())}
        return list(out.values())

    def lives_of(self, host: str | None, name: str) -> list[Period]:
        self.add([name])
        out = [p for (h, n), ps in self.periods.items() if n == name and (host is None or h == host) for p in ps]
        return sorted(out, key=lambda p: p.start)

    def hits_into(self, keys: set[str]) -> list[NameHit]:
        return [h for h in self.hits if h.period.key in keys]

    def hit_of(self, entity: int, ts: int, path: str) -> list[NameHit]:
        return [h for h in self.hits if h.entity == entity and h.ts == ts and path in (h.path, h.tpath)]


class _Replay:
    """Replays the events on a batch of names in time order, keeping who held each name."""

    def __init__(self, index: NameIndex, batch: set[str]) -> None:
        self.ix, self.batch = index, batch
        self.seen: set[tuple[int, int, str, str]] = set()

    def holder(self, host: str, name: str, ts: int, create: bool = True) -> Period | None:
        ps = self.ix.periods.setdefault((host, name), [])
        if ps and ps[-1].end is None:
            return ps[-1]
        if not create:
            return None
        # first seen now (it may have been held before the record began): an open period
        p = Period(host, name, ts)
        ps.append(p)
        return p

    def begin(self, host: str, name: str, ts: int, life: FileLife | None) -> Period:
        cur = self.holder(host, name, ts, create=False)
        if cur is not None:
            cur.end = ts
        p = Period(host, name, ts, life)
        self.ix.periods.setdefault((host, name), []).append(p)
        return p

    def end(self, p: Period, r: dict[str, Any], how: str) -> None:
        p.end, p.ended_by, p.ended_pid, p.ended_entity = r["ts"], how, r["pid"], r["eid"]

    def hit(self, p: Period, r: dict[str, Any], kind: str) -> None:
        if r["ino"] and kind != "renamed-over":  # joined by inode already
            return
        k = (r["ts"], r["eid"] or 0, kind, p.name)
        if k in self.seen or not r["eid"]:
            return
        self.seen.add(k)
        self.ix.hits.append(NameHit(p, int(r["eid"]), int(r["ts"]), kind, r["path"], r["tpath"]))

    def run(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r["ret"] < 0:
                continue
            # a rename, link or unlink changes who holds a name whether or not it carries the
            # inode; only calls without one become name-matched edges (the rest join by inode)
            if r["act"] in _NAMING:
                self.by_path(r)
            elif r["ino"]:
                self.kernel(r)
            elif r["act"] in PATH_ACTIONS:
                self.by_path(r)

    def kernel(self, r: dict[str, Any]) -> None:
        """An event that carries the inode: it shows which life holds its name."""
        life = (r["host_id"], r["dev"], r["ino"], r["gen"])
        for name in (r["path"],):
            if name not in self.batch:
                continue
            cur = self.holder(r["host_id"], name, r["ts"])
            assert cur is not None
            if cur.life is None:
                cur.life = life  # the first witness of the life that took the name
            elif cur.life[:3] != life[:3] or (cur.life[3] and life[3] and cur.life[3] != life[3]):
                self.begin(r["host_id"], name, r["ts"], life)

    def by_path(self, r: dict[str, Any]) -> None:
        host, act, path, tpath = r["host_id"], r["act"], r["path"], r["tpath"]
        life = (host, r["dev"], r["ino"], r["gen"]) if r["ino"] else None
        if act in ("rename", "link"):
            moved = self.holder(host, path, r["ts"]) if path in self.batch else None
            if moved is not None:
                moved.life = moved.life or life
                self.hit(moved, r, act)
                if act == "rename":
                    self.end(moved, r, "rename")
            if tpath in self.batch:
                old = self.holder(host, tpath, r["ts"], create=False)
                if old is not None:
                    self.hit(old, r, "renamed-over")
                    self.end(old, r, "renamed-over")
                new = self.begin(host, tpath, r["ts"], (moved.life if moved is not None else None) or life)
                new.moved_from = moved if act == "rename" else None
                if new.moved_from is None:
                    self.hit(new, r, act)  # a rename's edge is on the object already (moved)
            return
        if path not in self.batch:
            return
        if act in ("symlink", "mkdir"):
            self.hit(self.begin(host, path, r["ts"], None), r, act)
            return
        p = self.holder(host, path, r["ts"])
        assert p is not None
        p.life = p.life or life
        self.hit(p, r, act)
        if act in ("unlink", "rmdir"):
            self.end(p, r, act)


def hit_row(h: NameHit) -> dict[str, Any]:
    """A name-matched call as a graph edge row (process -> file), the shape graph hops use."""
    life = h.period.life
    return {"src_kind": "process", "src_eid": h.entity, "src_dev": None, "src_ino": None, "src_key": None,
            "dst_kind": "file", "dst_eid": None, "dst_dev": life[1] if life else None,
            "dst_ino": life[2] if life else None, "dst_key": h.period.host, "t_start": h.ts, "t_end": h.ts,
            "kind": h.kind, "nbytes": 0, "path": h.path, "tpath": h.tpath, "gen": life[3] if life else None,
            "nm": True, "node": h.period.key, "life": life or h.period.key}


def choose(periods: list[Period], at: int | None) -> Period | None:
    """The life that held the name at ``at``; without ``at``, the last life that had it."""
    if not periods:
        return None
    if at is None:
        return periods[-1]
    held = [p for p in periods if p.start <= at and (p.end is None or at <= p.end)]
    if held:
        return held[-1]
    before = [p for p in periods if p.start <= at]
    return before[-1] if before else periods[0]


def name_matched_rows(index: NameIndex, rows: list[dict[str, Any]], thresholds: dict[str, int],
                      names: set[str], backward: bool) -> list[dict[str, Any]]:
    """A graph hop's rows with the path-resolved calls joined by name and time.

    Backward, the frontier's files (``thresholds``: life key -> latest time that matters,
    ``names``: the names they had) gain the calls made on their names before then; forward,
    a frontier process's calls that carry no inode are placed on the life their name had.
    """
    if backward:
        if not thresholds:
            return rows
        index.add(names)
        return rows + [hit_row(h) for h in index.hits_into(set(thresholds)) if h.ts <= thresholds[h.period.key]]

    def loose(r: dict[str, Any]) -> bool:
        return bool(r["dst_kind"] == "file" and not r["dst_ino"] and r["src_kind"] == "process")

    calls = [r for r in rows if loose(r)]
    if not calls:
        return rows
    index.add(x for r in calls for x in (r["path"], r["tpath"]))
    out = [r for r in rows if not loose(r)]
    seen: set[tuple[str, int, str]] = set()
    for r in calls:
        for h in index.hit_of(r["src_eid"], r["t_start"], r["path"]):
            if (h.period.key, h.ts, h.kind) not in seen:
                seen.add((h.period.key, h.ts, h.kind))
                out.append(hit_row(h))
    return out


@dataclass
class Start:
    """Where a walk from a path begins: lives (or name-only keys) with their names, and
    which life of the name was chosen, with the others (for the output to say)."""

    files: dict[Any, list[str]]
    chosen: dict[str, Any] | None = None
    others: list[dict[str, Any]] = field(default_factory=list)


def start_lives(index: NameIndex, path: str, at: int | None) -> Start:
    """The life of ``path`` at ``at`` (default: the last life that had it), one per host: on a
    log host's store the same path names a file on every host."""
    from forensix.analysis.filehistory import file_lives
    from forensix.analysis.targets import Target, resolve

    periods = index.lives_of(None, path)
    names, lives = file_lives(index.reader, path, fetch=index.rows_for)
    by_host: dict[str, list[Period]] = {}
    for p in periods:
        by_host.setdefault(p.host, []).append(p)
    chosen = [c for ps in by_host.values() if (c := choose(ps, at)) is not None]
    if not chosen:
        if not lives:
            resolve(index.reader, Target("file", path=path))  # says what was looked for, and what is near
        # named only by flows (inherited descriptors): every life of the name
        return Start({life: names for life in lives})
    files: dict[Any, list[str]] = {(c.life if c.life is not None else c.key): (names if c.life else [path])
                                   for c in chosen}
    first = by_host[chosen[0].host]
    return Start(files, chosen[0].describe() | {"life": first.index(chosen[0]) + 1, "lives": len(first)},
                 [p.describe() | {"life": by_host[p.host].index(p) + 1} for p in periods if p is not chosen[0]])
