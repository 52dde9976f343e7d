"""Labels for the kernel's aggregated rows (flow edges, re-open counts): per row, the
path the decoder last saw for (inode, device). (Their process names come from the
kernel's own entries: tests/sensor/test_flow_pid_reuse.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder

SAMPLE = Path(__file__).parent / "data" / "ringbuf-sample.npz"


def test_label_gives_each_row_what_the_dict_holds() -> None:
    dec = Decoder(json.loads(np.load(SAMPLE)["abi"].tobytes()), HostInfo("h", "h", "b", "6.18"))
    rng = np.random.default_rng(7)
    ino = rng.integers(1, 50, 3000).astype(np.uint64)
    dev = rng.integers(1, 3, 3000).astype(np.uint64)
    keys = dec.label_key(ino, dev)
    known = np.unique(keys).tolist()
    dec.labels.update({k: f"/file/{k}" for k in known[::2]})
    dec.labels[known[1]] = None
    assert dec.label(ino, dev).to_pylist() == [dec.labels.get(k) for k in keys.tolist()]
    assert len(dec.label(ino[:0], dev[:0])) == 0
