"""Reading a log file: plain or gzipped, line by line, with bounded memory.

Every line comes with its number and the byte offset after it (in the decompressed
stream), so a skipped line is reported by file and line number, and an import can say
exactly how far it went. A file is known by the hash of its first bytes: a rotated
``audit.log.1`` or a gzipped ``audit.log.2.gz`` is the same file it was before rotation,
and importing it again adds nothing (``Cursor``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from forensix.errors import UsageError

__all__ = ["HEAD_BYTES", "MAX_LINE", "Line", "LogFile", "file_key"]

HEAD_BYTES = 4096
# A longer line is not a log line (auditd caps a record at 8970 bytes; an EVE record with a
# payload can reach a few hundred KiB): it is skipped, read through without being held.
MAX_LINE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    data: bytes | None  # None: the line was too long and was not kept
    end: int  # offset just after this line


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the stream to read lines from, the raw file for progress)."""
    try:
        raw = path.open("rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}", "check the path and its permissions") from e
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def file_key(path: Path) -> str:
    """The hash of a file's first ``HEAD_BYTES`` decompressed bytes: its identity across rotation."""
    stream, raw = _open(path)
    try:
        return hashlib.sha256(_read_head(stream)).hexdigest()
    finally:
        raw.close()


def _read_head(stream: BinaryIO) -> bytes:
    head = b""
    while len(head) < HEAD_BYTES:
        try:
            chunk = stream.read(min(256, HEAD_BYTES - len(head)))
        except (OSError, EOFError) as e:  # a gzip cut short: its readable start still names it
            if head:
                return head
            raise UsageError(f"cannot decompress: {e}", "give the file as it was written, or gunzip it first") from e
        if not chunk:
            break
        head += chunk
    return head


class LogFile:
    """A log file's lines, from ``start`` on, hashing every byte read (``prefix_sha256``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path} is not a file", "give the log files to import")
        self.size = self.path.stat().st_size
        self.key = file_key(self.path)
        self._stream, self._raw = _open(self.path)
        self._sha = hashlib.sha256()
        self.offset = 0
        self.number = 0
        self.error: str | None = None  # why reading stopped early (a gzip cut short)

    def raw_position(self) -> int:
        """Bytes of the file on disk read so far (for a progress bar)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.size

    def skip_to(self, offset: int, expect_sha256: str) -> bool:
        """Skip the first ``offset`` bytes if they hash to ``expect_sha256`` (imported before)."""
        left = offset
        while left > 0:
            chunk = self._read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        same = left == 0 and self._sha.hexdigest() == expect_sha256
        if not same:
            self.rewind()
        else:
            # line numbers of what follows: count the newlines skipped (cheap, once)
            self.number = self._skipped_lines
        return same

    def rewind(self) -> None:
        self._raw.close()
        self._stream, self._raw = _open(self.path)
        self._sha = hashlib.sha256()
        self.offset = 0
        self.number = 0
        self._skipped_lines = 0

    _skipped_lines = 0

    def _read(self, n: int) -> bytes:
        try:
            chunk = self._stream.read(n)
        except (OSError, EOFError) as e:
            self.error = f"the file ends in the middle of its compressed data ({e})"
            return b""
        self._sha.update(chunk)
        self.offset += len(chunk)
        self._skipped_lines += chunk.count(b"\n")
        return chunk

    def _readline(self) -> bytes:
        try:
            line = self._stream.readline(MAX_LINE + 1)
        except (OSError, EOFError) as e:
            self.error = f"the file ends in the middle of its compressed data ({e})"
            return b""
        self._sha.update(line)
        self.offset += len(line)
        return line

    def lines(self) -> Iterator[Line]:
        while True:
            data = self._readline()
            if not data:
                return
            self.number += 1
            if len(data) > MAX_LINE and not data.endswith(b"\n"):
                while data and not data.endswith(b"\n"):  # read through, keep nothing
                    data = self._readline()
                yield Line(self.number, None, self.offset)
                continue
            yield Line(self.number, data.rstrip(b"\r\n"), self.offset)

    def prefix_sha256(self) -> str:
        return self._sha.hexdigest()

    def snapshot_sha256(self) -> str:
        """The hash of everything read so far, without disturbing the running hash."""
        return self._sha.copy().hexdigest()

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError:
            pass


def text_lines(data: str) -> Iterator[Line]:
    """Lines of an in-memory text (tests, and journal output read from a subprocess)."""
    off = 0
    for i, line in enumerate(io.BytesIO(data.encode()), 1):
        off += len(line)
        yield Line(i, line.rstrip(b"\r\n"), off)
