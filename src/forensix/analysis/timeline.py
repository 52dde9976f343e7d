"""The merged, time-ordered timeline, with one readable message per event.

How each kind of event reads is data (``MESSAGES``: action -> SQL expression over the
event's columns), so a new event kind needs one line here and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from forensix.analysis.noise import FILTER_NAMES, path_predicate
from forensix.analysis.processes import add_user_names
from forensix.store.base import Reader
from forensix.store.schema import EVENTS

__all__ = ["MESSAGES", "TimelineFilter", "message_sql", "selection_sql", "timeline"]

_PATH = "coalesce(file_path, file_path_raw, '?')"
_PEER = "coalesce(destination_ip, unix_path, '?') || coalesce(':' || destination_port::VARCHAR, '')"
_LOCAL = "coalesce(source_ip, unix_path, '?') || coalesce(':' || source_port::VARCHAR, '')"
_ARGS = "array_to_string(process_args, ' ')"

MESSAGES: dict[str, str] = {
    "fork": "'forked pid ' || coalesce(target_pid::VARCHAR, '?')",
    "exec": f"'exec ' || coalesce(process_executable, {_PATH}) || coalesce(' [' || {_ARGS} || ']', '')",
    "exit": "'exit code ' || coalesce(process_exit_code::VARCHAR, '?') || "
            "CASE WHEN coalesce(process_exit_signal, 0) <> 0 THEN ' signal ' || process_exit_signal ELSE '' END",
    "open": f"'open ' || {_PATH} || CASE WHEN (coalesce(file_flags, 0) & 3) <> 0 THEN ' for writing' "
            "ELSE '' END || CASE WHEN (coalesce(file_flags, 0) & 64) <> 0 THEN ' (O_CREAT)' ELSE '' END",
    "rename": f"'rename ' || {_PATH} || ' -> ' || coalesce(file_target_path, file_target_path_raw, '?')",
    "link": f"'link ' || {_PATH} || ' -> ' || coalesce(file_target_path, '?')",
    "symlink": f"'symlink ' || {_PATH} || ' -> ' || coalesce(file_target_path_raw, '?')",
    "chmod": f"'chmod ' || {_PATH} || ' mode ' || coalesce(printf('%o', file_mode), '?')",
    "chown": f"'chown ' || {_PATH} || ' to ' || coalesce(file_uid::VARCHAR, '?') || ':' || coalesce(file_gid::VARCHAR, '?')",
    "flow": "CASE WHEN coalesce(flow_write_bytes, 0) > 0 THEN 'wrote ' || flow_write_bytes || ' B' ELSE '' END"
            " || CASE WHEN coalesce(flow_write_bytes, 0) > 0 AND coalesce(flow_read_bytes, 0) > 0 THEN ', ' ELSE '' END"
            " || CASE WHEN coalesce(flow_read_bytes, 0) > 0 THEN 'read ' || flow_read_bytes || ' B' ELSE '' END"
            " || ' on ' || coalesce(file_path, coalesce(file_type, 'fd') || ':[' || file_inode || ']')",
    "connect": f"'connect ' || {_LOCAL} || ' -> ' || {_PEER} || coalesce(' ' || network_transport, '')",
    "accept": f"'accept ' || {_PEER} || ' on ' || {_LOCAL}",
    "bind": f"'bind ' || {_LOCAL}",
    "listen": f"'listen ' || {_LOCAL}",
    "kill": "'kill pid ' || coalesce(target_pid::VARCHAR, '?') || ' signal ' || coalesce(signal::VARCHAR, '?')",
    "ptrace": "'ptrace pid ' || coalesce(target_pid::VARCHAR, '?') || ' request ' || coalesce(a0::VARCHAR, '?')",
    "mmap": f"'mmap ' || {_PATH} || CASE WHEN (coalesce(mem_prot, 0) & 4) <> 0 THEN ' executable' ELSE '' END",
    "pipe": "'pipe [' || coalesce(file_inode::VARCHAR, '?') || ']'",
    "gap": "'LOST EVENTS: ' || coalesce(message, '')",
}
for _a in ("setuid", "setgid", "setreuid", "setresuid", "setregid", "setresgid", "setfsuid", "setfsgid",
           "capset"):
    MESSAGES[_a] = f"'{_a} -> uid ' || coalesce(user_id::VARCHAR, '?') || ' euid ' || coalesce(user_effective_id::VARCHAR, '?')"

_DEFAULT = ("event_action || coalesce(' ' || file_path, '') || coalesce(' -> ' || file_target_path, '')"
            " || coalesce(' ' || destination_ip, '') || coalesce(' ' || message, '')")


def message_sql() -> str:
    whens = " ".join(f"WHEN '{a}' THEN {expr}" for a, expr in MESSAGES.items())
    failed = ("CASE WHEN ret = -115 THEN ' (in progress)'"
              " WHEN coalesce(ret, 0) < 0 AND event_action <> 'flow' THEN ' (failed, errno ' || (-ret)::VARCHAR || ')'"
              " ELSE '' END")
    return f"(CASE event_action {whens} ELSE {_DEFAULT} END || {failed})"


_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def _columns_of(*sql: str) -> list[str]:
    """The events columns ``sql`` names (string literals, e.g. LIKE patterns, left out), in
    the schema's order: what a query over a narrow selection of the wide events view needs."""
    words = {w for text in sql for w in _WORD.findall(_LITERAL.sub("''", text))}
    return [c for c in EVENTS.names if c in words]


@dataclass
class TimelineFilter:
    """What to keep. Lists are OR-ed inside, fields AND-ed together."""

    since: int | None = None
    until: int | None = None
    entities: list[int] | None = None  # acting process in this set
    pid: int | None = None
    categories: list[str] | None = None
    actions: list[str] | None = None
    path: str | None = None  # substring of file_path or file_target_path
    ip: str | None = None
    noise: tuple[str, ...] = ()  # noise filters to apply (reads of hub files, ...)
    limit: int | None = None


def selection_sql(f: TimelineFilter) -> tuple[str, dict[str, object]]:
    """The filter's WHERE on who and what (processes, categories, actions, path, IP), without
    its time window and noise filters: the timeline's, and the UI's histogram's."""
    conds: list[str] = ["TRUE"]
    params: dict[str, object] = {}
    if f.entities is not None:
        from forensix.analysis.filehistory import sql_ints

        # a literal list: a joined one would read every row (and see timeline() below)
        conds.append(f"process_entity_id IN ({sql_ints(f.entities)})")
    if f.pid is not None:
        conds.append("process_pid = $pid")
        params["pid"] = f.pid
    if f.categories:
        conds.append("event_category IN (SELECT unnest($cats))")
        params["cats"] = f.categories
    if f.actions:
        conds.append("event_action IN (SELECT unnest($acts))")
        params["acts"] = f.actions
    if f.path:
        conds.append("(contains(file_path, $path) OR contains(file_target_path, $path))")
        params["path"] = f.path
    if f.ip:
        conds.append("(destination_ip = $ip OR source_ip = $ip)")
        params["ip"] = f.ip
    return " AND ".join(conds), params


def timeline(reader: Reader, f: TimelineFilter | None = None) -> pa.Table:
    f = f or TimelineFilter()
    where, params = selection_sql(f)
    conds: list[str] = [where]
    if f.since is not None:
        conds.append("ts >= $since")
        params["since"] = f.since
    if f.until is not None:
        conds.append("ts <= $until")
        params["until"] = f.until
    active = set(f.noise) & set(FILTER_NAMES)
    noise: list[str] = []
    if active:
        is_write = ("(event_action NOT IN ('open', 'flow', 'mmap', 'exec') OR (coalesce(file_flags, 0) & 579) <> 0"
                    " OR coalesce(flow_write_bytes, 0) > 0)")
        noise.append(f"NOT (NOT {is_write} AND {path_predicate('file_path', 'read', active)})")
        noise.append(f"NOT {path_predicate('file_path', 'write', active)}")
        if "pseudo" in active:
            noise.append("NOT (event_action = 'flow' AND file_type IS NOT DISTINCT FROM 'char')")
    order = "ts, cpu, seq"
    shown = "ts, event_category, event_action, process_entity_id, process_pid, process_name, user_id"
    # the host of each row: its inodes and uids mean something on that host only
    after = "file_path, destination_ip, destination_port"
    selective = f.entities is not None or f.pid is not None or (f.since is not None and f.until is not None)
    limit = f"LIMIT {int(f.limit)}" if f.limit else ""

    def kept(cols: str) -> str:
        """The rows kept (conditions, then noise), with ``cols`` of them. With a selective
        condition (a session, a process, a time window) those rows are taken first and the
        noise judged on them; inlined, the LIKE ladder may run on every row."""
        base = f"SELECT {cols} FROM events WHERE {' AND '.join(conds)}"
        if noise and selective and not bounded:
            return f"SELECT * FROM (WITH sel AS MATERIALIZED ({base}) SELECT * FROM sel) WHERE {' AND '.join(noise)}"
        return base + "".join(f" AND {n}" for n in noise)

    # The events view is wide, and a filter on a list of processes is not pushed into its
    # scan: every column asked for is decoded for every row before the rows are picked
    # (10^7 events: ~1 s for SELECT *, 0.06 s for the keys). So the time bounds of the rows
    # are found first on the keys alone, and the page is then read with only the columns
    # it renders, within those bounds (a range DuckDB does filter inside the scan). Without
    # noise filters the bounds are the page's own; with them, those of every row the
    # conditions keep (the noise only drops rows: judging it here would decode the paths).
    bounded = bool(selective or f.limit)
    if bounded:
        page = f"ORDER BY {order} {limit}" if limit and not noise else ""
        b = reader.query(f"SELECT min(ts) AS lo, max(ts) AS hi FROM (SELECT ts FROM events "
                         f"WHERE {' AND '.join(conds)} {page})", params).to_pylist()[0]
        conds += ["ts >= $fx_lo", "ts <= $fx_hi"]  # NULL bounds (no row): nothing, at once
        params |= {"fx_lo": b["lo"], "fx_hi": b["hi"]}
    cols = ", ".join(_columns_of(message_sql(), " ".join(noise), order, shown, after,
                                 "host_id, file_device, file_inode"))
    base = kept(cols)
    # Flow rows of descriptors a process inherited or dup'd carry the inode but no path and
    # no command name, and edges of /5 stores (kept only in flows) no uid: they are filled in from
    # the open that named the inode and from the process table, for the rows shown only.
    sql = f"""
    WITH t AS MATERIALIZED (
        SELECT * FROM ({base}) ORDER BY {order} {limit}),
    names AS (
        SELECT host_id, file_device, file_inode, any_value(file_path) AS known_path FROM events
        WHERE file_inode IN (SELECT file_inode FROM t WHERE file_path IS NULL AND event_action = 'flow')
          AND event_action = 'open' AND file_path IS NOT NULL GROUP BY 1, 2, 3),
    imgs AS (
        SELECT entity_id, image_ts, name, user_id FROM processes
        WHERE entity_id IN (SELECT process_entity_id FROM t WHERE process_name IS NULL OR user_id IS NULL)),
    -- the image the process ran at the row's time (a shell's write before it exec'd chmod
    -- is bash's, not chmod's: analysis.images); before any image, its first
    comms AS (
        SELECT t.ts, t.process_entity_id AS entity_id,
               coalesce(arg_max(i.name, i.image_ts) FILTER (WHERE i.image_ts <= t.ts), arg_min(i.name, i.image_ts)) AS comm,
               coalesce(arg_max(i.user_id, i.image_ts) FILTER (WHERE i.image_ts <= t.ts),
                        arg_min(i.user_id, i.image_ts)) AS uid
        FROM (SELECT DISTINCT ts, process_entity_id FROM t WHERE process_name IS NULL OR user_id IS NULL) t
        JOIN imgs i ON i.entity_id = t.process_entity_id GROUP BY 1, 2),
    filled AS (
        SELECT t.* REPLACE (coalesce(t.file_path, n.known_path) AS file_path,
                            coalesce(t.process_name, c.comm) AS process_name,
                            coalesce(t.user_id, c.uid) AS user_id)
        FROM t LEFT JOIN names n ON n.host_id = t.host_id AND n.file_device = t.file_device
                                    AND n.file_inode = t.file_inode
               LEFT JOIN comms c ON c.entity_id = t.process_entity_id AND c.ts = t.ts)
    SELECT {shown}, {message_sql()} AS message, {after}, host_id
    FROM filled ORDER BY {order}
    """
    # each uid named as its host had it then (analysis.users), beside the number
    t = add_user_names(reader.query(sql, params), None, reader, at="ts", entity="process_entity_id")
    return t.drop_columns(["host_id"])
