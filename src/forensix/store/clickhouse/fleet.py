"""The questions a fleet asks, as ClickHouse SQL run in ClickHouse itself (every shard at once).

Each question is one SELECT over the Distributed tables, written for both ClickHouse 18.16
and current servers (no window functions, one JOIN at most, no Map/DateTime64): the test
suite runs every one on Debian's 18.16 cluster and on ``chdb``. They filter on the
columns that lead the sort key (host, time) or read few columns, so they scan at
ClickHouse's speed instead of pulling rows into Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from forensix.errors import UsageError

__all__ = ["QUESTIONS", "Question", "ask", "like_prefix"]

Native = Callable[[str, Mapping[str, Any] | None], pa.Table]

# the column an exec event carries its executable's SHA-256 in (process.hash.sha256, filled by forensix.artifacts)
SHA256_COLUMN = "process_hash_sha256"


def like_prefix(text: str) -> str:
    """A LIKE pattern: ``text`` literally, or everything starting with it when it ends in ``*``."""
    lit = text.removesuffix("*").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return lit + "%" if text.endswith("*") else lit


@dataclass(frozen=True)
class Question:
    name: str
    help: str
    sql: str  # {value} (and {since}, {until}: UTC ns) are placeholders for literals

    def params(self, value: str, since: int | None, until: int | None) -> dict[str, Any]:
        return {"value": value, "since": since if since is not None else 0,
                "until": until if until is not None else 2**63 - 1}


_WINDOW = "ts BETWEEN {since} AND {until}"

QUESTIONS: dict[str, Question] = {q.name: q for q in [
    Question("exe", "Which hosts ran this executable (a path; PATH* for a prefix).", f"""
SELECT host_name, process_executable AS executable, count() AS execs,
       uniqExact(process_entity_id) AS processes, min(ts) AS first_ts, max(ts) AS last_ts,
       any(process_args) AS example_args
FROM events
WHERE event_action = 'exec' AND process_executable LIKE {{value}} AND {_WINDOW}
GROUP BY host_name, executable
ORDER BY first_ts, host_name, executable"""),
    Question("cmdline", "Which hosts ran a command line containing this text.", f"""
SELECT host_name, process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       count() AS execs, min(ts) AS first_ts, max(ts) AS last_ts, any(process_entity_id) AS example_entity_id
FROM events
WHERE event_action = 'exec' AND position(arrayStringConcat(process_args, ' '), {{value}}) > 0 AND {_WINDOW}
GROUP BY host_name, executable, command_line
ORDER BY first_ts, host_name, command_line"""),
    Question("sha256", "Which hosts ran a file with this SHA-256.", f"""
SELECT host_name, process_executable AS executable, count() AS execs, min(ts) AS first_ts, max(ts) AS last_ts,
       any(process_entity_id) AS example_entity_id
FROM events
WHERE event_action = 'exec' AND lower({SHA256_COLUMN}) = lower({{value}}) AND {_WINDOW}
GROUP BY host_name, executable
ORDER BY first_ts, host_name, executable"""),
    Question("ip", "Who connected to (or accepted from) this IP address, on every host.", f"""
SELECT host_name, event_action AS action, process_name, process_entity_id,
       destination_ip, destination_port, count() AS connections, min(ts) AS first_ts, max(ts) AS last_ts
FROM events
WHERE event_category = 'network' AND event_action IN ('connect', 'accept')
  AND (destination_ip = {{value}} OR source_ip = {{value}}) AND {_WINDOW}
GROUP BY host_name, action, process_name, process_entity_id, destination_ip, destination_port
ORDER BY first_ts, host_name, process_entity_id"""),
    Question("path", "Every host and process that touched this path (PATH* for a prefix).", f"""
SELECT host_name, action, file_path, count() AS times, uniqExact(process_entity_id) AS processes,
       min(ts) AS first_ts, max(ts) AS last_ts
FROM (
  SELECT host_name, CAST(event_action AS String) AS action, file_path, process_entity_id, ts FROM events
  WHERE (file_path LIKE {{value}} OR file_target_path LIKE {{value}}) AND {_WINDOW}
  UNION ALL
  SELECT host_name, if(write_bytes > 0, 'write', 'read') AS action, file_path,
         entity_id AS process_entity_id, ifNull(last_ts, 0) AS ts FROM flows
  WHERE file_path LIKE {{value}} AND (in_events = 0)
    AND ifNull(last_ts, 0) BETWEEN {{since}} AND {{until}}
)
GROUP BY host_name, action, file_path
ORDER BY first_ts, host_name, action, file_path"""),
    Question("hosts", "Every host in the store: events, first and last event (a silent host shows here).", f"""
SELECT host_name, any(host_id) AS host_id, count() AS events, min(ts) AS first_ts, max(ts) AS last_ts
FROM events WHERE {_WINDOW}
GROUP BY host_name
ORDER BY host_name"""),
]}

_PATTERN = frozenset({"exe", "path"})


def ask(native: Native, name: str, value: str = "", since: int | None = None, until: int | None = None) -> pa.Table:
    """Answer fleet question ``name`` about ``value`` with ``native`` (ClickHouse SQL -> Arrow)."""
    q = QUESTIONS.get(name)
    if q is None:
        raise UsageError(f"no fleet question {name!r}", f"one of {', '.join(QUESTIONS)}")
    if name == "sha256" and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise UsageError(f"{value!r} is not a SHA-256", "64 hex digits")
    v = like_prefix(value) if name in _PATTERN else value
    return native(q.sql, q.params(v, since, until))
