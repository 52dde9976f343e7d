"""Rows of the kernel's aggregated maps (flow edges, re-open counts), named by a decoder.

The recorder makes them at each flush; the log host makes the same rows from the map
entries a raw-record agent ships (agent/raw.py, server/rawdecode.py), with the decoder
state it rebuilt from the same records: one function for both, so the rows cannot drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder, _table, comm_names, file_type_codes, file_types, repeat
from forensix.store import schema

__all__ = ["flow_rows", "reopen_rows"]


def _origin(host: HostInfo, n: int) -> dict[str, Any]:
    return {"host_id": repeat(host.host_id, n), "host_name": repeat(host.host_name, n),
            "boot_id": repeat(host.boot_id, n)}


def reopen_rows(dec: Decoder, host: HostInfo, off: int, k: np.ndarray, v: np.ndarray) -> pa.Table | None:
    """One summary row per (process, file) that re-opened it read-only in the period."""
    keep = v["count"] > 0
    k, v = k[keep], v[keep]
    n = len(v)
    if not n:
        return None
    paths = dec.label(k["ino"], k["dev"], v["first"])  # named as at the first re-open
    names = comm_names(v["comm"])  # the process's own: the pid may be another's by now
    ev = _origin(host, n)
    ev.update(
        file_path=paths, process_name=names,
        ts=v["last"].astype(np.int64) + off, ts_boot=v["last"].astype(np.int64),
        event_kind=repeat("event", n), event_category=repeat("file", n),
        event_action=repeat("open", n), event_outcome=repeat("success", n),
        event_count=v["count"], event_start=v["first"].astype(np.int64) + off,
        event_end=v["last"].astype(np.int64) + off,
        process_entity_id=dec.ids.ids(k["pid"], k["start"]), process_pid=k["pid"],
        user_id=k["uid"], user_effective_id=k["euid"],  # the kernel counts each user apart
        file_inode=k["ino"], file_device=k["dev"].astype(np.uint64), file_flags=k["flags"],
        file_generation=k["igen"], file_path_resolution=repeat("kernel", n),
    )
    return _table(schema.EVENTS, ev, n)


def flow_rows(dec: Decoder, host: HostInfo, off: int, k: np.ndarray, v: np.ndarray) -> pa.Table:
    """The edges flushed from the kernel's map, stored once: in ``flows`` (in_events
    false), from which the store's ``events`` view derives their rows."""
    n = len(v)
    ftype = file_types(v["imode"])
    names = comm_names(v["comm"])  # the edge's own: the pid may be another process's by now
    paths = _edge_paths(dec, k, v, ftype)
    fl = _origin(host, n)
    fl.update(
        entity_id=dec.ids.ids(k["pid"], v["start"]), pid=k["pid"], fd=v["fd"],
        file_inode=v["ino"], file_device=v["dev"].astype(np.uint64), file_type=ftype, file_path=paths,
        first_ts=v["first"].astype(np.int64) + off, last_ts=v["last"].astype(np.int64) + off,
        read_count=v["rcount"], read_bytes=v["rbytes"], write_count=v["wcount"], write_bytes=v["wbytes"],
        reason=repeat("periodic", n), tid=v["tid"], process_name=names,
        ts_boot=v["last"].astype(np.int64), in_events=np.zeros(n, bool), user_id=v["uid"],
        file_generation=v["igen"],
    )
    return _table(schema.FLOWS, fl, n)


def _edge_paths(dec: Decoder, k: np.ndarray, v: np.ndarray, ftype: pa.Array) -> pa.Array:
    """Each edge's file_path: pipes and sockets named by inode ("socket:[123]"), the other
    files as they were named when the edge began. A web server's edges are nearly all
    sockets, each of another inode: looking them up among the names of opened files (a
    Python dictionary lookup per distinct inode) was most of the flush's rows' cost, for
    names then replaced."""
    pseudo = np.isin(file_type_codes(v["imode"]), (0o01, 0o14))
    if not pseudo.any():
        return dec.label(k["ino"], k["dev"], v["first"])
    rest, ps = np.flatnonzero(~pseudo), np.flatnonzero(pseudo)
    named = dec.label(k["ino"][rest], k["dev"][rest], v["first"][rest])
    by_inode = pc.binary_join_element_wise(ftype.take(pa.array(ps)), ":[", pa.array(k["ino"][ps]).cast(pa.string()),
                                           "]", "")
    at = np.empty(len(v), np.int64)
    at[rest] = np.arange(len(rest))
    at[ps] = len(rest) + np.arange(len(ps))
    return pa.concat_arrays([named, by_inode]).take(pa.array(at))
