"""Every query command gives the same answer on DuckDB and on the ClickHouse cluster, for
the same generated host history (daemons, ssh sessions, cron, one planted intrusion)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.embedded import open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import generate


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("diff") / "host.duckdb"
    w = open_writer(path)
    generate(w, 15_000, 300)
    w.close()
    url = cluster.url(database=f"d_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        generate(ch, 15_000, 300)
    return str(path), url


def run(store: str, args: list[str]) -> str:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:]])
    assert r.exit_code == 0, (store, args, r.output, r.exception)
    return r.stdout.replace(store, "STORE")


COMMANDS = [
    ["ps", "--all", "--format", "json"],
    ["events", "--action", "exec", "--format", "json"],
    ["events", "--path", "/etc/*", "--format", "csv"],
    ["events", "--all-columns", "--format", "json", "--limit", "3000"],
    ["tree", "--format", "json"],
    ["tree", "--session", "777"],
    ["sessions", "--format", "json"],
    ["session", "777", "--format", "json"],
    ["timeline", "--session", "777", "--format", "json"],
    ["file", "/etc/cron.d/evil", "--format", "json"],
    ["backtrack", "/etc/cron.d/evil", "--format", "json"],
    ["forward", "session:777", "--format", "json"],
    ["report", "/etc/cron.d/evil"],
    ["hunt", "--format", "json"],
]


def _lines(out: str) -> list[str]:
    """The lines of an output, sorted (ties in an ORDER BY may come in either order), without
    the moment a hunt ran (``event.created``, formerly ``detected.ts``)."""
    lines = []
    for line in out.splitlines():
        if line.startswith("{") and ('"detected.ts"' in line or '"event.created"' in line):
            doc = json.loads(line)
            doc.pop("detected.ts", None)
            doc.pop("event.created", None)
            line = json.dumps(doc, sort_keys=True)
        lines.append(line)
    return sorted(lines)


def _same(a: str, b: str) -> None:
    assert a.strip(), "the command printed nothing: the scenario does not exercise it"
    assert _lines(a) == _lines(b)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_same_answer_on_duckdb_and_clickhouse(stores: tuple[str, str], args: list[str]) -> None:
    duck, ch = stores
    _same(run(duck, args), run(ch, args))


def test_one_host_of_the_fleet_and_saved_alerts(stores: tuple[str, str]) -> None:
    duck, ch = stores
    _same(run(duck, ["tree", "--host", "testhost"]), run(ch, ["tree", "--host", "testhost"]))
    run(duck, ["hunt", "--save"])
    run(ch, ["hunt", "--save"])
    a, b = run(duck, ["alerts", "--format", "json"]), run(ch, ["alerts", "--format", "json"])
    _same(a, b)
    assert any(json.loads(x)["rule.id"] for x in a.splitlines())
    r = CliRunner().invoke(cli, ["tree", "--store", ch, "--host", "nosuchhost"])
    assert r.exit_code != 0 and "no host 'nosuchhost'" in r.output and "testhost" in r.output


def test_verify_on_clickhouse_needs_the_log_hosts_evidence(stores: tuple[str, str], tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["verify", "--store", stores[1]])
    assert r.exit_code != 0 and "--evidence" in r.output
