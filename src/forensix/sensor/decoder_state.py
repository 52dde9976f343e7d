"""The state a ``Decoder`` carries from batch to batch, as data: the raw-record agent's seed
(agent/raw.py) and the log host's decoder checkpoints (server/rawdecode.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from forensix.sensor.decode import Decoder, ProcessCache, _Proc

__all__ = ["export_state", "import_state"]


def export_state(dec: Decoder) -> dict[str, Any]:
    """What the next batch's decoding depends on, as JSON-able data: the process cache (in
    its eviction order), the /proc snapshot's ids, the file labels and their history, the
    terminal names and the clock offset. ``import_state`` of it decodes the same rows.
    JSON, not pickle: a log host reads it from an agent it does not trust with code."""
    ids = dec.ids
    return {
        "offset_ns": dec.offset_ns,
        "procs": [[eid, p.pid, p.parent, p.image_seq, p.exe, p.args, p.cwd, p.exited]
                  for eid, p in dec.cache.procs.items()],
        "by_pid": [[pid, eid] for pid, eid in dec.cache.by_pid.items()],
        "snapshot": [ids._pid.tolist(), ids._tick.tolist(), ids._eid.tolist()],
        "labels": [[k, v] for k, v in dec.labels.items()],
        "label_history": [[k, [[t, p] for t, p in h]] for k, h in dec.label_history.items()],
        "history_limit": dec._history_limit,
        "tty_names": [[k, v] for k, v in dec.tty_names.items()],
    }



def import_state(dec: Decoder, st: dict[str, Any]) -> None:
    """Take over a state ``export_state`` made (a malformed one raises ValueError/TypeError/KeyError)."""
    cache = ProcessCache(dec.cache.limit)
    for eid, pid, parent, seq, exe, args, cwd, exited in st["procs"]:
        cache.procs[int(eid)] = _Proc(int(pid), None if parent is None else int(parent), int(seq),
                                      None if exe is None else str(exe),
                                      None if args is None else [str(a) for a in args],
                                      None if cwd is None else str(cwd), bool(exited))
    cache.by_pid = {int(pid): int(eid) for pid, eid in st["by_pid"]}
    pids, ticks, eids = st["snapshot"]
    if not len(pids) == len(ticks) == len(eids):
        raise ValueError("snapshot ids of unequal lengths")
    dec.ids._pid = np.asarray(pids, np.uint64)
    dec.ids._tick = np.asarray(ticks, np.uint64)
    dec.ids._eid = np.asarray(eids, np.uint64)
    dec.cache = cache
    dec.labels = {int(k): None if v is None else str(v) for k, v in st["labels"]}
    dec.label_history = {int(k): [(int(t), None if p is None else str(p)) for t, p in h]
                          for k, h in st["label_history"]}
    dec._history_limit = int(st["history_limit"])
    dec.tty_names = {int(k): str(v) for k, v in st["tty_names"]}
    dec.offset_ns = int(st["offset_ns"])
