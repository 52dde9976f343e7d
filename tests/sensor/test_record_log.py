"""`forensix record` logs to stderr in one format (UTC time, level, source, message) at the
level --log-level says: its errors and warnings name the cause and the fix, and never come
out through Python's bare last-resort handler. The real recorder on the real kernel, its
store on a real tmpfs filled to the last byte, then freed."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from forensix.store.journal import journal_dir
from forensix.testing import disk

from .conftest import FORENSIX

pytestmark = pytest.mark.bpf

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) forensix\.[a-z.]+: \S")


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    with disk.tiny_disk(tmp_path, "48m") as mnt:
        yield mnt


def _wait_for(path: Path, text: str, p: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (got := path.read_text(errors="replace")):
        assert p.poll() is None and time.monotonic() < deadline, f"{text!r} never logged:\n{got}"
        time.sleep(0.1)
    return got


def test_the_recorder_logs_its_errors_formatted_with_cause_and_fix(tmp_path: Path, tiny: Path) -> None:
    store, ready, err = tiny / "s.duckdb", tmp_path / "ready", tmp_path / "stderr"
    work = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-system-logs", "--no-artifacts",
                          "--store", str(store), "--ready-file", str(ready), "--log-level", "warning"],
                         stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        filler = disk.fill(tiny / "filler")
        for i in range(300):
            (work / f"f{i}").touch()
        _wait_for(err, "No space left on device", p)
        filler.unlink()
        for i in range(10):
            (work / f"g{i}").touch()
        _wait_for(err, "refused batches for", p)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    assert p.returncode == 0, err.read_text()
    logged = [line for line in err.read_text().splitlines() if " forensix." in line]
    bad = [line for line in logged if not LINE.match(line)]
    assert not bad, f"unformatted log lines: {bad}"
    (stall,) = [line for line in logged if " ERROR forensix.recorder: " in line and "No space left" in line]
    assert f"free disk space in {journal_dir(store)}" in stall, stall  # the fix, beside the cause
    (back,) = [line for line in logged if " WARNING forensix.recorder: " in line and "refused batches" in line]
    assert "nothing was lost" in back
    assert not [line for line in logged if " INFO " in line or " DEBUG " in line], "--log-level warning ignored"


def test_a_bad_log_level_is_refused_with_the_choices() -> None:
    res = subprocess.run([*FORENSIX, "record", "--log-level", "loud", "--store", "/nonexistent/s.duckdb"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in res.stderr, res.stderr
