"""The process tree and the timeline, as people and Timesketch read them."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from forensix.model.identity import format_entity
from forensix.model.timefmt import format_ns
from forensix.render.tables import iter_dicts

__all__ = ["render_tree_text", "render_timesketch", "render_timeline_text"]


def _user(r: dict[str, Any]) -> str:
    uid = r.get("user_id")
    name = r.get("user_name")
    return f"{name}({uid})" if name else str(uid if uid is not None else "?")


def render_tree_text(table: pa.Table, out: Any) -> None:
    """One line per process, indented under its parent."""
    out.write(f"{'START (UTC)':<26}  {'END':<26}  {'ENTITY':<16}  {'PID':>7}  {'USER':<14}  PROCESS\n")
    for r in iter_dicts(table):
        end = format_ns(r["end_ts"]) if r.get("end_ts") else "-"
        if r.get("exit_code") not in (None, 0):
            end += f" ({r['exit_code']})"
        args = " ".join(r.get("args") or [])
        exe = r.get("executable") or "?"
        shown = args if args and args.split(" ", 1)[0].endswith(exe.rsplit("/", 1)[-1]) else f"{exe} {args}".strip()
        indent = "  " * int(r.get("depth") or 0)
        out.write(f"{format_ns(r['start_ts']):<26}  {end:<26}  {format_entity(r['entity_id'])}  "
                  f"{r['pid']:>7}  {_user(r):<14}  {indent}{shown[:200]}\n")


def render_timeline_text(table: pa.Table, out: Any) -> None:
    for r in iter_dicts(table):
        who = f"{r.get('process_name') or '?'}[{r.get('process_pid') or '?'}]"
        ent = format_entity(r["process_entity_id"]) if r.get("process_entity_id") else "-" * 16
        out.write(f"{format_ns(r['ts'])}  {ent}  {who:<22} uid {r.get('user_id')!s:<6} "
                  f"{r.get('event_action') or '':<9} {r.get('message') or ''}\n")


def render_timesketch(table: pa.Table, out: Any) -> None:
    """Timesketch JSONL: message, datetime, timestamp (µs), timestamp_desc, then fields."""
    for r in iter_dicts(table):
        ts = int(r["ts"])
        doc: dict[str, Any] = {
            "message": r.get("message") or r.get("event_action") or "",
            "datetime": format_ns(ts),
            "timestamp": ts // 1000,
            "timestamp_desc": f"{r.get('event_category') or 'event'} {r.get('event_action') or ''}".strip(),
            "data_type": f"forensix:{r.get('event_category') or 'event'}:{r.get('event_action') or ''}",
        }
        for k, v in r.items():
            if k in ("ts", "message") or v is None:
                continue
            doc[k] = format_entity(v) if k.endswith("entity_id") else v
        out.write(json.dumps(doc, default=str) + "\n")
