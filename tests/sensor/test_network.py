"""Sockets as the kernel saw them: unix peers, a non-blocking connect, an accept already waiting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import record, rows

pytestmark = pytest.mark.bpf

CLIENT = textwrap.dedent(
    """
    import socket, sys
    path, port = sys.argv[1], int(sys.argv[2])
    srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
    cli = socket.socket(socket.AF_UNIX); cli.connect(path)
    conn, _ = srv.accept(); cli.sendall(b"u" * 10); conn.recv(100)
    nb = socket.socket(); nb.setblocking(False)
    try:
        nb.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    import select; select.select([], [nb], [], 5); nb.close()
    """
)


def test_sockets(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    # a listener already blocked in accept() before recording starts
    waiting = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import socket, sys
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
        print(s.getsockname()[1], flush=True)
        c, _ = s.accept(); c.recv(1); c.close()
        """)], stdout=subprocess.PIPE, text=True)
    assert waiting.stdout is not None
    port = int(waiting.stdout.readline())
    time.sleep(0.3)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    marker = f"m-{uuid.uuid4().hex[:6]}"
    upath = str(tmp_path / f"{marker}.sock")
    res = record(tmp_path / "s.duckdb", "python3", str(script), upath, str(port))
    waiting.wait(timeout=30)
    assert res.returncode == 0, res.stderr
    st = DuckDBStore(tmp_path / "s.duckdb", read_only=True)
    con = rows(st, "SELECT * FROM events WHERE event_action = 'connect' AND unix_path = $p", p=upath)
    assert con, "the unix client's connect does not name the path it connected to"
    acc = rows(st, "SELECT * FROM events WHERE event_action = 'accept' AND unix_path = $p", p=upath)
    assert acc and acc[0]["unix_peer_inode"] == con[0]["file_inode"], "accept does not point at the client socket"
    nb = rows(st, "SELECT * FROM events WHERE event_action = 'connect' AND destination_port = $p", p=port)
    assert nb and nb[0]["ret"] == -115 and nb[0]["event_outcome"] == "unknown"
    early = rows(st, "SELECT * FROM events WHERE event_action = 'accept' AND source_port = $p AND process_pid = $pid",
                 p=port, pid=waiting.pid)
    assert early, "an accept() that was waiting before recording began was not recorded"
    assert early[0]["destination_port"] == nb[0]["source_port"]
