"""The questions a fleet asks, as ClickHouse SQL run in ClickHouse itself (every shard at once).

Each question is one SELECT over the Distributed tables, written for both ClickHouse 18.16
and current servers (no window functions, one JOIN at most, no Map/DateTime64): the test
suite runs every one on Debian's 18.16 cluster and on ``chdb``. They filter on the
columns that lead the sort key (host, time) or read few columns, so they scan at
ClickHouse's speed instead of pulling rows into Python.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from forensix.errors import UsageError
from forensix.store.clickhouse.summaries import row_state

__all__ = ["DAY_NS", "HOUR_NS", "QUESTIONS", "SUMMARIZED", "Question", "Summarized", "ask", "days_sql", "hours_sql", "like_prefix", "split_window",
           "summarized_sql"]

Native = Callable[[str, Mapping[str, Any] | None], pa.Table]
# the same SQL on every shard over its own tables (``{local}`` after a table's name), a result
# each; None when the store cannot (ClickHouseStore.native_each)
Each = Callable[[str, Mapping[str, Any] | None], "list[pa.Table] | None"]

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
       argMin(process_args, ts) AS example_args
FROM events
WHERE event_action = 'exec' AND process_executable LIKE {{value}} AND {_WINDOW}
GROUP BY host_name, executable
ORDER BY first_ts, host_name, executable"""),
    Question("cmdline", "Which hosts ran a command line containing this text.", f"""
SELECT host_name, process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       count() AS execs, min(ts) AS first_ts, max(ts) AS last_ts, argMin(process_entity_id, ts) AS example_entity_id
FROM events
WHERE event_action = 'exec' AND position(arrayStringConcat(process_args, ' '), {{value}}) > 0 AND {_WINDOW}
GROUP BY host_name, executable, command_line
ORDER BY first_ts, host_name, command_line"""),
    Question("sha256", "Which hosts ran a file with this SHA-256.", f"""
SELECT host_name, process_executable AS executable, count() AS execs, min(ts) AS first_ts, max(ts) AS last_ts,
       argMin(process_entity_id, ts) AS example_entity_id
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
    # every row of the events view, as on DuckDB: the events and the flow edges kept only in flows
    Question("hosts", "Every host in the store: events, first and last event, silent for how long (the longest silent first).", """
SELECT host_name, argMax(host_id, ts) AS host_id, count() AS events, min(ts) AS first_ts, max(ts) AS last_ts
FROM (
  SELECT host_name, CAST(host_id AS String) AS host_id, ts FROM events WHERE ts BETWEEN {since} AND {until}
  UNION ALL
  SELECT host_name, CAST(host_id AS String) AS host_id, ifNull(last_ts, 0) AS ts FROM flows
  WHERE in_events = 0 AND ifNull(last_ts, 0) BETWEEN {since} AND {until}
)
GROUP BY host_name
ORDER BY last_ts, host_name"""),
]}



@dataclass(frozen=True)
class Summarized:
    """A question answered from its summary table (store/clickhouse/summaries.py) for the
    whole UTC hours of the window, and from a scan for the partial hours at its ends. Both
    parts give the same columns in the same order (a UNION ALL matches by position): the
    answer's keys and aggregate states (``s_*``), which the outer query merges, so a group
    spread over both parts is one row."""

    outer: str  # {inner}: the UNION ALL of the parts
    summary: str  # {days}: the whole hours' condition on day and hour (``hours_sql``), or empty
    scans: tuple[tuple[str, str], ...]  # (SELECT with {window}, the time column the window is on)


_EXEC_STATES = "countState() AS s_n, minState(ts) AS s_first, maxState(ts) AS s_last"


def _path_states(entity: str, ts: str) -> str:
    return (f"{row_state('count', '')} AS s_n, {row_state('min', ts)} AS s_first, {row_state('max', ts)} AS s_last, "
            f"{row_state('uniqExact', entity)} AS s_procs")
_SUMMARY_STATES = "min_ts AS s_first, max_ts AS s_last"

SUMMARIZED: dict[str, Summarized] = {
    "exe": Summarized("""
SELECT host_name, executable, countMerge(s_n) AS execs, uniqExactMerge(s_procs) AS processes,
       minMerge(s_first) AS first_ts, maxMerge(s_last) AS last_ts, argMinMerge(s_args) AS example_args
FROM ({inner})
GROUP BY host_name, executable
ORDER BY first_ts, host_name, executable""", f"""
SELECT host_name, executable, execs AS s_n, {_SUMMARY_STATES}, processes AS s_procs, example_args AS s_args
FROM fleet_exec WHERE ifNull(executable, '') LIKE {{value}} AND executable IS NOT NULL{{days}}""", ((f"""
SELECT host_name, process_executable AS executable, {_EXEC_STATES}, uniqExactState(process_entity_id) AS s_procs,
       argMinState(process_args, ts) AS s_args
FROM events WHERE event_action = 'exec' AND process_executable LIKE {{value}} AND ({{window}})
GROUP BY host_name, executable""", "ts"),)),
    "cmdline": Summarized("""
SELECT host_name, executable, command_line, countMerge(s_n) AS execs, minMerge(s_first) AS first_ts,
       maxMerge(s_last) AS last_ts, argMinMerge(s_eid) AS example_entity_id
FROM ({inner})
GROUP BY host_name, executable, command_line
ORDER BY first_ts, host_name, command_line""", f"""
SELECT host_name, executable, command_line, execs AS s_n, {_SUMMARY_STATES}, example_entity_id AS s_eid
FROM fleet_exec WHERE position(command_line, {{value}}) > 0{{days}}""", ((f"""
SELECT host_name, process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       {_EXEC_STATES}, argMinState(process_entity_id, ts) AS s_eid
FROM events WHERE event_action = 'exec' AND position(command_line, {{value}}) > 0 AND ({{window}})
GROUP BY host_name, executable, command_line""", "ts"),)),
    "sha256": Summarized("""
SELECT host_name, executable, countMerge(s_n) AS execs, minMerge(s_first) AS first_ts,
       maxMerge(s_last) AS last_ts, argMinMerge(s_eid) AS example_entity_id
FROM ({inner})
GROUP BY host_name, executable
ORDER BY first_ts, host_name, executable""", f"""
SELECT host_name, executable, execs AS s_n, {_SUMMARY_STATES}, example_entity_id AS s_eid
FROM fleet_exec WHERE sha256 = lower({{value}}){{days}}""", ((f"""
SELECT host_name, process_executable AS executable, {_EXEC_STATES}, argMinState(process_entity_id, ts) AS s_eid
FROM events WHERE event_action = 'exec' AND lower({SHA256_COLUMN}) = lower({{value}}) AND ({{window}})
GROUP BY host_name, executable""", "ts"),)),
    "ip": Summarized("""
SELECT host_name, action, proc_name AS process_name, process_entity_id, destination_ip, destination_port,
       countMerge(s_n) AS connections, minMerge(s_first) AS first_ts, maxMerge(s_last) AS last_ts
FROM ({inner})
GROUP BY host_name, action, proc_name, process_entity_id, destination_ip, destination_port
ORDER BY first_ts, host_name, process_entity_id""", f"""
SELECT host_name, action, proc_name, process_entity_id, destination_ip, destination_port,
       connections AS s_n, {_SUMMARY_STATES}
FROM fleet_ip WHERE ip = {{value}}{{days}}""", ((f"""
SELECT host_name, CAST(event_action AS String) AS action, CAST(process_name AS Nullable(String)) AS proc_name,
       process_entity_id, destination_ip, destination_port, {_EXEC_STATES}
FROM events
WHERE event_category = 'network' AND event_action IN ('connect', 'accept')
  AND (destination_ip = {{value}} OR source_ip = {{value}}) AND ({{window}})
GROUP BY host_name, action, proc_name, process_entity_id, destination_ip, destination_port""", "ts"),)),
    # a row kept under its target path counts only when its own path does not match too
    # (the scan's `file_path LIKE v OR file_target_path LIKE v` counts an event once)
    "path": Summarized("""
SELECT host_name, action, file_path, countMerge(s_n) AS times, uniqExactMerge(s_procs) AS processes,
       minMerge(s_first) AS first_ts, maxMerge(s_last) AS last_ts
FROM ({inner})
GROUP BY host_name, action, file_path
ORDER BY first_ts, host_name, action, file_path""", f"""
SELECT host_name, action, file_path, times AS s_n, {_SUMMARY_STATES}, processes AS s_procs
FROM fleet_path
WHERE key_path LIKE {{value}} AND (key_is_target = 0 OR ifNull(file_path LIKE {{value}}, 0) = 0){{days}}""", (
        # a state per row, as fleet_path keeps them (summaries.row_state: the same types)
        (f"""
SELECT host_name, CAST(event_action AS String) AS action, file_path, {_path_states("process_entity_id", "ts")}
FROM events WHERE (file_path LIKE {{value}} OR file_target_path LIKE {{value}}) AND ({{window}})""", "ts"),
        (f"""
SELECT host_name, if(ifNull(write_bytes, 0) > 0, 'write', 'read') AS action, file_path,
       {_path_states("toNullable(entity_id)", "ifNull(last_ts, 0)")}
FROM flows WHERE file_path LIKE {{value}} AND in_events = 0 AND ({{window}})""", "ifNull(last_ts, 0)"))),
    "hosts": Summarized("""
SELECT host_name, argMaxMerge(s_hid) AS host_id, countMerge(s_n) AS events, minMerge(s_first) AS first_ts,
       maxMerge(s_last) AS last_ts
FROM ({inner})
GROUP BY host_name
ORDER BY last_ts, host_name""", f"""
SELECT host_name, latest_host_id AS s_hid, events AS s_n, {_SUMMARY_STATES}
FROM fleet_hosts WHERE 1{{days}}""", ((f"""
SELECT host_name, argMaxState(CAST(host_id AS String), ts) AS s_hid, {_EXEC_STATES}
FROM events WHERE ({{window}})
GROUP BY host_name""", "ts"), ("""
SELECT host_name, argMaxState(CAST(host_id AS String), ifNull(last_ts, 0)) AS s_hid, countState() AS s_n,
       minState(ifNull(last_ts, 0)) AS s_first, maxState(ifNull(last_ts, 0)) AS s_last
FROM flows WHERE in_events = 0 AND ({window})
GROUP BY host_name""", "ifNull(last_ts, 0)"))),
}

HOUR_NS = 3_600 * 10**9
_OPEN = 2**63 - 1


def _yyyymmddhh(ns: int) -> int:
    return int(time.strftime("%Y%m%d%H", time.gmtime(ns // 10**9)))


def split_window(since: int | None, until: int | None, unit: int = HOUR_NS
                 ) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """[since, until] (UTC ns, None: open) as the whole UTC hours (``unit``) inside it,
    ``[lo, hi)`` or None, and the ranges ``[a, b]`` left over at its ends: together each
    instant once."""
    lo_open, hi_open = since is None or since <= 0, until is None or until >= _OPEN
    a, b = (0 if lo_open else int(since or 0)), (_OPEN if hi_open else int(until or 0))
    lo = 0 if lo_open else -(-a // unit) * unit  # the first whole hour's start
    hi = _OPEN if hi_open else (b + 1) // unit * unit  # the end of the last whole hour
    if lo >= hi:
        return None, [(a, b)]
    ranges = ([(a, lo - 1)] if a < lo else []) + ([(hi, b)] if not hi_open and hi <= b else [])
    return (lo, hi), ranges


def hours_sql(lo: int, hi: int) -> str:
    """The condition on a summary's (day, hour) for the whole hours [lo, hi) ("" for all):
    the days prune partitions, day * 100 + hour cuts the first and last day."""
    if (lo, hi) == (0, _OPEN):
        return ""
    first, last = _yyyymmddhh(lo), (9999123123 if hi == _OPEN else _yyyymmddhh(hi - 1))
    return (f" AND day BETWEEN {first // 100} AND {last // 100}"
            f" AND toUInt64(day) * 100 + hour BETWEEN {first} AND {last}")


DAY_NS = 24 * HOUR_NS
# the path question's whole UTC days, from 0006's fleet_files (a row per path, host, action,
# flags and day once merged, where fleet_path has one per hour): the processes' ids made the
# uniqExact state fleet_path keeps (0 is "no process", which fleet_path leaves out)
_PATH_DAYS = f"""
SELECT host_name, action, file_path, times AS s_n, {_SUMMARY_STATES},
       arrayReduce('uniqExactState', arrayFilter(x -> x != 0, finalizeAggregation(procs))) AS s_procs
FROM fleet_files
WHERE key_path LIKE {{value}} AND (key_is_target = 0 OR ifNull(file_path LIKE {{value}}, 0) = 0){{days}}"""

# the same when the window is whole days: the processes' id sets merged as they are (a state
# per row made of each would cost more than the rest of the question)
_PATH_DAYS_ONLY = """
SELECT host_name, action, file_path, countMerge(times) AS times,
       toUInt64(length(arrayFilter(x -> x != 0, groupUniqArrayMerge(procs)))) AS processes,
       minMerge(min_ts) AS first_ts, maxMerge(max_ts) AS last_ts
FROM fleet_files
WHERE key_path LIKE {value} AND (key_is_target = 0 OR ifNull(file_path LIKE {value}, 0) = 0){days}
GROUP BY host_name, action, file_path
ORDER BY first_ts, host_name, action, file_path"""


def days_sql(lo: int, hi: int) -> str:
    """The condition on a summary's day for the whole UTC days [lo, hi) ("" for all)."""
    if (lo, hi) == (0, _OPEN):
        return ""
    first, last = _yyyymmddhh(lo) // 100, (99991231 if hi == _OPEN else _yyyymmddhh(hi - 1) // 100)
    return f" AND day BETWEEN {first} AND {last}"


def summarized_sql(name: str, since: int | None, until: int | None, files: bool = False) -> str:
    """The SQL of question ``name`` over its summary: whole UTC hours of [since, until] from
    the summary table, the partial hours at its ends scanned ({value} left to fill). With
    ``files`` (0006's tables there), the path question takes the whole UTC days from
    ``fleet_files`` first, then whole hours, then the rest scanned."""
    q = SUMMARIZED[name]
    parts: list[str] = []
    spans: Sequence[tuple[int | None, int | None]] = [(since, until)]
    if files and name == "path":
        days, spans = split_window(since, until, DAY_NS)
        if days is not None and not spans:  # whole days only: fleet_files' own states merged, no UNION
            return _PATH_DAYS_ONLY.replace("{days}", days_sql(*days))
        if days is not None:
            parts.append(_PATH_DAYS.replace("{days}", days_sql(*days)))
    ranges: list[tuple[int, int]] = []
    for a, b in spans:
        hours, rest = split_window(a, b)
        if hours is not None:
            parts.append(q.summary.replace("{days}", hours_sql(*hours)))
        ranges += rest
    for scan, col in q.scans if ranges else ():
        window = " OR ".join(f"{col} BETWEEN {a} AND {b}" for a, b in ranges)
        parts.append(scan.replace("{window}", window))
    return q.outer.replace("{inner}", "\nUNION ALL\n".join(parts))


_PATTERN = frozenset({"exe", "path"})
_TABLES = re.compile(r"\bFROM (events|flows|fleet_exec|fleet_ip|fleet_path|fleet_hosts|fleet_files)\b")
_ORDER = re.compile(r"ORDER BY ([\w, ]+)\s*$")


def _on_each(each: Each, sql: str, params: Mapping[str, Any]) -> pa.Table | None:
    """The question on every shard at once over its own tables, the answers put together in
    the question's order. Every question groups by host_name and a host's rows (events,
    flows, summaries) all live on its shard, so each shard's answer is final for its hosts:
    nothing is merged across shards, no aggregate state leaves a shard (through the
    Distributed tables, the shards send the matching rows' states and one server merges
    them all). The order is the question's ORDER BY, done again over the whole."""
    parts = each(_TABLES.sub(lambda m: f"FROM {m[1]}{{local}}", sql), params)
    if parts is None:
        return None
    m = _ORDER.search(sql)
    assert m is not None, "every question ends with its ORDER BY"
    whole = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    return whole.sort_by([(c.strip(), "ascending") for c in m[1].split(",")])


def ask(native: Native, name: str, value: str = "", since: int | None = None, until: int | None = None, *,
        summarized: bool = False, now_ns: int | None = None, silence_s: float | None = None,
        each: Each | None = None, files: bool = True) -> pa.Table:
    """Answer fleet question ``name`` about ``value`` with ``native`` (ClickHouse SQL -> Arrow):
    from the summary tables when the store has them (``summarized``), else by a scan of the
    events. The answer is the same. With ``each`` (``ClickHouseStore.native_each``) every
    shard answers for its own hosts at once (``_on_each``). ``hosts`` adds ``quiet_s``, the
    seconds since each host's last event as of ``now_ns``, and ``silent`` (quiet longer than
    ``silence_s``)."""
    q = QUESTIONS.get(name)
    if q is None:
        raise UsageError(f"no fleet question {name!r}", f"one of {', '.join(QUESTIONS)}")
    if name == "sha256" and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise UsageError(f"{value!r} is not a SHA-256", "64 hex digits")
    v = like_prefix(value) if name in _PATTERN else value
    sql = summarized_sql(name, since, until, files) if summarized else q.sql
    params = q.params(v, since, until)
    table = _on_each(each, sql, params) if each is not None else None
    if table is None:
        table = native(sql, params)
    if name == "hosts" and now_ns is not None:
        # as `forensix hosts` names them: quiet_s, silent
        quiet = pc.round(pc.divide(pc.subtract(pa.scalar(now_ns, pa.int64()), table["last_ts"].cast(
            pa.int64())).cast(pa.float64()), 1e9), 1)
        table = table.append_column("quiet_s", quiet)
        if silence_s is not None:
            table = table.append_column("silent", pc.greater(quiet, pa.scalar(float(silence_s))))
    return table
