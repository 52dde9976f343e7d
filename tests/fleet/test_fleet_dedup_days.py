"""De-duplication by frame and day: ClickHouse commits an INSERT one partition (day) at a
time, so a log host or shard that dies in the middle of a frame spanning midnight leaves
one day of it stored. The retry stores the other day, and nothing twice."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from forensix.model.host import HostInfo
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse import store as store_module
from forensix.testing.batches import events_batch

DAY = 86_400 * 10**9
MIDNIGHT = 20_700 * DAY  # 2026-09-05 00:00 UTC
HOST = HostInfo("id-alpha", "alpha", "boot-alpha", "6.18")


def _rows(st: ClickHouseStore) -> list[int]:
    t = st.native("SELECT seq FROM events WHERE host_name = 'alpha' ORDER BY seq")
    return [int(x) for x in t.column(0).to_pylist()]


def test_a_frame_half_stored_across_midnight_is_completed_once(url: str) -> None:
    frame = events_batch(10, ts=MIDNIGHT - 5000, host=HOST)  # seq 0-4 before midnight, 5-9 after
    before = frame.filter(pc.less(frame.column("ts"), MIDNIGHT))
    assert before.num_rows == 5
    with ClickHouseStore(url, write=True) as st:
        # what a kill between the two days' parts leaves: the first day, under the frame's key
        assert st.append_frames("events", [("alpha/s1/7", before)]) == 5
        assert st.append_frames("events", [("alpha/s1/7", frame)]) == 5  # the day that was missing
        assert _rows(st) == list(range(10))
        # re-sent whole again (a second crash before the mark moved): nothing added
        assert st.append_frames("events", [("alpha/s1/7", frame)]) == 0
        # beside a new frame in the same INSERT: only the new one is added
        nxt = events_batch(10, start_seq=10, ts=MIDNIGHT + DAY, host=HOST)
        assert st.append_frames("events", [("alpha/s1/7", frame), ("alpha/s1/8", nxt)]) == 10
        assert _rows(st) == list(range(20))


def test_rows_without_a_frame_are_never_left_out(url: str) -> None:
    rows = events_batch(3, ts=MIDNIGHT, host=HOST)
    with ClickHouseStore(url, write=True) as st:
        assert st.append("events", rows) == 3
        assert st.append("events", rows) == 3  # agent start/stop, gaps: not frames, not de-duplicated
        assert len(_rows(st)) == 6


def test_a_group_of_many_frames_is_checked_in_several_queries(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PRESENT_FRAMES", 2)  # 7 frames: 4 queries
    frames = [(f"alpha/s1/{i}", events_batch(3, start_seq=i * 3, ts=MIDNIGHT + i * 10**9, host=HOST))
              for i in range(7)]
    with ClickHouseStore(url, write=True) as st:
        assert st.append_frames("events", frames[1:6:2]) == 9  # frames 1, 3 and 5 are in
        assert st.append_frames("events", frames) == 12  # 0, 2, 4 and 6 added, the others not again
        assert _rows(st) == list(range(21))
