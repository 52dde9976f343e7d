"""A crossed-into host's slice bounded in time, and the rows outside the bound a query still needs.

A walk without --host that crosses a connection into another host needs, going backward,
only what happened there before the crossing (forward: after it), plus whatever its later
queries ask of that host by key: a file's writers at any time (the system-file filter), a
socket's connect by inode, a name's history, a process's later events. The reader pulls the
host's events and flows inside the window only (``Window``), and before each query tops
them up with the rows outside it that the query's scans can reach: DuckDB plans the query
(``needs.scan_filters``), each scan of a windowed table names the filters pushed into it,
and those filters, written as ClickHouse SQL here, select the outside rows to pull. A filter
pushed into a scan is implied by the query (the optimizer only moves what the query says),
so a row outside the window that fails it cannot change the answer: the answer is the one
over the whole host. A conjunct that cannot be written here is left out (more rows, never
fewer); a scan none of whose filters can be written takes the rest of the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from forensix.store import schema
from forensix.store.clickhouse.connection import literal
from forensix.store.clickhouse.ddl import KEYS

__all__ = ["KEY_COLUMNS", "Keys", "Window", "keys_sql", "scan_keys", "time_column"]


@dataclass(frozen=True)
class Window:
    """The times of a host's rows kept in bulk: ``lo`` <= time <= ``hi`` (None: unbounded)."""

    lo: int | None = None
    hi: int | None = None

    def sql(self, table: str) -> str:
        t = time_column(table)
        conds = [f"{t} >= {int(self.lo)}"] if self.lo is not None else []
        conds += [f"{t} <= {int(self.hi)}"] if self.hi is not None else []
        return " AND ".join(conds) or "1"

    def outside_sql(self, table: str) -> str:
        """The rows not in the window, as ranges of the sort key's time (a NOT around the
        window would not narrow the read)."""
        t = time_column(table)
        conds = [f"{t} < {int(self.lo)}"] if self.lo is not None else []
        conds += [f"{t} > {int(self.hi)}"] if self.hi is not None else []
        return "(" + (" OR ".join(conds) or "0") + ")"


def time_column(table: str) -> str:
    """The table's time column as its sort key names it (a wrapped column would not narrow
    the read by the key)."""
    name = KEYS[table].time
    return f"ifNull({name}, 0)" if schema.TABLES[table].field(name).nullable else name


_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<op>>=|<=|!=|<>|=|<|>|\(|\)|,)"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")

# the columns a top-up selects outside rows by: what a walk's queries name a thing by (a
# process, a file, a name, a connection's ports); a filter on anything else (an action, a
# category) would select most of the host
KEY_COLUMNS = {
    "events": ("process_entity_id", "target_entity_id", "file_inode", "file_target_inode", "file_path",
               "file_target_path", "source_port", "destination_port"),
    "flows": ("entity_id", "file_inode", "file_path"),
}
CATEGORY_COLUMNS = {"events": ("event_category",)}
_RANGE = 1024  # a range DuckDB made of consecutive numbers of an IN list: taken as the list up to this many

Keys = dict[str, frozenset[str]]  # column -> values (ClickHouse literals)


class _Unwritable(Exception):
    """A filter (or part) with a form this module does not take."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.replace("optional: ", "")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise _Unwritable(text[pos:])
            break
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """One pushed filter as keys: ``(c = v)``, ``(c IN (v, ...))``, ``((c >= a) AND (c <= b))``
    (DuckDB's form of consecutive numbers), and ORs of those, over ``KEY_COLUMNS``."""

    def __init__(self, tokens: list[tuple[str, str]], fields: dict[str, pa.Field], keys: tuple[str, ...]) -> None:
        self.toks, self.i, self.fields, self.keys = tokens, 0, fields, keys

    def peek(self, at: int = 0) -> str:
        return self.toks[self.i + at][1] if self.i + at < len(self.toks) else ""

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks) or (value is not None and self.toks[self.i][1].upper() != value):
            raise _Unwritable(f"expected {value}")
        self.i += 1
        return self.toks[self.i - 1]

    def alternatives(self) -> dict[str, set[str]]:
        out = self.term()
        while self.peek().upper() == "OR":
            self.take()
            for c, vs in self.term().items():
                out.setdefault(c, set()).update(vs)
        return out

    def term(self) -> dict[str, set[str]]:
        if self.peek() != "(":
            return self.atom()
        self.take("(")
        if self.peek() == "(" and self.peek(2) == ">=":  # ((c >= a) AND (c <= b))
            out = self.range()
        else:
            out = self.alternatives()
            if self.peek().upper() == "AND":  # (k AND more): the rows are among k's
                self.skip_to_close()
                return out
        self.take(")")
        return out

    def skip_to_close(self) -> None:
        depth = 1
        while depth:
            _, v = self.take()
            depth += (v == "(") - (v == ")")

    def range(self) -> dict[str, set[str]]:
        self.take("(")
        col, lo = self.column(), (self.take(">="), self.number())[1]
        self.take(")")
        self.take("AND")
        self.take("(")
        if self.column() != col:
            raise _Unwritable("two columns")
        self.take("<=")
        hi = self.number()
        self.take(")")
        if hi - lo > _RANGE:
            raise _Unwritable("wide range")
        return {col: {str(v) for v in range(lo, hi + 1)}}

    def column(self) -> str:
        kind, col = self.take()
        if kind != "word" or col not in self.keys:
            raise _Unwritable(col)
        return col

    def number(self) -> int:
        kind, v = self.take()
        if kind != "num":
            raise _Unwritable(v)
        return int(v)

    def atom(self) -> dict[str, set[str]]:
        col = self.column()
        _, op = self.take()
        if op == "=":
            return {col: {self.value(col)}}
        if op.upper() != "IN":
            raise _Unwritable(op)
        self.take("(")
        values = {self.value(col)}
        while self.peek() == ",":
            self.take()
            values.add(self.value(col))
        self.take(")")
        return {col: values}

    def value(self, col: str) -> str:
        kind, v = self.take()
        t = self.fields[col].type
        if kind == "str" and pa.types.is_string(t):
            return literal(v[1:-1].replace("''", "'"))
        if kind == "num" and pa.types.is_integer(t):
            return str(int(v))
        raise _Unwritable(v)


def scan_keys(table: str, filters: Iterable[str]) -> Keys | None:
    """The keys of one scan (its filters, ANDed): the rows it can read are among those with
    one of these values in one of these columns; None when no filter says so (every row)."""
    fields = {f.name: f for f in schema.TABLES[table]}
    filters = list(filters)
    # a category second: a scan of every connect and accept (a hop from a connection) reads
    # the host's network events, a few hundredths of it
    for keys in (KEY_COLUMNS.get(table, ()), CATEGORY_COLUMNS.get(table, ())):
        for text in filters:
            try:
                p = _Parser(_tokens(text), fields, keys)
                out = p.alternatives()
                if p.i != len(p.toks):
                    raise _Unwritable("trailing")
            except _Unwritable:
                continue
            return {c: frozenset(v) for c, v in out.items()}
    return None


def keys_sql(keys: Mapping[str, Iterable[str]]) -> str:
    """Rows with one of ``keys``' values in its column (``0``: none)."""
    parts = [f"`{c}` IN ({', '.join(sorted(vs))})" for c, vs in sorted(keys.items()) if vs]
    return "(" + " OR ".join(parts) + ")" if parts else "0"
