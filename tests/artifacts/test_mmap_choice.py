"""The artifacts hook picks the mmaps it may keep with whole columns (build-cost): the same
rows as the rule it states row by row - mapped executable, not failed, and deleted or in a
directory anyone may write to - on a batch mixing every case, NULLs included."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.artifacts.collect import _PROT_EXEC, Collector, in_writable_dir
from forensix.store import schema


@pytest.fixture
def outside_temp() -> Iterator[Path]:
    """A directory outside /tmp, /var/tmp and /dev/shm (those count as writable by name)."""
    d = Path(tempfile.mkdtemp(prefix="fx-mmap-choice-", dir="/run"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_mmap_choice_is_the_row_rule(outside_temp: Path) -> None:
    tmp_path = outside_temp
    open_dir = tmp_path / "anyone"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # a world-writable directory that is not a temp dir by name
    closed = tmp_path / "closed"
    closed.mkdir()
    os.chmod(closed, 0o755)
    paths = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/tmp/x/lib.so", str(open_dir / "evil.so"), str(closed / "ok.so"),
             None, "/dev/shm/a.so", "/nonexistent/dir/a.so", "/memfd:x (deleted)"]
    rng = random.Random(7)
    rows = [{"ts": i, "event_action": rng.choice(["mmap", "mmap", "open", "exec"]), "file_path": rng.choice(paths),
             "mem_prot": rng.choice([None, 1, 3, 4, 5, 7]), "event_outcome": rng.choice([None, "success", "failure"]),
             "file_deleted": rng.choice([None, True, False])} for i in range(4000)]
    cols = ("ts", "event_action", "file_path", "mem_prot", "event_outcome", "file_deleted")
    ev = pa.Table.from_pylist(rows, schema=pa.schema([schema.EVENTS.field(c) for c in cols]))
    want = [r["event_action"] == "mmap" and r["file_path"] is not None and bool((r["mem_prot"] or 0) & _PROT_EXEC)
            and r["event_outcome"] != "failure" and bool(r["file_deleted"] or in_writable_dir(r["file_path"]))
            for r in rows]
    got = Collector._maps_wanted(ev).to_pylist()
    assert got == want
    assert 0 < sum(want) < len(rows)
    chosen = {r["file_path"] for r, w in zip(rows, want, strict=True) if w and not r["file_deleted"]}
    assert str(open_dir / "evil.so") in chosen and str(closed / "ok.so") not in chosen
