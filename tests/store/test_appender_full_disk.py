"""The recorder's journal appender on a full disk (store/appender.py): a write that fails
halfway leaves nothing torn, and the same batch given again (the writer keeps and retries
it, sensor/writer.py) resumes after the rows that went in, across journals: none lost, none
twice. Needs root for a small tmpfs, as the recorder's tests do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.errors import StoreError
from forensix.store.appender import JournalAppender
from forensix.testing import disk

pytestmark = pytest.mark.bpf  # root: mount

SCH = pa.schema([("n", pa.int64()), ("pad", pa.string())])


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with disk.tiny_disk(tmp_path, "4m") as mnt:
        yield mnt


def _read_all(d: Path) -> list[int]:
    out: list[int] = []
    for p in sorted(d.glob("*.arrows")):
        with pa.ipc.open_stream(pa.OSFile(str(p))) as r:  # a cut journal has no end marker: read to its end
            out += r.read_all().column("n").to_pylist()
    return out


def test_a_batch_retried_after_the_disk_filled_is_stored_once(tiny_disk: Path) -> None:
    closed: list[str] = []
    a = JournalAppender(tiny_disk, "t", SCH, first=1, seal_rows=1000, on_closed=closed.append)
    n = 20_000  # 20 journals of 1000 rows, ~1.2 MB: more than the room left below
    data = pa.table({"n": pa.array(range(n), pa.int64()), "pad": pa.array(["x" * 50] * n)}, schema=SCH)
    a.append(data.slice(0, 10))
    filler = tiny_disk / "filler"
    with open(filler, "wb") as f:  # leave ~600 KB: the batch fails part way, after whole journals
        f.write(b"\0" * ((4 << 20) - (600 << 10)))
    with pytest.raises(StoreError) as e:
        a.append(data)
    assert "No space left on device" in e.value.message and f"free disk space in {tiny_disk}" in (e.value.hint or "")
    written = _read_all(tiny_disk / "t")
    assert 10 < len(written) < 10 + n, "the disk did not fill part way through the batch"
    with pytest.raises(StoreError):  # still full: retried, refused again, nothing written twice
        a.append(data)
    filler.unlink()
    assert a.append(data) == n
    a.close()
    assert _read_all(tiny_disk / "t") == list(range(10)) + list(range(n))
    assert len(closed) == len(list((tiny_disk / "t").glob("*.arrows"))) - 1  # the keeper is told of every closed one


def test_closing_on_a_full_disk_keeps_the_journal_whole(tiny_disk: Path) -> None:
    a = JournalAppender(tiny_disk, "t", SCH, first=1)
    a.append(pa.table({"n": pa.array(range(5), pa.int64()), "pad": pa.array(["x"] * 5)}, schema=SCH))
    with open(tiny_disk / "filler", "wb", buffering=0) as f:
        for size in (64 << 10, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    a.close()  # the end marker does not fit: no error, the rows stay readable
    assert _read_all(tiny_disk / "t") == list(range(5))
