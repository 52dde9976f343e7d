"""The artifact store on its own: limits that count what they refuse, FIFOs never read, corrupt blobs named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from forensix.artifacts.store import ArtifactStore
from forensix.errors import StoreError, UsageError


def _put(store: ArtifactStore, path: Path) -> object:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return store.put_fd(fd)
    finally:
        os.close(fd)


def test_once_per_content_and_limits_count(tmp_path: Path) -> None:
    st = ArtifactStore(tmp_path / "a", max_file_bytes=1000, quota_bytes=1500).open()
    a, b, big = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "big.bin"
    a.write_bytes(b"x" * 800)
    b.write_bytes(b"y" * 800)
    big.write_bytes(b"z" * 1001)
    first, again = _put(st, a), _put(st, a)
    assert first.stored and not again.stored and first.sha256 == again.sha256 == hashlib.sha256(b"x" * 800).hexdigest()
    over = _put(st, big)
    assert over.sha256 is None and "limit" in (over.reason or "")
    full = _put(st, b)  # 800 + 800 > 1500
    assert full.sha256 is None and "quota" in (full.reason or "")
    assert st.refused == {"size": 1, "quota": 1} and st.refused_bytes == 1801
    assert len(st.blobs()) == 1
    assert all(p.stat().st_mode & 0o077 == 0 for p in [st.root, *st.root.rglob("*")])


def test_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    st = ArtifactStore(tmp_path / "a").open()
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    got = _put(st, fifo)  # opened non-blocking: nothing to read, nothing taken from a reader
    assert got.sha256 is None and "fifo" in (got.reason or "") and st.refused == {"type": 1}


def test_corrupt_blob_and_bad_hash_are_clear_errors(tmp_path: Path) -> None:
    st = ArtifactStore(tmp_path / "a").open()
    f = tmp_path / "x"
    f.write_bytes(b"payload")
    sha = _put(st, f).sha256
    assert sha and st.read(sha) == b"payload"
    st.path_of(sha).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="does not match its hash"):
        st.read(sha)
    with pytest.raises(UsageError):
        st.path_of("../../etc/passwd")
    with pytest.raises(StoreError, match="no artifact"):
        st.read("0" * 64)
