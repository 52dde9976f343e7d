"""Frames the store refuses for good: set aside with their cause, so no host waits behind them.

A store append fails for one of two reasons. *Transient*: the store is away or full for now
(a ClickHouse shard down, the DuckDB file or its journal disk unavailable): every host's rows
would fail alike, and retrying until it comes back is right. *Permanent*: the store refuses
these rows every time (a type it cannot cast, a null where a value must be, a constraint,
a table it does not know): retrying for ever would hold up every other host's ingest behind
one frame. Such a frame is tried a few times, then *quarantined*: the evidence keeps it
(nothing recorded is lost), a line in ``HOST/STREAM/quarantined.jsonl`` says which frame and
why, the stream's ``ingested`` mark moves past it, and ``forensix server --reingest`` tries
the quarantined frames again at start once the cause is fixed (``forensix verify`` lists
them meanwhile as not ingested).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from forensix.errors import StoreBusyError, StoreError
from forensix.pki.sealkey import write_atomic

__all__ = ["QUARANTINE_FILE", "QUARANTINE_RULE", "Quarantined", "add_quarantine", "is_transient",
           "read_quarantine", "store_fix", "write_quarantine"]

QUARANTINE_FILE = "quarantined.jsonl"
QUARANTINE_RULE = "forensix-store-quarantine"


# ClickHouse server errors of the server's state, not of the rows: timeouts, memory, too many
# parts or queries, a read-only replica, no disk space, no shard reached
_CH_TRANSIENT = frozenset({159, 202, 209, 210, 241, 242, 243, 252, 279})


def is_transient(err: BaseException) -> bool:
    """Whether an append may succeed later unchanged (the store, not the rows, is the problem)."""
    from clickhouse_driver import errors as ch

    from forensix.store.clickhouse.connection import ClickHouseUnavailable

    if isinstance(err, (ClickHouseUnavailable, StoreBusyError, duckdb.IOException,
                        duckdb.ConnectionException, ch.NetworkError, ch.SocketTimeoutError)):
        return True
    if isinstance(err, ch.ServerException):
        return err.code in _CH_TRANSIENT
    if isinstance(err, StoreError):  # StoreError is an OSError: only one caused by the disk is transient
        cause = err.__cause__
        return isinstance(cause, OSError) and not isinstance(cause, StoreError)
    if isinstance(err, OSError):
        return True
    cause = err.__cause__
    return cause is not None and cause is not err and is_transient(cause)


def store_fix(err: BaseException) -> str:
    """What an operator can do about rows the store refuses for good."""
    if isinstance(err, (pa.ArrowInvalid, pa.ArrowTypeError, duckdb.ConversionException)):
        what = "the frame's rows have a type the store cannot take"
    elif isinstance(err, (duckdb.ConstraintException, duckdb.CatalogException, duckdb.BinderException)):
        what = "the store's schema refuses the frame's rows"
    else:
        what = "the store refuses the frame's rows"
    return (f"{what}: usually an agent newer or older than the log host (or a broken one), or a store "
            "of another forensix version; upgrade the one that lags, then `forensix server ... --reingest` "
            "stores the quarantined frames from the evidence")


@dataclass
class Quarantined:
    seq: int
    table: str
    cause: str
    fix: str
    ts: int
    attempts: int

    def line(self) -> dict[str, Any]:
        return {"seq": self.seq, "table": self.table, "cause": self.cause, "fix": self.fix, "ts": self.ts,
                "attempts": self.attempts}


_lock = threading.Lock()  # the ingest thread appends, a start's --reingest rewrites


def read_quarantine(stream_dir: Path) -> dict[int, Quarantined]:
    """The frames of a stream set aside, by sequence (a later line for one sequence wins)."""
    out: dict[int, Quarantined] = {}
    try:
        text = (stream_dir / QUARANTINE_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return out
    for raw in text.splitlines():
        try:
            d = json.loads(raw)
            q = Quarantined(int(d["seq"]), str(d["table"]), str(d["cause"]), str(d.get("fix", "")),
                            int(d.get("ts", 0)), int(d.get("attempts", 0)))
        except (ValueError, KeyError, TypeError):  # a line torn by a crash: the frame is re-ingested
            continue
        out[q.seq] = q
    return out


def add_quarantine(stream_dir: Path, q: Quarantined) -> None:
    """Append one line, fsynced before the stream's mark moves past the frame."""
    data = (json.dumps(q.line()) + "\n").encode()
    with _lock:
        fd = os.open(stream_dir / QUARANTINE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def write_quarantine(stream_dir: Path, left: dict[int, Quarantined]) -> None:
    """Replace the list with the frames still set aside (after a --reingest)."""
    path = stream_dir / QUARANTINE_FILE
    with _lock:
        if not left:
            path.unlink(missing_ok=True)
            return
        write_atomic(path, "".join(json.dumps(q.line()) + "\n" for _, q in sorted(left.items())).encode())
