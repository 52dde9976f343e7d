"""The ``forensix`` command: one click group; each command lives in its own module.

Command modules are listed here explicitly (no registration by import side effects);
each exposes ``COMMANDS``, a list of click commands. Errors from below the CLI arrive as
``ForensixError`` and leave as a two-line message (cause, then what to do), never a
traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from forensix import __version__
from forensix.errors import ForensixError

__all__ = ["cli", "main"]

_COMMAND_MODULES = [
    "forensix.cli.record",
    "forensix.cli.query",
    "forensix.cli.analysis",
    "forensix.cli.pki",
    "forensix.cli.server",
    "forensix.cli.rules",
    "forensix.cli.fleet",
    "forensix.cli.ui",
    "forensix.cli.imports",
    "forensix.cli.replay",
    "forensix.cli.artifacts",
]


class _Group(click.Group):
    """Command modules are imported when a command of theirs is asked for, in list order:
    `forensix record` imports the recorder's module only, not the web UI's, the fleet's and
    the PKI's (~60 MB and seconds of start-up the recorder would carry for nothing).
    Listing the commands (--help) imports them all, and rejects a name given twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def _load(self, modname: str) -> None:
        if modname in self._loaded:
            return
        self._loaded.add(modname)
        for cmd in importlib.import_module(modname).COMMANDS:
            if cmd.name in self.commands:
                raise RuntimeError(f"command {cmd.name!r} registered twice ({modname})")
            self.add_command(cmd)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for modname in _COMMAND_MODULES:
            if cmd_name in self.commands:
                break
            self._load(modname)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for modname in _COMMAND_MODULES:
            self._load(modname)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ForensixError as e:
            click.secho(f"forensix: {e.message}", fg="red", err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forensix")
def cli() -> None:
    """forensix: a flight recorder for Linux hosts.

    \b
    Record what every process does, at kernel level, into an evidence store;
    then ask who did what, from where, as whom, and what it touched.

    \b
    Examples:
      forensix record --store host.duckdb              # record until Ctrl-C
      forensix record --store t.duckdb -- make -j2     # record while a command runs
      forensix ps --store host.duckdb                  # the process table as recorded
      forensix events --store host.duckdb --action exec --format json
    """


def main() -> None:
    from forensix.store.private import private_umask

    private_umask()  # what forensix writes is root's only, whatever the umask; a recorded command keeps the user's
    cli(prog_name="forensix")
