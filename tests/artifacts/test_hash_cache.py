"""Files hashed in one recording are copied, not hashed again, in the next (artifacts/hashes.py):
each fresh store of a build used to hash cc1's 33 MB again. Only where a change would show."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.artifacts import store as store_mod
from forensix.artifacts.hashes import HashCache
from forensix.artifacts.store import ArtifactStore, Put

_sha256 = hashlib.sha256  # the tests' own hashing, not counted


def _hex(b: bytes) -> str:
    return _sha256(b).hexdigest()


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times the store started hashing a file."""
    calls: list[int] = []
    real = _sha256

    def counting(*a: Any) -> Any:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(store_mod.hashlib, "sha256", counting)
    yield calls


def _put(root: Path, cache: Path, path: Path) -> tuple[ArtifactStore, Put]:
    """One recording's store (fresh, or again the same root), with the host's cache at ``cache``."""
    st = ArtifactStore(root).open(HashCache(cache))
    fd = os.open(path, os.O_RDONLY)
    try:
        return st, st.put_fd(fd)
    finally:
        os.close(fd)


def _tool(tmp_path: Path, body: bytes) -> Path:
    d = tmp_path / "bin"
    d.mkdir(mode=0o755, exist_ok=True)
    p = d / "cc1"
    p.write_bytes(body)
    os.chown(p, 0, 0)
    p.chmod(0o755)
    return p


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root-owned files are what the cache trusts")


def test_a_tool_hashed_in_one_recording_is_copied_unhashed_into_the_next_store(tmp_path: Path,
                                                                               hashed: list[int]) -> None:
    body = os.urandom(3 << 20)
    tool = _tool(tmp_path, body)
    _, put1 = _put(tmp_path / "rec1", tmp_path / "cache", tool)
    assert len(hashed) == 1 and put1.stored and put1.sha256 == _hex(body)
    second, put2 = _put(tmp_path / "rec2", tmp_path / "cache", tool)
    assert len(hashed) == 1, "the second recording hashed the unchanged tool again"
    assert put2 == Put(put1.sha256, len(body), True)
    blob = second.path_of(put2.sha256 or "")
    assert blob.read_bytes() == body and blob.stat().st_mode & 0o077 == 0
    assert second.stored_files == 1 and second.stored_bytes == len(body)
    # and a store that has it already reads nothing of it
    again, put3 = _put(tmp_path / "rec2", tmp_path / "cache", tool)
    assert len(hashed) == 1 and put3 == Put(put1.sha256, len(body), False)
    assert again.hashes is not None and again.hashes.hits == 1


def test_a_tool_changed_in_place_is_hashed_again(tmp_path: Path, hashed: list[int]) -> None:
    tool = _tool(tmp_path, b"a" * 5000)
    _put(tmp_path / "rec1", tmp_path / "cache", tool)
    st = tool.stat()
    with open(tool, "r+b") as f:  # same size, mtime put back: ctime moves, and so the identity
        f.write(b"b" * 5000)
    os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, put = _put(tmp_path / "rec2", tmp_path / "cache", tool)
    assert len(hashed) == 2 and put.sha256 == _hex(b"b" * 5000)


@pytest.mark.parametrize("how", ["group-writable", "not root's"])
def test_a_file_someone_else_can_change_is_hashed_every_time(tmp_path: Path, hashed: list[int], how: str) -> None:
    tool = _tool(tmp_path, b"c" * 5000)
    if how == "group-writable":
        tool.chmod(0o775)
    else:
        os.chown(tool, 1000, 1000)
    _put(tmp_path / "rec1", tmp_path / "cache", tool)
    _, put = _put(tmp_path / "rec2", tmp_path / "cache", tool)
    assert len(hashed) == 2 and put.sha256 == _hex(b"c" * 5000)


def test_a_cache_others_can_write_is_not_used(tmp_path: Path, hashed: list[int]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    tool = _tool(tmp_path, b"d" * 5000)
    first, _ = _put(tmp_path / "rec1", cache, tool)
    _put(tmp_path / "rec2", cache, tool)
    assert len(hashed) == 2
    assert first.hashes is not None and "someone else" in (first.hashes.note or "")
    assert not (cache / "sha256-v1").exists() or (cache / "sha256-v1").read_text() == ""


def test_planted_lines_are_skipped_and_a_tool_changed_during_its_copy_is_read(tmp_path: Path, hashed: list[int],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool(tmp_path, b"e" * 5000)
    _put(tmp_path / "rec1", tmp_path / "cache", tool)
    with open(tmp_path / "cache" / "sha256-v1", "a") as f:
        f.write("not a line\n1 2 3\n")
    real = os.copy_file_range

    def changing(*a: Any) -> int:  # the tool rewritten while the copy runs
        tool.write_bytes(b"f" * 5000)
        return real(*a)

    monkeypatch.setattr(store_mod.os, "copy_file_range", changing)
    _, put = _put(tmp_path / "rec2", tmp_path / "cache", tool)
    assert len(hashed) == 2  # the copy was not trusted: read and hashed
    assert put.sha256 == _hex(b"f" * 5000) and not put.certain  # changed since its exec: said so
    assert not list((tmp_path / "rec2" / "tmp").iterdir())


def test_the_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forensix.artifacts import hashes

    monkeypatch.setattr(hashes, "_KEEP", 4)
    cache = HashCache(tmp_path / "cache")
    for i in range(20):
        p = _tool(tmp_path, b"g%d" % i)
        cache.add(p.stat(), _hex(b"g%d" % i))
        p.unlink()
    lines = (tmp_path / "cache" / "sha256-v1").read_text().splitlines()
    assert len(lines) <= 8 and cache._map is not None and len(cache._map) <= 8
    assert lines[-1].endswith(_hex(b"g19"))
