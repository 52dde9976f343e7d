"""Files and directories only root can read, whatever the umask.

Keystrokes, command lines and preserved executables are secrets: everything forensix
writes (the store, its journals and socket, artifacts, exports) is created 0600 (files)
or 0700 (directories) from the start, never created open and narrowed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_umask", "user_umask", "write_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700
_user_umask: int | None = None


def private_umask() -> None:
    """Narrow this process's umask so that whatever it creates is its owner's only
    (DuckDB creates its file and WAL itself, with the process's umask)."""
    global _user_umask
    old = os.umask(0o077)
    if _user_umask is None:
        _user_umask = old
    os.umask(old | 0o077)


def user_umask() -> int:
    """The umask this process had before ``private_umask``: what a command it starts gets
    (the recorded workload must run as it would without forensix)."""
    if _user_umask is not None:
        return _user_umask
    cur = os.umask(0o022)
    os.umask(cur)
    return cur


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a directory of mode 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file of mode 0600 (replacing any file there, atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
