"""The Native blocks the store builds from Arrow (store.clickhouse.native) read back as the
same values on Debian's 18.16 (over the native protocol, beside the driver's own
serialisation of the same rows) and on current ClickHouse (chdb reading them as a Native file)."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_driver import Client

from forensix.store.clickhouse.connection import Server
from forensix.store.clickhouse.ddl import stored_columns
from forensix.store.clickhouse.native import ArrowData, encodable, encode_column
from forensix.store.schema import TABLES
from forensix.testing.clickhouse import Cluster

chdb_session = pytest.importorskip("chdb.session")

N = 700  # more than 256 distinct values: the LowCardinality keys need 16 bits
LONG = "p" * 200 + "é" * 9000  # a length of 2 and of 3 varint bytes
COLUMNS: list[tuple[str, str, pa.Array]] = [
    ("i8", "Int8", pa.array([(-1) ** i * (i % 128) for i in range(N)], pa.int8())),
    ("u16", "UInt16", pa.array([i * 90 for i in range(N)], pa.uint16())),
    ("i32", "Int32", pa.array([-(2**31) + i for i in range(N)], pa.int32())),
    ("u64", "UInt64", pa.array([2**64 - 1 - i for i in range(N)], pa.uint64())),
    ("i64", "Int64", pa.array([-(2**63) + i * 3 for i in range(N)], pa.int64())),
    ("f64", "Float64", pa.array([i / 7 for i in range(N)], pa.float64())),
    ("flag", "UInt8", pa.array([i % 2 == 0 for i in range(N)], pa.bool_())),  # booleans as the store keeps them
    ("s", "String", pa.array([f"/tmp/ü/{i}" if i % 5 else ("" if i % 2 else LONG) for i in range(N)])),
    ("raw", "String", pa.array([bytes([i % 256, 0, 255, 10]) * (i % 3) for i in range(N)], pa.binary())),
    ("ns", "Nullable(String)", pa.array([None if i % 3 == 0 else ("" if i % 3 == 1 else f"v{i}") for i in range(N)])),
    ("nu32", "Nullable(UInt32)", pa.array([None if i % 4 == 0 else i for i in range(N)], pa.uint32())),
    ("u32", "UInt32", pa.array([2**32 - 1 - i for i in range(N)], pa.uint32())),
    ("nu64", "Nullable(UInt64)", pa.array([None if i % 5 == 0 else 2**63 + i for i in range(N)], pa.uint64())),
    ("nu16", "Nullable(UInt16)", pa.array([None if i % 5 == 1 else i for i in range(N)], pa.uint16())),
    ("ni32", "Nullable(Int32)", pa.array([None if i % 6 == 0 else -i for i in range(N)], pa.int32())),
    ("nu8", "Nullable(UInt8)", pa.array([None if i % 3 == 0 else i % 2 for i in range(N)], pa.uint8())),
    ("ni64", "Nullable(Int64)", pa.array([None if i % 2 else -i for i in range(N)], pa.int64())),
    ("lc", "LowCardinality(String)", pa.array([f"host{i % 300}" if i % 7 else "" for i in range(N)])),
    ("lcn", "LowCardinality(Nullable(String))",
     pa.array([None if i % 3 == 0 else ("" if i % 3 == 1 else f"k{i % 4}") for i in range(N)])),
    ("lc1", "LowCardinality(Nullable(String))", pa.array([None] * N, pa.string())),
    ("arr", "Array(String)", pa.array([[f"a{j}" for j in range(i % 4)] + ([LONG] if i == 9 else []) for i in range(N)],
                                      pa.list_(pa.string()))),
    ("arru", "Array(UInt64)", pa.array([list(range(i % 3)) for i in range(N)], pa.list_(pa.uint64()))),
]


def _table() -> pa.Table:
    return pa.table({name: arr for name, _, arr in COLUMNS})


def _as_bytes(v: Any) -> Any:
    """A value as read with strings_as_bytes (booleans stored as UInt8)."""
    if isinstance(v, list):
        return [_as_bytes(x) for x in v]
    if isinstance(v, bool):
        return int(v)
    return v.encode() if isinstance(v, str) else v


def _expected(table: pa.Table) -> list[list[Any]]:
    return [[_as_bytes(v) for v in col.to_pylist()] for col in table.columns]


def test_every_column_type_of_the_store_is_written_natively() -> None:
    used = {t.split(" DEFAULT")[0] for table in TABLES for _, t in stored_columns(table)}
    assert used <= {ch for _, ch, _ in COLUMNS}, "a stored type this test does not write"
    assert all(encodable(t) for t in used)
    assert not encodable("DateTime") and not encodable("Array(Nullable(String))")


def test_native_blocks_read_back_on_18_16_as_the_drivers_own(cluster: Cluster) -> None:
    srv = Server("127.0.0.1", cluster.shards[0].tcp_port)
    # String read as bytes: the binary column holds bytes that are not UTF-8
    raw = Client("127.0.0.1", port=cluster.shards[0].tcp_port, settings={"strings_as_bytes": True})
    db = f"n_{uuid.uuid4().hex[:12]}"
    cols = ", ".join(f"`{n}` {t}" for n, t, _ in COLUMNS)
    names = ", ".join(f"`{n}`" for n, _, _ in COLUMNS)
    srv.execute(f"CREATE DATABASE {db}")
    try:
        for t in ("ours", "drivers"):
            srv.execute(f"CREATE TABLE {db}.{t} (k UInt32, {cols}) ENGINE = MergeTree() ORDER BY k")
        table = _table()
        # a slice of chunked columns: offsets into Arrow's buffers are honoured
        ours = pa.concat_tables([table.slice(0, 300), table.slice(300)]).slice(1)
        keyed = ours.add_column(0, "k", pa.array(range(1, N), pa.uint32()))
        assert srv.execute(f"INSERT INTO {db}.ours (k, {names}) VALUES", ArrowData.of(keyed)) == N - 1
        want = _expected(table.slice(1))
        srv.execute(f"INSERT INTO {db}.drivers (k, {names}) VALUES", [list(range(1, N)), *want])
        got = [raw.execute(f"SELECT {names} FROM {db}.{t} ORDER BY k", columnar=True) for t in ("ours", "drivers")]
        for (name, _, _), a, b, w in zip(COLUMNS, got[0], got[1], want, strict=True):
            assert list(a) == list(b) == w, name
    finally:
        srv.execute(f"DROP DATABASE {db}")
        srv.close()
        raw.disconnect()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _name(text: str) -> bytes:
    b = text.encode()
    return _varint(len(b)) + b


def test_native_blocks_read_back_on_current_clickhouse(tmp_path: Path) -> None:
    """A Native file (one block, no block info) is the same column bytes: chdb reads them."""
    table = _table()
    body = b"".join(_name(n) + _name(t) + encode_column(table.column(n), t) for n, t, _ in COLUMNS)
    path = tmp_path / "block.native"
    path.write_bytes(_varint(len(COLUMNS)) + _varint(N) + body)
    sess = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        res = sess.query(f"SELECT * FROM file('{path}', Native)", "Arrow")
        got = pa.ipc.open_file(pa.py_buffer(res.bytes())).read_all()
    finally:
        sess.close()
    for (name, _, _), w in zip(COLUMNS, _expected(table), strict=True):
        col = got.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = col.cast(pa.binary())  # the binary column holds bytes that are not UTF-8
        assert [_as_bytes(v) for v in col.to_pylist()] == w, name


def test_a_type_it_does_not_write_goes_the_drivers_way(cluster: Cluster) -> None:
    srv = Server("127.0.0.1", cluster.shards[0].tcp_port)
    db = f"n_{uuid.uuid4().hex[:12]}"
    srv.execute(f"CREATE DATABASE {db}")
    try:
        srv.execute(f"CREATE TABLE {db}.t (d Date, s String) ENGINE = MergeTree() ORDER BY d")
        data = pa.table({"d": pa.array([datetime.date(2026, 12, 6)]), "s": pa.array(["x"])})
        assert srv.execute(f"INSERT INTO {db}.t (d, s) VALUES", ArrowData.of(data)) == 1
        assert srv.execute(f"SELECT toString(d), s FROM {db}.t") == [("2026-12-06", "x")]
    finally:
        srv.execute(f"DROP DATABASE {db}")
        srv.close()
