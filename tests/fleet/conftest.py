"""Fixtures for the fleet tests: a real 2-shard ClickHouse cluster (Debian's 18.16 server),
started once per test session by forensix.testing.clickhouse, a real CA and real log hosts."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.server.listener import LogServer, ServerConfig
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.clickhouse import Cluster, start_cluster, stop_cluster

HOSTS = ("alpha", "beta", "gamma", "delta")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    d = tempfile.mkdtemp(prefix="fleet-ch-")
    cl = start_cluster(d, shards=2, tied=True)  # a killed run leaves no server behind
    try:
        yield cl
    finally:
        stop_cluster(cl, timeout=2.0)  # its data is thrown away: no need to wait for a clean stop
        # tens of thousands of part files: removed by a process of its own, not waited for
        subprocess.Popen(["rm", "-rf", d], start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


@pytest.fixture
def url(cluster: Cluster) -> str:
    """A fresh database on the cluster for one test."""
    return cluster.url(database=f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    a = Authority(tmp_path_factory.mktemp("pki") / "pki")
    a.init(["127.0.0.1"])
    for h in HOSTS:
        a.issue(h, seal_interval_s=1)
    return a


class RunningServer:
    """A ``forensix server`` (the LogServer the CLI runs) writing to ClickHouse."""

    def __init__(self, pki: Authority, url: str, evidence: Path) -> None:
        self.store = ClickHouseStore(url, write=True, retry=True, retry_max_s=0.5)
        self.evidence = evidence
        self.srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), evidence, silence_s=60,
                                          checkpoint_s=0.2), self.store)
        self.addr = self.srv.bind()
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.store.abort()
        self.srv.stop()
        self.thread.join(timeout=5)
        self.store.close()


@pytest.fixture
def start_server(pki: Authority) -> Iterator[Callable[[str, Path], RunningServer]]:
    """Start log hosts on a store URL and evidence dir; all are stopped after the test."""
    started: list[RunningServer] = []

    def start(url: str, evidence: Path) -> RunningServer:
        s = RunningServer(pki, url, evidence)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.thread.is_alive():
            s.stop()
