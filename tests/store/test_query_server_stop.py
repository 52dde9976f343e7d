"""`QueryServer.stop` returns even when its socket's backlog is full and its loop no longer
accepts (a serving thread starved under load, or past its last accept): it used to wake the
loop with a connection of its own, and that connect() blocked for ever. A real Unix socket,
a real DuckDB store; the loop that does not accept is the seam (our server object)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from forensix.store.embedded import DuckDBStore
from forensix.store.remote import QueryServer, SocketReader


def _fill_backlog(path: Path) -> list[socket.socket]:
    held = []
    while len(held) < 1000:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:  # EAGAIN: the backlog is full
            s.close()
            return held
        held.append(s)
    raise AssertionError("the backlog never filled")


def test_stop_returns_with_a_full_backlog_and_a_loop_that_does_not_accept(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    path = tmp_path / "s.sock"
    qs = QueryServer(store, path)
    qs._server._handle_request_noblock = lambda: time.sleep(0.01)  # type: ignore[method-assign]
    qs.start()
    held = _fill_backlog(path)
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (qs.stop(), done.set()), daemon=True)
    stopper.start()
    try:
        assert done.wait(10), "QueryServer.stop blocked"
        assert not path.exists()
        for s in held:  # the clients left queued are refused, not left waiting
            s.setblocking(True)
            s.settimeout(5)
            try:
                s.sendall(b"\n")
                assert s.recv(1) == b""
            except OSError:
                pass
    finally:
        for s in held:
            s.close()
        store.close()


def test_a_stopped_server_still_answered_its_queries_before(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    qs = QueryServer(store, tmp_path / "s.sock").start()
    try:
        assert SocketReader(tmp_path / "s.sock").query("SELECT 42 AS n").column("n").to_pylist() == [42]
    finally:
        qs.stop()
        store.close()
    assert not (tmp_path / "s.sock").exists()
