"""A UI on a DuckDB file lets it go when nobody asks, so that a recording can start on it;
the UI then reads through the recorder's query socket, and the file again once it stops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from starlette.testclient import TestClient

from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import generate
from forensix.testing.scenario import wait_for
from forensix.web.app import create_app

# The recording runs in a process of its own, as `forensix record` would: DuckDB's lock is
# between processes (in one process a second open of the file is refused for other reasons).
_RECORDER = """
import sys, time
from pathlib import Path
from forensix.errors import StoreBusyError
from forensix.store.embedded import open_writer, socket_path
from forensix.store.remote import QueryServer
from forensix.testing.generator import generate
store, ready, stop = map(Path, sys.argv[1:4])
try:
    w = open_writer(store)
except StoreBusyError:
    print("busy", flush=True)
    sys.exit(3)
qs = QueryServer(w, socket_path(store)).start()
generate(w, 500, seed=4)
w.flush()
ready.write_text("ok")
while not stop.exists():
    time.sleep(0.05)
qs.stop()
w.close()
"""


def _record(store: Path, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    ready, stop = tmp / "ready", tmp / "stop"
    for f in (ready, stop):
        f.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, "-c", _RECORDER, str(store), str(ready), str(stop)],
                         stdout=subprocess.PIPE, text=True)
    return p, stop


def test_the_ui_lets_the_file_go_for_a_recording_and_follows_it(tmp_path: Path) -> None:
    store = tmp_path / "gen.duckdb"
    w = open_writer(store)
    generate(w, 3_000, seed=3)
    w.close()
    opened: list[str] = []

    def opener() -> Reader:
        r = open_reader(store)
        opened.append(type(r).__name__)
        return r

    app = create_app(opener, str(store), idle_s=0.5)
    with TestClient(app, raise_server_exceptions=False) as c:
        first = c.get("/overview.json")
        assert first.status_code == 200, first.text[:300]
        assert opened == ["DuckDBStore"]
        # While the UI holds the file, a recording cannot open it (DuckDB's lock): nobody asks
        # the UI for a while, it lets the file go, and the recording starts.
        time.sleep(1.0)
        p, stop = _record(store, tmp_path)
        try:
            wait_for(lambda: (tmp_path / "ready").exists() or p.poll() is not None, 30, "the recording to start")
            assert p.poll() is None, "the recording could not open the store the UI had let go"
            during = c.get("/overview.json")
            assert during.status_code == 200, during.text[:300]
            assert opened[-1] == "SocketReader"  # read through the recorder, not the file
            assert during.json() != first.json()  # and it shows what was recorded since
        finally:
            stop.write_text("stop")
            p.wait(timeout=30)
        # the recording ended: its socket is gone, the UI reads the file again
        after = c.get("/overview.json")
        assert after.status_code == 200, after.text[:300]
        assert opened[-1] == "DuckDBStore"
        assert after.json() == during.json()
