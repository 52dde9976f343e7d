"""Checks for the whole suite, before any test runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from forensix.sensor.loader import bpf_dir


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a sensor object older than its source.

    A worktree that merged a change to bpf/ without `make -C bpf` loads the old object:
    the BPF tests then fail on behaviour the source no longer has (seen: the timestomp
    test, with an object from before the epoch fix, finds only ts-r). A clean clone after
    scripts/setup.sh is never stale; this names the cause where a tree is.
    """
    src = Path(__file__).resolve().parents[1] / "bpf"
    out = bpf_dir().resolve()
    if "FORENSIX_BPF_DIR" in os.environ or not (src / "Makefile").exists() or shutil.which("make") is None:
        return
    if not out.is_relative_to(src.parent):  # the package is installed from another tree
        return
    res = subprocess.run(["make", "-q", "-C", str(src), f"OUT={out}"], capture_output=True, check=False)
    if res.returncode == 1:
        pytest.exit(f"the sensor object in {out} is older than {src} (a merge changed bpf/): "
                    f"run `make -C {src}` and test again", returncode=4)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Name the threads a test left running: one left inside DuckDB, Arrow or chdb when the
    interpreter exits can abort the whole run after every test passed."""
    import sys
    import threading
    import traceback

    frames = sys._current_frames()
    # the web's idle watches and its query pool are stopped at exit (web/context.py)
    left = [t for t in threading.enumerate() if t is not threading.main_thread()
            and not t.name.startswith(("fx-web-idle", "fx-web-part"))]
    for t in left:
        where = "".join(traceback.format_stack(frames[t.ident])[-3:]) if t.ident in frames else ""
        sys.stderr.write(f"\nthread left running at the end of the session: {t.name} (daemon={t.daemon})\n{where}")


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own (its name), deleted after: a recorder told to record
    only it sees nothing the rest of the host does."""
    import secrets

    name = f"fx-test-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
