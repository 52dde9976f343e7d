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
from forensix.store.schema import ecs_name

__all__ = ["RENDERERS", "display_value", "is_entity_column", "is_time_column", "render"]


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
        obj = {ecs_name(k): display_value(k, v) for k, v in row.items() if v is not None}
        out.write(json.dumps(_nest(obj), default=str) + "\n")


def render_csv(table: pa.Table, out: io.TextIOBase | Any) -> None:
    w = csv.writer(out)
    w.writerow([ecs_name(c) for c in table.column_names])
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
    s = str(v)
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
