"""The log host's ingest thread joins frames into the appends its store asks for: ClickHouse
(each INSERT writes a part of every column) gets large ones, waited for briefly; a store
that asks nothing (DuckDB) gets each frame as soon as it comes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from forensix.server.ingest import Ingestor
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.batches import events_batch


class Appends:
    """A Writer that keeps the size of every append (the Writer seam is ours)."""

    def __init__(self, rows: int | None = None, wait_s: float | None = None) -> None:
        if rows is not None:
            self.coalesce_rows = rows
        if wait_s is not None:
            self.coalesce_wait_s = wait_s
        self.sizes: list[int] = []
        self.appended = threading.Event()

    def append(self, table: str, data: pa.Table | pa.RecordBatch) -> int:
        self.sizes.append(data.num_rows)
        self.appended.set()
        return data.num_rows

    def flush(self) -> None:
        pass

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        raise AssertionError("the ingest thread only appends")

    def close(self) -> None:
        pass


class _Mark:
    def __init__(self) -> None:
        self.seq = -1

    def set_ingested(self, seq: int) -> None:
        self.seq = seq


def test_clickhouse_asks_for_large_appends_and_a_short_wait() -> None:
    assert ClickHouseStore.coalesce_rows >= 100_000
    assert 0 < ClickHouseStore.coalesce_wait_s <= 1.0  # the store lags evidence by at most this


def test_frames_that_come_within_the_wait_make_one_append() -> None:
    store = Appends(rows=10_000, wait_s=30.0)
    ing = Ingestor(store)
    mark = _Mark()
    try:
        for i in range(4):  # 4,000 rows: less than asked, so the thread waits for more
            ing.submit("events", events_batch(1000, start_seq=i * 1000), mark, i)
        assert not store.appended.wait(0.5)
        for i in range(4, 12):  # 12,000 rows: enough, appended without waiting out the 30 s
            ing.submit("events", events_batch(1000, start_seq=i * 1000), mark, i)
        assert store.appended.wait(20)
    finally:
        ing.close()  # the last 2,000 rows: appended at once, not after the rest of the wait
    assert store.sizes[0] >= 10_000 and sum(store.sizes) == 12_000
    assert mark.seq == 11


def test_a_store_that_asks_nothing_gets_each_frame_at_once() -> None:
    store = Appends()
    ing = Ingestor(store)
    try:
        ing.submit("events", events_batch(10), _Mark(), 0)
        assert store.appended.wait(20)  # not waiting for a second frame that never comes
    finally:
        ing.close()
    assert store.sizes == [10]


def test_closing_does_not_wait_out_the_wait() -> None:
    store = Appends(rows=10_000, wait_s=600.0)
    ing = Ingestor(store)
    mark = _Mark()
    ing.submit("events", events_batch(10), mark, 0)
    t = threading.Thread(target=ing.close)
    t.start()
    t.join(60)
    assert not t.is_alive() and store.sizes == [10] and mark.seq == 0
