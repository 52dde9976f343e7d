"""A file opened before recording began (a daemon's log) still names its flow edges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf

DAEMON = """
import sys, time
log = open(sys.argv[1], "w")
print("ready", flush=True)
for _ in range(60):
    log.write("a line of log\\n"); log.flush()
    time.sleep(0.1)
"""


def test_writes_to_a_file_opened_before_recording(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    logfile = tmp_path / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(logfile)], stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
    store = tmp_path / "s.duckdb"
    rec = subprocess.run([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store), "--duration", "3"],
                         capture_output=True, text=True, timeout=120)
    daemon.kill()
    assert rec.returncode == 0, rec.stderr
    st = DuckDBStore(store, read_only=True)
    fl = rows(st, "SELECT * FROM events WHERE event_action = 'flow' AND process_pid = $p AND file_path = $f",
              p=daemon.pid, f=str(logfile))
    assert fl and sum(r["flow_write_bytes"] for r in fl) > 0
    opens = rows(st, "SELECT count(*) n FROM events WHERE event_action = 'open' AND file_path = $f", f=str(logfile))
    assert opens[0]["n"] == 0  # the open happened before recording: the name came from /proc
