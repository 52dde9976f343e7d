"""The built-in detectors of a fleet hunt, replayed over the rows they watch (``fleet_hunt``).

The detectors keep per-process state in time order (a copy then its exec, a write then an
exec of the same file), so they are replayed in Python as in the DuckDB hunt, over only the
rows their ``hunt_filter`` names, pulled from every shard at once and sorted by time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from forensix.rules.alerts import empty_alerts
from forensix.rules.clickhouse_sql import where_ch
from forensix.rules.detectors import Detector
from forensix.rules.hunt import REPLAY_TIME, _named, prelude
from forensix.rules.ir import Const, Node
from forensix.store.clickhouse.store import ClickHouseStore

__all__ = ["replay_detectors"]


def _time(col: str, ts_from: int | None, ts_to: int | None) -> str:
    parts = ["1"]
    if ts_from is not None:
        parts.append(f"ifNull({col}, 0) >= {int(ts_from)}")
    if ts_to is not None:
        parts.append(f"ifNull({col}, 0) < {int(ts_to)}")
    return " AND ".join(parts)


class _Native:
    """The store answering ``Reader.query`` with ClickHouse SQL: for ``users.store_book``'s
    one plain SELECT of the hosts' recorded accounts (not a pull of the whole store)."""

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.store.native(sql, params)

    def close(self) -> None:
        """The store is the caller's."""


def _detector_name(d: Detector) -> str:
    return ", ".join(m.rule_id for m in getattr(d, "rules", ())) or type(d).__name__


def replay_detectors(store: ClickHouseStore, detectors: Sequence[Detector], ts_from: int | None,
               ts_to: int | None, skipped: list[tuple[str, str]], max_rows: int) -> tuple[pa.Table, int]:
    """The built-in detectors over the rows they watch, pulled from every shard, in time order.
    A detector whose rows number more than ``max_rows`` is not pulled (it would not fit in
    memory): it goes to ``skipped`` with the count, and the hunt goes on."""
    found, pulled = [], 0

    def rows(table: str, where: Node) -> tuple[str, int]:
        """The rows the detector would replay, counted up to one more than ``max_rows``: past
        that it is skipped whatever the rest (each shard stops reading there; at 10^8 events
        a whole count cost up to ~6 s a detector)."""
        col = REPLAY_TIME.get(table, "ts")
        cond = f"{where_ch(where) if where != Const(True) else '1'} AND {_time(col, ts_from, ts_to)}"
        sql = f"SELECT count() FROM (SELECT 1 FROM {table} WHERE {cond} LIMIT {int(max_rows) + 1})"
        return cond, int(store.native(sql).column(0)[0].as_py())

    def pull(table: str, cond: str) -> pa.Table:
        col = REPLAY_TIME.get(table, "ts")
        data = store.select_table(table, cond)
        return data.sort_by([(c, "ascending") for c in (col, "cpu", "seq") if c in data.column_names])

    for d in detectors:
        first = {t: rows(t, w) for t, w in prelude(d).items()}
        then: dict[str, tuple[str, int]] = {}
        if sum(n for _, n in first.values()) <= max_rows:
            for table, (cond, n) in first.items():  # learnt from, never alerting
                if n:
                    d.observe(table, pull(table, cond), "hunt")
                    pulled += n
            # asked after the prelude: what the detector learnt there narrows it
            then = {t: rows(t, w) for t, w in d.hunt_filter().items()}
        total = sum(n for _, n in first.values()) + sum(n for _, n in then.values())
        if total > max_rows:
            counted = max(n for _, n in (*first.values(), *then.values())) > max_rows  # a count stopped there
            shown = f"at least {total:,}" if counted else f"{total:,}"
            skipped.append((_detector_name(d), (f"{shown} rows to replay (more than {max_rows:,}); hunt it "
                                                "per host (--host) or in a shorter --from/--to window")))
            continue
        for table, (cond, n) in then.items():
            if n:
                found.append(d.observe(table, _named(_Native(store), pull(table, cond)), "hunt"))
                pulled += n
    found = [f for f in found if f.num_rows]
    return (pa.concat_tables(found) if found else empty_alerts()), pulled
