"""Crash a real ``forensix server`` at a chosen point, as ``kill -9`` would (tests only).

``crash_after_store(n)`` is the environment of a server process that exits at once (no
cleanup, no flush, exit status ``CRASH_EXIT``) right after the store commit of its ``n``-th
group of frames and before their streams' ``ingested`` marks are written: the window in which
a restart re-ingests frames the store already holds.

``pause_between_tables(path)`` is the environment of a server whose ingest thread stops for
good between two tables of one raw frame (the first appended and synced) and writes ``path``:
the test kills it there with SIGKILL.
"""

from __future__ import annotations

import os

from forensix.server.ingest import CRASH_EXIT

__all__ = ["CRASH_EXIT", "crash_after_store", "pause_between_tables"]


def crash_after_store(n: int = 1) -> dict[str, str]:
    return {**os.environ, "FORENSIX_TEST_CRASH_AFTER_STORE": str(n)}


def pause_between_tables(path: str | os.PathLike[str]) -> dict[str, str]:
    return {**os.environ, "FORENSIX_TEST_PAUSE_BETWEEN_TABLES": str(path)}
