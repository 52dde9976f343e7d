"""The running agent's status file (SPOOL/status.json, ``forensix agent-status``) is rewritten
every few seconds: renamed into place whole, not fsynced (two fsyncs a write were most of the
status thread's CPU); the stop's is fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.testing.shipping import shipping_sink


def test_the_running_status_is_replaced_whole_without_fsync(pki: Authority, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sink = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", 9), start=False, coalesce_s=0)
    try:
        fsyncs: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd))[1])
        for _ in range(3):
            sink.spool.write_status(sink.status())
        st = json.loads((sink.spool.dir / "status.json").read_text())
        assert st["host"] == "alpha" and st["state"] == "disconnected"
        assert fsyncs == [], f"{len(fsyncs)} fsyncs for 3 status writes of a running agent"
        assert not list(sink.spool.dir.glob(".status.json.*")), "a temporary file was left"
        sink.spool.write_status(sink.status("stopped"), durable=True)
        assert len(fsyncs) == 2, "the stop's status is fsynced (the file and its directory)"
        assert json.loads((sink.spool.dir / "status.json").read_text())["state"] == "stopped"
    finally:
        with sink._lock:
            sink._closed.set()
            sink._timer_cv.notify()
        sink.spool.close(clean=True)
