"""``forensix artifacts``: the executed files preserved by content (SHA-256)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from forensix.artifacts.scan import compile_rules, scan
from forensix.artifacts.store import ArtifactStore, artifacts_dir, read_shipped
from forensix.cli.options import emit, format_option, reader, store_option
from forensix.errors import StoreError
from forensix.store.private import write_private

__all__ = ["COMMANDS"]

_LIST_SQL = """
SELECT sha256, max(size) AS size, string_agg(DISTINCT kind, ',') AS kind, min(ts) AS first_ts, max(ts) AS last_ts,
       count(*) AS runs, count(DISTINCT process_entity_id) AS processes, arg_min(path, ts) AS path,
       bool_and(certain) AS certain
FROM artifacts WHERE sha256 IS NOT NULL GROUP BY sha256 ORDER BY first_ts
"""
_MISSING_SQL = """
SELECT ts, kind, path, process_pid, process_entity_id, reason FROM artifacts WHERE sha256 IS NULL ORDER BY ts
"""


def _store(store: str) -> ArtifactStore:
    root = artifacts_dir(store)
    if not root.is_dir():
        raise StoreError(f"no artifacts beside {store} ({root} is missing)",
                         "record without --no-artifacts, or give the right --store")
    return ArtifactStore(root)


@click.group("artifacts", epilog="""\b
Examples:
  forensix artifacts list                       # every executed file kept, by SHA-256
  forensix artifacts list --missing             # what could not be kept, and why
  forensix artifacts get 9f86d08...c3 -o sample.bin
  forensix artifacts scan --yara rules.yar""")
def artifacts_grp() -> None:
    """Executed files preserved by content (binaries, scripts, memfd programs, dropped libraries)."""


@artifacts_grp.command("list")
@store_option
@click.option("--missing", is_flag=True, help="List what could not be preserved, with the reason.")
@format_option()
def list_cmd(store: str, missing: bool, fmt: str) -> None:
    """The preserved files: hash, size, kind, first and last run, how many processes ran it."""
    emit(reader(store).query(_MISSING_SQL if missing else _LIST_SQL), fmt)


@artifacts_grp.command("get")
@store_option
@click.argument("sha256")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write it here (mode 0600); default: standard output.")
def get_cmd(store: str, sha256: str, output: Path | None) -> None:
    """The bytes of one preserved file, checked against its hash (kept here, or shipped here by an agent)."""
    root = artifacts_dir(store)
    shipped = None if root.is_dir() and ArtifactStore(root).has(sha256) else read_shipped(reader(store), sha256)
    data = shipped if shipped is not None else _store(store).read(sha256)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_private(output, data)


@artifacts_grp.command("scan")
@store_option
@click.option("--yara", "rules_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YARA rules (compiled with yara-x).")
@format_option()
def scan_cmd(store: str, rules_path: Path, fmt: str) -> None:
    """Every preserved file against YARA rules: one row per match."""
    emit(scan(_store(store), compile_rules(rules_path)), fmt)


COMMANDS = [artifacts_grp]
