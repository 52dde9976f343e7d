"""Timeline (with the histogram its time brush draws on), file history, incident and graph."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa

from forensix.analysis.filehistory import file_history
from forensix.analysis.noise import FILTER_NAMES
from forensix.analysis.sessions import find_session
from forensix.analysis.timeline import TimelineFilter, selection_sql, timeline
from forensix.errors import UsageError
from forensix.web.context import Context
from forensix.web.jsonrows import rows
from forensix.web.params import PAGE, ApiError, NotFound, Param
from forensix.web.views_overview import histogram

__all__ = ["FILE", "TIMELINE", "file_view", "timeline_view"]

CATEGORIES = ("process", "file", "network", "memory", "flow", "iam", "agent", "driver", "host")

# -- timeline --------------------------------------------------------------------------
TIMELINE = (Param("from", "time", help="ISO 8601 UTC, epoch, or -5m"),
            Param("to", "time", help="ISO 8601 UTC, epoch, or -5m"),
            Param("entity", "entity", help="an entity id (16 hex digits)"),
            Param("pid", "int", None, 0, 1 << 32), Param("session", "text"),
            Param("category", "choice", choices=CATEGORIES, many=True),
            Param("action", "text", many=True), Param("path", "text"), Param("ip", "ip"),
            Param("quiet", "flag", False), Param("after", "text", help="the cursor of the previous page"),
            Param("limit", "int", 200, 1, 1000, help="rows per page, 1 to 1000"),
            Param("part", "choice", "all", choices=("all", "rows", "histogram"),
                  help="rows: the page only; histogram: the chart only (the page asks for each)"))


def _cursor(text: str | None) -> tuple[int | None, int]:
    if not text:
        return None, 0
    ts, _, skip = text.partition(":")
    if not ts.isdigit() or not skip.isdigit() or len(ts) > 20 or int(skip) > 100_000:
        raise ApiError(f"parameter after={text[:40]!r} is not a cursor", "use the next value of the previous page")
    return int(ts), int(skip)


def _filter(ctx: Context, p: dict[str, Any]) -> TimelineFilter:
    ents = [p["entity"]] if p["entity"] is not None else None
    if p["session"]:
        try:
            leader, att = find_session(ctx.reader, p["session"], ctx.attribution())
        except UsageError as e:
            raise NotFound(e.message, e.hint) from None
        ents = att.members(leader)
    if p["from"] is not None and p["to"] is not None and p["from"] > p["to"]:
        raise ApiError("from is after to", "swap them")
    return TimelineFilter(since=p["from"], until=p["to"], entities=ents, pid=p["pid"],
                          categories=p["category"] or None, actions=p["action"] or None, path=p["path"],
                          ip=p["ip"], noise=FILTER_NAMES if p["quiet"] else ())


def _hist_where(f: TimelineFilter) -> tuple[str, dict[str, Any]]:
    """The histogram's filter: the timeline's, without the noise filters (a count, not rows)."""
    return selection_sql(f)


def _bounded(ctx: Context, f: TimelineFilter) -> pa.Table:
    """``timeline`` for one page, fast on a large store.

    The analysis materialises every column of the rows it keeps before its LIMIT; on a wide
    window of millions of events that is most of the time. The time of the page's last
    row comes from a narrow scan of ``ts`` first, and the analysis then runs on the window
    up to it. With the noise filters on, rows drop out after that bound, so a short page
    is asked again with a wider bound before the analysis runs unbounded."""
    if f.entities is not None or f.pid is not None:
        return timeline(ctx.reader, f)  # a few processes' rows: selective already, no bound needed
    where, params = _hist_where(f)
    limit = f.limit or 200
    if f.since is not None:
        where += " AND ts >= $since"
        params["since"] = f.since
    if f.until is not None:
        where += " AND ts <= $until"
        params["until"] = f.until
    for widen in (1, 8, 64):
        bound = ctx.query(f"SELECT ts FROM events WHERE {where} ORDER BY ts LIMIT 1 OFFSET {limit * widen - 1}",
                          params)
        if not bound.num_rows:
            break  # fewer rows than that in the window: the window itself bounds it
        until = int(bound.column("ts")[0].as_py())
        t = timeline(ctx.reader, replace(f, until=until if f.until is None else min(until, f.until)))
        if t.num_rows >= limit:
            return t
    return timeline(ctx.reader, f)


def timeline_view(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    f = _filter(ctx, p)
    out: dict[str, Any] = {"limit": p["limit"], "categories": list(CATEGORIES), "histogram": None}
    if p["part"] in ("all", "histogram") and p["after"] is None:
        where, params = _hist_where(f)
        out["histogram"] = histogram(ctx, where, params, p["from"], p["to"])
    if p["part"] == "histogram":
        return out
    cur_ts, skip = _cursor(p["after"])
    if cur_ts is not None:
        f.since = max(cur_ts, f.since or 0)
    f.limit = p["limit"] + skip
    t = _bounded(ctx, f)
    page = t.slice(skip)
    nxt = None
    if page.num_rows == p["limit"]:  # maybe more: the cursor is the last time and how many rows had it
        last = t.column("ts")[t.num_rows - 1].as_py()
        same = sum(1 for x in t.column("ts").to_pylist() if x == last)
        nxt = f"{last}:{same}"
    return out | {"events": rows(page), "next": nxt}


# -- file history ----------------------------------------------------------------------
FILE = (Param("path", "text", help="an absolute path"),) + PAGE


def file_view(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    path = p["path"]
    if not path:
        return {"path": None, "history": [], "total": 0, "limit": p["limit"], "offset": p["offset"]}
    if not path.startswith("/"):
        raise ApiError(f"{path[:80]!r} is not an absolute path", "give the path as the kernel saw it: /etc/...")
    try:
        t = file_history(ctx.reader, path)
    except UsageError as e:
        raise NotFound(e.message, e.hint) from None
    return {"path": path, "history": rows(t.slice(p["offset"], p["limit"])), "total": t.num_rows,
            "limit": p["limit"], "offset": p["offset"]}
