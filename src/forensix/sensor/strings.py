"""Strings out of drained ring records, built in C: the decoder's string slots, task names,
IP addresses (sensor/decode.py). Each distinct value is made a Python or Arrow string once
where a batch repeats it, and absent values cost nothing per row."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["comm_names"]


def _to_str(arr: pa.Array) -> pa.Array:
    """Binary to string; bytes that are not UTF-8 become backslash escapes (rare)."""
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array(
            [None if b is None else b.decode("utf-8", "backslashreplace") for b in arr.to_pylist()],
            pa.string(),
        )


_VIEW_K = np.arange(12, dtype=np.int64)


def _gather(raw: np.ndarray, start: np.ndarray, ln: np.ndarray) -> pa.Array:
    """Strings at raw[start : start+ln-1] (ln counts the NUL; 0 = absent) as Arrow.

    Most string slots of a batch are absent (a network record has none, a file record one
    or two of its four): only the present ones are built (``_gather_present``), then put
    in place by one take, nulls where absent. Building every slot cost ~0.45 µs a record
    for each of the four slots, present or not."""
    n = len(start)
    valid = ln > 0
    k = int(np.count_nonzero(valid))
    if k == 0:
        return pa.nulls(n, pa.string())
    if k > n - n // 4:  # (nearly) all present: in place
        return _gather_present(raw, start, ln)
    where = np.flatnonzero(valid)
    present = _gather_present(raw, start[where], ln[where])
    at = np.cumsum(valid, dtype=np.int64) - 1
    return present.take(pa.array(at, pa.int64(), mask=~valid))


def _gather_present(raw: np.ndarray, start: np.ndarray, ln: np.ndarray) -> pa.Array:
    """``_gather`` built in place, string by string.

    Built as Arrow string views over ``raw`` itself (16 bytes per string: its length and
    its first 12 bytes, or the first 4 and its offset), which Arrow's cast then copies
    into a plain string column, string by string, checking UTF-8 on the way: half the
    CPU of an index per byte (``_gather_bytes``), which remains for what is not UTF-8."""
    n = len(start)
    if len(raw) >= 1 << 31 or not n:
        return _gather_bytes(raw, start, ln)
    valid = ln > 0
    length = np.where(valid, ln - 1, 0).astype(np.int32)
    first = start.astype(np.int64)[:, None] + _VIEW_K
    np.minimum(first, len(raw) - 1, out=first)  # bytes past a short string's end are zeroed below
    head = raw[first]
    head[_VIEW_K[None, :] >= length[:, None]] = 0
    views = np.empty((n, 4), np.int32)
    views[:, 0] = length
    views.view(np.uint8).reshape(n, 16)[:, 4:] = head
    inline = length <= 12
    views[:, 2] = np.where(inline, views[:, 2], 0)  # buffer 0: raw
    views[:, 3] = np.where(inline, views[:, 3], start.astype(np.int32))
    bitmap = np.packbits(valid, bitorder="little").tobytes()
    arr = pa.Array.from_buffers(
        pa.binary_view(), n, [pa.py_buffer(bitmap), pa.py_buffer(views), pa.py_buffer(raw)]
    )
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8 somewhere: escaped, as _to_str does
        return _gather_bytes(raw, start, ln)


def _gather_bytes(raw: np.ndarray, start: np.ndarray, ln: np.ndarray) -> pa.Array:
    """``_gather`` by one index per byte (any size of ``raw``; bytes that are not UTF-8)."""
    n = len(start)
    valid = ln > 0
    L = np.where(valid, ln - 1, 0).astype(np.int64)
    cum = np.zeros(n + 1, np.int64)
    np.cumsum(L, out=cum[1:])
    total = int(cum[-1])
    if total:
        idx = np.arange(total, dtype=np.int64) + np.repeat(start.astype(np.int64) - cum[:-1], L)
        data = raw[idx].tobytes()
    else:
        data = b""
    bitmap = np.packbits(valid, bitorder="little").tobytes()
    arr = pa.Array.from_buffers(
        pa.binary(), n, [pa.py_buffer(bitmap), pa.py_buffer(cum.astype(np.int32).tobytes()), pa.py_buffer(data)]
    )
    return _to_str(arr)


def comm_names(comm: np.ndarray) -> pa.Array:
    """Fixed 16-byte task names as strings, trailing NULs dropped (as numpy's ``S16``).

    A batch names a few tasks over and over (a web server's flow edges: nginx and wrk):
    each distinct name is made a string once (Arrow's hash, ~30 ns a row) and put in
    place by one take. Making every row's string cost ~0.7 µs a row."""
    b = np.ascontiguousarray(comm).view(np.uint8).reshape(len(comm), -1)
    n, width = b.shape
    if n <= 64 or not width:
        return _comm_strings(b)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(b)])
    coded = pc.dictionary_encode(fixed)
    uniq = coded.dictionary
    distinct = np.frombuffer(uniq.buffers()[1], np.uint8, count=len(uniq) * width, offset=uniq.offset * width)
    return _comm_strings(distinct.reshape(len(uniq), width)).take(coded.indices)


def _comm_strings(b: np.ndarray) -> pa.Array:
    """``comm_names`` of a (rows, width) byte array, row by row."""
    width = b.shape[1]
    nz = b != 0
    ln = np.where(nz.any(1), width - np.argmax(nz[:, ::-1], axis=1), 0)
    start = np.arange(len(b), dtype=np.int64) * width
    # _gather takes lengths that count a terminating NUL
    return _gather_present(np.ascontiguousarray(b).ravel(), start, ln + 1)


def _cstr(chars: np.ndarray) -> pa.Array:
    """Fixed-size C strings (task name, tty) up to their first NUL."""
    b = np.ascontiguousarray(chars).view(np.uint8).reshape(len(chars), -1)
    width = b.shape[1]
    nul = b == 0
    ln = np.where(nul.any(1), np.argmax(nul, axis=1), width)
    return _gather(b.ravel(), np.arange(len(b), dtype=np.int64) * width, ln + 1)


def _ip(family: int, b: bytes) -> str | None:
    if family == 2:
        return str(ipaddress.IPv4Address(b[:4]))
    if family == 10:
        a = ipaddress.IPv6Address(b[:16])
        return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)
    return None


def _addresses(fam: np.ndarray, addr: np.ndarray, inet: np.ndarray) -> pa.Array:
    """IP addresses as text where ``inet``, else null: each distinct (family, address) of
    the batch formatted once (a port scan or a busy server names a few addresses over and
    over), then one take."""
    n = len(fam)
    idx = np.nonzero(inet)[0]
    if not len(idx):
        return pa.nulls(n, pa.string())
    # Distinct (address, family) pairs by Arrow's hash over 24-byte keys, in one pass: a
    # sort on (family, two 64-bit words) cost ~0.5 µs a row, np.unique(axis=0) over rows of
    # bytes ~1.5, and half a web server's records are network records.
    raw = np.ascontiguousarray(addr[idx]).view(np.uint8).reshape(len(idx), -1)
    keys = np.zeros((len(idx), 24), np.uint8)
    keys[:, :16] = raw[:, :16]
    keys[:, 16:] = fam[idx].astype(np.int64).view(np.uint8).reshape(len(idx), 8)
    coded = pc.dictionary_encode(pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(24), len(idx), [None, pa.py_buffer(keys)]))
    uniq = coded.dictionary
    distinct = np.frombuffer(uniq.buffers()[1], np.uint8, count=len(uniq) * 24,
                             offset=uniq.offset * 24).reshape(len(uniq), 24)
    names = pa.array([_ip(int(k[16:].view(np.int64)[0]), k[:16].tobytes()) for k in distinct], pa.string())
    at = np.zeros(n, np.int32)
    at[idx] = coded.indices.to_numpy(zero_copy_only=False)
    return names.take(pa.array(at, mask=~inet))
