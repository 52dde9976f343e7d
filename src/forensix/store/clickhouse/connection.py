"""Store URLs, connections to one ClickHouse server, and its errors in forensix's terms."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from clickhouse_driver import errors

from forensix.errors import StoreError, UsageError
from forensix.store.clickhouse.ddl import CH_SETTINGS
from forensix.store.clickhouse.native import NativeClient


class _NoNumpyFallbackNote(logging.Filter):
    """The driver's NumPy reader notes, per column of every block, that it reads an Array(String)
    value by value: expected here (``Server.arrow``), not worth a line on a user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("NumPy support is not implemented for")


logging.getLogger("clickhouse_driver.columns.service").addFilter(_NoNumpyFallbackNote())

__all__ = [
    "SCHEME",
    "ClickHouseUnavailable",
    "Server",
    "StoreURL",
    "is_clickhouse_url",
    "literal",
    "parse_url",
    "render",
    "to_arrow",
]

SCHEME = "clickhouse://"
# error codes that mean "a server is not there now", not "the query is wrong"
_DOWN_CODES = frozenset({
    errors.ErrorCodes.ALL_CONNECTION_TRIES_FAILED, errors.ErrorCodes.NETWORK_ERROR,
    errors.ErrorCodes.SOCKET_TIMEOUT, 209, 210, 279, 394,
})


class ClickHouseUnavailable(StoreError):
    """A ClickHouse server (or a shard behind a Distributed table) does not answer."""


@dataclass(frozen=True)
class StoreURL:
    host: str
    port: int
    database: str
    cluster: str | None

    def __str__(self) -> str:
        q = f"?cluster={self.cluster}" if self.cluster else ""
        return f"{SCHEME}{self.host}:{self.port}/{self.database}{q}"


def is_clickhouse_url(text: str) -> bool:
    return str(text).startswith(SCHEME)


def parse_url(text: str) -> StoreURL:
    """``clickhouse://HOST:PORT/DATABASE[?cluster=NAME]`` (native protocol port, 9000 by default)."""
    u = urllib.parse.urlsplit(text)
    hint = "for example clickhouse://10.0.0.7:9000/forensix?cluster=fleet"
    db = u.path.strip("/")
    if u.scheme != "clickhouse" or not u.hostname or not db or "/" in db:
        raise UsageError(f"{text!r} is not a ClickHouse store URL", hint)
    if not db.replace("_", "").isalnum():
        raise UsageError(f"database name {db!r} in {text!r}: only letters, digits and _", hint)
    try:
        port = u.port or 9000
    except ValueError:
        raise UsageError(f"bad port in {text!r}", hint) from None
    query = urllib.parse.parse_qs(u.query)
    unknown = set(query) - {"cluster"}
    if unknown:
        raise UsageError(f"unknown option(s) {sorted(unknown)} in {text!r}", hint)
    cluster = query.get("cluster", [None])[-1]
    if cluster is not None and not cluster.replace("_", "").isalnum():
        raise UsageError(f"cluster name {cluster!r} in {text!r}: only letters, digits and _", hint)
    return StoreURL(u.hostname, port, db, cluster)


def literal(v: Any) -> str:
    """A value as a ClickHouse SQL literal (the same text for 18.16 and current servers)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple, set, frozenset)):
        return "(" + ", ".join(literal(x) for x in v) + ")" if v else "(NULL)"
    s = str(v).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{s}'"


def render(sql: str, params: Mapping[str, Any] | None) -> str:
    """``sql`` with ``{name}`` placeholders replaced by literals: one text for every engine."""
    if not params:
        return sql
    return sql.format_map({k: literal(v) for k, v in params.items()})


_ARROW = {
    "UInt64": pa.uint64(), "Int64": pa.int64(), "UInt32": pa.uint32(), "Int32": pa.int32(),
    "UInt16": pa.uint16(), "Int16": pa.int16(), "UInt8": pa.uint8(), "Int8": pa.int8(),
    "String": pa.string(), "Float64": pa.float64(), "Float32": pa.float32(),
}


def _arrow_type(ch: str) -> pa.DataType | None:
    for wrapper in ("LowCardinality(", "Nullable("):
        if ch.startswith(wrapper):
            return _arrow_type(ch[len(wrapper):-1])
    if ch.startswith("Array("):
        inner = _arrow_type(ch[6:-1])
        return pa.list_(inner) if inner is not None else None
    return _ARROW.get(ch)


def to_arrow(columns: Sequence[Sequence[Any]], types: Sequence[tuple[str, str]]) -> pa.Table:
    """A columnar result of clickhouse-driver as Arrow, typed from ClickHouse's column types."""
    if not columns:  # no rows: the driver gives no columns at all
        columns = [[] for _ in types]
    arrays = []
    for (name, ch), values in zip(types, columns, strict=True):
        t = _arrow_type(ch)
        arrays.append(pa.array(list(values), type=t) if t is not None else pa.array([str(x) for x in values]))
    return pa.Table.from_arrays(arrays, names=[n for n, _ in types])


def translate(e: BaseException, where: str) -> StoreError:
    """A driver error as a forensix error that names the server and what to do."""
    if isinstance(e, errors.ServerException):
        if e.code in _DOWN_CODES:
            return ClickHouseUnavailable(f"ClickHouse via {where}: a shard does not answer: {_first_line(e)}",
                                         "start the shard (or fix the network); nothing is lost meanwhile")
        if e.code == errors.ErrorCodes.UNKNOWN_DATABASE:
            return StoreError(f"ClickHouse at {where} has no such database: {_first_line(e)}",
                              "check DATABASE in the store URL (forensix server creates it)")
        return StoreError(f"ClickHouse at {where}: {_first_line(e)}", "check the query and the store URL")
    if isinstance(e, (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError)):
        return ClickHouseUnavailable(f"ClickHouse at {where} does not answer: {e}",
                                     "start it, or check HOST:PORT (the native protocol port) in the store URL")
    return StoreError(f"ClickHouse at {where}: {type(e).__name__}: {e}", "check the store URL")


def _first_line(e: errors.ServerException) -> str:
    msg = str(e.message).strip().splitlines()
    text = msg[0] if msg else str(e)
    return text.removeprefix("DB::Exception: ")


class Server:
    """One ClickHouse server over the native protocol (clickhouse-driver), errors translated."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, database: str = "default") -> None:
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        # INSERT data given as Arrow (native.ArrowData) goes as Native blocks built from its buffers
        self.client = NativeClient(host, port=port, database=database, connect_timeout=3,
                             send_receive_timeout=timeout, sync_request_timeout=5, settings=dict(CH_SETTINGS))

    def execute(self, sql: str, data: Any = None, settings: Mapping[str, Any] | None = None) -> Any:
        try:
            if data is not None:
                return self.client.execute(sql, data, columnar=True, types_check=False,
                                           settings=dict(settings or {}))
            return self.client.execute(sql, settings=dict(settings or {}))
        except Exception as e:
            self.client.disconnect()
            raise translate(e, self.where) from e

    def table(self, sql: str, params: Mapping[str, Any] | None = None,
              external: Sequence[Mapping[str, Any]] | None = None) -> pa.Table:
        """A SELECT's result as Arrow. ``external``: tables sent with the query (clickhouse-driver's
        ``external_tables``: name, structure, rows), for a set too big to spell in the SQL."""
        try:
            cols, types = self.client.execute(render(sql, params), columnar=True, with_column_types=True,
                                              external_tables=external)
        except Exception as e:
            self.client.disconnect()
            raise translate(e, self.where) from e
        return to_arrow(cols, types)

    def arrow(self, sql: str) -> pa.Table:
        """A SELECT's result as Arrow decoded by the driver's own Arrow reader (its buffers built
        from the Native blocks, no Python object per value): the columns come typed as the
        server's (LowCardinality as dictionaries), so a caller casts them to its schema."""
        try:
            # use_numpy: numbers and strings (Nullable ones too) become Arrow buffers without a
            # Python object per value (2-2.6x faster on a 100,000-event pull); Array(String),
            # which that reader lacks, falls back to the value-by-value one
            return self.client.query_arrow(sql, field_metadata=False, settings={"use_numpy": True})
        except Exception as e:
            self.client.disconnect()
            raise translate(e, self.where) from e

    def ping(self) -> bool:
        try:
            self.client.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - down is the answer
            self.client.disconnect()
            return False

    def close(self) -> None:
        self.client.disconnect()
