"""Options shared by the commands, declared once."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import pyarrow as pa

from forensix.model.timefmt import parse_time
from forensix.render.tables import RENDERERS, render
from forensix.store.base import Reader
from forensix.store.hostfilter import HostReader
from forensix.store.open import is_remote, open_reader

__all__ = ["DEFAULT_STORE", "emit", "format_option", "netns_options", "reader", "store_option", "time_option"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STORE = os.environ.get("FORENSIX_STORE", "forensix.duckdb")


def netns_options(f: F) -> F:
    """--netns / --netns-inode: record one network namespace as a host (sensor/netns.py)."""
    f = click.option("--netns-inode", type=click.IntRange(1), default=None, metavar="N",
                     help="The same, by the namespace's inode (`readlink /proc/PID/ns/net` shows net:[N]).")(f)
    return click.option(
        "--netns", default=None, metavar="PATH",
        help="Record only the processes of this network namespace (/run/netns/NAME, /proc/PID/ns/net), "
             "as a host of its own: a container or netns is one host of a fleet store, and a connection "
             "between two namespaces is followed across hosts by backtrack and forward.")(f)


def _remember_host(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta["forensix.host"] = value


def store_option(f: F) -> F:
    """--store, and --host to see one host of a log host's many-host store."""
    f = click.option(
        "--host",
        default=None,
        expose_value=False,
        callback=_remember_host,
        help="Only this host (name or id), in a log host's store of many hosts; on ClickHouse "
        "also several, comma-separated (only their rows are pulled for the analysis).",
    )(f)
    return click.option(
        "--store",
        "store",
        default=DEFAULT_STORE,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="The evidence store: a DuckDB file, or clickhouse://HOST:PORT/DB[?cluster=NAME] "
        "($FORENSIX_STORE sets the default).",
    )(f)


def format_option(*extra: str, default: str = "text") -> Callable[[F], F]:
    choices = list(RENDERERS) + [e for e in extra if e not in RENDERERS]

    def deco(f: F) -> F:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help="Output format: text for people; json (one ECS object per line) or csv for tools.",
        )(f)

    return deco


class TimeParam(click.ParamType):  # type: ignore[type-arg]
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from forensix.errors import UsageError

        try:
            return parse_time(str(value))
        except UsageError as e:
            self.fail(f"{e.message} ({e.hint})", param, ctx)


TIME = TimeParam()


def time_option(name: str, help: str) -> Callable[[F], F]:
    return click.option(name, type=TIME, default=None, help=help + " (ISO 8601 UTC, epoch, or -5m)")


def reader(store: str) -> Reader:
    """The store as the command should see it: one host when --host was given."""
    ctx = click.get_current_context(silent=True)
    host = ctx.meta.get("forensix.host") if ctx is not None else None
    if is_remote(store):  # ClickHouse: only that host's rows are pulled, as the command reads them
        return open_reader(store, host=host or None, profile=ctx.command.name if ctx is not None else None)
    r = open_reader(store)
    if not host:
        return r
    known = r.query(
        "SELECT DISTINCT host_name, host_id FROM hosts UNION SELECT DISTINCT host_name, host_id FROM "
        "(SELECT host_name, host_id FROM events LIMIT 100000)"
    ).to_pylist()
    if not any(host in (k["host_name"], k["host_id"]) for k in known):
        from forensix.errors import UsageError

        names = sorted({str(k["host_name"]) for k in known})
        raise UsageError(f"no host {host!r} in {store}", f"hosts in this store: {', '.join(names) or 'none'}")
    return HostReader(r, host)


def emit(table: pa.Table, fmt: str) -> None:
    render(table, fmt, sys.stdout)
    if fmt == "text":  # names that are not the recorded host's own as of then say so (analysis.users)
        from forensix.render.tree import user_notes

        for note in user_notes(table):
            sys.stdout.write(note + "\n")
