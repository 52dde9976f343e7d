"""The process tree and the timeline, as people and Timesketch read them."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from forensix.model.identity import format_entity
from forensix.model.timefmt import format_ns
from forensix.render.tables import iter_dicts

__all__ = ["render_timeline_text", "render_timesketch", "render_tree_text"]


def _user(r: dict[str, Any]) -> str:
    uid = r.get("user_id")
    name = r.get("user_name")
    return f"{name}({uid})" if name else str(uid if uid is not None else "?")


def iso_column(values: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """UTC ISO 8601 with microseconds for a whole int64 ns column at once."""
    import numpy as np

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    ns = arr.fill_null(0).to_numpy(zero_copy_only=False).astype("datetime64[ns]").astype("datetime64[us]")
    text = np.char.add(np.datetime_as_string(ns, unit="us"), "Z")
    return [t if ok else None for t, ok in zip(text.tolist(), valid.tolist())]


def render_tree_text(table: pa.Table, out: Any) -> None:
    """One line per process, indented under its parent."""
    out.write(f"{'START (UTC)':<27}  {'END':<27}  {'ENTITY':<16}  {'PID':>7}  {'USER':<14}  PROCESS\n")
    if table.num_rows == 0:
        return
    cols = {c: table.column(c).to_pylist() for c in
            ("depth", "entity_id", "pid", "user_id", "exit_code", "executable", "args")}
    names = table.column("user_name").to_pylist() if "user_name" in table.column_names else [None] * table.num_rows
    starts = iso_column(table.column("start_ts"))
    ends = iso_column(table.column("end_ts"))
    lines = []
    for i in range(table.num_rows):
        end = ends[i] or "-"
        code = cols["exit_code"][i]
        if code not in (None, 0):
            end += f" ({code})"
        args = " ".join(cols["args"][i] or [])
        exe = cols["executable"][i] or "?"
        first = args.split(" ", 1)[0]
        shown = args if args and first.endswith(exe.rsplit("/", 1)[-1]) else f"{exe} {args}".strip()
        uid = cols["user_id"][i]
        user = f"{names[i]}({uid})" if names[i] else str(uid if uid is not None else "?")
        lines.append(f"{starts[i]:<27}  {end:<27}  {cols['entity_id'][i]:016x}  {cols['pid'][i]:>7}  "
                     f"{user:<14}  {'  ' * int(cols['depth'][i] or 0)}{shown[:200]}\n")
    out.write("".join(lines))


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
