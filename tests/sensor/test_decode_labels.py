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


def test_an_edge_is_named_as_its_file_was_when_the_edge_began() -> None:
    """The inode of a deleted file names the next file created (useradd replaces
    /etc/passwd, and the new /etc/shadow takes the old passwd's inode): an edge on the old
    file, flushed after that, keeps the old file's name; a rename names later edges anew."""
    import pyarrow as pa

    dec = Decoder(json.loads(np.load(SAMPLE)["abi"].tobytes()), HostInfo("h", "h", "b", "6.18"))
    ino = np.array([7, 9, 7, 7, 9], np.uint64)
    dev = np.full(5, 3, np.uint64)
    batch = pa.table({
        "file_path": ["/etc/passwd", "/tmp/a", "/etc/passwd", "/etc/shadow", "/tmp/b"],
        "ts_boot": pa.array([100, 110, 120, 200, 300], pa.int64()),
    })
    dec._remember_labels(batch, ino, dev, np.ones(5, bool))
    # the edges' first kernel times: before and after each change
    at = np.array([150, 250, 150, 350, 50], np.int64)
    got = dec.label(np.array([7, 7, 9, 9, 7], np.uint64), np.full(5, 3, np.uint64), at).to_pylist()
    assert got == ["/etc/passwd", "/etc/shadow", "/tmp/a", "/tmp/b", "/etc/passwd"]
    # without times, the last name known (what queries of the live state want)
    assert dec.label(np.array([7, 9], np.uint64), np.full(2, 3, np.uint64)).to_pylist() == ["/etc/shadow", "/tmp/b"]
    # a later batch changes a name again: the history grows, in order
    dec._remember_labels(pa.table({"file_path": ["/etc/passwd-"], "ts_boot": pa.array([400], pa.int64())}),
                         np.array([7], np.uint64), np.array([3], np.uint64), np.ones(1, bool))
    got = dec.label(np.array([7, 7, 7], np.uint64), np.full(3, 3, np.uint64), np.array([150, 250, 450]))
    assert got.to_pylist() == ["/etc/passwd", "/etc/shadow", "/etc/passwd-"]
