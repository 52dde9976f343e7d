"""One alert per finding, carrying its evidence.

An analyst works a queue: a hundred rows of one rule on one ``useradd`` are one finding.
Matches are grouped by (rule, process, object) within ``GROUP_WINDOW_NS`` of the group's
first match; the group is one alert (the first match's id and time) with a count and the
time of its last match. Each alert carries what the analyst would otherwise query for:
the acting process's executable and command line, its parent's, the user, the object
(a path, an account name, an address, a process), and the session it belongs to (its
entry leader: an ssh connection with the source address, a cron job, a console login,
a daemon).

Both engines use the same code: the live engine its own process context and a
``Grouper`` that emits a group's first alert at once and, when the group closes, the
same alert again with its final count (the store keeps the latest per ``alert_id``); the
hunt builds the context from the store and groups its matches in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.analysis.sessions import CRON, INIT, LOGIN, SSHD
from forensix.rules.ir import CompiledRule, columns_of
from forensix.rules.live import ProcessContext
from forensix.rules.objects import group_object


def _base(path: str | None) -> str:
    return (path or "").rsplit("/", 1)[-1]

__all__ = ["GROUP_WINDOW_NS", "OBJECT_COLUMNS", "Grouper", "SessionContext", "add_evidence", "group_alerts",
           "object_free"]

GROUP_WINDOW_NS = 600 * 10**9  # ten minutes: one useradd, one scan, one build step


class SessionContext:
    """What a session's entry needs beyond process images: the accepted connections of
    ssh daemons (their remote address is the session's source).

    Kept per accepting process as arrays, one pair per batch (times, addresses), not a
    tuple per accept: a web server taking a new connection per request accepts ~25 k a
    second, and a Python tuple each cost ~0.4 µs and ~150 bytes."""

    def __init__(self, max_entities: int = 50_000) -> None:
        self.accepts: dict[int, list[tuple[np.ndarray, pa.Array]]] = {}
        self.max_entities = max_entities

    def add_events(self, data: pa.Table, ctx: ProcessContext | None = None) -> None:
        """Learn the accepts of ``data``; with ``ctx`` (the live engine's, which knows every
        process's images by now) only those of processes that are or were an ssh daemon, or
        whose image is not known: a web server's accepts are never a session's source, and
        kept they grew without bound (~25 k a second on web-conn)."""
        if data.schema.get_field_index("event_action") < 0 or data.num_rows == 0:
            return
        act = data.column("event_action").to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(act == "accept")
        if not len(rows):
            return
        t = data.select(["process_entity_id", "ts", "destination_ip", "network_transport"]).take(pa.array(rows))
        eid = t.column("process_entity_id").fill_null(0).to_numpy()
        ip = t.column("destination_ip").combine_chunks()
        keep = (eid != 0) & np.asarray(ip.is_valid()) & (pc.fill_null(pc.not_equal(t.column("network_transport"),
                                                                                       "unix"), True).to_numpy())
        keep &= np.asarray(pc.not_equal(ip, "").fill_null(False))  # an empty address is no address
        ts = t.column("ts").to_numpy()
        for e in np.unique(eid[keep]).tolist():
            if ctx is not None and not _may_be_sshd(ctx, int(e)):
                continue
            mine = keep & (eid == e)
            self.accepts.setdefault(int(e), []).append((ts[mine], ip.filter(pa.array(mine))))
        while len(self.accepts) > self.max_entities:
            self.accepts.pop(next(iter(self.accepts)))

    def source_ip(self, eids: Iterable[int], before: int) -> str | None:
        """The address of the latest accept at or before ``before`` by any of ``eids`` (the
        first of equal times, in their order)."""
        best: tuple[int, str] | None = None
        for e in eids:
            for ts, ips in self.accepts.get(e, ()):
                cand = np.where(ts <= before, ts, np.iinfo(np.int64).min)
                j = int(np.argmax(cand))
                if ts[j] <= before and (best is None or int(ts[j]) > best[0]):
                    best = (int(ts[j]), ips[j].as_py())
        return best[1] if best else None


def _may_be_sshd(ctx: ProcessContext, eid: int) -> bool:
    images = ctx.images.get(eid)
    return not images or any(_base(img[1]) in SSHD for img in images)


def _session(ctx: ProcessContext, sess: SessionContext, eid: int, ts: int) -> dict[str, Any]:
    """The entry leader of ``eid`` (as ``analysis.sessions`` decides it, from lineage)."""
    cur, seen = eid, set[int]()
    while cur not in seen and len(seen) < 256:
        seen.add(cur)
        images = ctx.images.get(cur) or []
        if any(_base(img[1]) in LOGIN for img in images):
            return {"entry_entity_id": cur, "entry_kind": "console"}
        par = ctx.parent.get(cur)
        pimg = ctx.image_at(par, ts) if par else None
        if par is None or pimg is None:
            return {"entry_entity_id": cur, "entry_kind": "unknown"}
        pb = _base(pimg[1])
        if pb in SSHD:
            chain: list[int] = []
            up: int | None = par
            while up and _base((ctx.image_at(up, ts) or (0, ""))[1]) in SSHD and up not in chain:
                chain.append(up)
                up = ctx.parent.get(up)
            start = images[0][0] if images else ts
            return {"entry_entity_id": cur, "entry_kind": "sshd", "entry_source_ip": sess.source_ip(chain, start)}
        if pb in CRON:
            return {"entry_entity_id": cur, "entry_kind": "cron"}
        if pb in INIT and par not in ctx.parent:
            return {"entry_entity_id": cur, "entry_kind": "daemon"}
        cur = par
    return {"entry_entity_id": cur, "entry_kind": "unknown"}


def add_evidence(rows: list[dict[str, Any]], ctx: ProcessContext, sess: SessionContext) -> None:
    """Fill each alert row (in place) with the acting process's executable and command
    line, its parent's, and its session, from the process context as of the alert's time
    (the object and the user come with the matching event: ``alerts.build_alerts``)."""
    for r in rows:
        eid, ts = r.get("process_entity_id"), r["ts"]
        if not eid:
            continue
        img = ctx.image_at(eid, ts)
        if img is not None:
            r["process_executable"] = r.get("process_executable") or img[1]
            r["process_command_line"] = r.get("process_command_line") or img[2]
        par = ctx.parent.get(eid)
        pimg = ctx.image_at(par, ts) if par else None
        if pimg is not None:
            r["parent_executable"], r["parent_command_line"] = pimg[1], pimg[2]
        r.update(_session(ctx, sess, eid, ts))


# Columns that name an event's object: a rule testing none of them judges the process
# (an auditd rule on ``exe``, a process_creation rule), and all its matches on one
# process are one finding, whatever files the process touched.
OBJECT_COLUMNS = frozenset({
    "file_path", "file_path_raw", "file_target_path", "file_target_path_raw", "fx_target_filename",
    "destination_ip", "destination_port", "source_ip", "source_port", "target_pid", "target_entity_id",
    "unix_path",
})


def object_free(rules: Iterable[CompiledRule]) -> frozenset[str]:
    """Ids of the rules whose detection names no object (grouped by process alone)."""
    return frozenset(r.rule_id for r in rules if not columns_of(r.body) & OBJECT_COLUMNS)


def _key(r: dict[str, Any], object_free: frozenset[str]) -> tuple[Any, ...]:
    proc = r.get("process_entity_id") or r.get("process_pid")
    head = (r["rule_id"], r.get("host_id"), r.get("boot_id"), proc)
    if r["rule_id"] in object_free:
        return head
    return (*head, r.get("object_kind"), group_object(r.get("object_name")))


class Grouper:
    """Groups alert rows of one match each into one per finding.

    ``add`` returns the rows that open a group (new alerts, to emit now); a later match of
    an open group only counts. ``expire`` and ``close`` return the groups that ended
    with more than one match, with their final count and last time: the same alert id,
    emitted again for the store (which keeps the row with the highest count)."""

    def __init__(self, window_ns: int = GROUP_WINDOW_NS, max_open: int = 100_000,
                 object_free: frozenset[str] = frozenset()) -> None:
        self.window_ns = window_ns
        self.object_free = object_free
        self.max_open = max_open
        self.open: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.latest = 0
        # no open group started before this: ``expire`` (every batch) returns at once while
        # the oldest is inside its window instead of walking thousands of open findings
        self._oldest: int | None = None

    def add(self, rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        new: list[dict[str, Any]] = []
        ended: list[dict[str, Any]] = []
        for r in sorted(rows, key=lambda r: (r["ts"], r["event_keys"][0] if r.get("event_keys") else "")):
            self.latest = max(self.latest, r["ts"])
            k = _key(r, self.object_free)
            g = self.open.get(k)
            if g is not None and r["ts"] - g["ts"] <= self.window_ns:
                g["alert_count"] += r.get("alert_count") or 1  # a kernel summary row: its repeats
                g["last_ts"] = max(g["last_ts"], r["ts"])
                continue
            if g is not None:
                ended.extend(self._end(k))
            g = dict(r)  # the match as built (a kernel summary row counts its repeats), not mutated
            g["alert_count"], g["last_ts"] = r.get("alert_count") or 1, r["ts"]
            self.open[k] = g
            self._oldest = r["ts"] if self._oldest is None else min(self._oldest, r["ts"])
            new.append(dict(g))
        while len(self.open) > self.max_open:
            ended.extend(self._end(next(iter(self.open))))
        return new, ended

    def _end(self, k: tuple[Any, ...]) -> list[dict[str, Any]]:
        g = self.open.pop(k)
        return [g] if g["alert_count"] > 1 else []

    def expire(self, now_ts: int | None = None) -> list[dict[str, Any]]:
        """Groups whose window has passed (by the latest event time seen)."""
        now = self.latest if now_ts is None else now_ts
        out: list[dict[str, Any]] = []
        if self._oldest is None or now - self._oldest <= self.window_ns:
            return out
        for k in [k for k, g in self.open.items() if now - g["ts"] > self.window_ns]:
            out.extend(self._end(k))
        self._oldest = min((g["ts"] for g in self.open.values()), default=None)
        return out

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for k in list(self.open):
            out.extend(self._end(k))
        return out


def group_alerts(rows: list[dict[str, Any]], window_ns: int = GROUP_WINDOW_NS,
                 object_free: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """All matches at once (the hunt): one row per finding, with its final count."""
    g = Grouper(window_ns, max_open=1 << 62, object_free=object_free)
    new, ended = g.add(rows)
    final = {(r["rule_id"], r["alert_id"]): r for r in new}
    for r in ended + g.close():
        final[(r["rule_id"], r["alert_id"])] = r
    return sorted(final.values(), key=lambda r: (r["ts"], r["rule_id"]))
