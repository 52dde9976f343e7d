"""Alerts: built the same way by the live engine, the retro-hunt and the built-in detectors,
then handed to outputs (the store, a callback the CLI prints with, JSON lines, a webhook).

An alert's id is derived from (rule, host, boot, event key), so the live engine and a
hunt over the same events produce the same alert ids.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from forensix.agent.sink import Sink
from forensix.analysis.users import this_host_id
from forensix.model.identity import format_entity
from forensix.model.timefmt import format_ns, now_ns
from forensix.render.tables import display_value
from forensix.rules.fields import cached_user_names
from forensix.rules.objects import ACCOUNT_TOOLS, object_of
from forensix.store.schema import ALERTS, ecs_name

__all__ = [
    "ALERT_FIELDS",
    "AlertOutput",
    "CallbackOutput",
    "JsonlOutput",
    "RuleMeta",
    "SinkOutput",
    "WebhookOutput",
    "alert_id",
    "alert_records",
    "build_alerts",
    "empty_alerts",
    "event_key",
    "report_command",
]


@dataclass(frozen=True)
class RuleMeta:
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...] = field(default_factory=tuple)


def event_key(cpu: Any, seq: Any, ts: Any) -> str:
    """How an alert names a matching event: ``cpu:seq:ts`` (unique per host and boot)."""
    return f"{'' if cpu is None else cpu}:{'' if seq is None else seq}:{ts}"


def alert_id(rule_id: str, host_id: str, boot_id: str, key: str) -> str:
    h = hashlib.blake2b(f"{rule_id}\0{host_id}\0{boot_id}\0{key}".encode(), digest_size=12)
    return h.hexdigest()


_EMPTY = ALERTS.empty_table()


def empty_alerts() -> pa.Table:
    return _EMPTY  # tables are immutable: one empty table serves every caller


# Every field of a matching row that ``build_alerts`` reads: a detector holding rows
# (a copy's pending exec) needs these, not the event's ~80 columns.
ALERT_FIELDS = (
    "host_id", "host_name", "boot_id", "ts", "cpu", "seq", "process_entity_id", "target_entity_id",
    "process_pid", "process_name", "event_action", "file_path", "file_target_path", "source_ip",
    "source_port", "destination_ip", "destination_port", "fx_image", "fx_command_line", "fx_detail",
    "user_id", "process_args", "process_executable", "target_pid", "unix_path",
)


def _base(path: str | None) -> str:
    return (path or "").rsplit("/", 1)[-1]


def _summary(meta: RuleMeta, r: dict[str, Any]) -> str:
    who = ""
    if r.get("process_pid") is not None or r.get("process_name"):
        who = f"{r.get('process_name') or '?'}[{r.get('process_pid') or '?'}]"
    image = r.get("fx_image")
    if image:
        who += f" {image}"
    action = r.get("event_action") or ""
    obj = r.get("file_path") or ""
    if r.get("file_target_path"):
        obj += f" -> {r['file_target_path']}"
    if not obj and action in ("listen", "bind") and r.get("source_port") is not None:
        obj = f"{r.get('source_ip') or ''}:{r['source_port']}"
    if not obj and r.get("destination_ip"):
        obj = f"{r['destination_ip']}:{r.get('destination_port')}"
    if not obj and action == "exec" and r.get("fx_command_line"):
        obj = str(r["fx_command_line"])[:200]
    extra = r.get("fx_detail")
    kind, name = object_of(r)
    if kind == "account":
        verb = ACCOUNT_TOOLS.get(_base(r.get("process_executable") or r.get("fx_image")), "changed")
        text = f"{meta.title}: account {name} {verb} by {who.strip()}"
        return f"{text} ({extra})" if extra else text
    if not (who or action or obj):
        return f"{meta.title}: {extra}" if extra else meta.title
    text = " ".join(x for x in (f"{meta.title}:", who, action, obj) if x)
    return f"{text} ({extra})" if extra else text


def _local_user(host: str | None, uid: int | None) -> str | None:
    """This machine's name of ``uid``, for a row of this machine's host only (a recorder's own
    live detectors); a row of another host gets no name rather than a wrong one."""
    if uid is None or host != this_host_id():
        return None
    return cached_user_names().get(uid)


def build_alerts(
    meta: RuleMeta,
    rows: pa.Table | Sequence[dict[str, Any]],
    source: str,
    detected_ts: int | None = None,
) -> pa.Table:
    """One alert per matching row (an event, or a gap record with ``ts``)."""
    recs = rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)
    detected = now_ns() if detected_ts is None else detected_ts
    out: list[dict[str, Any]] = []
    for r in recs:
        key = event_key(r.get("cpu"), r.get("seq"), r["ts"])
        ents = [e for e in (r.get("process_entity_id"), r.get("target_entity_id")) if e]
        kind, name = object_of(r)
        uid = r.get("user_id")
        out.append(
            {
                "host_id": r.get("host_id") or "",
                "host_name": r.get("host_name"),
                "boot_id": r.get("boot_id") or "",
                "alert_id": alert_id(meta.rule_id, r.get("host_id") or "", r.get("boot_id") or "", key),
                "ts": r["ts"],
                "detected_ts": detected,
                "rule_id": meta.rule_id,
                "rule_title": meta.title,
                "rule_level": meta.level,
                "tags": list(meta.tags),
                "process_entity_id": r.get("process_entity_id"),
                "process_pid": r.get("process_pid"),
                "entity_ids": ents,
                "event_keys": [key],
                "summary": _summary(meta, r),
                "source": source,
                # a summary row stands for the repeats the kernel counted instead of recording
                "alert_count": r.get("event_count") or 1,
                "last_ts": r["ts"],
                "process_executable": r.get("fx_image") or r.get("process_executable"),
                "process_command_line": r.get("fx_command_line"),
                # as the rule view names it (fields.fx_user: the host's recorded user database
                # as of the event); a detector's row has none: named only on this machine's host
                "user_name": r["fx_user"] if "fx_user" in r else _local_user(r.get("host_id"), uid),
                "object_kind": kind,
                "object_name": name,
            }
        )
    return pa.Table.from_pylist(out, schema=ALERTS) if out else empty_alerts()


def report_command(row: dict[str, Any], store: str | None = None) -> str:
    """The `forensix report` command for an alert's detection point (the acting process),
    or the `forensix timeline` around it when no process is involved."""
    eid = row.get("process_entity_id")
    if eid:
        target = format_entity(eid)
    elif row.get("process_pid"):
        target = f"{row['process_pid']}@{format_ns(row['ts'])}"
    else:  # no process (a recording gap): the timeline around it is the place to look
        st = f" --store {store}" if store else ""
        t = int(row["ts"])
        return f"forensix timeline{st} --from {format_ns(t - 60 * 10**9)} --to {format_ns(t + 60 * 10**9)}"
    st = f" --store {store}" if store else ""
    return f"forensix report{st} {target}"


def alert_records(alerts: pa.Table, store: str | None = None) -> list[dict[str, Any]]:
    """Alerts as JSON-ready dicts with ECS names, UTC times, hex ids and the report command."""
    out = []
    for r in alerts.to_pylist():
        rec = {ecs_name(k): display_value(k, v) for k, v in r.items() if v is not None}
        rec["report"] = report_command(r, store)
        out.append(rec)
    return out


class AlertOutput(Protocol):
    def emit(self, alerts: pa.Table) -> None: ...

    def close(self) -> None: ...


class CallbackOutput:
    """Calls ``fn(alerts)`` for every non-empty alert batch (the CLI prints with it)."""

    def __init__(self, fn: Callable[[pa.Table], None]) -> None:
        self.fn = fn

    def emit(self, alerts: pa.Table) -> None:
        self.fn(alerts)

    def close(self) -> None:
        pass


class JsonlOutput:
    """Appends one JSON object per alert to a file, flushed per batch."""

    def __init__(self, path: str | Path, store: str | None = None) -> None:
        self.path = Path(path)
        self.store = store
        self._f = self.path.open("a", encoding="utf-8")

    def emit(self, alerts: pa.Table) -> None:
        for rec in alert_records(alerts, self.store):
            self._f.write(json.dumps(rec, default=str) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class WebhookOutput:
    """POSTs each alert as JSON to a URL from a background thread.

    The queue is bounded: when the receiver is slow or down, alerts beyond it are counted
    in ``dropped`` (they remain in the store and the JSON lines), never block recording.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, max_queue: int = 1000, store: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.store = store
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._t = threading.Thread(target=self._run, name="forensix-webhook", daemon=True)
        self._t.start()

    def emit(self, alerts: pa.Table) -> None:
        for rec in alert_records(alerts, self.store):
            try:
                self._q.put_nowait(rec)
            except queue.Full:
                self.dropped += 1

    def _post(self, rec: dict[str, Any]) -> None:
        body = json.dumps(rec, default=str).encode()
        import urllib.error  # here, not at import: http, email and ssl are ~2.4 MB of every recorder
        import urllib.request

        req = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.failed += 1
            self.last_error = str(e)

    def _run(self) -> None:
        while True:
            rec = self._q.get()
            try:
                if rec is None:
                    return
                self._post(rec)
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until every queued alert was posted or failed."""
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline and self._t.is_alive():
            time.sleep(0.02)

    def close(self, timeout: float = 10.0) -> None:
        self._q.put(None)
        self._t.join(timeout)


class SinkOutput:
    """Writes alert rows to a sink (the recorder's store sink) as the ``alerts`` table,
    a finding's final count too (the latest row per ``alert_id`` is the one to read)."""

    keeps_updates = True

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def emit(self, alerts: pa.Table) -> None:
        self.sink.write("alerts", alerts)

    def close(self) -> None:
        pass
