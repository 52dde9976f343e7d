"""Schema-valid batches as the recorder hands them to a Sink: our fake at the Sink seam.

Used by the transport tests, the benchmark, and ``forensix agent --synthetic`` (a load
generator) until a recorder is available, and beside it afterwards.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pyarrow as pa

from forensix.model.host import HostInfo, local_host
from forensix.store.schema import EVENTS

__all__ = ["BatchSource", "events_batch"]

_ACTIONS = np.array(["open", "exec", "connect", "unlink", "rename", "flow"], dtype=object)
_CATEGORY = {"open": "file", "exec": "process", "connect": "network", "unlink": "file",
             "rename": "file", "flow": "flow"}


def events_batch(n: int, *, start_seq: int = 0, ts: int | None = None, host: HostInfo | None = None,
                 marker: str | None = None) -> pa.Table:
    """``n`` events with distinct ``seq`` values starting at ``start_seq`` (cpu 0)."""
    h = host or local_host()
    t0 = ts if ts is not None else time.time_ns()
    seq = np.arange(start_seq, start_seq + n, dtype=np.uint64)
    actions = _ACTIONS[seq.astype(np.int64) % len(_ACTIONS)]
    cols = {
        "host_id": pa.array([h.host_id] * n, pa.string()),
        "host_name": pa.array([h.host_name] * n, pa.string()),
        "boot_id": pa.array([h.boot_id] * n, pa.string()),
        "ts": pa.array(t0 + np.arange(n, dtype=np.int64) * 1000, pa.int64()),
        "cpu": pa.array(np.zeros(n, dtype=np.uint16)),
        "seq": pa.array(seq),
        "event_kind": pa.array(["event"] * n, pa.string()),
        "event_category": pa.array([_CATEGORY[a] for a in actions], pa.string()),
        "event_action": pa.array(list(actions), pa.string()),
        "process_pid": pa.array((seq % 30000 + 100).astype(np.uint32)),
        "process_name": pa.array(["synthetic"] * n, pa.string()),
        "file_path": pa.array([f"/tmp/fx/{int(s)}" for s in seq], pa.string()),
        "message": pa.array([marker] * n, pa.string()),
    }
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in EVENTS]
    return pa.Table.from_arrays(arrays, schema=EVENTS)


class BatchSource:
    """An endless source of event batches with increasing ``seq`` (one CPU)."""

    def __init__(self, batch_rows: int = 1000, marker: str | None = None) -> None:
        self.batch_rows = batch_rows
        self.marker = marker
        self.host = local_host()
        self._seq = itertools.count(0, batch_rows)

    def next(self) -> pa.Table:
        return events_batch(self.batch_rows, start_seq=next(self._seq), host=self.host, marker=self.marker)
