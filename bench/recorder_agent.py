"""``forensix-agent``: the recorder configuration of a fleet host, for the workload benchmarks.

``forensix agent`` (raw records by default, docs/agent-raw-records.md) ships to a
``forensix server`` on this machine over real mutual TLS, with a PKI made in the scratch
directory. The benchmark's ``forensix`` configuration measures ``forensix record``, which
decodes and stores on the recorded host; this one shows the split a fleet has. The agent's
CPU (``agent_cpu_s``) and the log host's (``log_host_cpu_s``, its decode, store and rules)
are reported apart. On one 2-core machine the log host competes with the workload: the
throughput ratio of this configuration is *not* a host's under a remote log host; the
agent's CPU is.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.recorders import (
    ForensixRecorder,
    Inspector,
    RecordStats,
    _drops,
    _fx_kernel_counters,
    _owned_bpf_ids,
    _proc_cpu_seconds,
    _wait_detached,
    forensix_command,
    forensix_env,
)
from forensix.store.embedded import remove_store

__all__ = ["ForensixAgentRecorder"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ForensixAgentRecorder(ForensixRecorder):
    name = "forensix-agent"

    def __init__(self) -> None:
        super().__init__()
        self._server: subprocess.Popen[bytes] | None = None

    def start(self, scratch: Path) -> None:
        from forensix.pki.authority import Authority

        pki = Authority(scratch / "agent-pki")
        if not (pki.dir / "ca.crt").exists():
            pki.init(["127.0.0.1"])
            pki.issue("bench-host")
        port = _free_port()
        self._store = scratch / "agent-loghost.duckdb"
        remove_store(self._store)
        # a fresh log host and agent each time: evidence and spool left by the last repetition
        # made the log host decode that stream's whole history again at its start
        shutil.rmtree(f"{self._store}.evidence", ignore_errors=True)
        shutil.rmtree(scratch / "agent-spool", ignore_errors=True)
        self._log = scratch / "forensix-agent.log"
        srv_log = scratch / "forensix-server.log"
        self._server = subprocess.Popen(
            [*forensix_command(), "server", "--pki", str(pki.dir), "--listen", f"127.0.0.1:{port}",
             "--store", str(self._store)], stdout=srv_log.open("wb"), stderr=subprocess.STDOUT, env=forensix_env())
        spool = scratch / "agent-spool"
        self._proc = subprocess.Popen(
            [*forensix_command(), "agent", "--server", f"127.0.0.1:{port}", "--bundle",
             str(pki.bundle("bench-host").directory), "--spool", str(spool)],
            stdout=self._log.open("wb"), stderr=subprocess.STDOUT, env=forensix_env())
        deadline = time.monotonic() + 120
        while "recording: every program attached" not in self._log.read_text(errors="replace"):
            for p, log in ((self._proc, self._log), (self._server, srv_log)):
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[:3]} exited {p.returncode}: {log.read_text(errors='replace')[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("forensix agent did not start recording within 120 s")
            time.sleep(0.2)
        self._owned = _owned_bpf_ids(self._proc.pid)

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        from bench.forensix_ready import store_counts

        assert self._proc is not None and self._server is not None and self._store is not None
        kernel = _fx_kernel_counters(self._owned[1])
        agent_cpu = _proc_cpu_seconds(self._proc.pid)
        self._proc.send_signal(signal.SIGINT)
        rc = self._proc.wait(timeout=120)
        self._proc = None
        _wait_detached(self._owned[0])
        # the log host decodes and stores what the agent delivered on its way out: until its
        # CPU stops moving, then stopped (its store is read after)
        last, still = -1.0, 0
        deadline = time.monotonic() + 60
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = _proc_cpu_seconds(self._server.pid) or 0.0
            still = still + 1 if now - last < 0.02 else 0
            last = now
        self._server.send_signal(signal.SIGTERM)
        self._server.wait(timeout=120)
        self._server = None
        if rc not in (0, -signal.SIGINT, 130):
            raise RuntimeError(f"forensix agent exited {rc}: {self._log.read_text(errors='replace')[-800:] if self._log else ''}")
        counts = store_counts(self._store, inspect)
        detail = {"agent_cpu_s": agent_cpu, "log_host_cpu_s": last, "kernel_counters": kernel,
                  "kernel_drops": _drops(kernel) if kernel else None, **counts["detail"]}
        remove_store(self._store)
        return RecordStats(events=counts["events"], lost=counts["lost"], detail=detail)
