"""Queries to a store held by another process, over its Unix socket.

Wire format, one request per connection: the client sends a JSON object
``{"sql": ..., "params": {...}}`` terminated by a newline; the server answers with one
status byte (``0`` ok, ``1`` error) followed by an Arrow IPC stream (ok) or a UTF-8
message (error), then closes.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyarrow import ipc

from forensix.errors import StoreError
from forensix.threadname import name_native_thread

if TYPE_CHECKING:
    from forensix.store.embedded import DuckDBStore

__all__ = ["QueryServer", "SocketReader"]

_MAX_REQUEST = 1 << 20


def _jsonable(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(params) if params else {}


class SocketReader:
    """A ``Reader`` that sends each query to the store's writer."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 120.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        try:  # fail early on a stale socket
            with self._connect():
                pass
        except OSError as e:
            raise StoreError(f"no writer answers on {self.path}: {e.strerror}") from e

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(str(self.path))
        return s

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        req = json.dumps({"sql": sql, "params": _jsonable(params)}).encode() + b"\n"
        try:
            with self._connect() as s:
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
                with s.makefile("rb") as f:
                    status = f.read(1)
                    if status == b"\x00":
                        return ipc.open_stream(f).read_all()
                    msg = f.read().decode("utf-8", "replace")
        except OSError as e:
            raise StoreError(f"query through {self.path} failed: {e}", "is the recorder still running?") from e
        raise StoreError(msg or "the writer closed the connection", "check the query")

    def close(self) -> None:
        pass


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(_MAX_REQUEST)
        if not line.strip():
            return  # a liveness probe
        try:
            req = json.loads(line)
            table = self.server.store.query_readonly(str(req["sql"]), req.get("params") or None)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the client
            self.wfile.write(b"\x01" + str(e).encode())
            return
        self.wfile.write(b"\x00")
        with ipc.new_stream(self.wfile, table.schema) as w:
            w.write_table(table)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, store: DuckDBStore, sock: socket.socket | None = None) -> None:
        self.store = store
        super().__init__(path, _Handler, bind_and_activate=sock is None)
        if sock is not None:  # listening already, in the process that handed it over
            self.socket.close()
            self.socket = sock


class QueryServer:
    """Serves read-only queries on ``store`` at ``path`` in a background thread.

    ``sock``: a socket listening at ``path`` already, owned by another process (a recorder
    hands its socket to its store keeper, store/keeper.py): served, never unlinked."""

    def __init__(self, store: DuckDBStore, path: str | os.PathLike[str], sock: socket.socket | None = None) -> None:
        self.path = Path(path)
        self._own = sock is None
        if self._own and self.path.exists():
            self.path.unlink()  # a stale socket: the store lock proved no writer holds it
        old = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), store, sock)
        finally:
            os.umask(old)
        self._thread = threading.Thread(target=self._serve, name="fx-query", daemon=True)

    def _serve(self) -> None:
        name_native_thread()
        # No polling for the stop request (socketserver's default wakes twice a second for
        # the life of the recorder): stop() wakes the loop with a connection of its own. A
        # served socket another process owns is polled instead: a connection made to wake
        # this one could be left for its owner.
        self._server.serve_forever(poll_interval=None if self._own else 0.5)  # type: ignore[arg-type]

    def start(self) -> QueryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._own:
            self._server.shutdown()
            self._server.server_close()
            return
        if self._thread.is_alive():
            # Shut the listening socket down: its select() wakes at once (HUP) and the loop
            # sees the stop request. A connection of our own used to wake it, and blocked in
            # connect() for ever once the backlog was full and the loop no longer accepted
            # (seen under load). Not for a socket another process owns: that would end it there.
            try:
                self._server.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.shutdown()
        self._server.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
