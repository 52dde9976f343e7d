"""The SHA-256 of files already read, kept between recordings (issue 25: builds ≤ 3% slower).

Every recording into a fresh store reads the compilers again: cc1 alone is 33 MB, ~25 ms of
hashing and ~11 ms of copying on this machine kind, and a lua build's recorder spent ~45 ms
of its ~180 in the artifacts reader (docs/build-cost.md). The copy is evidence (the store
must hold the bytes); the hash of a file nobody changed is not news. So a file's hash is kept
under its identity ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` and a later
recording copies the file without hashing it again.

Trusted only where a change would show: the file is owned by root and writable by nobody
else (only root can change its content, and every write or truncate moves mtime and ctime;
ctime cannot be set from user space), and the hash was taken by a read that saw the same
identity before and after (``Put.certain``). A file of any other owner or mode is hashed
every time. The entries live in one append-only text file in a directory owned by this user
and writable by nobody else (checked as the rule cache checks its own, rules/rule_cache.py);
anything else is not used, and a line that does not parse is skipped.

The default place is /var/cache/forensix/hashes for root (recording needs root);
``FORENSIX_HASH_CACHE`` names another directory, or ``off``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

__all__ = ["DEFAULT_HASH_DIR", "HASH_CACHE_ENV", "HashCache", "Identity", "hash_cache", "identity", "trusted"]

HASH_CACHE_ENV = "FORENSIX_HASH_CACHE"
DEFAULT_HASH_DIR = Path("/var/cache/forensix/hashes")
_FILE = "sha256-v1"
_KEEP = 8192  # entries kept when the file is rewritten (a host's executables, with room)
_LINE = re.compile(r"^(\d+) (\d+) (\d+) (-?\d+) (-?\d+) ([0-9a-f]{64})$")

Identity = tuple[int, int, int, int, int]  # (dev, ino, size, mtime_ns, ctime_ns)


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def trusted(st: os.stat_result) -> bool:
    """A file only root can change (module doc): its kept hash may stand for its bytes."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _owned_dir(d: Path) -> bool:
    """``d`` and every directory above it owned by root or this user and writable by nobody
    else (a root-owned sticky directory above, such as /tmp, is allowed)."""
    me = os.geteuid()
    real = Path(os.path.realpath(d))
    for i, p in enumerate((real, *real.parents)):
        st = os.stat(p)
        if st.st_uid not in (0, me) or (i == 0 and st.st_uid != me):
            return False
        if st.st_mode & 0o022 and not (i and st.st_mode & stat.S_ISVTX and st.st_uid == 0):
            return False
    return True


class HashCache:
    """Hashes by file identity, read from ``directory`` on first use and appended to."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.added = 0
        self.note: str | None = None  # why the cache is not used, once found out
        self._map: dict[Identity, str] | None = None
        self._lines = 0
        self._lock = threading.Lock()  # the drainer and the artifacts reader both put

    def _load(self) -> dict[Identity, str]:
        found: dict[Identity, str] = {}
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if not _owned_dir(self.directory):
                self.note = f"{self.directory} could be written by someone else: not used"
                return found
            fd = os.open(self.directory / _FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CREAT, 0o600)
        except OSError as e:
            self.note = f"{self.directory}: {e.strerror}"
            return found
        with os.fdopen(fd, "r", errors="replace") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                self.note = f"{self.directory / _FILE} could be written by someone else: not used"
                return found
            for line in f:
                self._lines += 1
                m = _LINE.match(line.rstrip("\n"))
                if m:
                    dev, ino, size, mtime, ctime = (int(m.group(i)) for i in range(1, 6))
                    found[(dev, ino, size, mtime, ctime)] = m.group(6)
        return found

    def _entries(self) -> dict[Identity, str]:
        if self._map is None:
            self._map = self._load()
        return self._map

    def get(self, st: os.stat_result) -> str | None:
        """The hash kept for this file as it is now, if it may be trusted."""
        if not trusted(st):
            return None
        with self._lock:
            sha = self._entries().get(identity(st))
            if sha is not None:
                self.hits += 1
            return sha

    def add(self, st: os.stat_result, sha256: str) -> None:
        """Keep the hash of a file read whole with ``st`` unchanged before and after."""
        if not trusted(st):
            return
        key = identity(st)
        with self._lock:
            entries = self._entries()
            if self.note is not None or entries.get(key) == sha256:
                return
            entries[key] = sha256
            self.added += 1
            try:
                if self._lines >= 2 * _KEEP:
                    self._rewrite(entries)
                else:  # one write with O_APPEND: recorders that append at once do not interleave
                    fd = os.open(self.directory / _FILE, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
                    try:
                        os.write(fd, (" ".join(map(str, key)) + f" {sha256}\n").encode())
                    finally:
                        os.close(fd)
                    self._lines += 1
            except OSError as e:
                self.note = f"{self.directory}: {e.strerror}"

    def _rewrite(self, entries: dict[Identity, str]) -> None:
        kept = list(entries.items())[-_KEEP:]
        tmp = self.directory / f".{_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, "".join(" ".join(map(str, k)) + f" {v}\n" for k, v in kept).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _FILE)
        self._lines = len(kept)
        entries.clear()  # a long recording's memory bounded as the file is
        entries.update(kept)


def hash_cache() -> HashCache | None:
    """The host's cache (module doc), or None (turned off, or not root with no directory given)."""
    env = os.environ.get(HASH_CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "no") else HashCache(Path(env))
    return HashCache(DEFAULT_HASH_DIR) if os.geteuid() == 0 else None
