"""Fixtures for the transport tests: a real CA, a real log host, real TLS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.server.listener import LogServer, ServerConfig
from forensix.store.embedded import DuckDBStore, open_writer


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    a = Authority(tmp_path_factory.mktemp("pki") / "pki")
    a.init(["10.203.0.1"])
    for h in ("alpha", "beta", "gamma"):
        a.issue(h, seal_interval_s=1)
    a.revoke("gamma")
    return a


class RunningServer:
    def __init__(self, srv: LogServer, store: DuckDBStore, addr: tuple[str, int], evidence: Path) -> None:
        self.srv, self.store, self.addr, self.evidence = srv, store, addr, evidence


@pytest.fixture
def log_server(pki: Authority, tmp_path: Path) -> Iterator[RunningServer]:
    store = open_writer(tmp_path / "srv.duckdb")
    ev = tmp_path / "srv.duckdb.evidence"
    srv = LogServer(ServerConfig(pki.dir, ("127.0.0.1", 0), ev, silence_s=30, checkpoint_s=0.2), store)
    addr = srv.bind()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield RunningServer(srv, store, addr, ev)
    srv.stop()
    t.join(timeout=5)
    store.close()
