"""A fleet store names each host's uids as that host had them: two agents whose uid 1001 is
alice on one and bob on the other ship their user database (sealed frames, like every
table) through two log hosts into the 2-shard ClickHouse cluster; ps, tree, sessions and
the hunt over the cluster name each as its own host did before and after a rename, never
this machine's, and a DuckDB store of the same history answers the same."""

from __future__ import annotations

import json
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.pki.authority import Authority
from forensix.store.embedded import open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import StoreBuilder
from forensix.testing.scenario import wait_for
from forensix.testing.shipping import shipping_sink

LOCAL_UID1 = pwd.getpwuid(1).pw_name

_RULE = """
title: Shell of alice
id: 6f1c2d3e-0000-4000-8000-000000000101
status: test
level: high
logsource: {category: file_event, product: linux}
detection:
  sel: {User: alice, TargetFilename|startswith: /tmp/}
  condition: sel
"""


def _history(host: str, user: str) -> StoreBuilder:
    b = StoreBuilder(host_id=f"id-{host}", host_name=host, boot_id=f"boot-{host}")
    b.users(-100, {0: "root", 1001: user, 1: f"svc-{host}"})
    b.users(50, {0: "root", 1001: f"{user}-renamed", 1: f"svc-{host}"})
    init = b.spawn(None, 1, 0, "/sbin/init", ["/sbin/init"])
    sshd = b.spawn(init, 200, 1, "/usr/sbin/sshd", ["sshd"])
    early = b.spawn(sshd, 300, 10, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=7, tty="pts/0")
    b.open(early, 11, "/tmp/early", 0o1 | 0o100)
    late = b.spawn(sshd, 400, 60, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=8, tty="pts/1")
    b.open(late, 61, "/tmp/late", 0o1 | 0o100)
    b.spawn(init, 500, 70, "/usr/sbin/svc", ["svc"], uid=1)
    return b


def _cli(store: str, *args: str) -> str:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:]])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def _jsonl(store: str, *args: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _cli(store, *args, "--format", "json").splitlines() if x]


@pytest.fixture
def stores(url: str, pki: Authority, tmp_path: Path, start_server: Callable[..., Any]) -> tuple[str, str]:
    """The same two-host history: shipped by two agents through two log hosts into ClickHouse,
    and written to a DuckDB file."""
    histories = {"alpha": _history("alpha", "alice"), "beta": _history("beta", "bob")}
    servers = {"alpha": start_server(url, tmp_path / "ev1"), "beta": start_server(url, tmp_path / "ev2")}
    for host, b in histories.items():
        sink = shipping_sink(pki, host, tmp_path, servers[host].addr)
        for table, data in b.tables().items():
            sink.write(table, data)
        wait_for(lambda: sink.spool.unacked() == 0, 20.0)  # noqa: B023 - waited for before the next sink
        sink.close()
    for s in servers.values():
        s.srv.ingest.flush()
    counts = servers["alpha"].store.native(
        "SELECT host_name, count() AS n FROM accounts GROUP BY host_name ORDER BY host_name").to_pylist()
    assert counts == [{"host_name": "alpha", "n": 6}, {"host_name": "beta", "n": 6}]  # each row once
    path = tmp_path / "same.duckdb"
    with open_writer(path) as w:
        for b in histories.values():
            b.write(w)
    return url, str(path)


def test_each_hosts_names_across_two_log_hosts_and_the_same_on_duckdb(stores: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    ch, duck = stores
    ps = {(r["host.name"], r["process.pid"]): (r.get("user.name"), r["user.name_source"])
          for r in _jsonl(ch, "ps", "--all")}
    assert ps[("alpha", 300)] == ("alice", "recorded") and ps[("beta", 300)] == ("bob", "recorded")
    assert ps[("alpha", 400)] == ("alice-renamed", "recorded") and ps[("beta", 400)] == ("bob-renamed", "recorded")
    assert ps[("alpha", 500)] == ("svc-alpha", "recorded") and ps[("beta", 500)] == ("svc-beta", "recorded")
    assert LOCAL_UID1 not in {n for n, _ in ps.values()}
    # one host's slice (the reader pulls that host's accounts with its processes)
    tree = _cli(ch, "tree", "--host", "beta")
    assert "bob(1001)" in tree and "bob-renamed(1001)" in tree and "alice" not in tree
    rule = tmp_path / "alice.yml"
    rule.write_text(_RULE)
    hunt = _jsonl(ch, "hunt", str(rule), "--no-builtin")
    assert [(a["host.name"], a["user.name"]) for a in hunt] == [("alpha", "alice")]
    for args in (["ps", "--all", "--format", "json"], ["tree", "--format", "json"],
                 ["sessions", "--format", "json"], ["hunt", str(rule), "--no-builtin", "--format", "json"]):
        a = sorted(_strip(_cli(ch, *args).replace(ch, "STORE")))
        b = sorted(_strip(_cli(duck, *args).replace(duck, "STORE")))
        assert a == b, (args, _diff(a, b))


def _diff(a: list[str], b: list[str]) -> list[tuple[str, Any, Any]]:
    out = []
    for x, y in zip(a, b):
        dx, dy = json.loads(x), json.loads(y)
        out += [(k, dx.get(k), dy.get(k)) for k in sorted(set(dx) | set(dy)) if dx.get(k) != dy.get(k)]
    return out


def _strip(out: str) -> list[str]:
    """Lines without the moment a hunt ran (event.created)."""
    lines = []
    for line in out.splitlines():
        doc = json.loads(line)
        doc.pop("event.created", None)
        lines.append(json.dumps(doc, sort_keys=True))
    return lines


def test_cluster_fixture_is_the_2_shard_one(cluster: Cluster) -> None:
    assert len(cluster.shards) == 2
