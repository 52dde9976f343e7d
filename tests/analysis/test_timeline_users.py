"""The timeline names each uid as the row's own host had it (uid 1001 is alice on web01 and bob
on db01, in one store), beside the number; and fills a path it lacks from its own host's open
of that inode, never from another host's file with the same inode number."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forensix.analysis.timeline import timeline
from forensix.cli.main import cli
from forensix.model.identity import format_entity
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.fleet import one_uid_two_users


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    path = tmp_path_factory.mktemp("users") / "fleet.duckdb"
    with open_writer(path) as w:
        shells = one_uid_two_users(w)
    return str(path), shells


def test_each_row_is_named_by_its_own_host(store: tuple[str, dict[str, int]]) -> None:
    path, shells = store
    rd = open_reader(path)
    try:
        rows = timeline(rd).to_pylist()
    finally:
        rd.close()
    mine = {"web01": ("alice", "/srv/web/upload.log"), "db01": ("bob", "/var/lib/db/wal.0")}
    for host, eid in shells.items():
        got = [r for r in rows if r["process_entity_id"] == eid]
        assert {(r["user_id"], r["user_name"], r["user_name_source"]) for r in got} == {(1001, mine[host][0], "recorded")}
        flow = next(r for r in got if r["event_action"] == "flow")
        assert flow["file_path"] == mine[host][1]  # the inherited descriptor's path, from its own host


def test_the_cli_shows_name_and_uid(store: tuple[str, dict[str, int]]) -> None:
    path, shells = store
    run = CliRunner().invoke
    text = run(cli, ["timeline", "--store", path, "--entity", format_entity(shells["web01"])])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines and all("alice(1001)" in x for x in lines) and "bob" not in text.stdout
    db = run(cli, ["timeline", "--store", path, "--entity", format_entity(shells["db01"]), "--format", "json"])
    docs = [json.loads(x) for x in db.stdout.splitlines()]
    assert {(d["user.id"], d["user.name"]) for d in docs} == {(1001, "bob")}
