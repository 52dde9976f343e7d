"""A small real disk that tests fill up: a tmpfs mounted for one test (root only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fill", "tiny_disk"]


@contextmanager
def tiny_disk(parent: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``parent/tiny``, unmounted after (lazily if a process
    that is still exiting holds it)."""
    mnt = parent / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> Path:
    """Write ``path`` until its file system is full, to the last byte; returns it."""
    with open(path, "wb", buffering=0) as f:
        for size in (256 << 10, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return path
