"""Local ClickHouse servers for tests and benchmarks: N shards, one ``remote_servers`` cluster.

Each server runs Debian's ``clickhouse-server`` from a config generated here, on free ports
of 127.0.0.1, with its data under a directory of its own (no systemd, nothing under
/var/lib). Every server knows the same cluster (one shard per server), so a
``Distributed`` table created on any of them spans all. Servers are stopped by their pid.
A cluster started ``tied`` (tests) is stopped by the kernel when the thread that started
it dies, even by SIGKILL: a killed test run leaves no server behind.

    python -m forensix.testing.clickhouse start --shards 2 --dir /tmp/me-ch   # prints the URL
    python -m forensix.testing.clickhouse stop --dir /tmp/me-ch
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLUSTER", "COMPRESSION", "SERVER_BIN", "Cluster", "Shard", "start_cluster", "stop_cluster"]

SERVER_BIN = os.environ.get("FORENSIX_CLICKHOUSE_SERVER", "/usr/sbin/clickhouse-server")
CLUSTER = "forensix"
_STATE = "cluster.json"


@dataclass
class Shard:
    dir: Path
    tcp_port: int
    http_port: int
    interserver_port: int
    pid: int = 0

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"


@dataclass
class Cluster:
    dir: Path
    shards: list[Shard]
    name: str = CLUSTER
    tied: bool = False  # servers get SIGTERM when the starting thread dies (PR_SET_PDEATHSIG)

    def url(self, database: str = "forensix", shard: int = 0) -> str:
        """The store URL an investigator or a server gives (``?cluster=`` with more than one shard)."""
        base = f"clickhouse://127.0.0.1:{self.shards[shard].tcp_port}/{database}"
        return f"{base}?cluster={self.name}" if len(self.shards) > 1 else base


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _remote_servers(shards: list[Shard], name: str) -> str:
    parts = "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{s.tcp_port}</port></replica></shard>" for s in shards
    )
    return f"<remote_servers><{name}>{parts}</{name}></remote_servers>"


# the <compression> section: the codec of every part the server writes or merges (18.16 has
# no per-column CODEC). LZ4 is ClickHouse's default; zstd (level 1) stores the same rows of the
# generated fleet in 41% fewer bytes (events and flows 49.8 -> 29.5 bytes per event, the
# summaries 26.7 -> 21.5; docs/benchmarks-fleet.md), for some CPU at insert and on reads.
COMPRESSION = ("lz4", "zstd")


def _compression(method: str) -> str:
    if method not in COMPRESSION:
        raise ValueError(f"compression {method!r}: one of {', '.join(COMPRESSION)}")
    return ("<compression><case><min_part_size>0</min_part_size><min_part_size_ratio>0</min_part_size_ratio>"
            f"<method>{method}</method></case></compression>")


def _config(shard: Shard, remote: str, compression: str = "zstd") -> str:
    d = shard.dir
    return f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog>
    <size>10M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{shard.tcp_port}</tcp_port>
  <http_port>{shard.http_port}</http_port>
  <interserver_http_port>{shard.interserver_port}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <max_connections>256</max_connections>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  {_compression(compression)}
  {remote}
</yandex>
"""


_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage>
    <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


def _ping(shard: Shard) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{shard.http_port}/ping", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_shard(shard: Shard, cluster: Cluster, timeout: float = 30.0) -> None:
    """Start (or restart) one server of ``cluster`` from its config; returns once it answers."""
    if not Path(SERVER_BIN).exists():
        raise RuntimeError(f"{SERVER_BIN} not found: install the Debian package clickhouse-server (scripts/setup.sh)")
    log = (shard.dir / "stdout.log").open("ab")
    # tied: util-linux's setpriv sets PR_SET_PDEATHSIG and execs the server (same pid; no
    # preexec_fn, which is unsafe in a threaded test process)
    tie = ["setpriv", "--pdeathsig", "TERM", "--"] if cluster.tied else []
    proc = subprocess.Popen(
        [*tie, SERVER_BIN, f"--config-file={shard.dir}/config.xml"], cwd=shard.dir,
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    shard.pid = proc.pid
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = (shard.dir / "error.log")
            tail = err.read_text()[-2000:] if err.exists() else ""
            raise RuntimeError(f"clickhouse-server on port {shard.tcp_port} exited ({proc.returncode}): {tail}")
        if _ping(shard):
            _save(cluster)
            return
        time.sleep(0.05)
    stop_shard(shard)
    raise RuntimeError(f"clickhouse-server on port {shard.tcp_port} did not answer within {timeout:g} s")


def stop_shard(shard: Shard, timeout: float = 20.0, kill: bool = False) -> None:
    """Stop one server by its pid (SIGTERM, then SIGKILL after ``timeout``; ``kill``: a crash)."""
    if not shard.pid:
        return
    try:
        os.kill(shard.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        shard.pid = 0
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            done, _ = os.waitpid(shard.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (stopped from another process): poll the pid
            try:
                os.kill(shard.pid, 0)
                done = 0
            except ProcessLookupError:
                done = shard.pid
        if done:
            break
        time.sleep(0.05)
    else:
        try:
            os.kill(shard.pid, signal.SIGKILL)
            os.waitpid(shard.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    shard.pid = 0


def start_cluster(directory: str | os.PathLike[str], shards: int = 2, name: str = CLUSTER,
                  compression: str = "zstd", tied: bool = False) -> Cluster:
    """Write configs for ``shards`` servers under ``directory`` and start them all;
    ``compression``: the codec of their parts (``COMPRESSION``); ``tied``: the servers stop
    when the calling thread dies, however it dies (tests; not for a cluster kept for others)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(3 * shards)
    cl = Cluster(root, [Shard(root / f"shard{i}", *ports[3 * i:3 * i + 3]) for i in range(shards)], name, tied)
    remote = _remote_servers(cl.shards, name)
    for s in cl.shards:
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (s.dir / sub).mkdir(parents=True, exist_ok=True)
        (s.dir / "config.xml").write_text(_config(s, remote, compression))
        (s.dir / "users.xml").write_text(_USERS)
    try:
        for s in cl.shards:
            start_shard(s, cl)
    except BaseException:
        stop_cluster(cl)
        raise
    return cl


def stop_cluster(cluster: Cluster, timeout: float = 20.0) -> None:
    """Stop every server (SIGTERM to all at once; SIGKILL to any still there after ``timeout``:
    18.16 takes up to ~10 s to stop, and a test's throw-away data need not wait for it)."""
    import threading

    threads = [threading.Thread(target=stop_shard, args=(s, timeout)) for s in cluster.shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _save(cluster)


def _save(cluster: Cluster) -> None:
    state = {"name": cluster.name, "shards": [
        {"dir": str(s.dir), "tcp_port": s.tcp_port, "http_port": s.http_port,
         "interserver_port": s.interserver_port, "pid": s.pid} for s in cluster.shards]}
    (cluster.dir / _STATE).write_text(json.dumps(state, indent=1))


def load_cluster(directory: str | os.PathLike[str]) -> Cluster:
    root = Path(directory)
    state = json.loads((root / _STATE).read_text())
    shards = [Shard(Path(s["dir"]), s["tcp_port"], s["http_port"], s["interserver_port"], s["pid"])
              for s in state["shards"]]
    return Cluster(root, shards, state["name"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forensix.testing.clickhouse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start N local servers; print the store URL")
    st.add_argument("--dir", required=True, help="directory for configs and data (created)")
    st.add_argument("--shards", type=int, default=2)
    st.add_argument("--compression", choices=COMPRESSION, default="zstd", help="the codec of the servers' parts")
    sp = sub.add_parser("stop", help="stop the servers started with --dir")
    sp.add_argument("--dir", required=True)
    a = p.parse_args(argv)
    if a.cmd == "start":
        cl = start_cluster(a.dir, a.shards, compression=a.compression)
        print(cl.url())
        return 0
    stop_cluster(load_cluster(a.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
