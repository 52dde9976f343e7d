"""The recorder configurations every workload runs under.

- ``none``: no recorder (the baseline);
- ``forensix``: ``forensix record --store TMP`` running in the background for the whole
  host while the workload runs (BPF start-up is not timed);
- ``auditd``: the kernel audit subsystem with rules written here for the same syscalls the
  forensix sensor records, and auditd writing them to a log in the scratch directory;
- ``strace``: ``strace -f -o /dev/null`` around the workload's command.

A host-wide recorder is started before and stopped after each measurement, so the events
it counts belong to that measurement (plus whatever else ran on the host meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Inspector = Callable[[Any], dict[str, Any]]

__all__ = ["RECORDERS", "Recorder", "RecordStats", "make_recorders"]


@dataclass
class RecordStats:
    events: int | None = None  # records the recorder kept for this measurement
    lost: int | None = None  # records it says it dropped
    detail: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """No recorder: the baseline. Subclasses wrap the command or run beside it."""

    name = "none"
    host_wide = False

    def check(self) -> str | None:
        """Why this recorder cannot run here, or None."""
        return None

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def start(self, scratch: Path) -> None:
        pass

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        """Stop; ``inspect`` is called with a reader on what was recorded, if any."""
        return RecordStats()


class StraceRecorder(Recorder):
    name = "strace"

    def check(self) -> str | None:
        return None if shutil.which("strace") else "strace is not installed (scripts/bench-setup.sh)"

    def wrap(self, argv: list[str]) -> list[str]:
        return ["strace", "-f", "-qq", "-o", "/dev/null", *argv]

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        return RecordStats(detail={"note": "output to /dev/null"})


# The forensic set of the sensor (ARCHITECTURE.md, "What is recorded"), as audit rules.
# read/write are not audited: forensix keeps them as aggregated flow edges, which auditd
# cannot do; auditing every read/write would cost auditd far more, so leaving them out
# favours auditd.
AUDIT_SYSCALLS = [
    # process
    "execve", "execveat", "fork", "vfork", "clone", "clone3",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "capset", "ptrace", "kill", "tkill", "tgkill",
    # file
    "open", "openat", "openat2", "creat", "truncate", "ftruncate", "unlink", "unlinkat",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "mkdir",
    "mkdirat", "rmdir", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown",
    "fchownat", "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr",
    "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "memfd_create",
    # network and IPC
    "connect", "accept", "accept4", "bind", "listen", "pipe", "pipe2", "socketpair",
    # privilege
    "init_module", "finit_module", "delete_module", "bpf", "mount", "umount2", "chroot",
    "pivot_root", "setns", "unshare",
]
# mmap/mprotect only when PROT_EXEC (a2 & 4) is asked for, as the sensor does.
AUDIT_EXEC_MAP_SYSCALLS = ["mmap", "mprotect"]
AUDIT_KEY = "forensix-bench"


def audit_rules() -> list[list[str]]:
    """auditctl argument lists that install the bench's rules."""
    rule = ["-a", "always,exit", "-F", "arch=b64"]
    for s in AUDIT_SYSCALLS:
        rule += ["-S", s]
    rules = [rule + ["-k", AUDIT_KEY]]
    maps = ["-a", "always,exit", "-F", "arch=b64"]
    for s in AUDIT_EXEC_MAP_SYSCALLS:
        maps += ["-S", s]
    rules.append(maps + ["-F", "a2&4", "-k", AUDIT_KEY])
    return rules


def _audit_status() -> dict[str, int]:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    status: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            status[parts[0]] = int(parts[1])
    return status


_AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 0
max_log_file_action = IGNORE
space_left = 100
space_left_action = IGNORE
admin_space_left = 50
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
priority_boost = 4
name_format = NONE
q_depth = 2000
overflow_action = IGNORE
plugin_dir = {plugins}
end_of_event_timeout = 2
"""


class AuditdRecorder(Recorder):
    name = "auditd"
    host_wide = True

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._lost0 = 0

    def check(self) -> str | None:
        for tool in ("auditd", "auditctl"):
            if not shutil.which(tool):
                return f"{tool} is not installed (scripts/bench-setup.sh)"
        if os.geteuid() != 0:
            return "auditd needs root"
        status = _audit_status()
        if status.get("pid", 0) != 0:
            return f"an audit daemon already runs (pid {status['pid']}); stop it first"
        return None

    def start(self, scratch: Path) -> None:
        d = scratch / "auditd"
        (d / "plugins.d").mkdir(parents=True, exist_ok=True)
        conf = d / "auditd.conf"
        conf.write_text(_AUDITD_CONF.format(log=d / "audit.log", plugins=d / "plugins.d"))
        conf.chmod(0o640)
        self._dir = d
        subprocess.run(["auditctl", "-D"], capture_output=True, check=True)
        self._proc = subprocess.Popen(
            ["auditd", "-n", "-c", str(d)],
            stdout=(d / "auditd.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while _audit_status().get("pid", 0) != self._proc.pid:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                out = (d / "auditd.out").read_text(errors="replace")
                self._kill()
                raise RuntimeError(f"auditd did not start: {out.strip()[-500:]}")
            time.sleep(0.05)
        subprocess.run(["auditctl", "-b", "8192"], capture_output=True, check=True)
        for rule in audit_rules():
            subprocess.run(["auditctl", *rule], capture_output=True, check=True)
        subprocess.run(["auditctl", "-e", "1"], capture_output=True, check=True)
        self._lost0 = _audit_status().get("lost", 0)

    def _kill(self) -> None:
        subprocess.run(["auditctl", "-D"], capture_output=True)
        subprocess.run(["auditctl", "-e", "0"], capture_output=True)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        status = _audit_status()
        lost = status.get("lost", 0) - self._lost0
        self._kill()
        assert self._dir is not None
        log = self._dir / "audit.log"
        events = 0
        size = 0
        if log.exists():
            size = log.stat().st_size
            with log.open("rb") as f:
                for line in f:
                    if line.startswith(b"type=SYSCALL") and AUDIT_KEY.encode() in line:
                        events += 1
            log.unlink()
        return RecordStats(
            events=events,
            lost=lost,
            detail={
                "log_bytes": size,
                "backlog_wait_time_actual": status.get("backlog_wait_time_actual"),
            },
        )


def _bpf_prog_stats() -> dict[str, dict[str, int]]:
    """run_time_ns / run_cnt per loaded BPF program (needs kernel.bpf_stats_enabled=1)."""
    try:
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    progs: dict[str, dict[str, int]] = {}
    for p in json.loads(out or "[]"):
        name = p.get("name", str(p.get("id")))
        agg = progs.setdefault(name, {"run_time_ns": 0, "run_cnt": 0, "id": p.get("id", 0)})
        agg["run_time_ns"] += int(p.get("run_time_ns", 0))
        agg["run_cnt"] += int(p.get("run_cnt", 0))
    return progs


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


class ForensixRecorder(Recorder):
    """``forensix record --store TMP`` for the whole host, in the background."""

    name = "forensix"
    host_wide = True

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._store: Path | None = None
        self._progs0: dict[str, dict[str, int]] = {}
        self._log: Path | None = None

    def check(self) -> str | None:
        if os.geteuid() != 0:
            return "forensix record needs root"
        try:
            import forensix.sensor.recorder  # noqa: F401
        except ImportError:
            return "the forensix recorder is not available yet (forensix.sensor.recorder)"
        return None

    def start(self, scratch: Path) -> None:
        from bench.forensix_ready import wait_until_recording

        self._store = scratch / "forensix.duckdb"
        for p in (self._store, self._store.with_name(self._store.name + ".wal")):
            p.unlink(missing_ok=True)
        self._log = scratch / "forensix-record.log"
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1\n")
        self._proc = subprocess.Popen(
            ["forensix", "record", "--store", str(self._store)],
            stdout=self._log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until_recording(self._proc, self._store, self._log)
        self._progs0 = _bpf_prog_stats()

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        from bench.forensix_ready import store_counts

        assert self._proc is not None and self._store is not None and self._log is not None
        progs1 = _bpf_prog_stats()
        cpu = _proc_cpu_seconds(self._proc.pid)
        self._proc.send_signal(signal.SIGINT)
        try:
            rc = self._proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
        self._proc = None
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0\n")
        if rc not in (0, -signal.SIGINT, 130):
            tail = self._log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"forensix record exited {rc}: {tail}")
        counts = store_counts(self._store, inspect)
        bpf = {}
        for name, s in progs1.items():
            s0 = self._progs0.get(name, {"run_time_ns": 0, "run_cnt": 0})
            if s.get("id") != s0.get("id", s.get("id")):
                s0 = {"run_time_ns": 0, "run_cnt": 0}
            cnt = s["run_cnt"] - s0["run_cnt"]
            ns = s["run_time_ns"] - s0["run_time_ns"]
            if cnt > 0:
                bpf[name] = {"run_cnt": cnt, "run_time_ns": ns, "ns_per_run": ns / cnt}
        store_bytes = sum(
            p.stat().st_size for p in self._store.parent.glob(self._store.name + "*") if p.is_file()
        )
        detail = {"agent_cpu_s": cpu, "bpf": bpf, "store_bytes": store_bytes, **counts["detail"]}
        for p in self._store.parent.glob(self._store.name + "*"):
            p.unlink(missing_ok=True)
        return RecordStats(events=counts["events"], lost=counts["lost"], detail=detail)


RECORDERS: dict[str, type[Recorder]] = {}
for _cls in (Recorder, ForensixRecorder, AuditdRecorder, StraceRecorder):
    if _cls.name in RECORDERS:
        raise ValueError(f"recorder {_cls.name} registered twice")
    RECORDERS[_cls.name] = _cls


def make_recorders(names: list[str]) -> list[Recorder]:
    return [RECORDERS[n]() for n in names]
