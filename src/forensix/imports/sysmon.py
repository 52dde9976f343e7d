"""Sysmon for Linux events (XML, one per syslog line or journal entry) into store rows.

Sysmon writes ``<Event><System>...<EventID>N</EventID>...</System><EventData><Data
Name="...">...</Data>...</EventData></Event>`` to syslog, prefixed by the syslog header.
Its ``ProcessGuid`` is its own identity of a process (it encodes the start), so the
entity id is derived from it; parents come from ``ParentProcessGuid``. Handled: 1 process
create, 3 network connect, 5 process terminate, 9 raw access read, 11 file create, 23 and
26 file delete; other ids are kept as events with their name.
"""

from __future__ import annotations

import calendar
import posixpath
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

from forensix.imports.rows import BadLine, Processes, Row, guid_entity

__all__ = ["SysmonParser"]

_NAMES = {1: "exec", 3: "connect", 4: "service-state", 5: "exit", 9: "raw-access-read", 11: "create",
          16: "config-change", 23: "unlink", 26: "unlink"}
_MAX_XML = 64 * 1024


def _utc(text: str | None) -> int | None:
    """Sysmon's UtcTime "2022-11-24 08:30:01.467" (or SystemTime ISO) as UTC ns."""
    if not text:
        return None
    t = text.strip().rstrip("Z").replace("T", " ")
    head, _, frac = t.partition(".")
    try:
        secs = calendar.timegm(time.strptime(head, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
    digits = "".join(c for c in frac if c.isdigit())[:9].ljust(9, "0")
    return secs * 10**9 + int(digits)


def _cmdline(text: str | None) -> list[str] | None:
    # Sysmon logs the command line joined with spaces: the split is a best guess
    return text.split(" ") if text else None


def _journal_message(line: bytes) -> bytes:
    import json

    try:
        msg = json.loads(line).get("MESSAGE")
    except (ValueError, AttributeError):
        raise BadLine("a JSON line that is not a journal entry") from None
    if isinstance(msg, list):
        return bytes(b for b in msg if isinstance(b, int) and 0 <= b < 256)
    return msg.encode() if isinstance(msg, str) else b""


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "", "-") else None
    except ValueError:
        return None


class SysmonParser:
    module = "sysmon"
    idle = True

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self._seen: set[int] = set()  # entity ids with a processes row

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        if line.startswith(b"{"):  # journalctl -o json: the event is the entry's MESSAGE
            line = _journal_message(line)
        start = line.find(b"<Event")
        if start < 0:
            return  # other programs' syslog lines: not Sysmon's, not an error
        end = line.rfind(b"</Event>")
        if end < 0:
            raise BadLine("a Sysmon event cut short (no </Event>)")
        xml = line[start:end + 8]
        if len(xml) > _MAX_XML:
            raise BadLine(f"a Sysmon event of {len(xml)} bytes (more than {_MAX_XML})")
        if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
            raise BadLine("XML with a DOCTYPE or ENTITY: refused (Sysmon writes none)")
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as e:
            raise BadLine(f"not well-formed XML ({e})") from None
        yield from self._event(root)

    def _event(self, root: ET.Element) -> Iterator[Row]:
        def find(tag: str) -> ET.Element | None:
            return next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == tag), None)

        eid_el = find("EventID")
        if eid_el is None or not (eid_el.text or "").strip().isdigit():
            raise BadLine("a Sysmon event without an EventID")
        eid = int((eid_el.text or "").strip())
        data = {d.get("Name", ""): (d.text or "") for d in root.iter() if d.tag.rsplit("}", 1)[-1] == "Data"}
        tc = find("TimeCreated")
        ts = _utc(data.get("UtcTime")) or _utc(tc.get("SystemTime") if tc is not None else None)
        if ts is None:
            raise BadLine("a Sysmon event without a time")
        comp = find("Computer")
        host = self.procs.host
        hkey = host.key
        guid = data.get("ProcessGuid") or ""
        pid = _int(data.get("ProcessId"))
        eid_proc = guid_entity(hkey, guid) if guid else None
        base: dict[str, Any] = {**host.origin(), "ts": ts, "event_kind": "event", "event_module": "sysmon",
                                "event_action": _NAMES.get(eid, f"sysmon-{eid}"), "process_pid": pid,
                                "process_entity_id": eid_proc, "process_name": posixpath.basename(data.get("Image") or "") or None}
        if comp is not None and comp.text:
            base["host_name"] = host.host_name  # rows keep the import's host; Computer is in the message
        out: list[Row] = []
        if eid == 1 and eid_proc is not None:
            pguid = data.get("ParentProcessGuid") or ""
            parent = guid_entity(hkey, pguid) if pguid else None
            if parent is not None and parent not in self._seen:
                self._seen.add(parent)
                out.append(Row("processes", {**host.origin(), "entity_id": parent, "image_seq": 0,
                                             "pid": _int(data.get("ParentProcessId")) or 0, "start_ts": ts,
                                             "image_ts": ts, "executable": data.get("ParentImage") or None,
                                             "args": _cmdline(data.get("ParentCommandLine")), "source": "snapshot"}))
            args = _cmdline(data.get("CommandLine"))
            self._seen.add(eid_proc)
            out.append(Row("processes", {**host.origin(), "entity_id": eid_proc, "image_seq": 1, "pid": pid or 0,
                                         "parent_entity_id": parent, "parent_pid": _int(data.get("ParentProcessId")),
                                         "start_ts": ts, "image_ts": ts, "executable": data.get("Image"),
                                         "args": args, "working_directory": data.get("CurrentDirectory"),
                                         "name": base["process_name"], "session_id": _int(data.get("LogonId")),
                                         "source": "exec"}))
            base |= {"event_category": "process", "process_executable": data.get("Image"), "process_args": args,
                     "process_working_directory": data.get("CurrentDirectory"),
                     "process_parent_pid": _int(data.get("ParentProcessId")), "file_path": data.get("Image")}
        elif eid == 3:
            initiated = (data.get("Initiated") or "").lower() == "true"
            base |= {"event_category": "network", "event_action": "connect" if initiated else "accept",
                     "network_transport": (data.get("Protocol") or None),
                     "network_type": "ipv6" if (data.get("SourceIsIpv6") or "").lower() == "true" else "ipv4",
                     "source_ip": data.get("SourceIp") or None, "source_port": _int(data.get("SourcePort")),
                     "destination_ip": data.get("DestinationIp") or None,
                     "destination_port": _int(data.get("DestinationPort")), "event_outcome": "success"}
        elif eid == 5:
            base |= {"event_category": "process"}
        elif eid in (11, 23, 26):
            base |= {"event_category": "file", "file_path": data.get("TargetFilename") or None}
            if eid == 11:  # the recorder's create: an open with O_CREAT|O_WRONLY
                base |= {"event_action": "open", "file_flags": 0o101}
        elif eid == 9:
            base |= {"event_category": "file", "file_path": data.get("Device") or None}
        else:
            base |= {"event_category": "configuration"}
        base["message"] = f"Sysmon event {eid}" + (f" on {comp.text}" if comp is not None and comp.text else "")
        out.append(Row("events", base))
        yield from out

    def finish(self) -> Iterator[Row]:
        return iter(())
