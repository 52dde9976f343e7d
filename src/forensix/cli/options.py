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
from forensix.store.embedded import open_reader

__all__ = ["DEFAULT_STORE", "emit", "format_option", "reader", "store_option", "time_option"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STORE = os.environ.get("FORENSIX_STORE", "forensix.duckdb")


def store_option(f: F) -> F:
    return click.option(
        "--store",
        "store",
        default=DEFAULT_STORE,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="The evidence store (a DuckDB file; $FORENSIX_STORE sets the default).",
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


class TimeParam(click.ParamType):
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
    return open_reader(store)


def emit(table: pa.Table, fmt: str) -> None:
    render(table, fmt, sys.stdout)
