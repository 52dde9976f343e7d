"""``forensix server``, ``forensix agent`` and ``forensix verify``: the secure log host."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from forensix.agent.sink import StoreSink
from forensix.cli.logs import log_level_option, setup_logging
from forensix.cli.options import DEFAULT_STORE, emit, format_option, netns_options, store_option
from forensix.cli.pki import DEFAULT_PKI, pki_option
from forensix.cli.rules import live_engine_for_record, record_rule_options
from forensix.errors import UsageError
from forensix.stopflag import StopFlag

if TYPE_CHECKING:
    from forensix.model.host import HostInfo

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _logging(verbose: bool, level: str) -> None:
    setup_logging("debug" if verbose else level)


def _addr(text: str, default_port: int = 7514) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UsageError(f"{text!r} is not HOST:PORT", "for example 10.0.0.5:7514") from None


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise UsageError(f"{text!r} is not a size", "bytes, or with K, M, G (e.g. 512M)") from None


def _metrics_option(what: str) -> Callable[[F], F]:
    return click.option("--metrics", "metrics_addr", default=None, metavar="[HOST:]PORT",
                        help=f"Serve Prometheus metrics of {what} on http://HOST:PORT/metrics "
                             "(a bare PORT binds 127.0.0.1; 0 picks a free port, logged).")


def _serve_metrics(registry: Any, addr: str | None, log: logging.Logger, access: Any = None) -> Any:
    if addr is None:
        return None
    from forensix.metrics import is_loopback, parse_metrics_address, serve_metrics

    host, port = parse_metrics_address(addr)
    if not is_loopback(host) and access is None:
        log.warning("metrics on %s are served without TLS or authentication: they name hosts "
                    "and their losses; keep them on a trusted network", host)
    ep = serve_metrics(registry, (host, port), access)
    log.info("metrics on %s%s", ep.url, f" (mutual TLS; clients {', '.join(sorted(access.clients))})"
             if access is not None else "")
    return ep


def _log_host_metrics_access(pki_dir: Path, addr: str | None, clients: tuple[str, ...]) -> Any:
    """Who may scrape the log host: off loopback, only the named certificates of its CA."""
    from forensix.metrics import MetricsAccess, is_loopback, parse_metrics_address
    from forensix.pki.authority import Authority
    from forensix.pki.tls import RevocationList, server_context

    if addr is None:
        if clients:
            raise UsageError("--metrics-client without --metrics", "add --metrics HOST:PORT")
        return None
    host, _ = parse_metrics_address(addr)
    if not clients:
        if is_loopback(host):
            return None
        raise UsageError(f"metrics on {host} would be open to anyone who can reach it (they name every host "
                         "and what it lost)",
                         "give --metrics-client NAME for each scraper (a certificate from `forensix pki issue "
                         "NAME`), or serve them on 127.0.0.1")
    pki = Authority(pki_dir)
    return MetricsAccess(server_context(pki.ca_cert_path, pki.server_cert_path, pki.server_key_path),
                         frozenset(clients), RevocationList(pki.crl_path, pki.ca_cert_path))


def _until_signal(stop: StopFlag) -> None:
    """SIGTERM and SIGINT set ``stop`` (a StopFlag: an Event's set() in a handler can deadlock)."""
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command("server")
@pki_option
@click.option("--listen", default="127.0.0.1:7514", show_default=True, help="ADDR:PORT to listen on.")
@click.option("--store", default=DEFAULT_STORE, show_default=True, type=click.Path(dir_okay=False),
              help="The store every host's batches are ingested into: a DuckDB file, or "
                   "clickhouse://HOST:PORT/DB[?cluster=NAME] (then --evidence is required).")
@click.option("--evidence", type=click.Path(file_okay=False), default=None,
              help="Evidence directory (sealed frames, checkpoints) [default: STORE.evidence].")
@click.option("--silence", default=60.0, show_default=True, type=float,
              help="Raise an alert when a host has said nothing for this many seconds.")
@click.option("--checkpoint-interval", default=1.0, show_default=True, type=float,
              help="Seconds between signed chain checkpoints.")
@click.option("--host-max-connections", default=4, show_default=True, type=click.IntRange(0),
              help="Open connections one host may hold (0: no limit).")
@click.option("--host-max-streams", default=32, show_default=True, type=click.IntRange(0),
              help="Streams (agent spool directories) one host may have on the log host (0: no limit).")
@click.option("--host-max-bytes", default="50G", show_default=True,
              help="Evidence one host may keep on the log host (0: no limit).")
@click.option("--min-free", default="1G", show_default=True,
              help="Refuse frames when the evidence disk has less free space than this.")
@click.option("--max-connections", default=1024, show_default=True, type=click.IntRange(1),
              help="Connections open at once, all hosts (beyond it, closed before the handshake).")
@click.option("--evidence-attempts", default=3, show_default=True, type=click.IntRange(0),
              help="Times a frame may fail to be written into the evidence (full disk, EIO, read-only) "
                   "before it is refused for good; the agent keeps it in SPOOL/refused (0: retry for ever).")
@click.option("--store-attempts", default=3, show_default=True, type=click.IntRange(0),
              help="Times the store may refuse a frame's rows (a type, a constraint, a schema; not the store "
                   "being away, which is retried for ever) before the frame is quarantined: kept in the "
                   "evidence, not ingested, the other hosts' ingest goes on (0: retry for ever).")
@click.option("--decoder-checkpoint", "decoder_checkpoint", default=300.0, show_default=True, type=float,
              help="Seconds between checkpoints of each raw agent stream's decoder (agent --raw); a restart "
                   "decodes the frames after the last one again (0: none, decode from the agent's start).")
@click.option("--reingest", is_flag=True,
              help="At start, ingest the quarantined frames again (after fixing their cause; "
                   "`forensix verify` lists them).")
@_metrics_option("the log host")
@click.option("--metrics-client", "metrics_clients", multiple=True, metavar="NAME",
              help="Serve the metrics over mutual TLS to scrapers holding the CA's certificate NAME "
                   "(`forensix pki issue NAME`; repeat for several). Required off loopback.")
@click.option("-v", "--verbose", is_flag=True, help="The same as --log-level debug.")
@log_level_option()
@record_rule_options
def server(pki_dir: str, listen: str, store: str, evidence: str | None, silence: float,
           checkpoint_interval: float, host_max_connections: int, host_max_streams: int,
           host_max_bytes: str, min_free: str, max_connections: int, evidence_attempts: int,
           store_attempts: int, decoder_checkpoint: float, reingest: bool,
           metrics_addr: str | None,
           metrics_clients: tuple[str, ...], verbose: bool, log_level: str, rule_paths: tuple[str, ...] = (),
           no_rules: bool = False, alerts_jsonl: str | None = None, webhook: str | None = None) -> None:
    """Run the log host: accept sealed batches from enrolled agents over mutual TLS 1.3.

    \b
    Every frame is verified (MAC under its epoch's key, chain, host), written to the
    evidence segments and fsynced, ingested into the store, and only then acknowledged.
    Query commands work on STORE meanwhile (all hosts; filter with --host).

    \b
    Examples:
      forensix server --pki /etc/forensix/pki --listen 0.0.0.0:7514 --store /var/lib/forensix/fleet.duckdb
      forensix server --listen 10.0.0.5:7514 --silence 120 --metrics 9514
      forensix server --metrics 10.0.0.5:9514 --metrics-client prometheus   # mutual TLS
      forensix server --host-max-bytes 200G --host-max-connections 2 --min-free 5G
      forensix server --store fleet.duckdb --reingest   # frames the store refused, once the cause is fixed
      forensix server --store 'clickhouse://ch1:9000/forensix?cluster=fleet' --evidence /var/lib/forensix/evidence
    """
    from forensix.server import LogServer, ServerConfig, evidence_dir_for
    from forensix.server.guard import HostLimits
    from forensix.store.open import is_remote, open_writer

    _logging(verbose, log_level)
    access = _log_host_metrics_access(Path(pki_dir), metrics_addr, metrics_clients)  # said before anything starts
    remote = is_remote(store)
    if remote and not evidence:
        raise UsageError("a ClickHouse store needs --evidence DIR",
                         "the sealed frames stay on this log host: give a directory for them")
    ev = Path(evidence) if evidence else evidence_dir_for(store)
    # ClickHouse: an append waits out a shard that is down (logged, retried) instead of
    # dropping the batch; DuckDB: the file and its query socket
    writer = open_writer(store, retry=True)
    qs = None
    if not remote:
        from forensix.store.embedded import DuckDBStore, socket_path
        from forensix.store.remote import QueryServer

        assert isinstance(writer, DuckDBStore)
        # seals off the ingest thread (its latency stays flat), at normal priority and with all
        # of DuckDB's threads: a log host has no workload to yield to, and serves queries
        writer.seal_in_background(nice=0, single_threaded=False)
        qs = QueryServer(writer, socket_path(store)).start()
    live = None
    if not no_rules:  # the same rules as `forensix record`, on every host's stream
        log = logging.getLogger("forensix.alerts")
        live = live_engine_for_record(StoreSink(writer), store, rule_paths=rule_paths,
                                      alerts_jsonl=alerts_jsonl, webhook=webhook, echo=log.warning,
                                      record_problems=False)
    limits = HostLimits(connections=host_max_connections, streams=host_max_streams,
                        evidence_bytes=_size(host_max_bytes), min_free_bytes=_size(min_free),
                        evidence_attempts=evidence_attempts)
    cfg = ServerConfig(Path(pki_dir), _addr(listen), ev, silence, checkpoint_interval, limits=limits,
                       max_connections=max_connections, store_attempts=store_attempts, reingest=reingest,
                       decoder_checkpoint_s=decoder_checkpoint)
    srv = LogServer(cfg, writer, live)
    slog = logging.getLogger("forensix.server")
    try:
        host, port = srv.bind()
        endpoint = _serve_metrics(srv.metrics.registry, metrics_addr, slog, access)
    except BaseException:  # a busy port: close what is open, say why
        srv.stop()
        if qs is not None:
            qs.stop()
        writer.close()
        raise
    slog.info("listening on %s:%d, store %s, evidence %s", host, port, store, ev)
    stop = StopFlag()
    _until_signal(stop)
    t = threading.Thread(target=srv.serve_forever, name="fx-accept", daemon=True)
    t.start()
    while not stop.wait(0.5) and t.is_alive():
        pass
    abort = getattr(writer, "abort", None)
    if abort is not None:  # an append waiting for a shard gives up: its frames are re-ingested at start
        abort()
    srv.stop()
    if endpoint is not None:
        endpoint.stop()
    if qs is not None:
        qs.stop()
    writer.flush()
    writer.close()


@click.command("agent")
@click.option("--server", "server_addr", required=True, help="The log host, HOST:PORT.")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="The host's bundle from `pki issue` (ca.crt, HOST.crt, HOST.key, seal.key).")
@click.option("--cert", type=click.Path(dir_okay=False), help="Host certificate [bundle/HOST.crt].")
@click.option("--key", type=click.Path(dir_okay=False), help="Host key [bundle/HOST.key].")
@click.option("--ca", type=click.Path(dir_okay=False), help="CA certificate [bundle/ca.crt].")
@click.option("--seal-key", type=click.Path(dir_okay=False), help="Seal key file [bundle/seal.key].")
@click.option("--spool", default="/var/lib/forensix/spool", show_default=True,
              type=click.Path(file_okay=False), help="Spool directory (batches until acknowledged).")
@click.option("--spool-max", default="1G", show_default=True, help="Spool size limit.")
@click.option("--store", default=None, type=click.Path(dir_okay=False),
              help="Also keep a local store of everything recorded.")
@click.option("--server-name", default="forensix-server", show_default=True,
              help="Name the log host's certificate must carry.")
@click.option("--heartbeat", default=5.0, show_default=True, type=float, help="Seconds between heartbeats.")
@click.option("--batch-ms", default=200, show_default=True, type=click.IntRange(0, 10000),
              help="Join the recorder's batches for up to this long into one sealed frame.")
@click.option("--drain", default=5.0, show_default=True, type=float,
              help="On stop, seconds to wait for the log host to acknowledge the spool.")
@click.option("--duration", default=None, type=float, help="Stop after this many seconds.")
@click.option("--synthetic", default=None, type=float, metavar="EVENTS_PER_S",
              help="Ship generated events instead of recording (load tests, transport checks).")
@click.option("--batch-rows", default=1000, show_default=True, type=int, help="Rows per synthetic batch.")
@click.option("--raw/--decode", "raw", default=None,
              help="--raw (the default): ship the kernel's records undecoded, the log host decodes them (~5x less "
                   "agent CPU per event). --decode: decode here: for a log host that cannot decode raw frames (older "
                   "than this agent), and for --store (which implies it). docs/agent-raw-records.md.")
@click.option("--system-log", "system_logs", multiple=True, type=click.Path(dir_okay=False),
              help="Follow this log file too and ship its sshd, sudo, su and cron messages as events (as "
                   "`forensix record` does); default: journald when it runs, else /var/log/auth.log, secure, "
                   "syslog, messages where they exist.")
@click.option("--no-system-logs", is_flag=True, help="Ship the kernel's record only.")
@click.option("--no-artifacts", is_flag=True, help="Do not preserve executed files (see `forensix artifacts`).")
@click.option("--no-exec-hold", is_flag=True,
              help="Read executed files at drain time only, without holding each from its exec on "
                   "(fanotify; a binary run and deleted within a drain tick is then lost).")
@_metrics_option("this agent")
@netns_options
@click.option("-v", "--verbose", is_flag=True, help="The same as --log-level debug.")
@log_level_option()
def agent(server_addr: str, bundle: str | None, cert: str | None, key: str | None, ca: str | None,
          seal_key: str | None, spool: str, spool_max: str, store: str | None, server_name: str,
          heartbeat: float, batch_ms: int, drain: float, duration: float | None, synthetic: float | None, batch_rows: int,
          raw: bool | None, system_logs: tuple[str, ...], no_system_logs: bool, no_artifacts: bool,
          no_exec_hold: bool, metrics_addr: str | None, netns: str | None, netns_inode: int | None, verbose: bool,
          log_level: str) -> None:
    """Record this host and ship the record, sealed, to the log host.

    \b
    Batches are sealed (forward-secure MAC, hash chain), spooled to disk with fsync, and
    sent by a background thread; recording never waits for the network. With the log
    host unreachable the spool fills (up to --spool-max) and is delivered later.

    \b
    Examples:
      forensix agent --server loghost:7514 --bundle /etc/forensix/agent
      forensix agent --server 10.0.0.5:7514 --bundle ./web01 --spool /var/lib/forensix/spool --store local.duckdb
      forensix agent --server 127.0.0.1:7514 --bundle ./h1 --synthetic 50000 --duration 30
      forensix agent --server loghost:7514 --bundle /etc/forensix/agent --metrics 9515
      forensix agent --server loghost:7514 --bundle /etc/forensix/agent --decode   # for an older log host
      forensix agent --server loghost:7514 --bundle ./blue --netns /run/netns/blue   # a namespace as host blue

    \b
    The kernel side is pinned in bpffs: an agent killed (or replaced by an upgrade) leaves
    its sensor recording, and the next agent on the same --spool adopts it and ships what
    it kept. A clean stop detaches it; `forensix record --stop --store SPOOL` detaches one
    that no agent will adopt.

    \b
    A frame the log host refuses for good (its seal, chain or rows do not hold) is kept in
    SPOOL/refused with the reason and not sent again; `forensix agent-status` lists them.
    """
    from forensix.agent.shipping import ShippingConfig, ShippingSink
    from forensix.pki.tls import client_context

    _logging(verbose, log_level)
    if raw and store:
        raise UsageError("--store keeps decoded rows, and --raw does not decode on this host",
                         "record with --decode (or without --raw) to keep a local store too")
    raw = not store if raw is None else raw  # a local store needs the decoded rows
    if metrics_addr is not None:
        from forensix.metrics import parse_metrics_address

        parse_metrics_address(metrics_addr)  # a typo is said before anything starts
    b = Path(bundle) if bundle else None
    cert_p, key_p, ca_p, seal_p = _bundle_paths(b, cert, key, ca, seal_key)
    host = _cert_name(cert_p)
    ns, info = 0, None
    if netns is not None or netns_inode is not None:  # the namespace is the host the certificate names
        from forensix.sensor.netns import recorded_host

        ns, info = recorded_host(netns, netns_inode, host)
    cfg = ShippingConfig(host=host, server=_addr(server_addr), context=client_context(ca_p, cert_p, key_p),
                         seal_key=seal_p, spool_dir=Path(spool), spool_max_bytes=_size(spool_max),
                         server_name=server_name, heartbeat_s=heartbeat, drain_s=drain,
                         coalesce_s=batch_ms / 1000, info=info)
    from forensix.metrics import RowCounter

    counter = RowCounter()
    sinks: list[Any] = [counter]
    if store:
        from forensix.agent.sink import StoreSink
        from forensix.store.embedded import open_writer

        local = open_writer(store)
        local.seal_in_background()  # as `forensix record`: the host's workload first
        sinks.append(StoreSink(local))
    shipping = ShippingSink(cfg)
    sinks.append(shipping)
    stop = StopFlag()
    _until_signal(stop)
    log = logging.getLogger("forensix.agent")
    log.info("agent %s shipping %s to %s:%d (stream %s, spool %s)", host,
             "the kernel's records, for the log host to decode" if raw else "decoded rows", *cfg.server,
             shipping.spool.stream.hex(), spool)
    endpoint = None
    records: int | None = None  # a raw agent's kernel records (its rows are made on the log host)
    try:
        if metrics_addr is not None:
            from prometheus_client import CollectorRegistry

            from forensix.agent.metrics import AgentCollector

            registry = CollectorRegistry()
            registry.register(AgentCollector(shipping, counter))
            endpoint = _serve_metrics(registry, metrics_addr, log)
        if synthetic is not None:
            _run_synthetic(sinks, synthetic, batch_rows, duration, stop)
        else:
            from forensix.imports.journal import default_sources

            # the machine's logs are not a namespace's: followed for one only when named (as `record`)
            logs = [] if no_system_logs else list(system_logs) or ([] if ns else default_sources())
            records = _run_recorder(sinks, duration, stop, Path(spool), ns, info, raw=bool(raw), system_logs=logs,
                                    artifacts=not no_artifacts, exec_hold=not no_exec_hold)
    finally:
        for s in sinks:
            s.close()
        if endpoint is not None:
            endpoint.stop()
    what = (f"{shipping.rows} rows" if not raw or records is None else
            f"{records} kernel records and flow entries undecoded (the log host counts the rows it stores)")
    log.info("agent stopped: %d batches, %s spooled; %d unacknowledged left in the spool; "
             "%d refused by the log host", shipping.batches, what, shipping.spool.unacked(),
             len(shipping.spool.refused))


def _bundle_paths(b: Path | None, cert: str | None, key: str | None, ca: str | None,
                  seal: str | None) -> tuple[Path, Path, Path, Path]:
    def pick(explicit: str | None, name: str) -> Path:
        if explicit:
            return Path(explicit)
        if b is None:
            raise UsageError(f"no {name} given", "give --bundle DIR (from forensix pki issue HOST)")
        return b / name

    host = ""
    if b is not None:  # the bundle may be copied under any name: find its one host certificate
        certs = sorted(p.stem for p in b.glob("*.crt") if p.name != "ca.crt")
        if len(certs) != 1 and not cert:
            raise UsageError(f"{b} holds {len(certs)} host certificates", "give --cert and --key")
        host = certs[0] if certs else ""
    return (pick(cert, f"{host}.crt"), pick(key, f"{host}.key"), pick(ca, "ca.crt"), pick(seal, "seal.key"))


def _cert_name(path: Path) -> str:
    from cryptography import x509

    try:
        c = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read certificate {path}: {e}", "give --bundle or --cert") from e
    return str(c.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)


def _run_synthetic(sinks: list[Any], rate: float, rows: int, duration: float | None,
                   stop: StopFlag) -> None:
    import os

    from forensix.testing.batches import BatchSource

    src = BatchSource(rows, marker=f"synthetic pid={os.getpid()} start={time.time_ns()}")
    t0 = time.monotonic()
    sent = 0
    while not stop.is_set() and (duration is None or time.monotonic() - t0 < duration):
        batch = src.next()
        for s in sinks:
            s.write("events", batch)
        sent += batch.num_rows
        ahead = sent / rate - (time.monotonic() - t0) if rate > 0 else 0
        if ahead > 0:
            stop.wait(ahead)


def _run_recorder(sinks: list[Any], duration: float | None, stop: StopFlag, spool: Path, netns: int = 0,
                  host: HostInfo | None = None, raw: bool = False, system_logs: Sequence[str] = (),
                  artifacts: bool = True, exec_hold: bool = True) -> int:
    """Record until stopped; returns what the recorder counted (``Recorder.counted``)."""
    from forensix.artifacts import ArtifactStore, Collector
    from forensix.artifacts.hashes import hash_cache
    from forensix.model.host import local_host
    from forensix.sensor.loader import SensorConfig, pin_dir_for
    from forensix.sensor.recorder import Recorder

    # executed files are kept beside the spool and shipped to the log host (artifact_blobs)
    collector = None
    if artifacts:
        # the host's hashes of files read before (artifacts/hashes.py): a compiler is not hashed again
        kept = ArtifactStore(spool.with_name(spool.name + ".artifacts")).open(hash_cache())
        collector = Collector(kept, host or local_host(), ship=True, exec_hold=exec_hold)
    from forensix.agent.raw import RawRecorder

    # --raw: the kernel's records as they are, decoded on the log host (agent/raw.py)
    cls: type[Recorder] = RawRecorder if raw else Recorder
    # pinned per spool (one spool, one stream): an agent killed or upgraded leaves its sensor
    # recording, and the next agent on the spool adopts it and drains what it kept
    rec = cls(sinks, SensorConfig(netns=netns, pin_dir=pin_dir_for(spool, netns)), host=host,
              artifacts=collector, system_logs=system_logs,
              on_ready=lambda: logging.getLogger("forensix.agent").info("recording: every program attached"))

    def watch() -> None:
        stop.wait()
        rec.stop()

    threading.Thread(target=watch, name="fx-agent-stop", daemon=True).start()
    rec.run(duration=duration)
    return int(rec.stats.events)


@click.command("verify")
@click.option("--host", default=None, help="Only this host (its enrolled name).")
@click.option("--store", default=None, type=click.Path(dir_okay=False),
              help="The log host's store; its evidence is STORE.evidence, its alerts are read.")
@click.option("--evidence", default=None, type=click.Path(file_okay=False), help="Evidence directory.")
@click.option("--pki", "pki_dir", default=None, type=click.Path(file_okay=False),
              help=f"Take seal keys and checkpoint key from this PKI (e.g. {DEFAULT_PKI}) instead of "
                   "the copies in the evidence directory.")
@click.option("--all", "show_all", is_flag=True, help="Also list what was checked and found ok.")
@format_option()
def verify(host: str | None, store: str | None, evidence: str | None, pki_dir: str | None,
           show_all: bool, fmt: str) -> None:
    """Check the evidence: integrity and completeness, reported separately.

    \b
    Integrity: every batch authentic under its own epoch's key, the hash chain intact,
    epochs bound to sealing times, signed checkpoints matching. Completeness: sequence
    gaps, recorded drops (ring buffer, spool full, agent down), silence alerts.
    Exit status: 0 both hold, 1 integrity fails, 3 integrity holds but records are missing.

    \b
    Examples:
      forensix verify --store /var/lib/forensix/fleet.duckdb
      forensix verify --evidence /var/lib/forensix/fleet.duckdb.evidence --host web01 --format json
    """
    from forensix.server import evidence_dir_for, verify_evidence
    from forensix.store.open import is_remote, open_reader

    if evidence is None and store is None:
        raise UsageError("nothing to verify", "give --store PATH or --evidence DIR")
    if evidence is None and store is not None and is_remote(store):
        raise UsageError("the evidence of a ClickHouse store is on each log host",
                         "give --evidence DIR of this log host (its alerts are read from --store)")
    ev = Path(evidence) if evidence else evidence_dir_for(str(store))
    reader = open_reader(store, host=host) if store and (is_remote(store) or Path(store).exists()) else None
    seal_dir = Path(pki_dir) / "seal" if pki_dir else None
    pub = Path(pki_dir) / "checkpoint.pub" if pki_dir else None
    try:
        v = verify_evidence(ev, host=host, pki_seal_dir=seal_dir, public_key=pub, store=reader)
    finally:
        if reader is not None:
            reader.close()
    table = v.table()
    if not show_all:
        import pyarrow.compute as pc

        table = table.filter(pc.or_(pc.not_equal(table["status"], "ok"), pc.equal(table["check"], "verdict")))
    emit(table, fmt)
    click.echo(
        f"integrity: {'OK' if v.integrity_ok else 'FAILED'}; completeness: "
        f"{'complete' if v.complete else 'records missing'} ({v.frames} batches)", err=True)
    sys.exit(0 if v.integrity_ok and v.complete else (1 if not v.integrity_ok else 3))


@click.command("agent-status")
@click.option("--spool", default="/var/lib/forensix/spool", show_default=True,
              type=click.Path(file_okay=False), help="The agent's spool directory.")
@format_option()
def agent_status(spool: str, fmt: str) -> None:
    """What an agent's spool says: delivery, lag, losses, and the frames the log host refused.

    \b
    Reads SPOOL/status.json (written by the running agent every few seconds, and at its
    stop) and SPOOL/refused/. Exit status 0 when nothing was refused, 4 when frames were.

    \b
    Examples:
      forensix agent-status --spool /var/lib/forensix/spool
      forensix agent-status --spool ./spool --format json
    """
    import json

    import pyarrow as pa

    from forensix.agent.spool import read_refused
    from forensix.model.timefmt import format_ns

    d = Path(spool)
    status_path = d / "status.json"
    if not d.is_dir() or not (d / "stream").exists():
        raise UsageError(f"{spool} is not an agent's spool", "give the agent's --spool directory")
    try:
        st = json.loads(status_path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no status in {spool} yet", "the agent writes it within seconds of its start") from None
    except ValueError as e:
        raise UsageError(f"{status_path} is unreadable: {e}", "wait for the agent to rewrite it") from None
    now = time.time_ns()
    if st.get("state") != "stopped" and now - int(st.get("updated_ns", 0)) > 60e9:
        st["state"] = f"{st.get('state')} (stale: not updated for {(now - st['updated_ns']) / 1e9:.0f} s)"
    oldest = st.get("oldest_unacked_ns")
    st["shipping_lag_s"] = round((now - oldest) / 1e9, 3) if oldest else 0.0
    refused = read_refused(d)
    keys = ["state", "host", "server", "stream", "last_error", "last_refusal", "acked_seq", "next_seq",
            "unacked_frames", "shipping_lag_s", "spool_bytes", "spool_max_bytes", "frames_sealed",
            "frames_sent", "frames_acked", "frames_refused", "lost_batches", "lost_rows", "connects"]
    rows = [{"field": k, "value": "" if st.get(k) is None else str(st.get(k))} for k in keys]
    for k in ("updated_ns", "last_ack_ns", "started_ns"):
        if st.get(k):
            rows.append({"field": k.removesuffix("_ns"), "value": format_ns(int(st[k]))})
    emit(pa.Table.from_pylist(rows, schema=pa.schema([("field", pa.string()), ("value", pa.string())])), fmt)
    if refused:
        table = pa.Table.from_pylist(
            [{"seq": r.get("seq"), "refused_ts": r.get("refused_ns"), "server": r.get("server"),
              "reason": r.get("reason")} for r in refused],
            schema=pa.schema([("seq", pa.int64()), ("refused_ts", pa.int64()), ("server", pa.string()),
                              ("reason", pa.string())]))
        if fmt == "text":
            click.echo(f"\n{len(refused)} frame(s) refused by the log host, kept in {d / 'refused'}:")
        emit(table, fmt)
        sys.exit(4)


@click.command("hosts")
@store_option
@click.option("--silence", default=60.0, show_default=True, type=float,
              help="A host whose newest event is older than this many seconds is silent.")
@click.option("--pki", "pki_dir", default=None, type=click.Path(file_okay=False),
              help="Also list the PKI's enrolled hosts that never reported.")
@click.option("--silent", "only_silent", is_flag=True, help="Only the hosts that are not reporting.")
@format_option()
def hosts(store: str, silence: float, pki_dir: str | None, only_silent: bool, fmt: str) -> None:
    """Every host of a fleet store: its last event, and whether it has gone silent.

    \b
    A host is silent when its newest event is older than --silence, or when the log host
    raised a silence alert after it; "stopped" when its agent's last word was a clean stop
    (an intruder can stop an agent cleanly too); "never" for an enrolled host (--pki) with
    no event. Silent hosts come first. Exit status 0 when all report, 3 when one is silent.

    \b
    Examples:
      forensix hosts --store /var/lib/forensix/fleet.duckdb
      forensix hosts --store fleet.duckdb --silence 300 --pki /etc/forensix/pki --silent
    """
    import pyarrow.compute as pc

    from forensix.cli.options import reader
    from forensix.pki.authority import Authority
    from forensix.server.hosts import host_status

    enrolled = [h for h, _, revoked in Authority(pki_dir).hosts() if not revoked] if pki_dir else []
    r = reader(store)
    try:
        table = host_status(r, now_ns=time.time_ns(), silence_s=silence, enrolled=enrolled)
    finally:
        r.close()
    if only_silent:
        table = table.filter(table["silent"])
    emit(table, fmt)
    sys.exit(3 if pc.any(table["silent"]).as_py() else 0)


COMMANDS = [server, agent, verify, agent_status, hosts]

