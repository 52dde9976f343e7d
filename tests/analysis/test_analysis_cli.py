"""The investigation commands end to end through the `forensix` CLI, on a generated store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.store.embedded import open_writer
from forensix.testing.generator import generate


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "host.duckdb"
    w = open_writer(path)
    generate(w, 30_000, 400)
    w.close()
    return str(path)


def run(store: str, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [args[0], "--store", store, *args[1:]])
    return r.exit_code, r.stdout, r.stderr


def test_tree_formats(store: str) -> None:
    code, out, _ = run(store, "tree")
    assert code == 0 and "/usr/sbin/sshd" in out and "curl -o /tmp/x.sh" in out
    code, out, _ = run(store, "tree", "--format", "json", "--session", "777")
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(rows) == 5 and rows[0]["depth"] == 0 and len(rows[0]["process.entity_id"]) == 16
    code, out, _ = run(store, "tree", "--format", "csv", "--pid", "31002", "--at", "2026-09-21T17:13:30.1Z")
    assert code == 0 and out.splitlines()[0].startswith("depth,") and len(out.splitlines()) == 2


def test_sessions_and_session(store: str) -> None:
    code, out, _ = run(store, "sessions", "--kind", "sshd", "--format", "json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(rows) == 21 and all(r["kind"] == "sshd" for r in rows)
    evil = next(r for r in rows if r["source.ip"] == "203.0.113.66")
    assert evil["source.port"] == 51515 and evil["process.session_id"] == 777
    code, out, _ = run(store, "session", "777")
    assert code == 0 and "ssh from 203.0.113.66:51515" in out and "/etc/cron.d/evil" in out
    code, out, _ = run(store, "session", evil["process.entry_leader.entity_id"], "--format", "json")
    doc = json.loads(out)
    assert code == 0 and {"session", "tree", "files_written", "connections", "timeline"} <= set(doc)


def test_timeline_and_timesketch(store: str) -> None:
    code, out, _ = run(store, "timeline", "--session", "777", "--quiet")
    assert code == 0 and "connect 10.0.0.5:40404 -> 203.0.113.66:8000" in out
    assert "/etc/ld.so.cache" not in out
    code, out, _ = run(store, "timeline", "--session", "777", "--format", "timesketch", "--action", "exec")
    docs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and docs and all({"message", "datetime", "timestamp", "timestamp_desc"} <= set(d) for d in docs)


def test_file_backtrack_forward(store: str) -> None:
    code, out, _ = run(store, "file", "/tmp/x.sh")
    assert code == 0 and "created/opened O_CREAT" in out and "executed" in out
    code, out, _ = run(store, "backtrack", "/etc/cron.d/evil")
    assert code == 0 and "curl [31002]" in out and "203.0.113.66:8000" in out
    for fmt in ("json", "csv", "dot", "graphml"):
        code, out, _ = run(store, "backtrack", "/etc/cron.d/evil", "--format", fmt)
        assert code == 0 and "cron.d/evil" in out
    code, out, _ = run(store, "backtrack", "/etc/cron.d/evil", "--format", "json")
    assert code == 0 and "/etc/ld.so.cache" not in out
    code, out, _ = run(store, "backtrack", "/etc/cron.d/evil", "--no-filter", "all", "--format", "json")
    assert code == 0 and "/etc/ld.so.cache" in out  # the attacker's shell mapped it before forking
    # the text is compact (analysis.graph_compact): the loader cache counted in a group, listed with --full
    code, out, _ = run(store, "backtrack", "/etc/cron.d/evil", "--no-filter", "all")
    assert code == 0 and "/etc/ld.so.cache" not in out and "system files read: " in out and "--full" in out
    code, out, _ = run(store, "backtrack", "/etc/cron.d/evil", "--no-filter", "all", "--full")
    assert code == 0 and "/etc/ld.so.cache" in out and "system files read" not in out
    code, out, _ = run(store, "forward", "session:777")
    assert code == 0 and "/etc/cron.d/evil" in out


def test_report_writes_markdown_html_and_graph(store: str, tmp_path: Path) -> None:
    base = tmp_path / "case"
    code, _, err = run(store, "report", "/etc/cron.d/evil", "--output", str(base))
    assert code == 0, err
    md = (tmp_path / "case.md").read_text()
    assert "ssh from 203.0.113.66:51515" in md and "| cron |" in md and "![dependency graph](case.svg)" in md
    assert "<svg" in (tmp_path / "case.html").read_text()
    assert (tmp_path / "case.svg").read_bytes().lstrip().startswith(b"<?xml")
    code, out, _ = run(store, "report", "session:777")
    assert code == 0 and out.startswith("# Incident report") and "```dot" in out


@pytest.mark.parametrize("args, message", [
    (("backtrack", "00000000000000ff"), "no process with entity id 00000000000000ff"),
    (("backtrack", "31002@yesterday"), "cannot read 'yesterday' as a time"),
    (("forward", "31002@2001-01-01T00:00:00Z"), "no process with pid 31002 had started"),
    (("backtrack", "nonsense"), "cannot read 'nonsense' as a target"),
    (("tree", "--at", "tomorrow"), "cannot read 'tomorrow' as a time"),
    (("session", "4242"), "no process has audit session id 4242"),
    (("tree", "--entity", "xyz"), "is not an entity id"),
    (("file", "relative/path"), "is not an absolute path"),
])
def test_bad_input_is_a_clear_message(store: str, args: tuple[str, ...], message: str) -> None:
    code, out, err = run(store, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("args, near", [
    (("file", "/etc/nope"), "the record spans "),
    (("backtrack", "/etc/cron.d/evl"), "near: in the same directory: /etc/cron.d/evil"),
    (("report", "/tmp/nowhere/x.sh"), "near: same name elsewhere: /tmp/x.sh"),
])
def test_an_unknown_path_is_an_empty_answer_with_nearest_matches(store: str, args: tuple[str, ...],
                                                                 near: str) -> None:
    code, out, err = run(store, *args)
    assert code == 3, (code, err)
    assert "no recorded event touched" in err and near in err
    assert "Traceback" not in err + out
