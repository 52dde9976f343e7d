"""A file opened before recording began (a daemon's log) still names its flow edges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf

# The daemon writes its log when told to (a line on stdin), not on a clock: under load,
# starting the recorder took longer than a daemon that wrote for a fixed 6 s, and its
# writes all happened before the sensor was attached (no flow edge to find).
DAEMON = """
import sys
log = open(sys.argv[1], "w")
print("ready", flush=True)
for _ in sys.stdin:
    log.write("a line of log\\n"); log.flush()
    print("wrote", flush=True)
"""


def test_writes_to_a_file_opened_before_recording(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    logfile = tmp_path / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(logfile)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdin is not None and daemon.stdout is not None
    assert daemon.stdout.readline().strip() == "ready"
    store = tmp_path / "s.duckdb"
    ready = tmp_path / "s.ready"
    rec = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store), "--ready-file", str(ready)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():  # every program attached: what the daemon writes now is seen
            assert rec.poll() is None, f"the recorder exited before recording: {rec.communicate()[1]}"
            assert time.monotonic() < deadline, "the recorder did not attach within 120 s"
            time.sleep(0.05)
        for _ in range(3):
            daemon.stdin.write("write\n")
            daemon.stdin.flush()
            assert daemon.stdout.readline().strip() == "wrote"
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=120)
    finally:
        daemon.kill()
        daemon.wait()
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    assert rec.returncode == 0, err
    st = DuckDBStore(store, read_only=True)
    fl = rows(st, "SELECT * FROM events WHERE event_action = 'flow' AND process_pid = $p AND file_path = $f",
              p=daemon.pid, f=str(logfile))
    assert fl and sum(r["flow_write_bytes"] for r in fl) > 0
    opens = rows(st, "SELECT count(*) n FROM events WHERE event_action = 'open' AND file_path = $f", f=str(logfile))
    assert opens[0]["n"] == 0  # the open happened before recording: the name came from /proc
