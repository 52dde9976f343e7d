"""``forensix record``: the recorder on this host, into a local store."""

from __future__ import annotations

import functools
import os
import re
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from forensix.agent.sink import Sink, StoreSink
from forensix.cli.logs import log_level_option, setup_logging
from forensix.cli.options import DEFAULT_STORE, netns_options
from forensix.cli.record_rules import rules_for_record
from forensix.cli.rules import live_engine_for_record, record_rule_options
from forensix.errors import UsageError
from forensix.imports.journal import default_sources
from forensix.model.host import local_host
from forensix.rules.detectors import RecorderGuard
from forensix.rules.engine import LiveEngine
from forensix.sensor import libbpf as lb
from forensix.sensor.loader import (
    ACC_DETACHED,
    ORPHAN_TIMEOUT_S,
    SensorConfig,
    pin_dir_for,
    preflight,
    unpin,
)
from forensix.sensor.priority import LAG_NICE
from forensix.sensor.recorder import Recorder, RecordStats
from forensix.sensor.survival import read_slot, stop_watch
from forensix.store.keeper import IDLE_EXIT_S, SEAL_SECONDS, RecorderStore

__all__ = ["COMMANDS", "record"]



class _Stderr:
    """What the recorder tells the person running it: with rich's colours on a terminal, as
    plain lines into a log file or a pipe. rich is imported only for a terminal: a recorder
    run as a service or by a script carried it for nothing (~1.7 MB resident, ~25 ms of
    start-up; docs/benchmarks.md, "footprint"). Plain lines are not wrapped at 80 columns."""

    _TAGS = re.compile(r"\[/?(?:bold red|bold|dim|red|yellow)\]")  # the markup this module writes

    def __init__(self) -> None:
        self.is_terminal = sys.stderr.isatty()
        self._console: Any = None

    def print(self, text: str, *, markup: bool = True, **kwargs: Any) -> None:
        if self.is_terminal:
            if self._console is None:
                from rich.console import Console

                self._console = Console(stderr=True)
            self._console.print(text, markup=markup, **kwargs)
            return
        sys.stderr.write((self._TAGS.sub("", text) if markup else text) + "\n")


_err = _Stderr()
_T0 = time.monotonic()  # the recorder's CPU is measured from here (imports included)


def _live(stats: RecordStats) -> None:
    now = time.strftime("%H:%M:%S", time.gmtime())
    line = f"{stats.rate:8.0f} events/s  {stats.events:>10} events  {stats.processes:>7} process images"
    lost = f"{stats.dropped} lost" if stats.dropped else "0 lost"
    if not _err.is_terminal:  # a log file: the same line without rich's rendering (~1 ms a second of
        sys.stderr.write(f"{now}Z {line}  {lost}\n")  # the recorder's CPU, each second of a build)
        return
    _err.print(f"[dim]{now}Z[/dim] {line}  {f'[red]{lost}[/red]' if stats.dropped else lost}", highlight=False)


def _summary(stats: RecordStats, store: str, elapsed: float) -> None:
    ru, kept = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime + kept.ru_utime + kept.ru_stime  # the store keeper's too
    _err.print(f"[bold]recorded[/bold] {stats.events} events, {stats.processes} process images, "
               f"{stats.flows} flow edges in {elapsed:.1f}s into {store}", highlight=False, soft_wrap=True)
    wall = time.monotonic() - _T0
    _err.print(f"recorder CPU {cpu:.2f}s ({cpu / max(wall, 1e-9):.0%} of one core over {wall:.1f}s)",
               highlight=False)
    if stats.dropped:
        per = ", ".join(f"{k} {v}" for k, v in sorted(stats.drops.items()))
        _err.print(f"[red]lost in the kernel: {stats.dropped} ({per}); {stats.gaps} gap records written[/red]")
    else:
        _err.print("nothing lost: every kernel ring-buffer reservation succeeded")
    if stats.skipped_syscalls:
        _err.print(f"[yellow]not hooked (no tracepoint on this kernel): {', '.join(stats.skipped_syscalls)}[/yellow]",
                   soft_wrap=True)


def _stop_pinned(store: str, netns: int = 0) -> None:
    """Detach a pinned sensor: its programs stop at once; what its rings still hold is
    not stored (record on the same store instead of --stop to keep it)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    pin = pin_dir_for(store, netns)
    if not pin.exists():
        _err.print(f"no sensor is pinned for {store} ({pin}): nothing to stop", highlight=False)
        return
    detached = 0
    acc = lb.lib.bpf_obj_get(str(pin / "accounted").encode())
    if acc >= 0:  # the dead recorder's orphan watch must not race us
        stop_watch(pin, acc)
        detached = read_slot(acc, ACC_DETACHED)
        os.close(acc)
    fds = unpin(pin)
    with ThreadPoolExecutor(max_workers=64) as pool:  # each detach waits for an RCU grace period
        list(pool.map(os.close, fds))
    why = "; its orphan watch had detached the paused programs already" if detached else ""
    _err.print(f"detached the sensor pinned for {store} ({len(fds)} programs{why})", highlight=False)


def _recording_now(command: tuple[str, ...], duration: float | None) -> str:
    """The line that says, in words, from when on the host is recorded: start-up (imports,
    loading the sensor, the /proc snapshot) takes seconds, and what ran before this line is
    in the record only as the snapshot's processes, not as events (a user ran commands
    during it and missed them)."""
    now = time.strftime("%H:%M:%S", time.gmtime())
    if command:
        return f"recording since {now}Z: every program is attached; starting {' '.join(command)}"
    until = f"for {duration:g} s" if duration else "until Ctrl-C"
    return f"recording since {now}Z: every program is attached; what runs from now on is recorded ({until})"


def _say_ready(path: str) -> None:
    """Written whole (a rename): whoever sees the file reads the pid, never a partial line."""
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def _ready(ready_file: str | None, command: tuple[str, ...], duration: float | None) -> None:
    # said on stderr even with --quiet (it is not a live figure): the one cue a person
    # starting a recording by hand has that what they run next is recorded
    _err.print(_recording_now(command, duration), highlight=False, soft_wrap=True, markup=False)
    if ready_file is not None:
        _say_ready(ready_file)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


@click.command(
    context_settings={"ignore_unknown_options": False},
    epilog="""\b
Examples:
  forensix record                              # the whole host into ./forensix.duckdb, until Ctrl-C
  forensix record --store /var/lib/forensix/host.duckdb --duration 3600
  forensix record --store build.duckdb -- make -j2   # record while make runs; exit with its code
  forensix record --full -- ./suspicious.sh    # every read/write call, not just flow edges
  forensix record --netns /run/netns/blue --host-name blue --store blue.duckdb   # one namespace as a host

While it records, other terminals can query the same store (forensix ps, events, ...).
The kernel side is pinned in bpffs: if the recorder is killed, recording goes on, and
the next `forensix record` on the same store adopts it and stores what it kept.
  forensix record --stop --store host.duckdb   # detach what a killed recorder left""",
)
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=click.Path(dir_okay=False),
              help="The evidence store to write (created if missing; an existing forensix store is appended to).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--full", is_flag=True,
              help="Record every read/write call and every read-only re-open, not aggregated edges and counts.")
@click.option("--quiet", "-q", is_flag=True, help="No live figures.")
@click.option("--ring-mb", type=click.IntRange(1, 1024), default=None,
              help="Size of the main kernel ring buffer in MiB (rounded up to a power of two; default: "
                   "1/256 of memory, 32-256 MiB). Process and network events have rings of their own.")
@click.option("--lifecycle", type=click.Choice(["auto", "btf", "classic"]), default="auto", show_default=True,
              help="Process lifecycle hooks: typed tp_btf programs, or classic sched tracepoints "
                   "(auto falls back to classic where the kernel refuses tp_btf, and says so).")
@click.option("--socket-flows", type=click.Choice(["counters", "socket", "syscall"]), default="socket",
              show_default=True, envvar="FORENSIX_SOCKET_FLOWS",
              help="Where data sent and received on sockets is counted: counters: at the socket layer, with a "
                   "long TCP connection's own process counted by the connection's sequence numbers, not per "
                   "call (docs/data-flow.md; cheaper on kept-alive connections, dearer with a connection per "
                   "request); socket: every call at the socket layer (any syscall or io_uring; the "
                   "raw tracepoints of Linux 6.3+, falling back to syscall where absent); syscall: at the exits "
                   "of read, write, send* and recv* (every such call of every process pays a syscall "
                   "tracepoint). All give the same graph; counters counts data segments, not calls, on TCP. "
                   "Also from FORENSIX_SOCKET_FLOWS.")
@click.option("--stop", "stop_pinned", is_flag=True,
              help="Detach the sensor a killed recorder of --store left recording, and exit.")
@click.option("--no-tty", is_flag=True, help="Do not capture terminal bytes (see `forensix replay`).")
@click.option("--tty-rate", type=click.IntRange(1), default=256 << 10, show_default=True,
              help="Terminal bytes kept per terminal per second; what is cut is counted and marked.")
@click.option("--no-artifacts", is_flag=True, help="Do not preserve executed files (see `forensix artifacts`).")
@click.option("--no-exec-hold", is_flag=True,
              help="Read executed files at drain time only, without holding each from its exec on "
                   "(fanotify; a binary run and deleted within a drain tick is then lost).")
@click.option("--artifact-max-mb", type=click.IntRange(1), default=64, show_default=True,
              help="Executed files larger than this are not preserved (an artifact.missing event says so).")
@click.option("--artifact-quota-mb", type=click.IntRange(1), default=2048, show_default=True,
              help="Total size of preserved executed files; past it new ones are refused and counted.")
@click.option("--metrics", "metrics_addr", default=None, metavar="[HOST:]PORT",
              help="Serve Prometheus metrics (events/s, events lost per class) on HOST:PORT/metrics "
                   "(a bare PORT binds 127.0.0.1).")
@click.option("--system-log", "system_logs", multiple=True, type=click.Path(dir_okay=False),
              help="Follow this log file too (sshd, sudo, su, cron messages become events); default: journald "
                   "when it runs, else /var/log/auth.log, secure, syslog, messages where they exist.")
@click.option("--no-system-logs", is_flag=True, help="Record the kernel only.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the recorder's pid into this file once every program is attached (what a script "
                   "or service manager can wait for before starting the workload); removed when recording stops.")
@click.option("--orphan-timeout", type=click.FloatRange(0), default=ORPHAN_TIMEOUT_S, show_default=True,
              metavar="SECONDS",
              help="If this recorder dies, its pinned sensor records on for this long, then stops until the "
                   "next recorder on the store adopts it (the pause is written as a gap; a watch process "
                   "detaches its programs meanwhile, so it costs the host nothing); 0: record on forever.")
@netns_options
@click.option("--host-name", default=None, metavar="NAME",
              help="With --netns: the host name the namespace is recorded as (default: HOSTNAME-NAME of "
                   "/run/netns/NAME); its host id is derived from this machine's, the namespace and the name.")
@click.option("--journal-seconds", type=click.FloatRange(0.1), default=SEAL_SECONDS, hidden=True,
              help="Close a journal with rows this old for the store keeper to seal (tests: sealing while recording).")
@click.option("--keeper-idle", type=click.FloatRange(0.1), default=IDLE_EXIT_S, hidden=True,
              help="Seconds the store keeper waits with nothing to do before it exits.")
@click.option("--yield-nice", type=click.IntRange(0, 19), default=LAG_NICE, hidden=True,
              help="Experiment (sensor/priority.py): nice value the recorder yields the CPU at while its backlog "
                   "is small; 0 (default): never yields.")
@log_level_option()
@record_rule_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(
    store: str, duration: float | None, full: bool, quiet: bool, ring_mb: int | None, lifecycle: str,
    socket_flows: str, stop_pinned: bool,
    no_tty: bool, tty_rate: int, no_artifacts: bool, no_exec_hold: bool, artifact_max_mb: int,
    artifact_quota_mb: int, metrics_addr: str | None, system_logs: tuple[str, ...], no_system_logs: bool,
    rule_paths: tuple[str, ...], no_rules: bool, alerts_jsonl: str | None,
    webhook: str | None, ready_file: str | None, orphan_timeout: float, netns: str | None,
    netns_inode: int | None, host_name: str | None, journal_seconds: float, keeper_idle: float,
    yield_nice: int, log_level: str, command: tuple[str, ...],
) -> None:
    """Record what every process on this host does, at kernel level.

    With a COMMAND (after --), start it, record until it exits, and exit with its code.
    """
    from forensix.sensor.netns import recorded_host

    setup_logging(log_level)
    preflight()  # root, BTF, kfuncs, tracefs: said before a store file is created
    if stop_pinned:  # the namespace may be gone by now: its sensor is found by the inode alone
        _stop_pinned(store, netns_inode if netns is None and netns_inode else recorded_host(netns, None, None)[0])
        return
    ns, host = recorded_host(netns, netns_inode, host_name)  # a bad namespace too
    if ready_file is not None and not Path(ready_file).absolute().parent.is_dir():
        raise UsageError(f"no directory for --ready-file {ready_file}", "create its directory first")
    endpoint, counter = None, None
    if metrics_addr is not None:  # served before the store opens: a busy port leaves nothing half-open
        from prometheus_client import CollectorRegistry

        from forensix.metrics import RowCounter, parse_metrics_address, serve_metrics

        counter, registry = RowCounter(), CollectorRegistry()  # rows per table, gaps per class
        registry.register(counter)
        endpoint = serve_metrics(registry, parse_metrics_address(metrics_addr))
        _err.print(f"metrics on {endpoint.url}", highlight=False)
    # Rows go to journals from this process; a store keeper process seals them into DuckDB
    # and answers queries, and exits when idle (store/keeper.py): the idle recorder holds no DuckDB.
    keepers: list[int] = []
    guards: list[RecorderGuard] = []

    spawn_lock = threading.Lock()  # keepers start on the writer's thread, the engine may be built on another

    def _keeper_started(pid: int) -> None:  # its writes to the store are the recorder's own
        with spawn_lock:
            keepers.append(pid)
            for g in guards:
                g.self_pids.add(pid)

    writer = RecorderStore(store, host=host or local_host(), on_spawn=_keeper_started, idle_exit=keeper_idle,
                           seal_seconds=journal_seconds)
    for note in writer.recovered:  # an earlier recorder died before sealing its last rows
        _err.print(f"[yellow]store recovery: {note}[/yellow]", highlight=False, soft_wrap=True)
    store_sink = StoreSink(writer)
    sinks: list[Sink] = [store_sink]
    if not no_rules:  # live detection reads every batch after it is stored
        def _engine_built(engine: LiveEngine) -> None:  # now, or on a thread once the rules compiled
            with spawn_lock:
                guards.extend(d for d in engine.detectors if isinstance(d, RecorderGuard))

        def _pids() -> list[int]:
            with spawn_lock:
                return [os.getpid(), *keepers]

        sinks.append(rules_for_record(
            store_sink, store, rule_paths=rule_paths,
            echo=lambda line: _err.print(f"[bold red]{line}[/bold red]", highlight=False, soft_wrap=True),
            note=lambda line: _err.print(line, highlight=False, soft_wrap=True, markup=False),
            engine=functools.partial(live_engine_for_record, alerts_jsonl=alerts_jsonl, webhook=webhook),
            pids=_pids, on_engine=_engine_built))
    if counter is not None:
        sinks.append(counter)
    collector = None
    if not no_artifacts:
        from forensix.artifacts import ArtifactStore, Collector, artifacts_dir
        from forensix.artifacts.hashes import hash_cache

        collector = Collector(ArtifactStore(artifacts_dir(store), max_file_bytes=artifact_max_mb << 20,
                                            quota_bytes=artifact_quota_mb << 20).open(hash_cache()), host or local_host(),
                              exec_hold=not no_exec_hold)
    config = SensorConfig(full_rw=full, every_open=full, lifecycle=lifecycle, tty_rate=0 if no_tty else tty_rate,
                          pin_dir=pin_dir_for(store, ns), sock_layer=socket_flows != "syscall",
                          tcp_counters=socket_flows == "counters",
                          orphan_timeout_s=orphan_timeout, netns=ns)
    # the machine's logs are not a namespace's: followed for one only when named
    logs = list(system_logs) or ([] if ns else default_sources())
    if ring_mb is not None:
        config.ring_main_mb = _pow2(ring_mb)
    rec = Recorder(sinks, config, host=host, on_stats=None if quiet else _live, notes=writer.recovered,
                   artifacts=collector, system_logs=[] if no_system_logs else logs,
                   on_ready=lambda: _ready(ready_file, command, duration), yield_nice=yield_nice)

    def _stop(signum: int, frame: FrameType | None) -> None:
        rec.stop(f"signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        rc = rec.run(duration=duration, command=list(command) or None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if ready_file is not None:
            Path(ready_file).unlink(missing_ok=True)
        writer.close()  # the keeper seals the last journals
        if endpoint is not None:
            endpoint.stop()
    if not quiet:
        _summary(rec.stats, store, time.monotonic() - t0)
    if command:
        sys.exit(rc if rc is not None and rc >= 0 else 128 + (-(rc or 0)))


COMMANDS = [record]
