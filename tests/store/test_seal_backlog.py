"""A keeper that finds a backlog of closed journals (it fell behind, or the recorder ran on
while no keeper was up) seals them a journal or so at a time: a seal's memory grows with
its rows (~1.2 KB a row at the peak, docs/benchmarks.md "footprint"), so one seal of the
whole backlog could get the keeper killed again at every restart on a small host. What
one seal put in stays in if a later one fails, and the retry stores every row once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from forensix.store import schema
from forensix.store.appender import JournalAppender
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.store.journal import journal_dir


def _rows(n: int) -> pa.Table:
    return pa.Table.from_pylist([
        {"host_id": "h1", "boot_id": "b1", "ts": i, "seq": i, "event_category": "file", "event_action": "open",
         "file_path": f"/etc/f{i}", "process_pid": 100 + i % 7} for i in range(n)], schema=schema.EVENTS)


def test_a_backlog_is_sealed_in_journal_sized_seals_and_a_failed_one_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    open_writer(path).close()
    keeper = DuckDBStore(path, keeper=True, recover_all=False)
    a = JournalAppender(journal_dir(path), "events", schema.EVENTS, first=keeper.sealed_seqs()["events"],
                        seal_rows=100)
    a.append(_rows(550))  # five full journals and one of 50 rows: the backlog
    a.close()
    j = keeper._journals["events"]
    j.seal_rows = 100
    sealer, sizes, fail = j.sealer, [], [True]

    def counting(data: pa.Table, pos: Any, flip: Any) -> None:
        sizes.append(data.num_rows)
        if len(sizes) == 3 and fail:
            fail.pop()
            raise OSError(28, "No space left on device")
        assert sealer is not None
        sealer(data, pos, flip)

    j.sealer = counting
    with pytest.raises(OSError):
        keeper.seal_closed(everything=True)
    assert keeper.query("SELECT count(*) AS n FROM events_base").column("n")[0].as_py() == 200
    assert keeper.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 550  # the rest still read

    assert keeper.seal_closed(everything=True) == 350
    assert max(sizes) == 100 and len(sizes) == 7, sizes  # never the whole backlog at once
    got = keeper.query("SELECT ts FROM events_base ORDER BY ts").column("ts").to_pylist()
    assert got == list(range(550))  # every row once
    assert not list(journal_dir(path).rglob("*.arrows"))
    keeper.close()
