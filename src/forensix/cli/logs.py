"""One formatted log on stderr for the commands that run for long: record, server, agent.

Without it the recorder's warnings and errors (a sink disabled, the store's disk full)
reached the user through Python's last-resort handler: the bare message, no time, no level,
no source, and nothing below WARNING. Every line is
``2026-12-07T01:02:03.456Z LEVEL forensix.part: message`` (UTC, as the record's times are).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["LEVELS", "log_level_option", "setup_logging"]

LEVELS = ("debug", "info", "warning", "error")
F = TypeVar("F", bound=Callable[..., Any])


class _UTC(logging.Formatter):
    @staticmethod
    def converter(secs: float | None = None) -> time.struct_time:
        return time.gmtime(secs)

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours: replaced, not added twice, when a command sets up logging again (tests)."""


def setup_logging(level: str) -> None:
    """Send the ``forensix`` loggers to stderr at ``level`` (one of LEVELS). Records still
    propagate to the root logger, so a host application (or pytest) sees them too."""
    logger = logging.getLogger("forensix")
    for h in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(h)
    handler = _Handler(sys.stderr)
    handler.setFormatter(_UTC("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def log_level_option(default: str = "info") -> Callable[[F], F]:
    return click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=default,
                        show_default=True,
                        help="What the log on stderr shows: debug adds tracebacks of contained failures; "
                             "warning and error only what needs attention.")
