"""The keys a windowed host's top-ups select by (store.clickhouse.window), read from the
filters DuckDB itself pushes into each scan of the walk's real queries: a scan's rows must be
among the keys', and a filter that does not say so (a NOT, a function) gives none (the
rest of the host). Answers over a real cluster: tests/fleet/test_fleet_follow.py."""

from __future__ import annotations

from forensix.analysis.graph_hop import Frontier, hop_params, hop_sql
from forensix.analysis.lives import name_sql
from forensix.store.clickhouse.needs import scan_filters
from forensix.store.clickhouse.window import Window, keys_sql, scan_keys


def _keys(sql: str, params: dict[str, object] | None = None) -> dict[str, list[object]]:
    scans = scan_filters(sql, params)
    assert scans is not None
    return {t: [scan_keys(t, f) for f in fs] for t, fs in scans.items()}


def test_a_hop_is_keyed_by_its_frontier() -> None:
    fr = Frontier(procs={123: 10**18, 456: 10**18}, files={("h", 1, 77, 0): 10**18})
    params = {k: v for k, v in hop_params(fr).items() if f"${k}" in hop_sql(True, set(), fr)}
    got = _keys(hop_sql(True, set(), fr), params)
    assert {"process_entity_id": frozenset({"123", "456"})} in got["events"]
    assert {"file_inode": frozenset({"77"})} in got["events"]
    assert {"entity_id": frozenset({"123", "456"})} in got["flows"]
    assert None not in got["events"] + got["flows"]


def test_a_name_is_keyed_by_both_its_columns() -> None:
    got = _keys("SELECT * FROM (" + name_sql(["/tmp/it's", "/etc/x"]) + ")")
    paths = frozenset({"'/tmp/it\\'s'", "'/etc/x'"})
    assert {"file_path": paths} in got["events"] and {"file_target_path": paths} in got["events"]
    assert got["flows"] == [{"file_path": paths}]


def test_forms_that_say_nothing_of_the_keys_take_every_row() -> None:
    assert scan_keys("events", ["(NOT (file_path IN ('/a')))"]) is None
    assert scan_keys("events", ["(COALESCE(file_inode, 0) != 0)", "(event_action = 'open')"]) is None
    assert scan_keys("events", []) is None
    assert scan_keys("events", ["((file_inode = 5) OR (COALESCE(ret, 0) >= 0))"]) is None
    # a key ANDed with more is still the key; consecutive numbers as DuckDB prints them
    assert scan_keys("events", ["((file_inode = 77) AND (COALESCE(file_inode, 0) != 0))"]) == \
        {"file_inode": frozenset({"77"})}
    assert scan_keys("flows", ["((file_inode >= 5) AND (file_inode <= 7))"]) == {"file_inode": frozenset({"5", "6", "7"})}
    assert scan_keys("events", ["(event_category = 'network')"]) == {"event_category": frozenset({"'network'"})}


def test_the_sql_of_keys_and_windows() -> None:
    assert keys_sql({"file_inode": {"5", "6"}, "file_path": set()}) == "(`file_inode` IN (5, 6))"
    assert keys_sql({}) == "0"
    assert Window(hi=10).sql("events") == "ts <= 10" and Window(hi=10).outside_sql("events") == "(ts > 10)"
    assert Window(lo=3).outside_sql("flows") == "(ifNull(last_ts, 0) < 3)"
