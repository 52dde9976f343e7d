"""Suricata EVE JSON alerts as detection points, linked to the host process that owned the flow.

Each ``event_type: alert`` line becomes an ``alerts`` row (rule ``suricata:SID``, the
signature as title, severity 1/2/3 as high/medium/low, the category as a tag) and an
``events`` row (``event_kind`` alert, the flow's addresses, ``event_module`` suricata).
The alert's 4-tuple is matched, in either direction, against the connect and accept
events already in the store, in the hour before the alert: the process that made or took
that connection is the alert's ``process_entity_id`` (where both ends are on the host, the
one whose local end is the alert's source, the side that sent the packet), so ``forensix report --alert ID``
starts from it. Other EVE types (flow, dns, tls, stats ...) are not alerts: passed over.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from forensix.errors import UsageError
from forensix.imports.rows import BadLine, Processes, Row, json_object
from forensix.store.base import Reader

__all__ = ["EveParser", "alert_target", "link"]

LINK_WINDOW_NS = 3600 * 10**9  # a flow alerted on may have begun this long before the alert
_LEVELS = {1: "high", 2: "medium", 3: "low"}

_LINK_SQL = """
SELECT process_entity_id, process_pid, ts FROM events
WHERE event_action IN ('connect', 'accept') AND process_entity_id IS NOT NULL
  AND ts BETWEEN $t0 AND $t1
  AND ((destination_ip = $dip AND destination_port = $dp AND source_port = $sp)
    OR (destination_ip = $sip AND destination_port = $sp AND source_port = $dp))
ORDER BY (source_port = $sp AND destination_port = $dp) DESC, abs(ts - $t) LIMIT 1
"""


def _time(text: Any) -> int:
    if not isinstance(text, str):
        raise BadLine("an EVE record without a timestamp")
    try:
        dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        raise BadLine(f"timestamp {text[:40]!r} is not EVE's") from None
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def _ip(v: Any) -> str | None:
    try:
        return str(ipaddress.ip_address(str(v))) if v is not None else None
    except ValueError:
        raise BadLine(f"{str(v)[:40]!r} is not an IP address") from None


def _port(v: Any) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or not 0 <= v <= 65535:
        raise BadLine(f"port {str(v)[:20]!r} out of range")
    return v


def link(reader: Reader | None, ts: int, sip: str | None, sp: int | None, dip: str | None,
         dp: int | None) -> tuple[int | None, int | None]:
    """(entity id, pid) of the process that owned the flow, when the store recorded it."""
    if reader is None or None in (sip, sp, dip, dp):
        return None, None
    t = reader.query(_LINK_SQL, {"t": ts, "t0": ts - LINK_WINDOW_NS, "t1": ts + 5 * 10**9,
                                 "sip": sip, "sp": sp, "dip": dip, "dp": dp})
    if not t.num_rows:
        return None, None
    return int(t.column("process_entity_id")[0].as_py()), t.column("process_pid")[0].as_py()


class EveParser:
    module = "suricata"
    idle = True

    def __init__(self, procs: Processes, reader: Reader | None = None) -> None:
        self.procs = procs
        self.reader = reader
        self.linked = 0

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        obj = json_object(line)
        if obj.get("event_type") != "alert":
            return
        al = obj.get("alert")
        if not isinstance(al, dict):
            raise BadLine("an alert record without its alert object")
        ts = _time(obj.get("timestamp"))
        sip, dip = _ip(obj.get("src_ip")), _ip(obj.get("dest_ip"))
        sp, dp = _port(obj.get("src_port")), _port(obj.get("dest_port"))
        sid = al.get("signature_id")
        sig = str(al.get("signature") or "")
        sev = al.get("severity")
        eid, pid = link(self.reader, ts, sip, sp, dip, dp)
        self.linked += eid is not None
        host = self.procs.host.origin()
        key = f"{obj.get('flow_id')}:{al.get('gid')}:{sid}:{al.get('rev')}:{obj.get('timestamp')}"
        alert_id = "ids-" + hashlib.blake2b(f"{host['host_id']}\0{key}".encode(), digest_size=8).hexdigest()
        proto = str(obj.get("proto") or "").lower() or None
        summary = (f"{sig} [{al.get('gid')}:{sid}:{al.get('rev')}] {sip}:{sp} -> {dip}:{dp} {proto or ''}"
                   f" ({al.get('category') or 'no category'}, {al.get('action') or 'alert'})")
        yield Row("events", {**host, "ts": ts, "event_kind": "alert", "event_category": "network",
                             "event_action": "ids-alert", "event_module": self.module, "network_transport": proto,
                             "source_ip": sip, "source_port": sp, "destination_ip": dip, "destination_port": dp,
                             "process_entity_id": eid, "process_pid": pid, "message": f"{alert_id}: {summary}"})
        yield Row("alerts", {**host, "alert_id": alert_id, "ts": ts, "rule_id": f"suricata:{sid}",
                             "rule_title": sig or None, "rule_level": _LEVELS.get(sev if isinstance(sev, int) else 0, "low"),
                             "tags": [str(al["category"])] if al.get("category") else None,
                             "process_entity_id": eid, "process_pid": pid,
                             "entity_ids": [eid] if eid is not None else None, "summary": summary,
                             "source": "suricata"})

    def finish(self) -> Iterator[Row]:
        return iter(())


def alert_target(reader: Reader, alert_id: str) -> str:
    """The report target of a stored alert: its process when linked, else its remote endpoint."""
    t = reader.query("SELECT rule_id, process_entity_id FROM alerts WHERE alert_id = $a", {"a": alert_id})
    if not t.num_rows:
        raise UsageError(f"no alert {alert_id!r} in the store", "list them with: forensix alerts --store STORE")
    eid = t.column("process_entity_id")[0].as_py()
    if eid is not None:
        return f"{int(eid):016x}"
    ev = reader.query("SELECT source_ip, source_port, destination_ip, destination_port FROM events "
                      "WHERE event_action = 'ids-alert' AND starts_with(message, $a) LIMIT 1", {"a": alert_id + ":"})
    if not ev.num_rows:
        raise UsageError(f"alert {alert_id!r} names no process and no connection", "report from a file or process")
    r = ev.to_pylist()[0]
    ip, port = r["destination_ip"], r["destination_port"]
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"
