"""Decode terminal records (FX_KIND_TTY, bpf/tty.bpf.h) into rows of the ``tty`` table.

Terminal records are few next to file events (bounded per terminal per second in the
kernel), so they are decoded apart from the wide ``events`` rows, a batch at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from forensix.sensor.abi import enum
from forensix.store import schema

if TYPE_CHECKING:
    from forensix.sensor.decode import Decoder

__all__ = ["ECHO", "ICANON", "budget_cuts", "decode_tty"]

ECHO = 0o10
ICANON = 0o2


def _blobs(raw: np.ndarray, start: np.ndarray, ln: np.ndarray, present: np.ndarray) -> pa.Array:
    """The bytes at raw[start : start+ln-1] (ln counts the NUL the sensor adds), as binary."""
    n = len(start)
    L = np.where(present, np.maximum(ln - 1, 0), 0).astype(np.int64)
    cum = np.zeros(n + 1, np.int64)
    np.cumsum(L, out=cum[1:])
    total = int(cum[-1])
    data = b""
    if total:
        idx = np.arange(total, dtype=np.int64) + np.repeat(start.astype(np.int64) - cum[:-1], L)
        data = raw[idx].tobytes()
    bitmap = np.packbits(present, bitorder="little").tobytes()
    return pa.Array.from_buffers(
        pa.binary(), n, [pa.py_buffer(bitmap), pa.py_buffer(cum.astype(np.int32).tobytes()), pa.py_buffer(data)]
    )


def decode_tty(dec: Decoder, raw: np.ndarray, sbase: np.ndarray, f: np.ndarray, slen: np.ndarray) -> pa.Table:
    """One ``tty`` row per terminal record (fixed parts ``f``, strings at ``sbase``)."""
    from forensix.sensor.decode import _cstr, comm_names

    n = len(f)
    flags = f["flags"].astype(np.int64)
    masked = (flags & dec.F["FX_F_TTY_MASKED"]) != 0
    args = f["args"]
    A = dec.tty_arg
    lflag = args[:, A["FX_TTY_LFLAG"]]
    cut = args[:, A["FX_TTY_CUT"]]
    cut_from = args[:, A["FX_TTY_CUT_FROM"]].astype(np.int64)
    nr = f["nr"].astype(np.int64)
    names = pa.array(dec.sc_name[np.clip(nr, 0, len(dec.sc_name) - 1)], pa.string())
    cols = dec._stamped(f, n)
    cols.update(
        process_entity_id=pa.array(dec.ids.ids(f["pid"], f["start"])),
        process_pid=pa.array(f["pid"]),
        process_name=comm_names(f["comm"]),
        user_id=pa.array(f["uid"]),
        process_session_id=pa.array(f["sessionid"]),
        tty=_cstr(f["tty"]),
        tty_device=pa.array(args[:, A["FX_TTY_DEV"]].astype(np.uint32)),
        direction=pa.array(np.where(args[:, A["FX_TTY_WRITE"]] != 0, "output", "input").astype(object), pa.string()),
        syscall=names,
        # a masked read keeps no length either: a password's length is a clue
        bytes=pa.array(f["ret"].astype(np.uint64), mask=masked),
        data=_blobs(raw, sbase, slen[:, 0].astype(np.int64), (slen[:, 0] > 0) & ~masked),
        cut_bytes=pa.array(cut),
        cut_from_ts=pa.array(cut_from + dec.offset_ns, mask=cut == 0),
        masked=pa.array(masked),
        echo=pa.array((lflag & ECHO) != 0),
        canonical=pa.array((lflag & ICANON) != 0),
    )
    dec.tty_names.update(zip(cols["tty_device"].to_pylist(), cols["tty"].to_pylist()))
    arrays = [cols[fld.name] if fld.name in cols else pa.nulls(n, fld.type) for fld in schema.TTY]
    return pa.Table.from_arrays([a.cast(fld.type) for a, fld in zip(arrays, schema.TTY)], schema=schema.TTY)


def budget_cuts(dec: Decoder, keys: np.ndarray, vals: np.ndarray, names: dict[int, str]) -> pa.Table | None:
    """Rows for the cuts still pending in the kernel's ``tty_budget`` map at the end of a
    recording (no record came after them to carry the count): data-less rows that say so."""
    keep = vals["cut"] > 0
    keys, vals = keys[keep], vals[keep]
    n = len(vals)
    if not n:
        return None
    cut_from = vals["cut_from"].astype(np.int64)
    cols: dict[str, Any] = dec._origin(n)
    cols.update(
        ts=pa.array(cut_from + dec.offset_ns, pa.int64()), ts_boot=pa.array(cut_from, pa.int64()),
        tty=pa.array([names.get(int(k)) for k in keys], pa.string()),
        tty_device=pa.array(keys.astype(np.uint32)), direction=pa.array(["unknown"] * n, pa.string()),  # cuts of either way
        cut_bytes=pa.array(vals["cut"]), cut_from_ts=pa.array(cut_from + dec.offset_ns, pa.int64()),
        masked=pa.array(np.zeros(n, bool)),
    )
    arrays = [cols[fld.name] if fld.name in cols else pa.nulls(n, fld.type) for fld in schema.TTY]
    return pa.Table.from_arrays([a.cast(fld.type) for a, fld in zip(arrays, schema.TTY)], schema=schema.TTY)


def tty_args(abi: dict[str, Any]) -> dict[str, int]:
    return enum(abi, "fx_tty_arg")
