"""The slice a deep analysis pulls from ClickHouse is narrow (the hosts, tables and columns it
reads) but never too narrow: the answers equal DuckDB's over the same generated fleet.

The store: the two-host intrusion of ``forensix.testing.fleet.lateral_movement`` (web01 ssh-es
to db01 and plants a cron file there) beside six unrelated hosts (``fleet``). Generated,
because one kernel is one host to the recorder: the cross-host path needs two host ids,
boot ids and clocks in one store, and the sensor stamps every event with this machine's.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from forensix.analysis.processes import tree
from forensix.cli.main import cli
from forensix.model.identity import format_entity
from forensix.store import schema
from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore
from forensix.store.clickhouse.needs import PROFILES
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import Lateral, fleet, lateral_movement

NOISE = 6  # unrelated hosts beside web01 and db01


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Lateral]:
    path = tmp_path_factory.mktemp("slice") / "fleet.duckdb"
    w = open_writer(path)
    gt = lateral_movement(w)
    fleet(w, hosts=NOISE)
    w.close()
    url = cluster.url(database=f"s_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        lateral_movement(ch)
        fleet(ch, hosts=NOISE)
    return str(path), url, gt


class Pulls(logging.Handler):
    """The pulls a reader logs: (table, hosts, columns)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str, set[str]]] = []
        self.added: list[tuple[str, str]] = []  # (table, hosts) widened during a walk

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = re.match(r"slice of \S+: pulled (\w+) of (.+?), \d+ rows, .* columns (\S+)$", msg)
        if m:
            self.seen.append((m[1], m[2], set(m[3].split(","))))
        m = re.match(r"slice of \S+: added (\w+) of (\S+),", msg)
        if m:
            self.added.append((m[1], m[2]))


@pytest.fixture
def pulls() -> Iterator[Pulls]:
    h = Pulls()
    log = logging.getLogger("forensix.store")
    old = log.level
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    try:
        yield h
    finally:
        log.removeHandler(h)
        log.setLevel(old)


def run(store: str, args: list[str]) -> str:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:]])
    assert r.exit_code == 0, (store, args, r.output, r.exception)
    return r.stdout.replace(store, "STORE")


def _same(a: str, b: str) -> None:
    """The same lines (objects of equal rank may be listed in either order)."""
    assert a.strip() and sorted(a.splitlines()) == sorted(b.splitlines())


def _hosts(p: Pulls) -> set[str]:
    return {h for _, hosts in [(t, h) for t, h, _ in p.seen] + p.added for h in hosts.split(",")}


def test_backtrack_from_b_crosses_to_a_and_pulls_only_those_hosts(stores: tuple[str, str, Lateral],
                                                                    pulls: Pulls) -> None:
    duck, ch, gt = stores
    out = run(ch, ["backtrack", gt.planted, "--format", "json"])
    _same(out, run(duck, ["backtrack", gt.planted, "--format", "json"]))
    # through db01's sshd to web01's ssh client: the walk crossed the connection
    assert "p:" + format_entity(gt.ssh_client) in out and "web01 -> db01" in out
    # it started on db01 (where the file is) and added web01 when it reached the connection;
    # the six other hosts of the store were never pulled
    assert _hosts(pulls) == {"db01", "web01"}
    assert {h for _, h in pulls.added} == {"web01"}
    assert {t for t, _, _ in pulls.seen} <= {"events", "flows", "processes"}


def test_forward_from_a_crosses_to_b(stores: tuple[str, str, Lateral], pulls: Pulls) -> None:
    duck, ch, gt = stores
    src = format_entity(gt.web_bash)
    out = run(ch, ["forward", src, "--format", "json"])
    _same(out, run(duck, ["forward", src, "--format", "json"]))
    assert gt.planted in out and "p:" + format_entity(gt.db_sshd) in out
    assert "p:" + format_entity(gt.decoy) not in out  # same 4-tuple, an hour earlier
    assert _hosts(pulls) == {"db01", "web01"}


def test_report_and_graph_show_the_crossing(stores: tuple[str, str, Lateral], pulls: Pulls) -> None:
    duck, ch, gt = stores
    md = run(ch, ["report", gt.planted])
    _same(md, run(duck, ["report", gt.planted]))
    assert "cross-host: web01 -> db01" in md and "web01: ssh [4010]" in md
    dot = run(ch, ["report", gt.planted, "--format", "dot"])
    assert "web01 -> db01" in dot
    _same(dot, run(duck, ["report", gt.planted, "--format", "dot"]))
    assert _hosts(pulls) == {"db01", "web01"}
    assert not any(t in ("artifact_blobs", "artifacts") for t, _, _ in pulls.seen)


def test_a_host_slice_stays_the_hosts_given(stores: tuple[str, str, Lateral], pulls: Pulls) -> None:
    """--host db01 is the investigator's choice, as on DuckDB: the trail ends at the connection."""
    duck, ch, gt = stores
    out = run(ch, ["backtrack", gt.planted, "--host", "db01", "--format", "json"])
    _same(out, run(duck, ["backtrack", gt.planted, "--host", "db01", "--format", "json"]))
    assert "web01" not in out and _hosts(pulls) == {"db01"}


QUERIES = [
    # a column read only in a WHERE (a pushed-down filter, not a projection)
    "SELECT count(*) AS n FROM events WHERE file_mode = 420",
    # SELECT * through a recursive CTE beside the table (a scan whose plan names no column)
    """WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3)
       SELECT e.* FROM t JOIN processes e ON e.pid = t.n ORDER BY e.host_name, e.entity_id, e.image_seq""",
    # flow edges seen through the events view (flows pulled too)
    """SELECT host_name, file_path, flow_write_bytes FROM events WHERE event_action = 'flow'
       ORDER BY host_name, file_path, flow_write_bytes""",
    # columns no profile has, after the table was pulled narrower
    "SELECT host_name, count(DISTINCT process_args) AS a, max(file_path_raw) AS r FROM events GROUP BY 1 ORDER BY 1",
]


def test_queries_get_every_column_they_read(stores: tuple[str, str, Lateral]) -> None:
    duck, ch, _ = stores
    d = open_reader(duck)
    r = ClickHouseReader(ClickHouseStore(ch), own_store=True, profile="tree")
    try:
        tree(r)  # the events table is now in the slice with the four columns a tree reads
        for sql in QUERIES:
            assert r.query(sql).to_pylist() == d.query(sql).to_pylist(), sql
        assert r.query(QUERIES[0]).column("n")[0].as_py() > 0
        assert "artifact_blobs" not in r.rows and "tty" not in r.rows
        # queries that keep reading more get the whole table on its third pull, not a pull each
        events = [p for p in r.pulls if p.table == "events"]
        assert len(events) == 3 and len(events[-1].columns) == len(schema.TABLES["events"])
    finally:
        r.close()
        d.close()


def test_windowed_slice_keeps_processes_started_before_the_window(stores: tuple[str, str, Lateral]) -> None:
    """A slice cut to a time window (a per-host hunt's) keeps the processes begun before it:
    a tree at a time in the window has db01's init and sshd, started an hour earlier."""
    duck, ch, gt = stores
    at = gt.connect_ts + 60 * 10**9
    d = open_reader(duck)
    r = ClickHouseReader(ClickHouseStore(ch), host="db01", since=gt.connect_ts - 10**9, until=at, own_store=True)
    try:
        mine = tree(r, at=at)
        full = d.query("SELECT entity_id FROM processes WHERE host_name = 'db01' AND start_ts <= $at", {"at": at})
        assert set(mine.column("entity_id").to_pylist()) == set(full.column("entity_id").to_pylist())
        assert gt.db_sshd in mine.column("entity_id").to_pylist()
        assert min(mine.column("start_ts").to_pylist()) < gt.connect_ts - 3000 * 10**9
    finally:
        r.close()
        d.close()


DEEP = [["tree"], ["sessions"], ["session", "777"], ["timeline", "--session", "777"],
        ["file", "/etc/ld.so.preload"], ["backtrack", "/etc/cron.d/backdoor"], ["forward", "session:777"],
        ["report", "/etc/cron.d/backdoor"]]


@pytest.mark.parametrize("args", DEEP, ids=lambda a: a[0])
def test_each_command_pulls_each_table_once(stores: tuple[str, str, Lateral], pulls: Pulls, args: list[str]) -> None:
    """``needs.PROFILES`` lists every column a command reads: a table pulled twice means a
    query read a column it lacks (still answered right, but slower): add what this names."""
    ch = stores[1]
    assert run(ch, [*args, "--format", "json"] if args[0] != "report" else args)
    first: dict[str, set[str]] = {}
    for table, _, cols in (p for p in pulls.seen):
        if table in first:
            missing = sorted(cols - first[table])
            pytest.fail(f"{args[0]} pulled {table} again for {missing}: add them to PROFILES[{args[0]!r}][{table!r}]")
        first[table] = cols
    assert args[0] in PROFILES and first and not {"artifact_blobs", "artifacts"} & set(first)
