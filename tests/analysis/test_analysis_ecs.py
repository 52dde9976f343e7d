"""One vocabulary in every JSON output: each command's keys are the ECS names the store's
schema gives (``store.schema.ecs_name``), so one jq filter or one Sigma field works on
``events``, ``ps``, ``tree``, ``sessions``, ``session``, ``file``, ``timeline``, ``alerts``
and the graphs alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.render.tables import ANALYSIS_ONLY, DERIVED
from forensix.store.embedded import open_writer
from forensix.store.schema import ALERTS, EVENTS, ecs_name
from forensix.testing.generator import generate

# The names of the store's event and alert columns, and the analysis fields with no column.
VOCABULARY = ({ecs_name(c) for c in EVENTS.names} | {ecs_name(c) for c in ALERTS.names}
              | set(DERIVED.values()) | ANALYSIS_ONLY)
# What `ps` and `tree` said before: the processes table's own names for what events call otherwise.
FORBIDDEN = {"entity.id", "start.ts", "args", "executable", "pid", "ppid", "uid", "name", "end.ts",
             "exit.code", "leader.entity_id", "parent.entity_id", "session.id"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ecs") / "host.duckdb"
    w = open_writer(path)
    generate(w, 20_000, 300)
    w.close()
    r = CliRunner().invoke(cli, ["hunt", "--store", str(path), "--save", "--format", "json"])
    assert r.exit_code == 0, r.output
    return str(path)


def _keys(obj: Any, prefix: str = "") -> Iterator[str]:
    """Every key of a JSON document; a list of records or a nested record is walked."""
    if isinstance(obj, list):
        for x in obj:
            yield from _keys(x, prefix)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            if isinstance(v, (dict, list)) and k not in ("hidden",):  # hidden: filter name -> count
                yield from _keys(v)


def _json(store: str, *args: str) -> list[Any]:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:], "--format", "json"])
    assert r.exit_code == 0, r.output
    text = r.stdout.strip()
    if text.startswith("{\n"):  # one indented document (session, graphs)
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines() if line]


# the graph documents' own structure around the records
_ENVELOPE = {"direction", "target", "truncated", "filters", "hidden", "nodes", "edges", "life", "other_lives",
             "session", "tree", "files_written", "files_deleted", "connections", "timeline"}


@pytest.mark.parametrize("args", [
    ("events", "--limit", "200"), ("ps", "--all"), ("tree",), ("sessions",), ("timeline", "--limit", "300"),
    ("file", "/tmp/x.sh"), ("alerts",), ("session", "777"), ("backtrack", "/etc/cron.d/evil"),
    ("forward", "session:777", "--depth", "2"),
], ids=lambda a: a[0])
def test_every_json_key_is_an_ecs_name_of_the_schema(store: str, args: tuple[str, ...]) -> None:
    docs = _json(store, *args)
    assert docs, f"{args[0]} printed nothing to check"
    keys = set(_keys(docs)) - _ENVELOPE
    assert not keys & FORBIDDEN, sorted(keys & FORBIDDEN)
    assert keys <= VOCABULARY, sorted(keys - VOCABULARY)


def test_the_same_process_has_the_same_field_everywhere(store: str) -> None:
    """A jq filter on process.entity_id selects the same process in ps, tree and events."""
    ps = {r["process.entity_id"]: r for r in _json(store, "ps", "--all")}
    tree = {r["process.entity_id"]: r for r in _json(store, "tree")}
    ev = _json(store, "events", "--action", "exec", "--limit", "50")
    assert ps and tree and ev
    for e in ev:
        eid = e["process.entity_id"]
        if eid in ps:
            assert ps[eid]["process.pid"] == e["process.pid"] == tree[eid]["process.pid"]
            assert ps[eid]["process.executable"] == tree[eid]["process.executable"]
            assert isinstance(ps[eid]["process.args"], list) and ps[eid]["process.start"]


def test_the_vocabulary_is_the_schemas(tmp_path: Path) -> None:
    """Derived fields never shadow a store column's ECS name with another meaning."""
    store_names = {ecs_name(c) for c in EVENTS.names}
    assert not set(DERIVED.values()) & FORBIDDEN
    assert not ANALYSIS_ONLY & store_names
