"""``forensix import FORMAT FILE...``: logs a host already has, into a store."""

from __future__ import annotations

import os
import socket

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from forensix.cli.options import store_option
from forensix.imports import FORMATS, FileResult, Host, Importer, order_files
from forensix.store.embedded import open_writer

__all__ = ["COMMANDS"]


@click.command("import", epilog="""\b
Examples:
  forensix import auditd /var/log/audit/audit.log* --store case.duckdb
  forensix import laurel /var/log/laurel/audit.log --store case.duckdb --host-name web1
  forensix import sysmon /var/log/syslog --store case.duckdb
  forensix import suricata eve.json --store case.duckdb     # alerts, linked to recorded processes
  forensix import zeek conn.log --store case.duckdb         # connections, linked the same way
  forensix report --alert ids-3f2a... --store case.duckdb    # a report from an IDS alert
  journalctl -o export > j.export; forensix import journal j.export /var/log/auth.log* --store case.duckdb
""")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(sorted(FORMATS)))
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@store_option
@click.option("--host-name", "host_name", default=None,
              help="The host the log is from (default: the log's own node= name where it has one, "
                   "else this host's name).")
@click.option("--host-id", "host_id", default=None, help="Its host id (default: the host name).")
@click.option("--boot-id", "boot_id", default="imported", show_default=True,
              help="Its boot id, when known (entity ids are per host and boot).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_cmd(fmt: str, files: tuple[str, ...], store: str, host_name: str | None, host_id: str | None,
               boot_id: str, quiet: bool) -> None:
    """Import logs into the store, marked with their source (event.module).

    Importing the same file again adds nothing; a grown or rotated log adds only its new
    lines. Lines that cannot be imported are skipped, counted and listed by file and line
    (and stored as import-warning events); the rest is imported.
    """
    name = host_name or socket.gethostname()
    host = Host(host_id or name, name, boot_id, from_log=host_name is None and host_id is None)
    err = Console(stderr=True)
    w = open_writer(store)
    try:
        imp = Importer(w, fmt, FORMATS[fmt].make, host)
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=err, disable=quiet,
                      transient=True) as bar:
            for path in order_files(list(files)):
                size = os.path.getsize(path) if os.path.isfile(path) else 0
                task = bar.add_task(os.path.basename(path), total=size or None)

                def advance(n: int, t: TaskID = task) -> None:
                    bar.update(t, completed=n)

                res = imp.import_file(path, progress=advance)
                bar.remove_task(task)
                _report(res)
        w.flush()
    finally:
        w.close()


def _report(res: FileResult) -> None:
    if res.already:
        click.echo(f"{res.path}: already imported, nothing new")
        return
    resumed = f" (from byte {res.resumed_at}, imported before)" if res.resumed_at else ""
    alerts = f", {res.alerts} alerts" if res.alerts else ""
    click.echo(f"{res.path}: {res.lines} lines{resumed}, {res.events} events, {res.processes} process rows"
               f"{alerts}, {res.skipped} skipped")
    for line, why in res.warnings[:20]:
        click.echo(f"  skipped {res.path}:{line}: {why}", err=True)
    if res.skipped > 20:
        click.echo(f"  ... {res.skipped - 20} more (all stored: forensix events --action import-warning)", err=True)
    if res.stopped:
        click.echo(f"  stopped early: {res.stopped}", err=True)


COMMANDS = [import_cmd]
