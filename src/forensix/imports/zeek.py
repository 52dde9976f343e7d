"""Zeek's conn.log, in its TSV and JSON forms: one network event per connection, linked to
the host process that owned it as Suricata's alerts are (``forensix.imports.eve.link``).

TSV: ``#fields`` names the columns (``#separator``, ``#unset_field``, ``#empty_field`` and
``#path`` are honoured; another log's ``#path`` is passed over). An import resumed in the
middle of a grown file has not seen the header: Zeek's standard conn.log columns are
assumed until one comes. JSON: Zeek's ASCII writer with ``LogAscii::use_json`` (``ts`` in
epoch seconds) or the JSON Streaming Logs package (``_path``, ISO 8601 ``ts``).

A connection becomes an ``events`` row: ``event_action`` zeek-conn, ``event_module`` zeek,
the originator as source and the responder as destination, its start and end, and a
message with Zeek's uid, service, state and byte counts. Where the store recorded the
connect or accept of that 4-tuple (either direction) around its start, the row names that
process, so ``forensix timeline`` and the process views show what the network saw of it.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from forensix.imports.eve import link
from forensix.imports.rows import BadLine, Processes, Row
from forensix.store.base import Reader

__all__ = ["ZeekConnParser"]

# conn.log's columns as Zeek writes them by default (base/protocols/conn/main.zeek)
STANDARD_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
    "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
    "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents",
)
_MAX_FIELDS = 256


def _time(v: Any) -> int:
    if isinstance(v, bool):
        raise BadLine("ts is not a time")
    if isinstance(v, int | float):
        if not math.isfinite(v) or not 0 <= v < 2**33:
            raise BadLine(f"ts {v!r} out of range")
        return round(v * 1e6) * 1000
    if isinstance(v, str):
        try:
            return _time(float(v))
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise BadLine(f"ts {v[:40]!r} is neither epoch seconds nor ISO 8601") from None
        if dt.tzinfo is None:
            raise BadLine(f"ts {v[:40]!r} has no time zone")
        return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000
    raise BadLine("a conn record without ts")


def _ip(v: Any, name: str) -> str:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        raise BadLine(f"{name} {str(v)[:40]!r} is not an IP address") from None


def _count(v: Any, name: str, limit: int = 2**63) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise BadLine(f"{name} {str(v)[:20]!r} is not a count")
    try:
        n = int(v)
    except (TypeError, ValueError, OverflowError):
        raise BadLine(f"{name} {str(v)[:20]!r} is not a number") from None
    if not 0 <= n < limit:
        raise BadLine(f"{name} {n} out of range")
    return n


def _seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise BadLine("duration is not a number")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise BadLine(f"duration {str(v)[:20]!r} is not a number") from None
    if not math.isfinite(f) or not 0 <= f < 1e9:
        raise BadLine(f"duration {f} out of range")
    return f


class ZeekConnParser:
    module = "zeek"
    idle = True

    def __init__(self, procs: Processes, reader: Reader | None = None) -> None:
        self.procs = procs
        self.reader = reader
        self.linked = 0
        self.fields: tuple[str, ...] = STANDARD_FIELDS
        self.sep = "\t"
        self.unset = "-"
        self.empty = "(empty)"
        self.path = "conn"

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise BadLine("not UTF-8") from None
        if not text.strip():
            return
        if text.startswith("#"):
            self._directive(text)
            return
        if text.lstrip().startswith("{"):
            rec = self._json(text)
        else:
            if self.path != "conn":
                return
            rec = self._tsv(text)
        if rec is not None:
            yield from self._rows(rec)

    def finish(self) -> Iterator[Row]:
        return iter(())

    def _directive(self, text: str) -> None:
        if text.startswith("#separator "):
            sep = text[len("#separator "):].encode("utf-8").decode("unicode_escape", "replace")
            if not sep:
                raise BadLine("an empty #separator")
            self.sep = sep
            return
        name, _, value = text.partition(self.sep)
        if name == "#fields":
            fields = tuple(value.split(self.sep))
            if len(fields) > _MAX_FIELDS or not {"ts", "id.orig_h", "id.resp_h"} <= set(fields):
                raise BadLine("a #fields line without ts, id.orig_h and id.resp_h: not a conn.log")
            self.fields = fields
        elif name == "#unset_field":
            self.unset = value
        elif name == "#empty_field":
            self.empty = value
        elif name == "#path":
            self.path = value
        # #set_separator, #open, #close, #types: nothing to keep

    def _tsv(self, text: str) -> dict[str, Any]:
        values = text.split(self.sep)
        if len(values) != len(self.fields):
            raise BadLine(f"{len(values)} columns where #fields names {len(self.fields)}")
        return {k: (None if v == self.unset else "" if v == self.empty else v) for k, v in zip(self.fields, values)}

    def _json(self, text: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise BadLine(f"not a JSON object ({str(e)[:60]})") from None
        if not isinstance(obj, dict):
            raise BadLine("not a JSON object")
        if obj.get("_path", "conn") != "conn":
            return None  # another Zeek log in the same stream
        if "id.orig_h" not in obj and isinstance(obj.get("id"), dict):  # nested form of some shippers
            obj |= {f"id.{k}": v for k, v in obj["id"].items()}
        return obj

    def _rows(self, r: dict[str, Any]) -> Iterator[Row]:
        if r.get("id.orig_h") is None or r.get("id.resp_h") is None:
            raise BadLine("a conn record without id.orig_h and id.resp_h")
        ts = _time(r.get("ts"))
        sip, dip = _ip(r["id.orig_h"], "id.orig_h"), _ip(r["id.resp_h"], "id.resp_h")
        sp, dp = _count(r.get("id.orig_p"), "id.orig_p", 65536), _count(r.get("id.resp_p"), "id.resp_p", 65536)
        proto = str(r.get("proto") or "").lower() or None
        dur = _seconds(r.get("duration"))
        ob, rb = _count(r.get("orig_bytes"), "orig_bytes"), _count(r.get("resp_bytes"), "resp_bytes")
        # ICMP's "ports" are its type and code: no socket owns them
        eid, pid = link(self.reader, ts, sip, sp, dip, dp) if proto in ("tcp", "udp") else (None, None)
        self.linked += eid is not None
        uid = str(r.get("uid") or "-")[:64]
        text = (f"{uid}: {proto or '?'} {sip}:{sp} -> {dip}:{dp} service {r.get('service') or '-'}"
                f" state {r.get('conn_state') or '-'} bytes {ob if ob is not None else '-'}"
                f"/{rb if rb is not None else '-'}")
        yield Row("events", {
            **self.procs.host.origin(), "ts": ts, "event_kind": "event", "event_category": "network",
            "event_action": "zeek-conn", "event_module": self.module, "network_transport": proto,
            "network_type": "ipv6" if ":" in sip else "ipv4", "source_ip": sip, "source_port": sp,
            "destination_ip": dip, "destination_port": dp, "event_start": ts,
            "event_end": ts + round(dur * 1e9) if dur is not None else None,
            "process_entity_id": eid, "process_pid": pid, "message": text,
        })
