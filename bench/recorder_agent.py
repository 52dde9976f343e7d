"""``forensix-agent``: the recorder configuration of a fleet host, for the workload benchmarks.

``forensix agent`` (raw records by default, docs/agent-raw-records.md) ships to a
``forensix server`` on this machine over real mutual TLS, with a PKI made in the scratch
directory. The benchmark's ``forensix`` configuration measures ``forensix record``, which
decodes and stores on the recorded host; this one shows the split a fleet has, where the
log host is another machine. Here it stands in for one: it runs at nice 19 under
``SCHED_IDLE`` (``loghost_policy``), so it takes only CPU time the workload and the agent
leave idle, and a waking nginx or wrk preempts it at once. Its CPU (``log_host_cpu_s``: its
decode, store and rules) is reported apart and never counted as the host's; the agent's CPU
(``agent_cpu_s``) is the host's. What the stand-in leaves in: the log host's use of the
caches and memory bandwidth the workload shares, and the idle CPU it takes from others.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.recorders import (
    ForensixRecorder,
    Inspector,
    RecordStats,
    _drops,
    _fx_kernel_counters,
    _owned_bpf_ids,
    _proc_cpu_seconds,
    _tree_cpu_seconds,
    _wait_detached,
    forensix_command,
    forensix_env,
    stop_process,
)
from forensix.store.embedded import remove_store

__all__ = ["LOG_HOST_NICE", "ForensixAgentRecorder", "agent_metrics", "loghost_policy", "loghost_release",
           "start_agent_pair"]

# the log host stands in for another machine: it gets what the recorded host leaves idle
LOG_HOST_NICE = 19


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loghost_policy() -> list[str]:
    """The command prefix of the log host: ``SCHED_IDLE`` at nice 19 (its threads and children inherit
    both). Under SCHED_IDLE a waking normal task preempts it at once; nice 19 alone still takes
    ~1.5% of a core from each busy nice-0 task and delays their wake-ups."""
    if shutil.which("chrt") is None or shutil.which("nice") is None:
        raise RuntimeError("chrt or nice is missing (util-linux, coreutils): the bench runs the log host under "
                           "`chrt --idle 0 nice -n 19` so that it stands in for another machine")
    return ["chrt", "--idle", "0", "nice", "-n", str(LOG_HOST_NICE)]


def loghost_release(pid: int) -> None:
    """Every thread of ``pid`` and its descendants back to SCHED_OTHER (still nice 19): after a
    measured window, so that the log host catches up even while other work keeps both cores busy."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                os.sched_setscheduler(int(t.name), os.SCHED_OTHER, os.sched_param(0))
                todo += [int(c) for c in (t / "children").read_text().split()]
            except OSError:  # a thread that just ended
                pass


def agent_metrics(port: int) -> dict[str, float]:
    """The agent's Prometheus metrics (``--metrics PORT``), unlabelled samples by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name.removesuffix("_total")] = float(value)
    return out


def start_agent_pair(scratch: Path, env: dict[str, str], command: list[str], *, metrics_port: int | None = None,
                     agent_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]:
    """A fresh log host (``loghost_policy``) and a ``forensix agent`` shipping to it over real mutual TLS
    (a PKI made once in ``scratch``). Returns (agent, log host, log host's store) once the agent
    records; the logs are ``forensix-agent.log`` and ``forensix-server.log`` in ``scratch``."""
    from forensix.pki.authority import Authority

    pki = Authority(scratch / "agent-pki")
    if not (pki.dir / "ca.crt").exists():
        pki.init(["127.0.0.1"])
        pki.issue("bench-host")
    port = _free_port()
    store = scratch / "agent-loghost.duckdb"
    remove_store(store)
    # a fresh log host and agent each time: evidence and spool left by the last repetition
    # made the log host decode that stream's whole history again at its start
    shutil.rmtree(f"{store}.evidence", ignore_errors=True)
    shutil.rmtree(scratch / "agent-spool", ignore_errors=True)
    shutil.rmtree(scratch / "agent-spool.artifacts", ignore_errors=True)
    log, srv_log = scratch / "forensix-agent.log", scratch / "forensix-server.log"
    server = subprocess.Popen(
        [*loghost_policy(), *command, "server", "--pki", str(pki.dir), "--listen", f"127.0.0.1:{port}", "--store", str(store)],
        stdout=srv_log.open("wb"), stderr=subprocess.STDOUT, env=env)
    metrics = ["--metrics", str(metrics_port)] if metrics_port is not None else []
    agent = subprocess.Popen(
        [*command, "agent", "--server", f"127.0.0.1:{port}", "--bundle", str(pki.bundle("bench-host").directory),
         "--spool", str(scratch / "agent-spool"), *metrics, *agent_args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while "recording: every program attached" not in log.read_text(errors="replace"):
        for p, out in ((agent, log), (server, srv_log)):
            if p.poll() is not None:
                other = server if p is agent else agent
                other.kill()
                other.wait()
                raise RuntimeError(f"{' '.join(map(str, p.args[:4]))} exited {p.returncode} before the agent "
                                   f"recorded; its log ({out}) ends: {out.read_text(errors='replace')[-800:]}")
        if time.monotonic() > deadline:
            agent.kill()
            server.kill()
            raise RuntimeError(f"forensix agent did not start recording within 120 s: see {log} and {srv_log}")
        time.sleep(0.2)
    return agent, server, store


def wait_log_host_idle(server: subprocess.Popen[bytes], timeout: float = 300.0) -> float:
    """Until the log host's CPU stops moving (it has decoded and stored what it acknowledged);
    returns its CPU seconds so far."""
    last, still = -1.0, 0
    deadline = time.monotonic() + timeout
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _proc_cpu_seconds(server.pid) or 0.0
        still = still + 1 if now - last < 0.02 else 0
        last = now
    return last


_STOPPED = re.compile(r"agent stopped: (\d+) batches, (\d+) .*?spooled; (\d+) unacknowledged left in the spool; "
                      r"(\d+) refused")
_RECORDED = re.compile(r"recorded (\d+) .*?, (\d+) lost in the kernel, (\d+) gap records")


class AgentPair:
    """A ``forensix agent`` on this host and its log host (``start_agent_pair``), measured apart:
    ``agent_cpu_s`` is the recorded host's, ``loghost_cpu_s`` another machine's."""

    def __init__(self, scratch: Path, env: dict[str, str], command: list[str], idle: bool = True) -> None:
        """``idle=False``: the log host released from SCHED_IDLE at once (a latency to measure, not a cost)."""
        self.metrics_port = _free_port()
        self.scratch = scratch
        # --drain: on stop, wait for the log host to acknowledge everything (it runs at SCHED_IDLE)
        self.agent, self.server, self.store = start_agent_pair(scratch, env, command, metrics_port=self.metrics_port,
                                                               agent_args=("--drain", "120"))
        self.owned = _owned_bpf_ids(self.agent.pid)
        if not idle:
            loghost_release(self.server.pid)

    def agent_cpu_s(self) -> float:
        return sum(_tree_cpu_seconds(self.agent.pid).values())

    def loghost_cpu_s(self) -> float:
        return sum(_tree_cpu_seconds(self.server.pid).values())

    def settle(self, timeout: float = 600.0) -> dict[str, float]:
        """After a measured window: the log host released (``loghost_release``), then until it has
        acknowledged every frame the agent sealed by a drain tick after the window (what the window's
        records became). The agent's CPU meanwhile (sending what the log host could not take during
        the window) is work the window caused: the caller counts it."""
        t0 = time.monotonic()
        loghost_release(self.server.pid)
        time.sleep(1.5)  # the drain tick (<= 1 s) and the batch join (200 ms): the window's last records spooled
        m = agent_metrics(self.metrics_port)
        target = m.get("forensix_agent_frames_sealed", 0.0)
        deadline = time.monotonic() + timeout
        while m.get("forensix_agent_frames_acked", 0.0) < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the log host acknowledged {m.get('forensix_agent_frames_acked', 0):.0f} of the "
                                   f"{target:.0f} frames the agent sealed within {timeout:.0f} s after the window: "
                                   f"see {self.scratch}/forensix-server.log")
            if self.server.poll() is not None:
                raise RuntimeError(f"the log host exited {self.server.returncode}: see {self.scratch}/forensix-server.log")
            time.sleep(0.25)
            m = agent_metrics(self.metrics_port)
        return {"settle_s": time.monotonic() - t0, "frames_acked": m.get("forensix_agent_frames_acked", 0.0)}

    def stop(self, inspect: Inspector | None = None) -> dict[str, Any]:
        """Stop both, then check nothing was lost: the kernel's drop counters, the agent's spool
        (nothing unacknowledged, nothing refused), the log host's store (no gap, no decode warning,
        the agent's stop record there). Returns the counts; ``complete`` says whether all held."""
        from bench.forensix_ready import store_counts

        kernel = _fx_kernel_counters(self.owned[1])
        rc = stop_process(self.agent, signal.SIGINT, 180)
        _wait_detached(self.owned[0])
        loghost_release(self.server.pid)
        loghost_cpu = wait_log_host_idle(self.server)
        loghost_cpu = max(loghost_cpu, self.loghost_cpu_s())
        stop_process(self.server, signal.SIGTERM, 180)
        agent_log = (self.scratch / "forensix-agent.log").read_text(errors="replace")
        if rc not in (0, -signal.SIGINT, 130):
            raise RuntimeError(f"forensix agent exited {rc}; its log ends: {agent_log[-800:]}")
        stopped = _STOPPED.search(agent_log)
        if stopped is None:
            raise RuntimeError(f"forensix agent wrote no 'agent stopped' line; its log ends: {agent_log[-800:]}")

        def more(reader: Any) -> dict[str, Any]:
            rows = reader.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'stop' "
                                "AND message LIKE 'reason=%'").column("message").to_pylist()
            warn = reader.query("SELECT count(*) AS n FROM events WHERE event_action = 'decode-warning'"
                                ).column("n")[0].as_py()
            return {"stop_records": rows, "decode_warnings": int(warn), **(inspect(reader) if inspect else {})}

        counts = store_counts(self.store, more)
        d = counts["detail"]
        rec = _RECORDED.search(d["stop_records"][0]) if d["stop_records"] else None
        out = {"events": counts["events"], "lost": counts["lost"], "kernel_counters": kernel,
               "kernel_drops": _drops(kernel) if kernel else None, "loghost_cpu_s": loghost_cpu,
               "agent_batches": int(stopped.group(1)), "agent_shipped": int(stopped.group(2)),
               "unacked": int(stopped.group(3)), "refused": int(stopped.group(4)),
               "stop_record": rec is not None, "stop_recorded": int(rec.group(1)) if rec else None,
               "stop_lost": int(rec.group(2)) if rec else None, **d}
        out["complete"] = bool(rec and out["unacked"] == 0 and out["refused"] == 0 and out["lost"] == 0
                               and not out["kernel_drops"] and out["decode_warnings"] == 0
                               and int(rec.group(2)) == 0
                               # the agent's count after its stop counts the stop record itself (an events row)
                               and 0 <= out["agent_shipped"] - int(rec.group(1)) <= 1)
        remove_store(self.store)
        return out


class ForensixAgentRecorder(ForensixRecorder):
    """The project bench's column: a workload's figure (req/s, wall time) with the agent and a log
    host that takes only idle CPU (``AgentPair``); the agent's CPU in the window is the host's, the
    log host's is reported apart (``log_host_cpu_s``)."""

    name = "forensix-agent"

    def __init__(self) -> None:
        super().__init__()
        self._pair: AgentPair | None = None

    def cpu_snapshot(self) -> dict[int, float]:
        """The agent's processes only: the log host stands in for another machine."""
        return _tree_cpu_seconds(self._pair.agent.pid) if self._pair is not None else {}

    def start(self, scratch: Path) -> None:
        self._pair = AgentPair(scratch, forensix_env(), forensix_command())
        self._proc = self._pair.agent
        self._owned = self._pair.owned
        self._cpu0 = self._pair.agent_cpu_s()  # start-up excluded from the window's figure
        self._lh0 = self._pair.loghost_cpu_s()

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        assert self._pair is not None and self._cpu0 is not None
        pair, self._pair, self._proc = self._pair, None, None
        window = pair.agent_cpu_s() - self._cpu0
        lh_window = pair.loghost_cpu_s() - self._lh0
        try:
            settled = pair.settle()
            total = pair.agent_cpu_s()  # start-up, the window, and sending what the log host took late
        finally:  # both stopped even when the log host never caught up (or the bench is interrupted)
            out = pair.stop(inspect)
        detail = {"agent_cpu_s": round(total, 3), "agent_cpu_window_s": round(window, 3),
                  "agent_cpu_to_ack_s": round(total - self._cpu0, 3),
                  "log_host_cpu_window_s": round(lh_window, 3), "log_host_cpu_s": out["loghost_cpu_s"],
                  **settled, **out}
        return RecordStats(events=out["events"], lost=out["lost"], detail=detail)
