"""Scaffolding for tests and benchmarks that record a scripted scenario on the real kernel:
free ports, a local listener that keeps what it is sent, waiting for a condition, and a
"login" (a new audit session) recorded by ``forensix record``."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FORENSIX", "free_port", "listener", "record_login", "wait_for"]

# the CLI as a subprocess of this interpreter (the tests' PYTHONPATH, not an installed script)
FORENSIX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listener(received: list[bytes]) -> tuple[socket.socket, int]:
    """A listener on 127.0.0.1 that accepts one connection and keeps what it reads."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.append(chunk)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float = 15.0, what: str = "", step: float = 0.05) -> Any:
    """``pred()``'s first true value, or AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def record_login(store: Path, script: Path, loginuid: int, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``forensix record`` while ``bash script`` runs as a login: loginuid written as
    pam_loginuid does, so the kernel opens a new audit session for it."""
    login = f"echo {loginuid} > /proc/self/loginuid && exec bash {script}"
    return subprocess.run([*FORENSIX, "record", "--quiet", "--store", str(store), "--", "sh", "-c", login],
                          capture_output=True, text=True, timeout=timeout, check=False)
