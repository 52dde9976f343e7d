"""A real ``forensix server`` process for tests that kill and restart it (SIGKILL, seams of
forensix.testing.crash): DuckDB store, real mutual TLS from the test's authority."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from forensix.pki.authority import Authority

__all__ = ["FX", "start_log_host"]

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


def start_log_host(pki: Authority, store: Path, port: int, log: Path, *args: str,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``forensix server`` on 127.0.0.1:``port`` (rules off, ``args`` added), its output appended
    to ``log``; returns once it accepts connections."""
    p = subprocess.Popen(FX + ["server", "--pki", str(pki.dir), "--listen", f"127.0.0.1:{port}", "--store", str(store),
                               "--no-rules", *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                         env=env or dict(os.environ))
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            if p.poll() is not None:
                raise AssertionError("log host exited: " + log.read_text()[-3000:]) from None
            time.sleep(0.1)
    p.kill()
    raise AssertionError("log host did not start: " + log.read_text()[-3000:])
