"""Imported logs keep the user names their host gave: auditd's ENRICHED ``AUID="user"``
(and LAUREL's) become that host's ``accounts`` rows, shown with their source, never
replaced by the names of the machine the import runs on (fixtures: README.md there)."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.imports import FORMATS, Host, Importer
from forensix.store.embedded import open_writer

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(("fmt", "path"), [("auditd", "auditd/laurel-record-execve.log"),
                                           ("laurel", "laurel/record-execve.json")])
def test_the_logs_own_names_are_kept(tmp_path: Path, fmt: str, path: str) -> None:
    store = tmp_path / "s.duckdb"
    with open_writer(store) as w:
        Importer(w, fmt, FORMATS[fmt].make, Host("web1", "web1")).import_file(FIX / path)
        kept = w.query("SELECT host_name, uid, name, source FROM accounts ORDER BY uid").to_pylist()
    # uid 0 is root and auid 1000 is "user" on the host the log came from
    assert kept == [{"host_name": "web1", "uid": 0, "name": "root", "source": fmt},
                    {"host_name": "web1", "uid": 1000, "name": "user", "source": fmt}]
    assert pwd.getpwuid(1000).pw_name != "user"  # what this machine would have said instead
    r = CliRunner().invoke(cli, ["sessions", "--store", str(store), "--format", "json"])
    assert r.exit_code == 0, r.output
    users = {(s.get("user.id"), s.get("user.name"), s.get("user.name_source"))
             for s in map(json.loads, r.stdout.splitlines())}
    assert (1000, "user", fmt) in users, users
    text = CliRunner().invoke(cli, ["tree", "--store", str(store)]).stdout
    assert "root(0)*" in text and f"* user name {fmt}: as the imported {fmt} log named it" in text
