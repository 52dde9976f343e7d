"""Labels for the kernel's aggregated rows (flow edges, re-open counts): per row, the
path the decoder last saw for (inode, device) and the name it last saw for the pid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder

SAMPLE = Path(__file__).parent / "data" / "ringbuf-sample.npz"


def test_label_gives_each_row_what_the_dicts_hold() -> None:
    dec = Decoder(json.loads(np.load(SAMPLE)["abi"].tobytes()), HostInfo("h", "h", "b", "6.18"))
    rng = np.random.default_rng(7)
    ino = rng.integers(1, 50, 3000).astype(np.uint64)
    dev = rng.integers(1, 3, 3000).astype(np.uint64)
    pid = rng.integers(1, 30, 3000).astype(np.uint32)
    keys = dec.label_key(ino, dev)
    known = np.unique(keys).tolist()
    dec.labels.update({k: f"/file/{k}" for k in known[::2]})
    dec.labels[known[1]] = None
    dec.names.update({p: f"proc{p}" for p in range(1, 30, 3)})
    paths, names = dec.label(ino, dev, pid)
    assert paths.to_pylist() == [dec.labels.get(k) for k in keys.tolist()]
    assert names.to_pylist() == [dec.names.get(p) for p in pid.tolist()]
    empty = dec.label(ino[:0], dev[:0], pid[:0])
    assert len(empty[0]) == len(empty[1]) == 0
