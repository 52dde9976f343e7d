"""Arrow columns as ClickHouse's Native block format, built with numpy from Arrow's buffers.

clickhouse-driver serialises a column value by value in Python (every string through
``to_pylist``, every LowCardinality value through a dict): about 1.8 µs of the log host's
CPU per event, more than the ClickHouse server spends storing it. The Native format is
simple and stable (the same bytes since ClickHouse 1.1, which 18.16 and current servers
read alike): a column is its values back to back, so whole columns are written with a few
vectorised operations instead. ``NativeClient`` sends them over the driver's own
connection (the native protocol, as before): the driver still speaks the protocol
(handshake, query, end of data, errors); only a block's column bytes come from here. It
reaches into the driver's connection (``fout``, ``block_out``, its protocol revisions), so
pyproject.toml keeps clickhouse-driver below 0.3; tests/fleet/test_fleet_native.py fails
if a release moves them.

Types written: (U)Int8-64, Float32/64, String (text or bytes), Nullable(T),
LowCardinality(String | Nullable(String)), Array(T). ``encodable`` says whether a block's
types are all among them; for any other the driver's own path is taken.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_driver import Client, defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

__all__ = ["ArrowData", "NativeClient", "encodable", "encode_column", "native_block"]

_NUMERIC = {
    "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
    "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
    "Float32": pa.float32(), "Float64": pa.float64(),
}
_WRAPPED = re.compile(r"^(Nullable|LowCardinality|Array)\((.*)\)$")
# LowCardinality: KeysSerializationVersion (the column's state prefix), and the flags of
# a block that brings its own dictionary ("additional keys") of which the keys are indexes
_LC_VERSION = 1
_LC_FLAGS = (1 << 9) | (1 << 10)


def _split(ch_type: str) -> tuple[str, str] | None:
    m = _WRAPPED.match(ch_type)
    return (m.group(1), m.group(2)) if m else None


def encodable(ch_type: str) -> bool:
    """Whether ``encode_column`` writes this ClickHouse type."""
    if ch_type in _NUMERIC or ch_type == "String":
        return True
    wrapped = _split(ch_type)
    if wrapped is None:
        return False
    outer, inner = wrapped
    if outer == "LowCardinality":
        return inner in ("String", "Nullable(String)")
    if outer == "Nullable":
        return inner in _NUMERIC or inner == "String"
    return outer == "Array" and (inner in _NUMERIC or inner == "String")


def _flat(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _numbers(arr: pa.Array, ch_type: str) -> bytes:
    """Fixed-width values, little-endian; NULL as 0 (its null map says NULL)."""
    t = _NUMERIC[ch_type]
    if arr.type != t:
        arr = arr.cast(t)  # a safe cast: a value out of range is an error, not a wrapped number
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(0, t))
    return bytes(arr.to_numpy(zero_copy_only=False).tobytes())


def _strings(arr: pa.Array) -> bytes:
    """Each value as its length (a LEB128 varint) and its bytes; NULL as ''."""
    if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        arr = arr.cast(pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(b"" if pa.types.is_binary(arr.type) else "", arr.type))
    n = len(arr)
    if n == 0:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data_buf = arr.buffers()[2]
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8, count=last - first, offset=first) if last > first \
        else np.zeros(0, np.uint8)
    lens = np.diff(offsets).astype(np.uint64)
    width = np.ones(n, np.int64)  # bytes of each length's varint
    for bits in (7, 14, 21, 28, 35):
        width += lens >= (1 << bits)
    start = np.zeros(n, np.int64)  # where each value's varint starts in the output
    np.cumsum((width + lens.astype(np.int64))[:-1], out=start[1:])
    out = np.empty(int(start[-1] + width[-1] + lens[-1]), np.uint8)
    is_data = np.ones(len(out), bool)
    for k in range(int(width.max())):
        has = width > k
        at = start[has] + k
        more = (width[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[at] = ((lens[has] >> np.uint64(7 * k)) & np.uint64(0x7F)) | more
        is_data[at] = False
    out[is_data] = data  # the values' bytes, in order, fill every place the lengths leave
    return out.tobytes()


def _null_map(arr: pa.Array) -> bytes:
    if not arr.null_count:
        return bytes(len(arr))
    return bytes(pc.is_null(arr).to_numpy(zero_copy_only=False).astype(np.uint8).data)


def _plain(arr: pa.Array, ch_type: str) -> bytes:
    return _strings(arr) if ch_type == "String" else _numbers(arr, ch_type)


def _low_cardinality(arr: pa.Array, nullable: bool) -> bytes:
    """A dictionary (the block's "additional keys") and each row's index into it. In a
    Nullable one, index 0 is NULL and the dictionary's first value its placeholder. An
    Arrow dictionary column of distinct strings is sent as it is (no hashing of every row)."""
    if (pa.types.is_dictionary(arr.type) and (nullable or not arr.null_count)
            and pa.types.is_string(arr.type.value_type) and not arr.dictionary.null_count
            and len(pc.unique(arr.dictionary)) == len(arr.dictionary)):
        enc = arr
    else:
        if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
            arr = arr.cast(pa.string())
        if not nullable and arr.null_count:
            arr = pc.fill_null(arr, "")
        enc = pc.dictionary_encode(arr)
    dictionary = enc.dictionary
    keys = enc.indices.to_numpy(zero_copy_only=False) if not enc.indices.null_count else \
        pc.fill_null(enc.indices, -1).to_numpy()
    if nullable:
        dictionary = pa.concat_arrays([pa.array([""], dictionary.type), dictionary])
        keys = keys.astype(np.int64) + 1  # NULL (-1) becomes 0
    size = len(dictionary)
    kind = 0 if size <= 1 << 8 else 1 if size <= 1 << 16 else 2 if size <= 1 << 32 else 3
    width = (np.uint8, np.uint16, np.uint32, np.uint64)[kind]
    return b"".join((struct.pack("<QQ", _LC_FLAGS | kind, size), _strings(dictionary),
                     struct.pack("<Q", len(arr)), keys.astype(width).tobytes()))


def encode_column(col: pa.Array | pa.ChunkedArray, ch_type: str) -> bytes:
    """``col`` in ClickHouse's Native format as ``ch_type``: the column's state prefix
    (LowCardinality has one) followed by its data."""
    arr = _flat(col)
    wrapped = _split(ch_type)
    if wrapped is None:
        return _plain(arr, ch_type)
    outer, inner = wrapped
    if outer == "Nullable":
        return _null_map(arr) + _plain(arr, inner)
    if outer == "LowCardinality":
        return struct.pack("<Q", _LC_VERSION) + _low_cardinality(arr, inner.startswith("Nullable"))
    # Array(T): each row's end offset into the values, then the values (arrays are never NULL here)
    if not pa.types.is_list(arr.type):
        raise TypeError(f"an Array column needs Arrow lists, not {arr.type}")
    if arr.null_count:
        arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr)
    offsets = arr.offsets.to_numpy()
    ends = (offsets[1:] - offsets[0]).astype(np.uint64)
    values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return bytes(ends.tobytes()) + _plain(values, inner)


def native_block(table: pa.Table, columns: Sequence[tuple[str, str]]) -> list[tuple[str, str, bytes]]:
    """(name, type, bytes) of each column the server asked for (its sample block's order)."""
    return [(name, ch_type, encode_column(table.column(name), ch_type)) for name, ch_type in columns]


class ArrowData(tuple[Any, ...]):
    """INSERT data for ``NativeClient.execute``: a tuple to the driver (which takes only
    sequences as INSERT data), carrying the Arrow table."""

    table: pa.Table

    @classmethod
    def of(cls, table: pa.Table) -> ArrowData:
        d = cls()
        d.table = table
        return d


class NativeClient(Client):  # type: ignore[misc]  # clickhouse-driver ships no type hints
    """clickhouse-driver's client that sends an Arrow table given as INSERT data
    (``ArrowData``) as Native blocks built by ``encode_column``; any other data goes the
    driver's own way."""

    def send_data(self, sample_block: Any, data: Any, types_check: bool = False, columnar: bool = False) -> int:
        if not isinstance(data, ArrowData):
            return int(super().send_data(sample_block, data, types_check=types_check, columnar=columnar))
        columns = list(sample_block.columns_with_types)
        table = data.table.select([name for name, _ in columns])
        if not all(encodable(t) for _, t in columns):
            values = [c.to_pylist() for c in table.columns]
            return int(super().send_data(sample_block, values, types_check=types_check, columnar=True))
        data = table
        size = int(self.connection.context.client_settings["insert_block_size"])
        for lo in range(0, data.num_rows, size):
            self._send_block(native_block(data.slice(lo, size), columns), min(size, data.num_rows - lo))
            self.receive_profile_events()
        self.connection.send_data(ColumnOrientedBlock())  # an empty block ends the data
        self.receive_profile_events()
        return int(data.num_rows)

    def _send_block(self, block: list[tuple[str, str, bytes]], rows: int) -> None:
        conn = self.connection
        revision = conn.server_info.used_revision
        write_varint(ClientPacketTypes.DATA, conn.fout)
        if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
            write_binary_str("", conn.fout)  # the table name: none (not an external table)
        out = conn.block_out.fout  # the compressed stream's buffer when compression is on
        if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
            BlockInfo().write(out)
        write_varint(len(block), out)
        write_varint(rows, out)
        for name, ch_type, data in block:
            write_binary_str(name, out)
            write_binary_str(ch_type, out)
            if revision >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
                write_binary_uint8(0, out)
            out.write(data)
        conn.block_out.finalize()
