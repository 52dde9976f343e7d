"""Cross-host provenance on generated two-host data (one kernel cannot be two hosts): backtrack
from a file on db01 continues through db01's sshd to the ssh client on web01, and not to the
process that used the same 4-tuple an hour before; forward goes the other way. On DuckDB
and on the ClickHouse cluster alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.analysis.crosshost import cross_host_links, link_hosts
from forensix.analysis.graph import backtrack, forward
from forensix.analysis.report import build_report
from forensix.analysis.targets import parse_target
from forensix.cli.main import cli
from forensix.model.identity import format_entity
from forensix.store.base import Reader
from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import Lateral, lateral_movement


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Lateral]:
    path = tmp_path_factory.mktemp("lat") / "fleet.duckdb"
    w = open_writer(path)
    gt = lateral_movement(w)
    w.close()
    return str(path), gt


@pytest.fixture(scope="module")
def ch(cluster: Cluster) -> tuple[str, Lateral]:
    url = cluster.url(database=f"x_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as st:
        gt = lateral_movement(st)
    return url, gt


def _reader(store: str) -> Reader:
    return ClickHouseReader(ClickHouseStore(store), own_store=True) if store.startswith("clickhouse") \
        else open_reader(store)


def _procs(g: object) -> set[str]:
    return {k for k, n in g.nodes.items() if n.kind == "process"}  # type: ignore[attr-defined]


def _p(eid: int) -> str:
    return "p:" + format_entity(eid)


@pytest.mark.parametrize("which", ["duck", "ch"])
def test_backtrack_crosses_the_connection_to_the_right_process(which: str, request: pytest.FixtureRequest) -> None:
    store, gt = request.getfixturevalue(which)
    r = _reader(store)
    try:
        g = backtrack(r, parse_target(gt.planted))
        procs = _procs(g)
        # db01's sshd, then web01's ssh client and the intruder's shell that ran it
        assert {_p(gt.db_sshd), _p(gt.ssh_client), _p(gt.web_bash)} <= procs
        assert _p(gt.decoy) not in procs  # same 4-tuple an hour earlier: another connection
        conn = next(n for n in g.nodes.values() if n.kind == "connection" and "40001" in n.key)
        assert conn.attrs["cross_host"] == "web01 -> db01"
        assert g.nodes[_p(gt.ssh_client)].attrs["host"] == "web01"
        # and onward on web01 to the attacker's ssh connection into it
        assert any(n.kind == "connection" and "203.0.113.66" in n.key for n in g.nodes.values())
        f = forward(r, parse_target(format_entity(gt.web_bash)))
        assert _p(gt.db_sshd) in _procs(f) and _p(gt.decoy) not in _procs(f)
        assert any(n.kind == "file" and n.attrs.get("path") == gt.planted for n in f.nodes.values())
        rep = build_report(r, parse_target(gt.planted))
        assert any("web01 -> db01" in note for note in rep.notes)
    finally:
        r.close()


def test_without_the_check_the_reused_tuple_links_the_wrong_process(duck: tuple[str, Lateral]) -> None:
    """The check is what keeps the decoy out (the walk alone keys a connection by its endpoints)."""
    from forensix.analysis import graph

    store, gt = duck
    r = open_reader(store)
    saved = graph.link_hosts
    graph.link_hosts = lambda reader, g: g  # type: ignore[assignment]
    try:
        raw = backtrack(r, parse_target(gt.planted))
    finally:
        graph.link_hosts = saved  # type: ignore[assignment]
    assert _p(gt.decoy) in _procs(raw)
    assert _p(gt.decoy) not in _procs(link_hosts(r, raw))
    r.close()


def test_cross_host_links_table_and_cli(duck: tuple[str, Lateral], ch: tuple[str, Lateral], tmp_path: Path) -> None:
    store, gt = duck
    r = open_reader(store)
    links = cross_host_links(r).to_pylist()
    r.close()
    # the intrusion and the backup, both web01 -> db01; never the loopback pair
    assert [(x["client_host"], x["server_host"], x["client_entity_id"]) for x in links] == [
        ("web01", "db01", gt.decoy), ("web01", "db01", gt.ssh_client)]
    # the slice of two hosts of the fleet store (not the whole fleet) is enough to cross between them
    out = CliRunner().invoke(cli, ["backtrack", gt.planted, "--store", ch[0], "--host", "db01,web01"])
    assert out.exit_code == 0, out.output
    assert "web01: ssh [4010]" in out.output and "(web01 -> db01)" in out.output and "rsync" not in out.output
    one = CliRunner().invoke(cli, ["backtrack", gt.planted, "--store", ch[0], "--host", "db01"])
    assert one.exit_code == 0 and "web01" not in one.output  # only db01's slice: the trail ends at the connection
