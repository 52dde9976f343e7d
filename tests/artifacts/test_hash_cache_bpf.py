"""`forensix record` keeps the hashes of what ran between recordings (artifacts/hashes.py): a
second recording into a fresh store copies the same tool without hashing it again, and says so."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

pytestmark = pytest.mark.bpf


def _record(store: Path, tool: Path, cache: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--no-rules", "--no-tty", "--store",
                        str(store), "--", str(tool)], env={**os.environ, "FORENSIX_HASH_CACHE": str(cache)},
                       check=False, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    st = DuckDBStore(store, read_only=True)
    try:
        got = st.query("SELECT message FROM events WHERE event_action = 'artifacts'").to_pylist()
    finally:
        st.close()
    assert got, "no artifacts summary in the recording"
    return str(got[-1]["message"])


def test_a_second_recording_copies_the_tool_without_hashing_it(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")
    os.chmod(tmp_path, 0o755)
    tool = tmp_path / "fx-hash-cache-tool"
    shutil.copyfile("/bin/true", tool)
    tool.chmod(0o755)
    sha = hashlib.sha256(tool.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    first = _record(tmp_path / "a.duckdb", tool, cache)
    assert sha in (cache / "sha256-v1").read_text(), first
    second = _record(tmp_path / "b.duckdb", tool, cache)
    known = int(second.split("hashes known from before ", 1)[1].split(",", 1)[0])
    assert known >= 1, second
    blob = tmp_path / "b.duckdb.artifacts" / "sha256" / sha[:2] / sha
    assert blob.read_bytes() == tool.read_bytes()
