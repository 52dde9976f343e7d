"""Overview, alerts, live updates and search: the views that look across the whole store.

Each view is a function ``(ctx, params, **path) -> dict``, the JSON twin of its page.
"""

from __future__ import annotations

import re
from typing import Any

from forensix.analysis.filehistory import sql_strings
from forensix.model.identity import format_entity
from forensix.web.context import Context, at_once
from forensix.web.jsonrows import jsonable, rows
from forensix.web.params import PAGE, ApiError, Param

__all__ = ["ALERTS", "LIVE", "OVERVIEW", "SEARCH", "alerts", "histogram", "live", "overview", "search"]

BUCKETS = 120
LEVELS = ("informational", "low", "medium", "high", "critical")


def histogram(ctx: Context, where: str, params: dict[str, Any], t0: int | None, t1: int | None,
              buckets: int = BUCKETS) -> dict[str, Any]:
    """Events per time bucket between t0 and t1 (the whole record when not given), for a chart."""
    if t0 is None or t1 is None:
        r = ctx.query(f"SELECT min(ts) AS a, max(ts) AS b FROM events WHERE {where}", params).to_pylist()[0]
        t0 = r["a"] if t0 is None else t0
        t1 = r["b"] if t1 is None else t1
    if t0 is None or t1 is None:
        return {"from": None, "to": None, "from_ns": None, "bucket_ns": None, "bucket_ms": 0, "t_ms": [], "count": []}
    width = max(1, (t1 - t0) // buckets + 1)
    t = ctx.query(
        f"""SELECT ((ts - $t0) // $w)::BIGINT AS b, count(*) AS n FROM events
            WHERE {where} AND ts >= $t0 AND ts <= $t1 GROUP BY 1 ORDER BY 1""",
        params | {"t0": t0, "t1": t1, "w": width})
    counts = [0] * buckets
    for b, n in zip(t.column("b").to_pylist(), t.column("n").to_pylist()):
        if 0 <= b < buckets:
            counts[b] = n
    # from_ns and bucket_ns exact (as text: a JSON number past 2**53 is rounded), for a
    # brush to select whole buckets to the nanosecond: the ms of t_ms round events away
    return {"from": jsonable("ts", t0), "to": jsonable("ts", t1), "from_ns": str(t0), "bucket_ns": str(width),
            "bucket_ms": width / 1e6,
            "t_ms": [(t0 + i * width) / 1e6 for i in range(buckets)], "count": counts}


# -- overview --------------------------------------------------------------------------
OVERVIEW: tuple[Param, ...] = ()


def overview(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    q = ctx.query
    got = at_once(  # each a scan of its own: side by side
        hosts=lambda: q("""SELECT host_id, any_value(host_name) AS host_name, any_value(kernel) AS kernel,
                                  min(first_seen) AS first_seen, any_value(agent_version) AS agent_version,
                                  count(DISTINCT boot_id) AS boots
                           FROM hosts GROUP BY host_id ORDER BY host_name"""),
        per_host=lambda: q("""SELECT host_id, any_value(host_name) AS host_name, min(ts) AS first_ts,
                                     max(ts) AS last_ts, count(*) AS events
                              FROM events GROUP BY host_id ORDER BY host_name"""),
        gaps=lambda: q("""SELECT host_name, ts_from, ts_to, cpu, event_class, count, reason FROM gaps
                          ORDER BY ts_from LIMIT 500"""),
        ngaps=lambda: q("SELECT count(*) AS n, coalesce(sum(count), 0)::BIGINT AS lost FROM gaps").to_pylist()[0],
        by_rule=lambda: q("""SELECT rule_id, any_value(rule_title) AS rule_title, any_value(rule_level) AS rule_level,
                                    count(*) AS alerts, max(ts) AS last_ts
                             FROM alerts GROUP BY rule_id ORDER BY alerts DESC, rule_id LIMIT 200"""),
        counts=lambda: q("SELECT (SELECT count(*) FROM processes WHERE image_seq = 0) AS processes, "
                         "(SELECT count(*) FROM alerts) AS alerts").to_pylist()[0],
        coverage=lambda: histogram(ctx, "TRUE", {}, None, None))
    gaps = got["gaps"]
    gap_rows = rows(gaps)
    for g, raw in zip(gap_rows, gaps.to_pylist()):  # for the chart: where on the time axis
        g["from_ms"], g["to_ms"] = raw["ts_from"] / 1e6, raw["ts_to"] / 1e6
    return {"store": ctx.store, "hosts": rows(got["hosts"]), "recorded": rows(got["per_host"]),
            "coverage": got["coverage"], "gaps": gap_rows, "gaps_total": got["ngaps"]["n"],
            "events_lost": got["ngaps"]["lost"], "alerts_by_rule": rows(got["by_rule"]),
            "events": sum(r["events"] for r in got["per_host"].to_pylist()), **got["counts"]}


# -- alerts ----------------------------------------------------------------------------
ALERTS = (Param("level", "choice", choices=LEVELS, many=True),
          Param("rule", "text", many=True, help="a rule id"),
          Param("host", "text", help="a host name or id"),
          Param("from", "time", help="ISO 8601 UTC, epoch, or -5m"),
          Param("to", "time", help="ISO 8601 UTC, epoch, or -5m")) + PAGE


_ALERT_COLUMNS = ("alert_id", "ts", "last_ts", "detected_ts", "host_name", "rule_id", "rule_title", "rule_level",
                  "tags", "process_entity_id", "process_pid", "summary", "source", "alert_count", "object_kind",
                  "object_name", "process_command_line", "user_name", "entry_kind", "entry_source_ip")


def alerts(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    conds: list[str] = ["TRUE"]
    params: dict[str, Any] = {}
    if p["level"]:
        conds.append(f"rule_level IN ({sql_strings(p['level'])})")
    if p["rule"]:
        conds.append(f"rule_id IN ({sql_strings(p['rule'])})")
    if p["host"]:
        conds.append("(host_name = $host OR host_id = $host)")
        params["host"] = p["host"]
    if p["from"] is not None:
        conds.append("ts >= $from")
        params["from"] = p["from"]
    if p["to"] is not None:
        conds.append("ts <= $to")
        params["to"] = p["to"]
    where = " AND ".join(conds)
    # every column: stores from format /10 on carry each alert's evidence (count, object,
    # command line, user, entry point); older ones do not, and the page shows what there is
    t = ctx.query(f"""SELECT * FROM alerts WHERE {where} ORDER BY ts DESC, alert_id
                      LIMIT {p['limit']} OFFSET {p['offset']}""", params)
    t = t.select([c for c in _ALERT_COLUMNS if c in t.column_names])
    total = ctx.query(f"SELECT count(*) AS n FROM alerts WHERE {where}", params).to_pylist()[0]["n"]
    rules = ctx.query("SELECT DISTINCT rule_id FROM alerts ORDER BY 1 LIMIT 500").column("rule_id").to_pylist()
    return {"alerts": rows(t), "total": total, "limit": p["limit"], "offset": p["offset"],
            "rules": rules, "levels": list(LEVELS)}


# -- live ------------------------------------------------------------------------------
LIVE = (Param("events", "int", None, 0, help="the events count of the previous answer"),
        Param("alerts", "int", None, 0, help="the alerts count of the previous answer"))


def live(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """What arrived since the previous poll (the store only grows: counts are the cursor),
    so the page redraws its data when anything did."""
    ev = ctx.query("SELECT max(ts) AS t, count(*) AS n FROM events").to_pylist()[0]
    nal = ctx.query("SELECT count(*) AS n FROM alerts").to_pylist()[0]["n"]
    new_alerts = max(0, nal - p["alerts"]) if p["alerts"] is not None else 0
    out: dict[str, Any] = {"latest": jsonable("ts", ev["t"]), "events": ev["n"], "alerts": nal,
                           "new_events": max(0, ev["n"] - p["events"]) if p["events"] is not None else 0,
                           "new_alerts": []}
    if new_alerts:
        out["new_alerts"] = rows(ctx.query(
            f"""SELECT alert_id, ts, rule_id, rule_title, rule_level, summary FROM alerts
                ORDER BY coalesce(detected_ts, ts) DESC LIMIT {min(new_alerts, 20)}"""))
    return out


# -- search ----------------------------------------------------------------------------
SEARCH = (Param("q", "text", help="a path, pid, entity id, command substring, IP address or hash"),)
_HEX16 = re.compile(r"^(0x)?[0-9a-fA-F]{16}$")
_HASH = re.compile(r"^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")
_IP = re.compile(r"^[0-9a-fA-F:.]+$")
_HITS = 50


def search(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    q = (p["q"] or "").strip()
    if not q:
        return {"q": "", "kinds": [], "results": []}
    if len(q) < 2:
        raise ApiError("a search needs at least 2 characters", "type more of the path, command or address")
    results: list[dict[str, Any]] = []
    kinds: list[str] = []
    if _HEX16.match(q):
        kinds.append("entity")
        results += _procs(ctx, "entity_id = $v", {"v": int(q.removeprefix("0x"), 16)}, "entity id")
    if q.isdigit() and int(q) < 1 << 32:
        kinds.append("pid")
        results += _procs(ctx, "pid = $v", {"v": int(q)}, "pid")
    if _IP.match(q) and ("." in q or ":" in q):
        import ipaddress

        try:
            ip = str(ipaddress.ip_address(q))
        except ValueError:
            ip = ""
        if ip:
            kinds.append("ip")
            results += _ips(ctx, ip)
    if _HASH.match(q):
        kinds.append("hash")
        results += _hashes(ctx, q.lower())
    if q.startswith("/"):
        kinds.append("path")
        results += _paths(ctx, q)
    if not q.startswith("/") or " " in q:
        kinds.append("command")
        results += _commands(ctx, q)
    return {"q": q, "kinds": kinds, "results": results[:200]}


def _procs(ctx: Context, cond: str, params: dict[str, Any], why: str) -> list[dict[str, Any]]:
    t = ctx.query(f"""SELECT entity_id, arg_min(pid, image_seq) AS pid, min(start_ts) AS start_ts,
                             arg_max(executable, image_seq) AS executable, arg_max(args, image_seq) AS args
                      FROM processes WHERE {cond} GROUP BY entity_id ORDER BY start_ts LIMIT {_HITS}""", params)
    return [{"kind": "process", "match": why, "url": f"/process/{format_entity(r['entity_id'])}",
             "label": f"{(r['executable'] or '?')} [{r['pid']}]",
             "detail": " ".join(r["args"] or []), "ts": jsonable("ts", r["start_ts"])} for r in t.to_pylist()]


def _commands(ctx: Context, q: str) -> list[dict[str, Any]]:
    return _procs(ctx, "image_seq > 0 AND contains(array_to_string(args, ' '), $v)", {"v": q}, "command")


def _paths(ctx: Context, q: str) -> list[dict[str, Any]]:
    t = ctx.query(f"""SELECT file_path, count(*) AS n, min(ts) AS first_ts FROM events
                      WHERE starts_with(file_path, $v) GROUP BY 1 ORDER BY 1 LIMIT {_HITS}""", {"v": q})
    from urllib.parse import quote

    return [{"kind": "file", "match": "path", "url": f"/file?path={quote(r['file_path'])}",
             "label": r["file_path"], "detail": f"{r['n']} events", "ts": jsonable("ts", r["first_ts"])}
            for r in t.to_pylist()]


def _ips(ctx: Context, ip: str) -> list[dict[str, Any]]:
    t = ctx.query(f"""SELECT process_entity_id, any_value(process_name) AS comm, event_action,
                             destination_ip, destination_port, source_ip, source_port, min(ts) AS first_ts,
                             count(*) AS n
                      FROM events WHERE event_category = 'network' AND (destination_ip = $ip OR source_ip = $ip)
                      GROUP BY ALL ORDER BY first_ts LIMIT {_HITS}""", {"ip": ip})
    return [{"kind": "connection", "match": "ip", "url": f"/process/{format_entity(r['process_entity_id'])}",
             "label": f"{r['comm']}: {r['event_action']} {r['source_ip']}:{r['source_port']} -> "
                      f"{r['destination_ip']}:{r['destination_port']}",
             "detail": f"{r['n']} times", "ts": jsonable("ts", r["first_ts"])}
            for r in t.to_pylist() if r["process_entity_id"] is not None]


def _hashes(ctx: Context, h: str) -> list[dict[str, Any]]:
    """Executables by content hash, where the store records one (an artifact store's
    column); a store without hashes says so rather than finding nothing silently."""
    cols = {r["column_name"] for r in ctx.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'events_base'").to_pylist()}
    col = next((c for c in ("file_hash_sha256", "process_hash_sha256", "file_sha256") if c in cols), None)
    if col is None:
        return [{"kind": "note", "match": "hash", "url": None, "label": "this store records no file hashes",
                 "detail": "", "ts": None}]
    return _procs(ctx, f"entity_id IN (SELECT process_entity_id FROM events WHERE lower({col}) = $v)",
                  {"v": h}, "hash")
