"""The ``forensix`` command: one click group; each command lives in its own module.

Command modules are listed here explicitly (no registration by import side effects);
each exposes ``COMMANDS``, a list of click commands. Errors from below the CLI arrive as
``ForensixError`` and leave as a two-line message (cause, then what to do), never a
traceback.
"""

from __future__ import annotations

import importlib
import sys

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


def _register() -> None:
    seen: set[str] = set()
    for modname in _COMMAND_MODULES:
        mod = importlib.import_module(modname)
        for cmd in mod.COMMANDS:
            if cmd.name in seen:
                raise RuntimeError(f"command {cmd.name!r} registered twice ({modname})")
            seen.add(cmd.name or "")
            cli.add_command(cmd)


_register()


def main() -> None:
    from forensix.store.private import private_umask

    private_umask()  # what forensix writes is root's only, whatever the umask; a recorded command keeps the user's
    cli(prog_name="forensix")
