"""From verified frames to the store: batches, agent start/stop events, silence alerts."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from forensix.agent.frame import FrameError
from forensix.store import schema
from forensix.store.base import Writer

__all__ = ["Ingestor", "SILENT_RULE"]

SILENT_RULE = "forensix-agent-silent"


def _one(sch: pa.Schema, row: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([row], schema=sch)


class Ingestor:
    def __init__(self, store: Writer) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.rows = 0

    def check_origin(self, host: str, data: pa.Table) -> None:
        """Each host writes only its own rows (the certificate's name in ``host_name``)."""
        if "host_name" not in data.column_names or data.num_rows == 0:
            return
        col = data.column("host_name")
        ok = pc.all(pc.fill_null(pc.equal(col, pa.scalar(host)), False)).as_py()
        if not ok:
            others = pc.unique(col).to_pylist()[:3]
            raise FrameError(f"batch carries rows of other hosts {others} (certificate is for {host!r})")

    def batch(self, table: str, data: pa.Table) -> None:
        with self.lock:
            self.rows += self.store.append(table, data)

    def agent_event(self, host: str, hello: dict[str, Any], action: str, ts: int, message: str) -> None:
        row = {
            "host_id": str(hello.get("host_id") or host),
            "host_name": host,
            "boot_id": str(hello.get("boot_id") or "unknown"),
            "ts": ts,
            "event_kind": "state",
            "event_category": "agent",
            "event_action": action,
            "process_pid": int(hello["pid"]) if isinstance(hello.get("pid"), int) else None,
            "process_name": "forensix-agent",
            "message": message,
        }
        self.batch("events", _one(schema.EVENTS, row))

    def gap(self, host: str, hello: dict[str, Any], ts_from: int, ts_to: int, count: int, reason: str,
            event_class: str) -> None:
        row = {
            "host_id": str(hello.get("host_id") or host), "host_name": host,
            "boot_id": str(hello.get("boot_id") or "unknown"), "ts_from": ts_from, "ts_to": ts_to,
            "cpu": -1, "event_class": event_class, "count": count, "reason": reason,
        }
        self.batch("gaps", _one(schema.GAPS, row))

    def silent_alert(self, host: str, info: dict[str, Any], last_seen: int, silence_s: float) -> None:
        now = time.time_ns()
        row = {
            "host_id": str(info.get("host_id") or host), "host_name": host,
            "boot_id": str(info.get("boot_id") or "unknown"),
            "alert_id": uuid.uuid4().hex, "ts": last_seen, "detected_ts": now,
            "rule_id": SILENT_RULE, "rule_title": "Agent silent", "rule_level": "high",
            "tags": ["forensix.agent"],
            "summary": f"no message from {host} for {(now - last_seen) / 1e9:.0f} s (limit {silence_s:g} s)",
            "source": "builtin",
        }
        self.batch("alerts", _one(schema.ALERTS, row))
