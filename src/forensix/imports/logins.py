"""A login's details from the host's own logs, joined onto the sessions analysis.

The recorder sees an ssh session as the per-connection sshd process and the connection it
accepted; sshd's own log line says more: who logged in, how (``publickey``, ``password``)
and with which key (``ED25519 SHA256:...``). That line is a ``system`` event
(``ssh-login``, forensix.imports.journal) logged by the same sshd process, so a session
takes the login whose pid is its leader's, or whose source address and port are the
connection's, logged while the session ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from forensix.errors import StoreError
from forensix.imports.journal import SSH_ACCEPTED
from forensix.store.base import Reader

__all__ = ["LOGIN_COLUMNS", "SshLogin", "enrich_sessions", "ssh_logins"]

# syslog's times have whole seconds (and the line is written after the accept): a login
# logged up to this long before the session's leader started still belongs to it
_SLACK_NS = 2 * 10**9

LOGIN_COLUMNS = (("login_user", pa.string()), ("login_method", pa.string()), ("key_fingerprint", pa.string()))

_SQL = """
SELECT ts, process_pid AS pid, source_ip, source_port, message FROM events
WHERE event_module = 'system' AND event_action = 'ssh-login' ORDER BY ts
"""


@dataclass(frozen=True)
class SshLogin:
    ts: int
    pid: int | None
    ip: str | None
    port: int | None
    user: str | None
    method: str | None
    key: str | None  # "ED25519 SHA256:..." for a public key, else None


def ssh_logins(reader: Reader) -> list[SshLogin]:
    """Every accepted ssh login in the host's logs, oldest first."""
    try:
        rows = reader.query(_SQL).to_pylist()
    except StoreError:
        return []  # a store from before event_module (format /13) has no host log lines
    out = []
    for r in rows:
        text = str(r["message"] or "")
        m = SSH_ACCEPTED.match(text.split(": ", 1)[1] if ": " in text else text)
        g = m.groupdict() if m else {}
        out.append(SshLogin(r["ts"], r["pid"], r["source_ip"], r["source_port"], g.get("user"), g.get("method"),
                            g.get("key")))
    return out


def _login_of(s: dict[str, Any], logins: list[SshLogin]) -> SshLogin | None:
    start, end = s["start_ts"], s["end_ts"]
    if start is None:
        return None
    for x in logins:
        if x.ts < start - _SLACK_NS or (end is not None and x.ts > end + _SLACK_NS):
            continue
        same_conn = s["source_ip"] is not None and (x.ip, x.port) == (s["source_ip"], s["source_port"])
        if same_conn or (x.pid is not None and x.pid == s["leader_pid"]):
            return x
    return None


def enrich_sessions(reader: Reader, table: pa.Table) -> pa.Table:
    """The sessions table with each ssh login's user, method and key fingerprint added, and
    its source address from the log where the recording had none or only guessed it."""
    logins = ssh_logins(reader)
    rows = table.to_pylist()
    for s in rows:
        x = _login_of(s, logins) if logins else None
        s["login_user"] = x.user if x else None
        s["login_method"] = x.method if x else None
        s["key_fingerprint"] = x.key if x else None
        # sshd's own line about its connection (same pid) beats the recorded accept when the
        # two differ, and fills in a source the recording could not attribute (None)
        if x is not None and x.ip is not None and (x.ip, x.port) != (s["source_ip"], s["source_port"]) \
                and (s["source_ip"] is None or x.pid == s["leader_pid"]):
            s["source_ip"], s["source_port"] = x.ip, x.port
            if s["kind"] == "sshd":
                s["description"] = f"ssh from {x.ip}:{x.port}"
    schema = table.schema
    for name, typ in LOGIN_COLUMNS:
        schema = schema.append(pa.field(name, typ))
    return pa.Table.from_pylist(rows, schema=schema)
