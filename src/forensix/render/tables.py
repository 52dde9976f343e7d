"""Renderers: an Arrow table of analysis output becomes text, JSON lines or CSV.

Analyses return tables with store column names; renderers give them ECS names in JSON,
UTC ISO times everywhere, and entity ids in hex. Nothing here decides *what* to show.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from forensix.model.identity import format_entity
from forensix.model.timefmt import format_ns
from forensix.render.printable import printable
from forensix.store.schema import ecs_name

__all__ = ["ANALYSIS_ONLY", "DERIVED", "RENDERERS", "display_value", "field_name", "is_entity_column",
           "is_time_column", "render"]

# One vocabulary in every JSON output: an analysis column that is a store column under
# another name (the processes table says ``entity_id`` where events say
# ``process_entity_id``) takes the events column's ECS name, so one jq filter or one Sigma
# field works on ``events``, ``ps``, ``tree``, ``sessions``, ``file``, ``timeline`` and ``alerts``.
_ALIASES: dict[str, str] = {
    "entity_id": "process_entity_id", "pid": "process_pid", "ppid": "process_parent_pid",
    "parent_pid": "process_parent_pid", "uid": "user_id", "name": "process_name",
    "executable": "process_executable", "args": "process_args", "working_directory": "process_working_directory",
    "exit_code": "process_exit_code", "exit_signal": "process_exit_signal", "session_id": "process_session_id",
    "audit_session_id": "process_session_id", "cgroup_id": "process_cgroup_id",
    "peer_ip": "destination_ip", "peer_port": "destination_port",
}
# Analysis fields the store has no column for, by their ECS names where ECS has the field.
DERIVED: dict[str, str] = {
    "start_ts": "process.start", "end_ts": "process.end", "first_ts": "event.start", "last_ts": "event.end",
    "detected_ts": "event.created", "entity_ids": "related.entity_id", "tty": "process.tty",
    "leader_entity_id": "process.entry_leader.entity_id", "leader_pid": "process.entry_leader.pid",
    "user_name": "user.name", "file_generation": "file.generation", "parent_entity_id": "process.parent.entity_id",
    "login_user": "process.entry_leader.user.name",  # the account sshd's log says logged in (imports.logins)
    # where user.name came from: the host's recorded user database, or why not (analysis.users)
    "user_name_source": "user.name_source",
}
# Analysis-only fields with no ECS counterpart (named as they are).
ANALYSIS_ONLY: frozenset[str] = frozenset({
    "depth", "kind", "description", "processes", "transitions", "what", "actions", "bytes_written", "pids",
    "connections", "report", "action", "ended_by", "ended_pid", "life", "lives", "node", "held_from", "held_until",
    "recording",  # the session has terminal bytes to replay (forensix replay)
    "login_method", "key_fingerprint",  # how sshd's log says the login was made (publickey, password; key)
    # graph nodes and edges
    "label", "time", "src", "dst", "src_label", "dst_label", "bytes", "count", "name_matched",
    "src_image", "dst_image",  # the image a process end ran at the edge's time (analysis.images)
})


def field_name(column: str) -> str:
    """The ECS name a column of analysis output takes in JSON and CSV."""
    if column in DERIVED:
        return DERIVED[column]
    if column in ANALYSIS_ONLY:
        return column
    return ecs_name(_ALIASES.get(column, column))


def is_time_column(name: str) -> bool:
    return name == "ts" or name.endswith("_ts") or name in {"ts_from", "ts_to", "first_seen", "time"}


def is_entity_column(name: str) -> bool:
    return name.endswith("entity_id") or name == "entity_ids"


def display_value(name: str, value: Any) -> Any:
    """A value as a person reads it: times in UTC, entity ids in hex."""
    if value is None:
        return None
    if is_time_column(name) and isinstance(value, int):
        return format_ns(value)
    if is_entity_column(name):
        if isinstance(value, list):
            return [format_entity(v) for v in value]
        if isinstance(value, int):
            return format_entity(value)
    return value


def _rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    for batch in table.to_batches():
        yield from batch.to_pylist()


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """ECS JSON: ``{"process.pid": 1}`` as dotted keys, the form ECS documents use."""
    return flat


def render_json(table: pa.Table, out: io.TextIOBase | Any) -> None:
    for row in _rows(table):
        obj = {field_name(k): display_value(k, v) for k, v in row.items() if v is not None}
        out.write(json.dumps(_nest(obj), default=str) + "\n")


def render_csv(table: pa.Table, out: io.TextIOBase | Any) -> None:
    w = csv.writer(out)
    w.writerow([field_name(c) for c in table.column_names])
    for row in _rows(table):
        w.writerow(_csv_cell(k, v) for k, v in row.items())


def _csv_cell(name: str, value: Any) -> Any:
    v = display_value(name, value)
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return "" if v is None else v


def _text_cell(name: str, value: Any, width: int = 60) -> str:
    v = display_value(name, value)
    if v is None:
        return ""
    if isinstance(v, list):
        v = " ".join(str(x) for x in v)
    s = printable(str(v))
    return s if len(s) <= width else s[: width - 1] + "…"


def render_text(table: pa.Table, out: io.TextIOBase | Any) -> None:
    # A column with nothing in it says nothing to a reader: leave it out of the text view.
    if table.num_rows:
        table = table.select([c for c in table.column_names if table[c].null_count < table.num_rows])
    cols = table.column_names
    rows = [[_text_cell(c, v) for c, v in r.items()] for r in _rows(table)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")


RENDERERS: dict[str, Callable[[pa.Table, Any], None]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
}


def render(table: pa.Table, fmt: str, out: Any) -> None:
    try:
        fn = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(RENDERERS)}") from None
    fn(table, out)


def iter_dicts(table: pa.Table) -> Iterable[dict[str, Any]]:
    return _rows(table)
