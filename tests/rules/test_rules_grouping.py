"""The hunt groups its matches in bulk (rules/grouping.py) into the findings the one-match-
at-a-time ``evidence.group_alerts`` gives: checked on generated matches that crowd the
corners (one process, one time, windows just kept and just missed, account tools, side
copies of files, non-ASCII and newline names, an event held twice)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensix.rules.alerts import RuleMeta, build_alerts, empty_alerts
from forensix.rules.evidence import GROUP_WINDOW_NS, SessionContext, add_evidence, group_alerts
from forensix.rules.grouping import findings_of, group_alert_table, objects, rule_matches
from forensix.rules.live import ProcessContext
from forensix.rules.loader import load_text
from forensix.rules.objects import object_of
from forensix.store.schema import ALERTS

W = GROUP_WINDOW_NS
ROW = pa.schema([
    ("host_id", pa.string()), ("host_name", pa.string()), ("boot_id", pa.string()), ("ts", pa.int64()),
    ("cpu", pa.uint32()), ("seq", pa.uint64()), ("event_category", pa.string()), ("event_action", pa.string()),
    ("process_entity_id", pa.uint64()), ("process_pid", pa.uint32()), ("process_name", pa.string()),
    ("target_entity_id", pa.uint64()), ("file_path", pa.string()), ("file_target_path", pa.string()),
    ("destination_ip", pa.string()), ("destination_port", pa.uint16()), ("source_ip", pa.string()),
    ("source_port", pa.uint16()), ("user_id", pa.uint32()), ("process_args", pa.list_(pa.string())),
    ("process_executable", pa.string()), ("target_pid", pa.uint32()), ("unix_path", pa.string()),
    ("fx_image", pa.string()), ("fx_command_line", pa.string()), ("fx_user", pa.string()),
    ("fx_rules", pa.list_(pa.int32())),
])

_paths = st.sampled_from([None, "", "/etc/passwd", "/etc/passwd+", "/etc/passwd.lock", "/etc/passwd.123",
                          "/tmp/x.AbC123", "/tmp/é.lock", "/tmp/a\n.lock", "/tmp/a.lock\n", "/tmp/a.٣",
                          "pipe:[42]", "fifo:[7]", "/usr/sbin/useradd", "/bin/sh", "/x/y-"])
_acts = st.sampled_from(["exec", "open", "rename", "connect", "accept", "bind", "listen", "kill", "ptrace",
                         "unlink", "", None, "mmap"])
_times = st.sampled_from([0, 1, W - 1, W, W + 1, 2 * W, 2 * W + 1, 5 * W, 10**18, 10**18 + W])


@st.composite
def _row(draw: Any) -> dict[str, Any]:
    return {
        "host_id": draw(st.sampled_from(["h1", "h2", "", None])), "host_name": "n",
        "boot_id": draw(st.sampled_from(["b1", "b2", None])), "ts": draw(_times),
        "cpu": draw(st.sampled_from([None, 0, 1, 10])), "seq": draw(st.sampled_from([None, 0, 2, 11, 100])),
        "event_category": "process", "event_action": draw(_acts),
        "process_entity_id": draw(st.sampled_from([None, 0, 5, 6])), "process_pid": draw(st.sampled_from([None, 0, 5, 9])),
        "process_name": "p", "target_entity_id": None, "file_path": draw(_paths), "file_target_path": draw(_paths),
        "destination_ip": draw(st.sampled_from([None, "", "10.0.0.1"])),
        "destination_port": draw(st.sampled_from([None, 0, 443])),
        "source_ip": draw(st.sampled_from([None, "0.0.0.0"])), "source_port": draw(st.sampled_from([None, 22])),
        "user_id": 0, "process_args": draw(st.sampled_from([None, [], ["useradd", "bob"], ["useradd", "-m"],
                                                             ["passwd", ""], ["x"]])),
        "process_executable": draw(st.sampled_from([None, "", "/usr/sbin/useradd", "/bin/sh", "a/b\nc/useradd"])),
        "target_pid": draw(st.sampled_from([None, 0, 77])),
        "unix_path": draw(st.sampled_from([None, "", "/run/x.sock"])),
        "fx_image": draw(st.sampled_from([None, "/bin/sh"])), "fx_command_line": None, "fx_user": None,
        "fx_rules": draw(st.sampled_from([[0], [1], [0, 1]])),
    }


RULES = load_text("""
title: names the object
id: 11111111-1111-4111-8111-111111111111
logsource: {product: linux, category: file_event}
detection: {sel: {TargetFilename|startswith: /etc/}, condition: sel}
---
title: names none
id: 22222222-2222-4222-8222-222222222222
logsource: {product: linux, service: auditd}
detection: {sel: {exe|endswith: /useradd}, condition: sel}
""").ok
FREE = frozenset({RULES[1].rule_id})


def _meta(i: int) -> RuleMeta:
    r = RULES[i]
    return RuleMeta(r.rule_id, r.title, r.level, tuple(r.tags))


def _empty(_: pa.Table) -> tuple[ProcessContext, SessionContext]:
    return ProcessContext(), SessionContext()


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the moment they were built, in the bulk path's order (ties of
    ``group_alerts``' sort stay in its order: a stable sort)."""
    out = [{k: v for k, v in r.items() if k != "detected_ts"} for r in rows]
    return sorted(out, key=lambda r: (r["ts"], r["rule_id"], r["event_keys"][0] if r["event_keys"] else "",
                                      r["host_id"], r["boot_id"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row(), min_size=1, max_size=40))
def test_bulk_findings_are_group_alerts_findings(rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=ROW)
    per_match = []
    for i in range(len(RULES)):
        mine = table.filter(pa.array([i in r["fx_rules"] for r in rows]))
        if mine.num_rows:
            per_match += build_alerts(_meta(i), mine, "hunt").to_pylist()
    matches = rule_matches(RULES, table)  # one scan's rows, each rule's by index
    add_evidence(per_match, ProcessContext(), SessionContext())
    want = group_alerts(per_match, W, FREE)
    got = findings_of(matches, empty_alerts(), _empty, FREE)
    assert _plain(got.to_pylist()) == _plain(want)
    # the same matches as alerts of one match each (a detector's, a slice's): the same findings
    alerts = pa.Table.from_pylist(per_match, schema=ALERTS) if per_match else empty_alerts()
    assert _plain(findings_of([], alerts, _empty, FREE).to_pylist()) == _plain(want)
    # and without their evidence, as the fleet hunt groups them before it pulls the context
    assert group_alert_table(alerts, FREE).num_rows == len(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(_row(), min_size=1, max_size=30))
def test_the_objects_of_rows_are_object_of_each(rows: list[dict[str, Any]]) -> None:
    kind, name = objects(pa.Table.from_pylist(rows, schema=ROW))
    assert list(zip(kind.to_pylist(), name.to_pylist(), strict=True)) == [object_of(r) for r in rows]


def test_a_noisy_rule_builds_one_alert_per_finding() -> None:
    """100,000 matches of 1,000 processes over 30 minutes: 3,000 findings (three windows
    each), counted whole; the grouping never builds the 100,000 alerts."""
    n = 100_000
    eid = [i % 1000 + 1 for i in range(n)]
    ts = [i * (30 * 60 * 10**9 // n) for i in range(n)]
    table = pa.table({"host_id": ["h"] * n, "boot_id": ["b"] * n, "ts": pa.array(ts, pa.int64()),
                      "cpu": pa.array([0] * n, pa.uint32()), "seq": pa.array(range(n), pa.uint64()),
                      "event_action": ["exec"] * n, "process_entity_id": pa.array(eid, pa.uint64()),
                      "process_pid": pa.array(eid, pa.uint32()), "process_executable": ["/bin/x"] * n})
    got = findings_of([(RULES[1], table, None)], empty_alerts(), _empty, FREE)
    assert got.num_rows == 3000
    assert sum(got.column("alert_count").to_pylist()) == n
    first = got.filter(pa.compute.equal(got.column("process_entity_id"), 1)).to_pylist()
    assert [(r["ts"], r["alert_count"]) for r in first] == [(0, 34), (612_000_000_000, 34), (1_224_000_000_000, 32)]
