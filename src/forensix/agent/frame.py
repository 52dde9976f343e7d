"""Sealed batch frames: the unit the agent spools, ships, and the log host keeps.

One frame carries one batch (a store table name and an Arrow table), serialised as an
Arrow IPC stream, compressed with zstd, with a fixed header and an HMAC-SHA256 trailer.
The layout is documented in docs/transport.md; this module is its only implementation.

    header (96 bytes, big-endian)   struct "!4sBBH16sQIIqIIIBBH32s"
      magic "FXSB", version 1, codec 1 (zstd), reserved u16,
      stream id (16 bytes), sequence u64, epoch u32, flags u32, seal time i64 (UTC ns),
      rows u32, raw length u32 (IPC bytes), body length u32 (compressed),
      host length u8, table length u8, reserved u16, previous frame hash (32 bytes)
    host (utf-8) | table (ascii) | body (zstd) | mac (32 bytes)

``mac = HMAC-SHA256(mac_key(epoch key), everything before it)``; the frame's hash
(``SHA-256`` of all its bytes) is the next frame's ``prev``: a hash chain per stream.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from dataclasses import dataclass

import pyarrow as pa
import zstandard
from pyarrow import ipc

from forensix.errors import DecodeError
from forensix.store import schema

__all__ = [
    "HEADER",
    "MAC_LEN",
    "MAX_BODY",
    "MAX_RAW",
    "RAW_FLAG",
    "RAW_LEVEL",
    "RAW_SCHEMA",
    "RAW_TABLE",
    "SEED_FLAG",
    "ZERO_HASH",
    "Frame",
    "FrameError",
    "RawEncoder",
    "decode_body",
    "encode_batch",
    "frame_hash",
    "frame_length",
    "parse_frame",
    "seal_frame",
    "table_schema",
]

MAGIC = b"FXSB"
VERSION = 1
CODEC_ZSTD = 1
HEADER = struct.Struct("!4sBBH16sQIIqIIIBBH32s")
MAC_LEN = 32
MAX_BODY = 64 << 20  # compressed bytes in one frame
MAX_RAW = 256 << 20  # decompressed IPC bytes in one frame
MAX_ROWS = 10_000_000
ZERO_HASH = bytes(32)
assert HEADER.size == 96

# A frame of the kernel's own records (agent/raw.py), decoded on the log host: header flag
# RAW_FLAG, table RAW_TABLE, rows of (kind, meta JSON, bytes). Not a store table: the log
# host keeps these frames as evidence and stores what its decoder makes of them.
RAW_FLAG = 1
# a raw frame that (re)starts its stream's decoder: a log host rebuilding a decoder needs no
# frame before the newest of these (server/retention.py keeps the frames from it on)
SEED_FLAG = 2
RAW_TABLE = "raw"
RAW_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("meta", pa.string(), nullable=False),
    pa.field("data", pa.large_binary(), nullable=False),
])


def table_schema(table: str) -> pa.Schema | None:
    """The schema of a frame's table: a store table's, or the raw records'."""
    return RAW_SCHEMA if table == RAW_TABLE else schema.TABLES.get(table)


class FrameError(DecodeError):
    """Bytes that are not a well-formed frame; ``offset`` says where in the input."""

    def __init__(self, message: str, offset: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint or "the sender is not a forensix agent, or the data was altered")
        self.offset = offset


@dataclass(frozen=True)
class Frame:
    stream: bytes
    seq: int
    epoch: int
    flags: int
    seal_ns: int
    rows: int
    raw_len: int
    host: str
    table: str
    prev: bytes
    body: bytes
    mac: bytes
    raw: bytes  # the whole frame as received (what the MAC and the hash cover)

    @property
    def signed(self) -> bytes:
        return self.raw[: len(self.raw) - MAC_LEN]

    def hash(self) -> bytes:
        return frame_hash(self.raw)

    def mac_ok(self, key: bytes) -> bool:
        return hmac.compare_digest(hmac.new(key, self.signed, hashlib.sha256).digest(), self.mac)


def frame_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


_cctx = zstandard.ZstdCompressor(level=3)
# zstd level of raw frames (agent/raw.py: a drain tick's ring and map bytes, ~1-4 MB), the
# raw agent's largest CPU cost. The records are fixed headers, mostly zeros: level -1 takes
# ~10% less CPU than level 1 for ~7% more bytes (a build: 24.9 -> 26.6 B/event shipped;
# docs/benchmarks.md, "agentcpu"); -2 took ~2% less again for 15% more bytes than -1. No
# parameter of zstd's fast strategy did better (docs/agent-raw-records.md).
RAW_LEVEL = -1
_cctx_raw = zstandard.ZstdCompressor(level=RAW_LEVEL)
# A raw batch's IPC bytes are written into one buffer kept from frame to frame: a fresh
# buffer of a tick's ~1-4 MB cost a page fault per 4 KiB (~2.5 µs each in a VM under load:
# ~2 ms for a 3 MB frame). It keeps at most the pages the largest tick wrote (RSS); one made
# for a tick larger than this is let go once used.
_SCRATCH_KEEP = 8 << 20


def encode_batch(data: pa.Table) -> pa.Buffer:
    """Arrow IPC stream bytes of a table (uncompressed; the frame compresses them), as the
    Arrow buffer they were written to: a bytes copy of it cost more CPU than the writing
    (0.8 against 0.3 µs per events row)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, data.schema) as w:
        w.write_table(data)
    return sink.getvalue()


class RawEncoder:
    """Compresses raw batches for ``seal_frame(compressed=...)``: their IPC stream written into
    a buffer kept between calls, then one zstd frame at ``RAW_LEVEL`` that declares its size
    (as every other table's body; ``decode_body`` reads both). One per sealer; thread-safe."""

    def __init__(self) -> None:
        self._z = zstandard.ZstdCompressor(level=RAW_LEVEL)  # a compressor is not thread-safe
        self._lock = threading.Lock()
        self._scratch: pa.ResizableBuffer | None = None

    def encode(self, data: pa.Table) -> tuple[int, bytes]:
        """(IPC length, zstd body) of a raw batch."""
        # the IPC stream is the buffers' bytes, each padded, and a few hundred bytes of
        # metadata per record batch: this bounds it
        need = data.nbytes + 64 * (data.num_columns * 4 + 8) * (len(data.to_batches()) + 1) + (64 << 10)
        with self._lock:
            buf = self._scratch
            if buf is None or buf.size < need:
                # pages cost nothing until written: the kept size at once, so that a larger
                # tick later faults in only the pages it adds
                buf = pa.allocate_buffer(max(need, _SCRATCH_KEEP), resizable=True)
            sink = pa.FixedSizeBufferWriter(buf)
            try:
                with ipc.new_stream(sink, data.schema) as w:
                    w.write_table(data)
                view = memoryview(buf)[: sink.tell()]
            except OSError:  # past the bound ("Write out of bounds"): a buffer of the size written
                view = memoryview(encode_batch(data))
            body = self._z.compress(view)
            self._scratch = buf if buf.size <= _SCRATCH_KEEP else None
        return len(view), body


def seal_frame(
    *,
    host: str,
    stream: bytes,
    seq: int,
    epoch: int,
    seal_ns: int,
    table: str,
    ipc_bytes: bytes | pa.Buffer | None = None,
    rows: int,
    prev: bytes,
    key: bytes,
    flags: int = 0,
    compressed: tuple[int, bytes | pa.Buffer] | None = None,
) -> bytes:
    """Compress, frame and MAC one batch with the epoch's MAC key. ``compressed``: the
    batch already compressed (``RawEncoder.encode``: IPC length, body) instead of
    ``ipc_bytes``."""
    hb, tb = host.encode(), table.encode("ascii")
    if compressed is not None:
        raw_len, body = compressed
    elif ipc_bytes is not None:
        raw_len, body = len(ipc_bytes), (_cctx_raw if flags & RAW_FLAG else _cctx).compress(ipc_bytes)
    else:
        raise TypeError("seal_frame needs ipc_bytes or compressed")
    if len(body) > MAX_BODY or raw_len > MAX_RAW:
        raise FrameError(f"batch of {raw_len} bytes is too large for one frame", 0,
                         "split the batch (the recorder's batch size)")
    head = HEADER.pack(
        MAGIC, VERSION, CODEC_ZSTD, 0, stream, seq, epoch, flags, seal_ns, rows,
        raw_len, len(body), len(hb), len(tb), 0, prev,
    )
    mac = hmac.new(key, head, hashlib.sha256)
    for part in (hb, tb, body):  # the MAC of the joined bytes, without joining them twice
        mac.update(part)
    return b"".join((head, hb, tb, body, mac.digest()))


def frame_length(head: bytes, offset: int = 0) -> int:
    """Total length of the frame whose 96-byte header is ``head`` (validated)."""
    if len(head) < HEADER.size:
        raise FrameError(f"short header: {len(head)} of {HEADER.size} bytes", offset)
    (magic, version, codec, _r, _s, _seq, _e, _f, _t, rows, raw_len, body_len, hlen, tlen, _r2,
     _p) = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r} (expected {MAGIC!r})", offset)
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version}", offset, "upgrade the log host")
    if codec != CODEC_ZSTD:
        raise FrameError(f"unknown codec {codec}", offset)
    if body_len > MAX_BODY or raw_len > MAX_RAW or rows > MAX_ROWS:
        raise FrameError(
            f"frame too large (body {body_len}, raw {raw_len}, rows {rows})", offset
        )
    if hlen == 0 or tlen == 0:
        raise FrameError("frame without host or table name", offset)
    total: int = HEADER.size + hlen + tlen + body_len + MAC_LEN
    return total


def parse_frame(buf: bytes | memoryview, offset: int = 0) -> Frame:
    """Parse one frame at ``offset`` of ``buf`` (structure only; the MAC is checked by the caller)."""
    view = memoryview(buf)
    head = bytes(view[offset : offset + HEADER.size])
    total = frame_length(head, offset)
    if len(view) - offset < total:
        raise FrameError(f"truncated frame: {len(view) - offset} of {total} bytes", offset)
    (_m, _v, _c, _r, stream, seq, epoch, flags, seal_ns, rows, raw_len, body_len, hlen, tlen, _r2,
     prev) = HEADER.unpack(head)
    p = offset + HEADER.size
    try:
        host = bytes(view[p : p + hlen]).decode("utf-8")
        table = bytes(view[p + hlen : p + hlen + tlen]).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("host or table name is not text", offset) from None
    if table_schema(table) is None:
        raise FrameError(f"unknown table {table!r}", offset)
    p += hlen + tlen
    raw = bytes(view[offset : offset + total])
    body = bytes(view[p : p + body_len])
    mac = raw[-MAC_LEN:]
    return Frame(stream, seq, epoch, flags, seal_ns, rows, raw_len, host, table, prev, body, mac, raw)


def decode_body(frame: Frame) -> pa.Table:
    """The batch of a frame, decompressed with a hard size limit and checked against the schema."""
    try:
        # the size the zstd header declares, checked first: decompress() allocates it
        # whatever max_output_size says (a forged header of 8 EB raised MemoryError)
        declared = zstandard.frame_content_size(frame.body)
        if declared > MAX_RAW or (declared >= 0 and declared != frame.raw_len):
            raise FrameError(f"body declares {declared} bytes decompressed, header says {frame.raw_len} "
                             f"(limit {MAX_RAW})")
        # a streamed body (raw frames of agents before 2026-12-07) declares no size: the
        # header's, checked above, bounds it (allocated up front when the body declares none)
        ipc_bytes = zstandard.ZstdDecompressor().decompress(frame.body, max_output_size=frame.raw_len)
    except zstandard.ZstdError as e:
        raise FrameError(f"body does not decompress: {e}") from None
    if len(ipc_bytes) != frame.raw_len:
        raise FrameError(f"body is {len(ipc_bytes)} bytes, header says {frame.raw_len}")
    try:
        data = ipc.open_stream(pa.py_buffer(ipc_bytes)).read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise FrameError(f"body is not an Arrow IPC stream: {e}") from None
    want = table_schema(frame.table)
    if want is None:
        raise FrameError(f"unknown table {frame.table!r}")
    if data.num_rows != frame.rows:
        raise FrameError(f"body has {data.num_rows} rows, header says {frame.rows}")
    if not data.schema.equals(want):
        try:
            data = data.select(want.names).cast(want)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
            raise FrameError(f"{frame.table} batch does not match the schema: {e}") from None
    return data
