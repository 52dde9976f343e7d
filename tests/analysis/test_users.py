"""User names are the recorded host's, as of the event's time, never the analysing machine's.

Two generated hosts (forensix.testing.generator) where uid 1001 is alice on one and bob on
the other, each renamed at t=50 s, and uid 1 (``daemon`` on this machine) is ``svc-web``
on one and unknown on the other: every analysis, the hunt and the live engine name each
host's uid as that host had it then, and say so when they cannot.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from forensix.analysis.processes import tree
from forensix.analysis.sessions import sessions
from forensix.analysis.users import (
    NOT_RECORDED,
    RECORDED,
    RECORDED_LATER,
    THIS_MACHINE,
    this_host_id,
)
from forensix.cli.main import cli
from forensix.model.host import HostInfo
from forensix.rules import hunt, load_text
from forensix.rules.engine import LiveEngine
from forensix.sensor.accounts import AccountWatcher
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder

LOCAL_UID1 = pwd.getpwuid(1).pw_name  # what this machine would wrongly call uid 1


def _host(host_id: str, name: str, user: str, *, readings: bool = True, uid1: str | None = None) -> StoreBuilder:
    b = StoreBuilder(host_id=host_id, host_name=name, boot_id=f"boot-{name}")
    if readings:
        first = {0: "root", 1001: user} | ({1: uid1} if uid1 else {})
        b.users(-100, first)
        b.users(50, first | {1001: f"{user}-renamed"})
    init = b.spawn(None, 1, 0, "/sbin/init", ["/sbin/init"])
    sshd = b.spawn(init, 200, 1, "/usr/sbin/sshd", ["sshd"])
    early = b.spawn(sshd, 300, 10, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=7, tty="pts/0")
    b.open(early, 11, "/tmp/early", 0o1 | 0o100)
    late = b.spawn(sshd, 400, 60, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=8, tty="pts/1")
    b.open(late, 61, "/tmp/late", 0o1 | 0o100)
    b.spawn(init, 500, 70, "/usr/sbin/svc", ["svc"], uid=1)
    return b


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("users") / "fleet.duckdb"
    with open_writer(path) as w:
        _host("web-id", "web", "alice", uid1="svc-web").write(w)
        _host("db-id", "db", "bob").write(w)
    return str(path)


def _cli(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.stdout


def _jsonl(*args: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _cli(*args, "--format", "json").splitlines() if x]


def test_ps_names_each_hosts_uid_as_that_host_had_it_then(two_hosts: str) -> None:
    rows = {(r["host.name"], r["process.pid"]): r for r in _jsonl("ps", "--store", two_hosts, "--all")}
    named = {k: (r.get("user.name"), r.get("user.name_source")) for k, r in rows.items()}
    assert named[("web", 300)] == ("alice", RECORDED)  # before the rename
    assert named[("web", 400)] == ("alice-renamed", RECORDED)  # after it
    assert named[("db", 300)] == ("bob", RECORDED)
    assert named[("db", 400)] == ("bob-renamed", RECORDED)
    assert named[("web", 500)] == ("svc-web", RECORDED)
    # db recorded no uid 1: the number, never this machine's name for it
    assert named[("db", 500)] == (None, "no such user")
    assert LOCAL_UID1 not in {n for n, _ in named.values()}


def test_tree_and_sessions_text_and_json(two_hosts: str) -> None:
    text = _cli("tree", "--store", two_hosts)
    assert "alice(1001)" in text and "bob-renamed(1001)" in text and f"{LOCAL_UID1}(" not in text
    # the uid db never had is marked, and the mark explained under the tree
    assert " 1*" in text and "* user name no such user:" in text
    by_leader = {(s["description"], s.get("user.name")) for s in _jsonl("sessions", "--store", two_hosts)}
    names = {n for _, n in by_leader}
    assert {"alice", "alice-renamed", "bob", "bob-renamed"} <= names
    r = open_reader(two_hosts)
    try:
        t = {(x["pid"], x["user_name"]) for x in tree(r).to_pylist()}
        assert (300, "alice") in t and (300, "bob") in t and (400, "alice-renamed") in t
        s = sessions(r).to_pylist()
        assert all(x["user_name_source"] in (RECORDED, "no such user", None) for x in s)
    finally:
        r.close()


def test_a_host_without_readings_is_never_named_from_this_machine(tmp_path: Path) -> None:
    """An older store (or an import): another host's uids stay numbers, and say why; this
    machine's own host is named from here, marked as such in text and JSON."""
    path = tmp_path / "old.duckdb"
    with open_writer(path) as w:
        _host("other-id", "other", "x", readings=False).write(w)
        _host(this_host_id(), "me", "x", readings=False).write(w)
    rows = _jsonl("ps", "--store", str(path), "--all")
    other = {r["process.pid"]: r for r in rows if r["host.name"] == "other"}
    mine = {r["process.pid"]: r for r in rows if r["host.name"] == "me"}
    assert other[500].get("user.name") is None and other[500]["user.name_source"] == NOT_RECORDED
    assert mine[500]["user.name"] == LOCAL_UID1 and mine[500]["user.name_source"] == THIS_MACHINE
    text = _cli("ps", "--store", str(path), "--all")
    assert "* user name this machine: from the user database of the machine running this command" in text
    assert "* user name not recorded:" in text
    assert f"{LOCAL_UID1}(1)*" in _cli("tree", "--store", str(path))


def test_a_store_of_the_previous_format_reads_as_one_without_readings(tmp_path: Path) -> None:
    """A /13 store (no accounts table) opened read-only: analyses run, and say the names are not recorded."""
    path = tmp_path / "v13.duckdb"
    with open_writer(path) as w:
        _host("old-id", "old", "x", readings=False).write(w)
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE accounts")
    con.execute("DELETE FROM forensix_migrations WHERE name = '0018_accounts'")
    con.execute("UPDATE forensix_meta SET value = 'forensix-store/13' WHERE key = 'format'")
    con.close()
    rows = _jsonl("ps", "--store", str(path), "--all")
    assert {r["user.name_source"] for r in rows} == {NOT_RECORDED}
    assert "1001" in _cli("tree", "--store", str(path))
    with open_writer(path) as w:  # its next writer migrates it
        assert "0018_accounts" in w.migrations()


def test_before_the_first_reading_the_earliest_name_is_given_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "late.duckdb"
    b = StoreBuilder(host_id="h-id", host_name="h")
    b.users(500, {1001: "carol"})  # the recorder first read /etc/passwd long after these processes ran
    b.spawn(None, 9, 10, "/usr/bin/true", ["true"], uid=1001)
    with open_writer(path) as w:
        b.write(w)
    [row] = _jsonl("ps", "--store", str(path), "--all")
    assert (row["user.name"], row["user.name_source"]) == ("carol", RECORDED_LATER)
    assert "later than the event" in _cli("ps", "--store", str(path), "--all")


_RULE = """
title: Shell of {user}
id: 6f1c2d3e-0000-4000-8000-00000000{n:04d}
status: test
level: high
logsource: {{category: file_event, product: linux}}
detection:
  sel: {{User: {user}, TargetFilename|startswith: /tmp/}}
  condition: sel
"""


def _rules(*users: str) -> list[Any]:
    return [r for i, u in enumerate(users) for r in load_text(_RULE.format(user=u, n=i)).ok]


def _hits(alerts: pa.Table) -> set[tuple[str, str, str]]:
    return {(a["host_name"], a["rule_title"].split()[-1], a["user_name"]) for a in alerts.to_pylist()}


def test_hunt_and_live_rules_match_the_recorded_name_of_each_host(two_hosts: str) -> None:
    rules = _rules("alice", "bob-renamed", LOCAL_UID1)
    assert len(rules) == 3
    r = open_reader(two_hosts)
    try:
        hunted = _hits(hunt(r, rules))
        # the live engine learns each host's users from the stream's accounts rows (a log host)
        engine = LiveEngine(rules)
        for table in ("accounts", "processes"):
            engine.observe(table, r.query(f"SELECT * FROM {table}"))
        events = r.query("SELECT * FROM events ORDER BY ts")
        live = _hits(engine.settle(engine.observe("events", events)))
    finally:
        r.close()
    expected = {("web", "alice", "alice"), ("db", "bob-renamed", "bob-renamed")}
    assert hunted == expected
    assert live == expected


def _write(path: Path, text: str) -> None:
    """As useradd writes it: a new file renamed over the old one."""
    tmp = path.with_name(path.name + "+")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_the_watcher_stores_each_change_and_never_the_password_field(tmp_path: Path) -> None:
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    _write(passwd, "root:x:0:0:root:/root:/bin/bash\nalice:$6$secrethash:1001:1001:Alice A:/home/alice:/bin/sh\n"
                   "# a comment\nbroken line\n")
    _write(group, "root:x:0:\nstaff:x:50:alice,bob\n")
    w = AccountWatcher(HostInfo("hid", "h", "b", "k"), passwd, group)
    first = w.poll()
    assert first is not None and "secrethash" not in str(first.to_pylist())
    users = {r["uid"]: r for r in first.to_pylist() if r["kind"] == "user"}
    assert users[1001]["name"] == "alice" and users[1001]["full_name"] == "Alice A"
    assert users[1001]["valid_from"] == passwd.stat().st_ctime_ns
    groups = {r["gid"]: r for r in first.to_pylist() if r["kind"] == "group"}
    assert groups[50]["members"] == ["alice", "bob"]
    assert w.poll() is None  # nothing changed: nothing stored
    time.sleep(0.01)
    _write(passwd, "root:x:0:0:root:/root:/bin/bash\nalicia:x:1001:1001::/home/alicia:/bin/sh\n"
                   "eve:x:1002:1002::/home/eve:/bin/sh\n")
    second = w.poll()
    assert second is not None and set(second.column("source").to_pylist()) == {str(passwd)}
    users = {r["uid"]: r for r in second.to_pylist()}
    assert users[1001]["name"] == "alicia" and users[1002]["name"] == "eve"
    assert users[1001]["valid_from"] > first.column("valid_from")[0].as_py()
    _write(passwd, "root:x:0:0:root:/root:/bin/bash\n")
    third = {r["uid"]: r["name"] for r in w.poll().to_pylist()}  # type: ignore[union-attr]
    assert third == {0: "root", 1001: None, 1002: None}  # gone since: rows without a name
