"""The recorder configurations every workload runs under.

- ``none``: no recorder (the baseline);
- ``forensix``: ``forensix record --store TMP`` running in the background for the whole
  host while the workload runs (BPF start-up is not timed);
- ``auditd``: the kernel audit subsystem with rules written here for the same syscalls the
  forensix sensor records, and auditd writing them to a log in the scratch directory;
- ``strace``: ``strace -f -o /dev/null`` around the workload's command;
- ``forensix-agent``: ``forensix agent`` shipping to a ``forensix server`` on this machine,
  the agent's and the log host's CPU apart (bench/recorder_agent.py).

A host-wide recorder is started before and stopped after each measurement, so the events
it counts belong to that measurement (plus whatever else ran on the host meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forensix.store.embedded import remove_store, store_files

Inspector = Callable[[Any], dict[str, Any]]

__all__ = ["RECORDERS", "RECORD_NETNS", "RecordStats", "Recorder", "make_recorders"]


# Set by a workload that runs in a network namespace of its own (bench/compile.py BENCH_NETNS):
# the bpffs path forensix records instead of the whole host.
RECORD_NETNS = "BENCH_RECORD_NETNS"


@dataclass
class RecordStats:
    events: int | None = None  # records the recorder kept for this measurement
    lost: int | None = None  # records it says it dropped
    detail: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """No recorder: the baseline. Subclasses wrap the command or run beside it."""

    name = "none"
    host_wide = False

    def bpf_ids(self) -> set[int]:
        """BPF program ids this configuration loaded (to tell them from others')."""
        return set()

    def check(self) -> str | None:
        """Why this recorder cannot run here, or None."""
        return None

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def cpu_snapshot(self) -> dict[int, float]:
        """CPU seconds so far of each process of a recorder that runs beside the workload (pid
        -> user + sys, its descendants included): what a workload's own rusage does not count.
        Empty for none, and for a recorder inside the workload's process tree (strace)."""
        return {}

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

    def cpu_snapshot(self) -> dict[int, float]:
        return _tree_cpu_seconds(self._proc.pid) if self._proc is not None else {}

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
        subprocess.run(["auditctl", "-D"], capture_output=True, check=False)
        subprocess.run(["auditctl", "-e", "0"], capture_output=True, check=False)
        if self._proc is not None and self._proc.poll() is None:
            stop_process(self._proc, signal.SIGTERM, 30)
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


def _owned_bpf_ids(pid: int) -> tuple[set[int], set[int]]:
    """(program ids, map ids) that process ``pid`` holds open, from /proc/PID/fdinfo: other
    recorders may run on the host at the same time, and must not be counted."""
    progs: set[int] = set()
    maps: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return progs, maps
    for fd in fds:
        try:
            text = fd.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                progs.add(int(line.split()[1]))
            elif line.startswith("map_id:"):
                maps.add(int(line.split()[1]))
    return progs, maps


def _loaded_progs() -> list[dict[str, Any]] | None:
    """``bpftool prog show`` as JSON: every BPF program loaded on the host (None: no bpftool)."""
    try:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    progs: list[dict[str, Any]] = json.loads(out or "[]")
    return progs


def _loaded_prog_ids() -> set[int] | None:
    progs = _loaded_progs()
    return None if progs is None else {p.get("id") for p in progs}


def stop_process(p: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 120.0) -> int:
    """Signal ``p`` and wait for it; killed if still there after ``timeout``. Its exit code."""
    p.send_signal(sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def _wait_detached(progs: set[int], timeout: float = 120.0) -> None:
    """Until none of ``progs`` is loaded any more (or ``timeout``, said on stderr)."""
    deadline = time.monotonic() + timeout
    while progs:
        loaded = _loaded_prog_ids()
        if loaded is None or not progs & loaded:
            return
        if time.monotonic() > deadline:
            print(f"bench: {len(progs & loaded)} forensix BPF programs still loaded after {timeout:.0f} s",
                  file=sys.stderr)
            return
        time.sleep(0.2)


def _bpf_prog_stats(only: set[int] | None = None) -> dict[str, dict[str, int]]:
    """run_time_ns / run_cnt per loaded BPF program (needs kernel.bpf_stats_enabled=1)."""
    progs: dict[str, dict[str, int]] = {}
    for p in _loaded_progs() or []:
        if only is not None and p.get("id") not in only:
            continue
        name = p.get("name", str(p.get("id")))
        agg = progs.setdefault(name, {"run_time_ns": 0, "run_cnt": 0, "id": p.get("id", 0)})
        agg["run_time_ns"] += int(p.get("run_time_ns", 0))
        agg["run_cnt"] += int(p.get("run_cnt", 0))
    return progs


_FX_CLASSES = {0: "process", 1: "file", 2: "network", 3: "flow", 4: "other"}


def _fx_kernel_counters(owned: set[int] | None = None) -> dict[str, dict[str, int]]:
    """The sensor's per-class counters (records sequenced, drops), summed over CPUs, read
    with bpftool independently of the agent: the figure gap records must add up to."""
    try:
        shown = json.loads(subprocess.run(
            ["bpftool", "-j", "map", "show", "name", "counters"],
            capture_output=True, text=True, check=True).stdout or "[]")
        if isinstance(shown, dict):
            shown = [shown]
        if not shown:
            return {}
        ids = [int(m["id"]) for m in shown if owned is None or int(m["id"]) in owned]
        if not ids:
            return {}
        map_id = max(ids)
        dump = json.loads(subprocess.run(
            ["bpftool", "-j", "map", "dump", "id", str(map_id)],
            capture_output=True, text=True, check=True).stdout or "[]")
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return {}
    out: dict[str, dict[str, int]] = {}
    for entry in dump:
        f = entry.get("formatted", {})
        cls = _FX_CLASSES.get(int(f.get("key", -1)), str(f.get("key")))
        agg = out.setdefault(cls, {"seq": 0, "drops": 0})
        for v in f.get("values", []):
            agg["seq"] += int(v["value"].get("seq", 0))
            agg["drops"] += int(v["value"].get("drops", 0))
    return out


def _drops(counters: dict[str, dict[str, int]]) -> int:
    return sum(c["drops"] for c in counters.values())


_TRACING_TYPES = {"tracepoint", "raw_tracepoint", "tracing", "kprobe", "perf_event", "lsm"}


def foreign_tracing_progs(mine: set[int]) -> int:
    """Tracing BPF programs loaded on the host that are not this bench's recorder's: other
    recorders running at the same time slow every configuration, the baseline included."""
    progs = _loaded_progs()
    if progs is None:
        return -1
    return sum(1 for p in progs if p.get("type") in _TRACING_TYPES and p.get("id") not in mine)


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of every live descendant (store keepers, the orphan watch)."""
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        cpu = _proc_cpu_seconds(p)
        if cpu is None:
            continue
        out[p] = cpu
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def forensix_source() -> Path | None:
    """BENCH_FORENSIX_SRC: a src/ directory of another forensix tree to record with (a
    clone at a known commit, with its sensor built), so that a long run measures one
    version even while the working tree changes."""
    src = os.environ.get("BENCH_FORENSIX_SRC")
    return Path(src) if src else None


def forensix_command() -> list[str]:
    if forensix_source() is None:
        return ["forensix"]
    return [sys.executable, "-c", "from forensix.cli.main import main; main()"]


def forensix_env() -> dict[str, str]:
    env = dict(os.environ)
    src = forensix_source()
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def forensix_version() -> dict[str, str | None]:
    """Which forensix the column measures: source tree and git commit."""
    src = forensix_source()
    if src is None:
        import forensix

        src = Path(forensix.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"src": str(src), "commit": None}
    return {"src": str(src), "commit": commit + ("+uncommitted changes" if dirty else "")}


class ForensixRecorder(Recorder):
    """``forensix record --store TMP`` for the whole host, in the background."""

    name = "forensix"
    host_wide = True
    # kernel.bpf_stats_enabled adds two clock reads to every BPF program run (~1-2% of
    # the web figure): the scored repetitions run without it, as users run forensix, and
    # one extra repetition (ForensixProfiled) collects the per-program table.
    bpf_stats = False

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._store: Path | None = None
        self._progs0: dict[str, dict[str, int]] = {}
        self._log: Path | None = None
        self._owned: tuple[set[int], set[int]] = (set(), set())
        self._cpu0: float | None = None

    def bpf_ids(self) -> set[int]:
        return set(self._owned[0])

    def cpu_snapshot(self) -> dict[int, float]:
        return _tree_cpu_seconds(self._proc.pid) if self._proc is not None else {}

    def env(self, scratch: Path) -> dict[str, str]:
        """Environment of the ``forensix record`` process beyond forensix_env()."""
        return {}

    def command(self) -> list[str]:
        """How ``forensix`` is run (variants in bench.ablation wrap it)."""
        return forensix_command()

    def args(self) -> list[str]:
        """Options of ``forensix record`` beyond ``--store`` (variants in bench.ablation); the
        namespace a workload builds in, when it records only that (bench/compile.py BENCH_NETNS)."""
        ns = os.environ.get(RECORD_NETNS)
        return ["--netns", ns] if ns else []

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
        _set_bpf_stats(self.bpf_stats)
        self._proc = subprocess.Popen(
            [*self.command(), "record", "--store", str(self._store), *self.args()],
            stdout=self._log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**forensix_env(), **self.env(scratch)},
        )
        wait_until_recording(self._proc, self._store, self._log)
        self._owned = _owned_bpf_ids(self._proc.pid)
        self._progs0 = _bpf_prog_stats(self._owned[0])
        self._cpu0 = _proc_cpu_seconds(self._proc.pid)  # start-up excluded from the window's figure

    def stop(self, inspect: Inspector | None = None) -> RecordStats:
        from bench.forensix_ready import store_counts

        assert self._proc is not None and self._store is not None and self._log is not None
        # let the agent catch up first, so no drop happens between this read and its stop
        kernel = _fx_kernel_counters(self._owned[1])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.5)
            again = _fx_kernel_counters(self._owned[1])
            if _drops(again) == _drops(kernel):
                break
            kernel = again
        progs1 = _bpf_prog_stats(self._owned[0])
        cpu = _proc_cpu_seconds(self._proc.pid)
        rc = stop_process(self._proc)
        self._proc = None
        _set_bpf_stats(False)
        # The recorder leaves its paused programs to a child that detaches them after it
        # exits (seconds): until they are gone every syscall still takes the tracepoint
        # path, which would slow the next configuration measured (a baseline, auditd).
        _wait_detached(self._owned[0])
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
        store_bytes = sum(p.stat().st_size for p in store_files(self._store))
        kernel_drops = sum(c["drops"] for c in kernel.values()) if kernel else None
        # the recorder's own CPU while the workload was measured (its threads, not its keeper): what an
        # agent beside the floor's programs takes from the workload (docs/benchmarks.md, floor-gap)
        window = round(cpu - self._cpu0, 3) if cpu is not None and self._cpu0 is not None else None
        detail = {"agent_cpu_s": cpu, "agent_cpu_window_s": window, "bpf": bpf, "kernel_counters": kernel,
                  "kernel_drops": kernel_drops, "store_bytes": store_bytes, **counts["detail"]}
        remove_store(self._store)
        return RecordStats(events=counts["events"], lost=counts["lost"], detail=detail)


class ForensixProfiled(ForensixRecorder):
    """forensix with ``kernel.bpf_stats_enabled=1``: one unscored repetition per workload
    for the per-program BPF table (run_time_ns / run_cnt). Not a column of its own."""

    name = "forensix+stats"
    bpf_stats = True


def bpf_source() -> Path | None:
    """The bpf/ directory (sensor source and Makefile) of the forensix being measured."""
    src = forensix_source()
    if src is None:
        import forensix

        src = Path(forensix.__file__).resolve().parent.parent
    d = src.parent / "bpf"
    return d if (d / "Makefile").is_file() else None


class ForensixFloor(ForensixRecorder):
    """The attach floor, a reference rather than a recorder: ``forensix record`` with the
    sensor built by ``make -C bpf floor``, whose syscall programs return at once. The same
    tracepoints fire on the same syscalls (and the process lifecycle is still recorded), so
    the gap between ``none`` and ``floor`` is what attaching to syscall tracepoints costs
    on this kernel before forensix records anything; the gap between ``floor`` and
    ``forensix`` is forensix's own work."""

    name = "floor"

    def check(self) -> str | None:
        why = super().check()
        if why:
            return why
        if bpf_source() is None:
            return "the sensor's source (bpf/Makefile) is not beside this forensix"
        if shutil.which("clang") is None:
            return "clang is missing: run scripts/setup.sh"
        return None

    def env(self, scratch: Path) -> dict[str, str]:
        out = scratch / "floor-bpf"
        if not (out / "sensor.bpf.o").is_file():
            bpf = bpf_source()
            assert bpf is not None
            subprocess.run(["make", "-s", "-C", str(bpf), "floor", f"FLOOR_OUT={out}"],
                           check=True, capture_output=True)
        return {"FORENSIX_BPF_DIR": str(out)}


class ForensixBase(ForensixRecorder):
    """``forensix record`` from another tree (BENCH_BASE_SRC: a src/ directory with its
    sensor built, e.g. a clone of the commit before a change), run back to back with the
    baseline, forensix and the floor: a before/after in one run, on the same host load."""

    name = "base"

    def check(self) -> str | None:
        src = os.environ.get("BENCH_BASE_SRC")
        if not src:
            return "BENCH_BASE_SRC is not set (a src/ directory of the forensix to compare with)"
        if not (Path(src) / "forensix" / "sensor" / "_bpf" / "sensor.bpf.o").is_file():
            return f"{src} has no built sensor: run make -C bpf in that tree"
        return super().check()

    def command(self) -> list[str]:
        return [sys.executable, "-c", "from forensix.cli.main import main; main()"]

    def env(self, scratch: Path) -> dict[str, str]:
        return {"PYTHONPATH": os.environ["BENCH_BASE_SRC"]}


def _set_bpf_stats(on: bool) -> None:
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1\n" if on else "0\n")


RECORDERS: dict[str, type[Recorder]] = {}
for _cls in (Recorder, ForensixRecorder, ForensixFloor, ForensixBase, AuditdRecorder, StraceRecorder):
    if _cls.name in RECORDERS:
        raise ValueError(f"recorder {_cls.name} registered twice")
    RECORDERS[_cls.name] = _cls


# forensix agent shipping to a forensix server on this machine (bench/recorder_agent.py builds on
# the classes above, so it is imported last)
from bench.recorder_agent import ForensixAgentRecorder

RECORDERS[ForensixAgentRecorder.name] = ForensixAgentRecorder


def make_recorders(names: list[str]) -> list[Recorder]:
    return [RECORDERS[n]() for n in names]
