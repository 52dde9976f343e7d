"""A raw stream's decoder checkpoint as one Arrow IPC file (server/rawdecode.py writes it).

The state is what ``sensor.decoder_state.export_state`` describes (the process cache in its
eviction order, the /proc snapshot's ids, file labels and their history, terminal names,
the clock offset); here each part is a column of one row (a list of structs), built from
the decoder's own containers column by column, and written with zstd-compressed buffers.
JSON of the same state took the connection thread 1-3 s at 50,000-200,000 processes with
the GIL held (``python -m bench.loghost_cost checkpoint``). Data, not code: a log host reads
it from an agent it does not trust, as it did the JSON. Checkpoints written as zstd JSON by
an older log host are still read (``load``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import ipc

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder, ProcessCache, _Proc

__all__ = ["MAGIC", "dump", "load"]

MAGIC = b"ARROW1"  # an Arrow IPC file's first bytes (a JSON checkpoint is zstd's frame)
_U64, _I64 = pa.uint64(), pa.int64()


def _list(values: pa.StructArray) -> pa.ListArray:
    """One row holding every value (the part's rows, in order)."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)


def _struct(**cols: pa.Array) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(cols.values()), list(cols))


def _parts(dec: Decoder) -> dict[str, pa.StructArray]:
    procs = list(dec.cache.procs.values())
    hist = [(k, t, p) for k, h in dec.label_history.items() for t, p in h]
    ids = dec.ids
    return {
        "procs": _struct(
            eid=pa.array(list(dec.cache.procs), _U64), pid=pa.array([p.pid for p in procs], _U64),
            parent=pa.array([p.parent for p in procs], _U64), image_seq=pa.array([p.image_seq for p in procs], _I64),
            exe=pa.array([p.exe for p in procs], pa.string()),
            args=pa.array([p.args for p in procs], pa.list_(pa.string())),
            cwd=pa.array([p.cwd for p in procs], pa.string()), exited=pa.array([p.exited for p in procs], pa.bool_())),
        "by_pid": _struct(pid=pa.array(list(dec.cache.by_pid), _U64), eid=pa.array(list(dec.cache.by_pid.values()), _U64)),
        "snapshot": _struct(pid=pa.array(np.asarray(ids._pid, np.uint64)), tick=pa.array(np.asarray(ids._tick, np.uint64)),
                            eid=pa.array(np.asarray(ids._eid, np.uint64))),
        "labels": _struct(key=pa.array(list(dec.labels), _U64), path=pa.array(list(dec.labels.values()), pa.string())),
        "label_history": _struct(key=pa.array([k for k, _, _ in hist], _U64), ts=pa.array([t for _, t, _ in hist], _I64),
                                 path=pa.array([p for _, _, p in hist], pa.string())),
        "tty_names": _struct(dev=pa.array(list(dec.tty_names), _U64),
                             name=pa.array(list(dec.tty_names.values()), pa.string())),
    }


def dump(fmt: int, seq: int, abi: dict[str, Any], info: HostInfo, dec: Decoder) -> bytes:
    """The checkpoint of ``dec`` after frame ``seq``, as the bytes of an Arrow IPC file."""
    parts = _parts(dec)
    meta = {"format": str(fmt), "seq": str(seq), "abi": json.dumps(abi), "host": json.dumps(asdict(info)),
            "offset_ns": str(dec.offset_ns), "history_limit": str(dec._history_limit)}
    table = pa.table({k: _list(v) for k, v in parts.items()}).replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return bytes(sink.getvalue())


def load(data: bytes, host_name: str) -> tuple[int, dict[str, Any], HostInfo, Decoder]:
    """(seq, abi, host, decoder) from a checkpoint ``dump`` wrote; a malformed one raises
    ValueError, KeyError, TypeError or IndexError (pyarrow's errors are ValueErrors)."""
    table = ipc.open_file(pa.py_buffer(data)).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    abi = json.loads(meta["abi"])
    host = json.loads(meta["host"])
    info = HostInfo(str(host["host_id"]), host_name, str(host["boot_id"]), str(host["kernel"]))
    dec = Decoder(abi, info, 0)

    def part(name: str) -> dict[str, list[Any]]:
        values = table.column(name).chunk(0).values
        return {f.name: values.field(f.name).to_pylist() for f in values.type}

    p = part("procs")
    cache = ProcessCache(dec.cache.limit)
    for eid, pid, parent, seq_, exe, args, cwd, exited in zip(
            p["eid"], p["pid"], p["parent"], p["image_seq"], p["exe"], p["args"], p["cwd"], p["exited"], strict=True):
        cache.procs[eid] = _Proc(pid, parent, seq_, exe, args, cwd, exited)
    b = part("by_pid")
    cache.by_pid = dict(zip(b["pid"], b["eid"], strict=True))
    dec.cache = cache
    snap = table.column("snapshot").chunk(0).values
    dec.ids._pid, dec.ids._tick, dec.ids._eid = (
        snap.field(c).to_numpy(zero_copy_only=False).astype(np.uint64) for c in ("pid", "tick", "eid"))
    lab = part("labels")
    dec.labels = dict(zip(lab["key"], lab["path"], strict=True))
    h = part("label_history")
    history: dict[int, list[tuple[int, str | None]]] = {}
    for k, t, path in zip(h["key"], h["ts"], h["path"], strict=True):
        history.setdefault(k, []).append((t, path))
    dec.label_history = history
    tty = part("tty_names")
    dec.tty_names = dict(zip(tty["dev"], tty["name"], strict=True))
    dec._history_limit = int(meta["history_limit"])
    dec.offset_ns = int(meta["offset_ns"])
    return int(meta["seq"]), abi, info, dec
