"""Which hosts of a fleet store are reporting, from the store alone (``forensix hosts``).

A host is *silent* when its newest event is older than the silence limit, or when the log
host raised a silence alert after it (the log host hears heartbeats that leave no rows);
*stopped* when its agent's last word was a clean stop. Everything comes from plain
aggregates over ``events`` and ``alerts`` (``Reader.query``, one GROUP BY each, no window
function or join), so it runs on any store forensix has. On a ClickHouse store they run in
ClickHouse itself: the events per host from the ``fleet_hosts`` summary (the events view's
rows, flow edges kept only in flows included, as DuckDB counts them), the agents' starts and
stops and the alerts by a filtered scan, so nothing of the store is pulled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from forensix.server.guard import REFUSED_RULE
from forensix.server.ingest import SILENT_RULE
from forensix.server.quarantine import QUARANTINE_RULE
from forensix.store.base import Reader

__all__ = ["HOST_STATUS", "host_status"]

HOST_STATUS = pa.schema([
    ("host_name", pa.string()),
    ("status", pa.string()),  # reporting | silent | stopped | never
    ("silent", pa.bool_()),
    ("last_event_ts", pa.int64()),
    ("quiet_s", pa.float64()),  # seconds since the last event
    ("events", pa.int64()),
    ("last_start_ts", pa.int64()),
    ("last_stop_ts", pa.int64()),
    ("silence_alert_ts", pa.int64()),
    ("refusals", pa.int64()),
    ("last_refusal_ts", pa.int64()),
    ("not_ingested", pa.int64()),  # frames the store refused, quarantined (kept in evidence)
    ("not_ingested_cause", pa.string()),  # the newest one's
])


def _by_host(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r.pop("host_name")): r for r in rows if r.get("host_name") is not None}


# the questions, in DuckDB's SQL ($r) and in ClickHouse's ({r}; FLEET_EVENTS from the summary)
EVENTS = "SELECT host_name, max(ts) AS last_event_ts, count(*) AS events FROM events GROUP BY host_name"
FLEET_EVENTS = ("SELECT host_name, maxMerge(max_ts) AS last_event_ts, countMerge(events) AS events "
                "FROM fleet_hosts GROUP BY host_name")
LIFE = ("SELECT host_name, event_action, max(ts) AS ts FROM events WHERE event_category = 'agent' "
        "AND process_name = 'forensix-agent' AND event_action IN ('start', 'stop') GROUP BY host_name, event_action")
SILENCES = ("SELECT host_name, max(detected_ts) AS silence_alert_ts FROM alerts WHERE rule_id = $r "
            "GROUP BY host_name")
REFUSALS = ("SELECT host_name, count(*) AS refusals, max(detected_ts) AS last_refusal_ts FROM alerts "
            "WHERE rule_id = $r GROUP BY host_name")
NOT_INGESTED = ("SELECT host_name, count(*) AS not_ingested, argMax(summary, detected_ts) AS not_ingested_cause "
                "FROM alerts WHERE rule_id = $r GROUP BY host_name")


def _queries(reader: Reader) -> Callable[[str, str | None], list[dict[str, Any]]]:
    """How to ask ``reader`` one of the questions above: through ``Reader.query``, or in
    ClickHouse when it reads a ClickHouse store with the summaries (a reader of the whole
    store, not of one host's slice)."""
    from forensix.store.clickhouse.reader import ClickHouseReader  # only the reader's type

    if isinstance(reader, ClickHouseReader) and reader.host is None and reader.store.summarized():
        native = reader.store.native

        def in_clickhouse(sql: str, rule: str | None) -> list[dict[str, Any]]:
            sql = FLEET_EVENTS if sql == EVENTS else sql.replace("$r", "{r}")
            # host names are stored '' for NULL (a key column): as NULL, left out like DuckDB's
            return [r for r in native(sql, {"r": rule}).to_pylist() if r.get("host_name") != ""]

        return in_clickhouse
    return lambda sql, rule: reader.query(sql, {"r": rule} if rule else None).to_pylist()


def host_status(reader: Reader, *, now_ns: int, silence_s: float, enrolled: Iterable[str] = ()) -> pa.Table:
    """One row per host the store (or ``enrolled``, the PKI's hosts) knows, silent ones first."""
    ask = _queries(reader)
    events = _by_host(ask(EVENTS, None))
    life: dict[str, dict[str, Any]] = {}
    for r in ask(LIFE, None):
        life.setdefault(str(r["host_name"]), {})[f"last_{r['event_action']}_ts"] = r["ts"]
    silences = _by_host(ask(SILENCES, SILENT_RULE))
    refusals = _by_host(ask(REFUSALS, REFUSED_RULE))
    held = _by_host(ask(NOT_INGESTED, QUARANTINE_RULE))
    rows = []
    for host in sorted(set(events) | set(life) | set(silences) | set(enrolled)):
        row: dict[str, Any] = {"host_name": host, **events.get(host, {}), **life.get(host, {}),
                               **silences.get(host, {}), **refusals.get(host, {"refusals": 0}), **held.get(host, {"not_ingested": 0})}
        row["status"], row["silent"], row["quiet_s"] = _judge(row, now_ns, silence_s)
        rows.append(row)
    rows.sort(key=lambda r: (not r["silent"], r["host_name"]))
    return pa.Table.from_pylist(rows, schema=HOST_STATUS)


def _judge(row: dict[str, Any], now_ns: int, silence_s: float) -> tuple[str, bool, float | None]:
    last = row.get("last_event_ts")
    if last is None:
        return "never", True, None
    quiet = round(max(0.0, (now_ns - last) / 1e9), 1)
    alert = row.get("silence_alert_ts")
    silent = quiet > silence_s or (alert is not None and alert > last)
    stop, start = row.get("last_stop_ts"), row.get("last_start_ts")
    if silent and stop is not None and (start is None or stop >= start):
        return "stopped", True, quiet
    return ("silent" if silent else "reporting"), silent, quiet
