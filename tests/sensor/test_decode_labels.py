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


def test_moved_files_are_named_row_by_row_as_their_history_says() -> None:
    """Many files whose paths changed, in one flush with other files' rows: each row gets the
    path its file held at the row's time (the last change at or before it; before the
    first, the first path), also for a history out of order by a few ns (records written
    on two CPUs at once reach the ring in reservation order)."""
    dec = Decoder(json.loads(np.load(SAMPLE)["abi"].tobytes()), HostInfo("h", "h", "b", "6.18"))
    rng = np.random.default_rng(11)
    history: dict[int, list[tuple[int, str | None]]] = {}
    for ino in range(1, 60):
        k = int(dec.label_key(np.array([ino], np.uint64), np.array([5], np.uint64))[0])
        dec.labels[k] = f"/now/{ino}"
        if ino % 3:  # two files in three have moved
            times = np.sort(rng.integers(1, 1000, int(rng.integers(1, 8)))).tolist()
            if ino % 7 == 0 and len(times) > 1:  # out of order by a little
                times[-1], times[-2] = times[-2], times[-1]
            history[k] = [(0, f"/first/{ino}")] + [(t, None if j == 1 else f"/{ino}/{t}") for j, t in enumerate(times)]
    dec.label_history.update(history)
    ino = rng.integers(1, 60, 4000).astype(np.uint64)
    ts = rng.integers(0, 1100, 4000).astype(np.int64)
    keys = dec.label_key(ino, np.full(4000, 5, np.uint64)).tolist()

    def expected(k: int, t: int) -> str | None:
        hist = history.get(k)
        if hist is None:
            return dec.labels[k]
        return next((p for since, p in reversed(hist) if since <= t), hist[0][1])

    got = dec.label(ino, np.full(4000, 5, np.uint64), ts).to_pylist()
    assert got == [expected(k, t) for k, t in zip(keys, ts.tolist())]


def test_addresses_are_formatted_once_each_and_null_off_inet_rows() -> None:
    """A batch's IP addresses (a port scan: one address thousands of times) are each
    formatted once and taken per row; rows of other families stay null."""
    import ipaddress

    from forensix.sensor.strings import _addresses

    v4 = ipaddress.IPv4Address("127.0.0.1").packed + bytes(12)
    v6 = ipaddress.IPv6Address("2001:db8::7").packed
    mapped = ipaddress.IPv6Address("::ffff:10.0.0.9").packed
    addr = np.array([list(a) for a in (v4, v6, v4, mapped, v6, v4, bytes(16))], np.uint8)
    fam = np.array([2, 10, 2, 10, 10, 1, 0], np.int64)
    inet = np.array([True, True, True, True, True, False, False])
    got = _addresses(fam, addr, inet).to_pylist()
    assert got == ["127.0.0.1", "2001:db8::7", "127.0.0.1", "10.0.0.9", "2001:db8::7", None, None]
    assert _addresses(fam, addr, np.zeros(7, bool)).to_pylist() == [None] * 7
