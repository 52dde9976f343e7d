"""The content-addressed artifact store: executed files kept once per SHA-256.

Layout, for a store ``host.duckdb``: ``host.duckdb.artifacts/sha256/ab/abcdef...`` (the
blob, 0600) in directories of mode 0700, beside the evidence. A blob is written to a
temporary file while it is hashed, then renamed to its hash: a crash leaves no blob
under a wrong name. Limits count what they refuse: a file over ``max_file_bytes``, or
one that would take the store past ``quota_bytes``, is not kept, and says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from forensix.artifacts.hashes import HashCache, identity
from forensix.errors import StoreError, UsageError
from forensix.store.base import Reader
from forensix.store.private import FILE_MODE, private_dir

__all__ = ["ArtifactStore", "Put", "artifacts_dir", "read_shipped"]

_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def artifacts_dir(store: str | os.PathLike[str]) -> Path:
    """Where the artifacts of the evidence store at ``store`` live."""
    p = Path(store)
    return p.with_name(p.name + ".artifacts")


@dataclass
class Put:
    """What happened to one file offered to the store."""

    sha256: str | None
    size: int
    stored: bool  # new content written now
    certain: bool = True  # false: the file changed while it was read
    reason: str | None = None  # why it is missing or uncertain


@dataclass
class ArtifactStore:
    root: Path
    max_file_bytes: int = 64 << 20
    quota_bytes: int = 2 << 30
    used_bytes: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason kind -> files refused
    refused_bytes: int = 0
    stored_files: int = 0
    stored_bytes: int = 0
    # hashes of files read before, by identity (hashes.py): a file of those is copied, not hashed
    hashes: HashCache | None = None
    # the drainer and the low-priority reader (defer.py) both put: the counts and the rename
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def open(self, hashes: HashCache | None = None) -> ArtifactStore:
        """Create the directories (0700) and count what the store holds already. ``hashes``:
        the host's hashes of files read before (hashes.hash_cache()), for a recorder."""
        self.hashes = hashes if hashes is not None else self.hashes
        private_dir(self.root)  # first: mkdir(parents=True) makes parents with the umask's mode
        private_dir(self.root / "sha256")
        private_dir(self.root / "tmp")
        self.used_bytes = sum(f.stat().st_size for f in (self.root / "sha256").rglob("*") if f.is_file())
        return self

    def path_of(self, sha256: str) -> Path:
        s = sha256.lower()
        if not _HEX.match(s):
            raise UsageError(f"{sha256!r} is not a SHA-256 (64 hex digits)", "copy it from `forensix artifacts list`")
        return self.root / "sha256" / s[:2] / s

    def has(self, sha256: str) -> bool:
        # a string path, not path_of's pathlib joins: asked for every executable a drain tick sees
        # run again (a lua build's ~115 a build), ~8 -> ~3 us each
        s = sha256.lower()
        if not _HEX.match(s):
            raise UsageError(f"{sha256!r} is not a SHA-256 (64 hex digits)", "copy it from `forensix artifacts list`")
        return os.path.isfile(f"{self.root}/sha256/{s[:2]}/{s}")

    def _refuse(self, kind: str, size: int, why: str) -> Put:
        with self._lock:
            self.refused[kind] = self.refused.get(kind, 0) + 1
            self.refused_bytes += size
        return Put(None, size, False, reason=why)

    def put_fd(self, fd: int) -> Put:
        """Hash and keep the open regular file ``fd`` (read from its start; not closed)."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "fifo" if stat.S_ISFIFO(st.st_mode) else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(
                st.st_mode) else "not a regular file"
            return self._refuse("type", 0, f"{kind}: not a regular file, its content cannot be preserved")
        if st.st_size > self.max_file_bytes:
            return self._refuse("size", st.st_size, f"{st.st_size} bytes, over the {self.max_file_bytes}-byte limit "
                                                    "per file (forensix record --artifact-max-mb)")
        # past the quota the file is still hashed: content kept already is not refused
        full = self.used_bytes + st.st_size > self.quota_bytes
        known = self.hashes.get(st) if self.hashes is not None else None
        if known is not None and (put := self._put_known(fd, st, known, full)) is not None:
            return put
        tmp = self.root / "tmp" / f"{os.getpid()}.{fd}.part"
        h = hashlib.sha256()
        size = 0
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
            try:
                while chunk := os.pread(fd, _CHUNK, size):
                    h.update(chunk)
                    if not full:
                        os.write(out, chunk)
                    size += len(chunk)
                    if size > self.max_file_bytes:  # it grew while read
                        break
            finally:
                os.close(out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == 28:  # ENOSPC
                return self._refuse("disk", st.st_size, "the disk is full: the artifact could not be written")
            return Put(None, st.st_size, False, reason=f"reading it failed: {e.strerror}")
        if size > self.max_file_bytes:
            tmp.unlink(missing_ok=True)
            return self._refuse("size", size, f"grew past the {self.max_file_bytes}-byte limit while read")
        after = os.fstat(fd)
        certain = (after.st_mtime_ns, after.st_size, after.st_ctime_ns) == (st.st_mtime_ns, st.st_size, st.st_ctime_ns)
        sha = h.hexdigest()
        dest = self.path_of(sha)
        with self._lock:
            stored = False
            if dest.is_file():
                tmp.unlink()
            elif not full:
                private_dir(dest.parent)
                os.replace(tmp, dest)
                self.used_bytes += size
                self.stored_files += 1
                self.stored_bytes += size
                stored = True
        if not stored and full and not dest.is_file():
            tmp.unlink()
            return self._refuse("quota", size, f"the artifact quota of {self.quota_bytes} bytes is used up "
                                               f"({self.used_bytes} kept)")
        why = None if certain else "the file changed while it was copied: the hash is of what was read"
        if certain and size == st.st_size and self.hashes is not None:
            self.hashes.add(st, sha)
        return Put(sha, size, stored, certain, why)

    def _put_known(self, fd: int, st: os.stat_result, sha: str, full: bool) -> Put | None:
        """Keep a file whose hash is known by its identity (hashes.py): copied in the kernel
        unless the store has it, not read; None when that did not work out (the file changed
        meanwhile, past the quota, a copy that failed): read and hashed then."""
        dest = self.path_of(sha)
        if dest.is_file():
            return Put(sha, st.st_size, False)
        if full:
            return None
        tmp = self.root / "tmp" / f"{os.getpid()}.{fd}.known"
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
            try:
                done = 0
                while done < st.st_size and (n := os.copy_file_range(fd, out, st.st_size - done, done, done)):
                    done += n
            finally:
                os.close(out)
        except OSError:  # another filesystem that refuses it, a full disk: the reading path says why
            tmp.unlink(missing_ok=True)
            return None
        if done != st.st_size or identity(os.fstat(fd)) != identity(st):
            tmp.unlink(missing_ok=True)
            return None
        with self._lock:
            if dest.is_file():
                tmp.unlink()
                return Put(sha, done, False)
            private_dir(dest.parent)
            os.replace(tmp, dest)
            self.used_bytes += done
            self.stored_files += 1
            self.stored_bytes += done
        return Put(sha, done, True)

    def read(self, sha256: str) -> bytes:
        """The blob, checked against its name."""
        p = self.path_of(sha256)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no artifact {sha256} in {self.root}",
                             "list what is kept with `forensix artifacts list`") from None
        if hashlib.sha256(data).hexdigest() != sha256.lower():
            raise StoreError(f"artifact {sha256} in {self.root} does not match its hash (changed on disk)",
                             "the copy is corrupt: take the one shipped to the log host")
        return data

    def blobs(self) -> list[Path]:
        return sorted(f for f in (self.root / "sha256").rglob("*") if f.is_file() and _HEX.match(f.name))



def read_shipped(reader: Reader, sha256: str) -> bytes | None:
    """A file an agent shipped to this (log host's) store, reassembled from its chunks and
    checked against its hash; None when the store has none of it."""
    s = sha256.lower()
    if not _HEX.match(s):
        raise UsageError(f"{sha256!r} is not a SHA-256 (64 hex digits)", "copy it from `forensix artifacts list`")
    try:
        t = reader.query("SELECT DISTINCT ON (\"offset\") \"offset\", size, data FROM artifact_blobs "
                         "WHERE sha256 = $s ORDER BY \"offset\"", {"s": s})
    except StoreError:
        return None  # a store without the table
    if t.num_rows == 0:
        return None
    data = b"".join(t.column("data").to_pylist())
    size = int(t.column("size")[0].as_py())
    if len(data) != size or hashlib.sha256(data).hexdigest() != s:
        raise StoreError(f"artifact {s} is incomplete in this store ({len(data)} of {size} bytes arrived, "
                         "or they do not match the hash)",
                         "the agent ships the rest from its spool once the log host is reachable again")
    return data
