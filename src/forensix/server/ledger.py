"""Which frames a crash left in a DuckDB store without their ``ingested`` mark.

ClickHouse de-duplicates a frame re-ingested after a crash (each insert carries the frame's
key). DuckDB has no such key: a log host killed between a store commit and the mark write
re-ingested the frame at its next start, and the store held its rows twice (a real server
killed there, ``tests/transport/test_ops_crash_duplicates.py``). So before each group of
frames goes into a DuckDB store, the ingest thread writes its *intent* beside the evidence,
fsynced: the frames (host, stream, sequence, table) and, per table, how many rows the table
had before and how many the group adds. The log host is the only writer of its store, so at
the next start a table that has grown by the group's rows holds them: those frames are not
re-ingested; a table that has not grown did not take them, and they are. ``alerts`` is
written by others too (the log host's live rule engine, its silence and refusal alerts), so
its count proves nothing: for it the intent holds each row's identity instead (alert id,
detection time, count and last time: an update of a finding is a row of its own), and the
group is in the store when every one of them is. The intent is emptied once the marks are
written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["INTENT_FILE", "SHARED_TABLES", "IngestLedger", "committed_frames"]

log = logging.getLogger("forensix.server")

INTENT_FILE = "ingest-intent.json"
SHARED_TABLES = _SHARED = frozenset({"alerts"})  # tables written by others than the ingest thread
_ALERT_KEY = ("alert_id", "detected_ts", "alert_count", "last_ts")


def _alert_keys(tables: list[pa.Table]) -> list[str]:
    """Each alert row's identity, as ``_held_keys`` computes it in the store."""
    out: list[str] = []
    for t in tables:
        cols = [t.column(c).to_pylist() if c in t.schema.names else [None] * t.num_rows for c in _ALERT_KEY]
        out += ["|".join("" if v is None else str(v) for v in row) for row in zip(*cols, strict=True)]
    return sorted(set(out))


def _held_keys(store: Any, table: str, keys: list[str]) -> bool:
    """Whether every row identity of ``keys`` is in ``table`` (one append: all or none)."""
    ident = " || '|' || ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '')" for c in _ALERT_KEY)
    got = store.query(f'SELECT count(DISTINCT {ident}) AS n FROM "{table}" WHERE {ident} IN (SELECT unnest($k))',
                      {"k": keys})
    return int(got.column("n")[0].as_py()) >= len(keys)


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count(store: Any, table: str) -> int:
    return int(store.query(f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py())


class IngestLedger:
    """The ingest thread's row counts per table, and its intent file (ingest thread only)."""

    def __init__(self, store: Any, evidence: Path) -> None:
        self.store = store
        self.path = evidence / INTENT_FILE
        self._rows: dict[str, int] = {}
        self._fd: int | None = None

    def before(self, frames: list[tuple[str, str, int, str]], adds: dict[str, int],
               stored: set[str] | frozenset[str] = frozenset(),
               shared: dict[str, list[pa.Table]] | None = None) -> None:
        """Write the intent of a group (durable) before its first append.

        One file kept open and rewritten in place, one fdatasync: a rename and a directory
        fsync per group doubled the cost of a 1000-row group. A write torn by a crash is not
        JSON, and means the append had not begun (it starts after the sync returns). A retried
        group's tables already appended (``stored``) count from before their append.
        ``shared``: the group's batches of tables others write too, known by their rows."""
        tables = {t: self.rows(t) - (adds[t] if t in stored else 0) for t in adds if t not in _SHARED}
        keys = {t: _alert_keys(ds) for t, ds in (shared or {}).items() if t in _SHARED}
        data = json.dumps({"frames": frames, "before": tables, "adds": adds, "keys": keys}).encode()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            fsync_dir(self.path.parent)
        os.ftruncate(self._fd, 0)
        view, off = memoryview(data), 0
        while off < len(data):
            off += os.pwrite(self._fd, view[off:], off)
        os.fdatasync(self._fd)

    def rows(self, table: str) -> int:
        n = self._rows.get(table)
        if n is None:  # once per table and start: a count over a large table costs ~0.1 s
            n = self._rows[table] = _count(self.store, table)
        return n

    def appended(self, table: str, n: int) -> None:
        if table in self._rows:
            self._rows[table] += n

    def done(self) -> None:
        """The group's marks are written: its intent is void (emptied, not synced: a start
        that still finds it checks a group whose frames are marked, and skips nothing new)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError as e:
                log.error("cannot empty %s: %s", self.path, e)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def committed_frames(store: Any, evidence: Path) -> dict[tuple[str, str], dict[int, set[str]]]:
    """The frames of an interrupted group that the store holds, by (host, stream), with the
    tables of each that it holds: not to be ingested again. A raw frame decodes to several
    tables (server/rawdecode.py), appended one after the other: a crash between two leaves
    the frame half in the store, and only its other tables are to be stored at the restart.
    The intent is removed (the replay marks what it covers)."""
    path = evidence / INTENT_FILE
    try:
        intent = json.loads(path.read_text())
        frames = [(str(h), str(s), int(q), str(t)) for h, s, q, t in intent["frames"]]
        before = {str(k): int(v) for k, v in intent["before"].items()}
        adds = {str(k): int(v) for k, v in intent["adds"].items()}
        keys = {str(t): [str(k) for k in ks] for t, ks in intent.get("keys", {}).items() if t in _SHARED}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as e:  # empty (done), or torn: the group never began
        if path.stat().st_size:
            log.warning("ignoring %s: %s", path, e)
        path.unlink(missing_ok=True)
        return {}
    held = {t for t, n in before.items() if _count(store, t) >= n + adds.get(t, 0)}
    held |= {t for t, ks in keys.items() if ks and _held_keys(store, t, ks)}
    out: dict[tuple[str, str], dict[int, set[str]]] = {}
    tables: dict[tuple[str, str, int], set[str]] = {}
    for host, stream, seq, table in frames:
        tables.setdefault((host, stream, seq), set()).add(table)
        if table in held:
            out.setdefault((host, stream), {}).setdefault(seq, set()).add(table)
    if out:
        half = sum(1 for (h, s), seqs in out.items() for q, got in seqs.items() if got != tables[(h, s, q)])
        log.warning("the log host stopped between a store commit and its ingested marks: %d frame(s) already "
                    "in the store are not ingested again%s", sum(len(v) for v in out.values()) - half,
                    f"; {half} raw frame(s) half in the store: only their other tables are stored" if half else "")
    os.unlink(path)
    return out
