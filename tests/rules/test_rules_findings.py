"""One alert per finding: grouping by (rule, process, object) within a window, the
object of an alert, and the store migration that gives old stores the new columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from forensix.rules.evidence import GROUP_WINDOW_NS, Grouper, group_alerts, object_free
from forensix.rules.loader import load_text
from forensix.rules.objects import object_of
from forensix.store.embedded import open_writer
from forensix.store.schema import ALERT_EVIDENCE

S = 10**9


def _match(ts: int, path: str, rule: str = "r1", eid: int = 7, n: int = 0) -> dict[str, Any]:
    return {"rule_id": rule, "alert_id": f"{rule}-{ts}-{n}", "host_id": "h", "boot_id": "b", "ts": ts,
            "process_entity_id": eid, "object_kind": "file", "object_name": path, "event_keys": [f"0:{n}:{ts}"]}


def test_matches_of_one_finding_are_one_alert_with_count_and_last_time() -> None:
    g = Grouper()
    new, ended = g.add([_match(1 * S, "/etc/passwd"), _match(2 * S, "/etc/passwd+", n=1),
                        _match(3 * S, "/etc/passwd.lock", n=2), _match(4 * S, "/etc/shadow", n=3)])
    assert [r["object_name"] for r in new] == ["/etc/passwd", "/etc/shadow"] and ended == []
    assert all(r["alert_count"] == 1 for r in new)  # emitted at once, as first seen
    final = g.close()
    assert [(r["alert_id"], r["alert_count"], r["last_ts"]) for r in final] == [("r1-1000000000-0", 3, 3 * S)]


def test_a_match_after_the_window_is_a_new_finding() -> None:
    rows = [_match(0, "/x"), _match(GROUP_WINDOW_NS // 2, "/x", n=1), _match(GROUP_WINDOW_NS + S, "/x", n=2)]
    out = group_alerts(rows)
    assert [(r["ts"], r["alert_count"]) for r in out] == [(0, 2), (GROUP_WINDOW_NS + S, 1)]
    g = Grouper()
    g.add(rows[:1])
    g.latest = GROUP_WINDOW_NS + 1
    assert [r["alert_count"] for r in g.expire()] == []  # one match only: nothing to update


def test_other_processes_and_rules_are_other_findings() -> None:
    rows = [_match(0, "/x"), _match(S, "/x", eid=8, n=1), _match(2 * S, "/x", rule="r2", n=2)]
    assert len(group_alerts(rows)) == 3


def test_a_rule_naming_no_object_groups_by_process() -> None:
    exe_rule = load_text("""
title: t
id: 11111111-1111-4111-8111-111111111111
logsource: {product: linux, service: auditd}
detection: {sel: {exe|endswith: /useradd}, condition: sel}
""").ok
    path_rule = load_text("""
title: t
id: 22222222-2222-4222-8222-222222222222
logsource: {product: linux, category: file_event}
detection: {sel: {TargetFilename|startswith: /etc/}, condition: sel}
""").ok
    free = object_free(exe_rule + path_rule)
    assert free == {"11111111-1111-4111-8111-111111111111"}
    rows = [_match(0, "/etc/passwd", rule=r, n=i) | {"rule_id": r} for i, r in enumerate([*free] * 2)]
    rows[1]["object_name"] = "/etc/shadow"
    assert [r["alert_count"] for r in group_alerts(rows, object_free=free)] == [2]


def test_the_object_of_an_event() -> None:
    assert object_of({"event_action": "exec", "process_executable": "/usr/sbin/useradd",
                      "process_args": ["useradd", "-m", "-s", "/bin/sh", "backup2"]}) == ("account", "backup2")
    assert object_of({"event_action": "exec", "process_executable": "/usr/bin/id", "process_args": ["id"]}) \
        == ("file", "/usr/bin/id")
    assert object_of({"event_action": "connect", "destination_ip": "10.0.0.5", "destination_port": 443}) \
        == ("address", "10.0.0.5:443")
    assert object_of({"event_action": "listen", "source_ip": "0.0.0.0", "source_port": 8080}) == ("address", "0.0.0.0:8080")
    assert object_of({"event_action": "rename", "file_path": "/a", "file_target_path": "/b"}) == ("file", "/a -> /b")
    assert object_of({"event_action": "kill", "target_pid": 42}) == ("process", "42")


def test_an_older_store_gets_the_alert_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with open_writer(str(path)) as w:
        w.flush()
    con = duckdb.connect(str(path))  # as a /9 store was: without the columns, 0011 not applied
    for c in ALERT_EVIDENCE:
        con.execute(f'ALTER TABLE alerts DROP COLUMN "{c}"')
    con.execute("DELETE FROM forensix_migrations WHERE name = '0011_alert_evidence'")
    con.execute("UPDATE forensix_meta SET value = 'forensix-store/9' WHERE key = 'format'")
    con.close()
    with open_writer(str(path)) as w:
        cols = set(w.query("SELECT * FROM alerts LIMIT 0").column_names)
        assert ALERT_EVIDENCE <= cols and "0011_alert_evidence" in w.migrations()
