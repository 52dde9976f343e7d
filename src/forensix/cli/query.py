"""``forensix ps`` and ``forensix events``: the recorded process table and events."""

from __future__ import annotations

from typing import Any

import click

from forensix.analysis.processes import OWN_SQL
from forensix.cli.options import emit, format_option, reader, store_option, time_option
from forensix.model.identity import parse_entity
from forensix.model.timefmt import now_ns

__all__ = ["COMMANDS"]

_PS_SQL = """
WITH img AS (
  SELECT *, row_number() OVER (PARTITION BY entity_id ORDER BY image_seq DESC, image_ts DESC) AS rn
  FROM processes WHERE image_ts <= $at
), ex AS (
  SELECT process_entity_id, min(ts) AS end_ts, any_value(process_exit_code) AS exit_code
  FROM events WHERE event_action = 'exit' GROUP BY 1
), own AS (""" + OWN_SQL + """)
SELECT img.host_name, img.pid, img.parent_pid AS ppid, img.user_id AS uid, img.start_ts,
       ex.end_ts, ex.exit_code, img.entity_id, img.parent_entity_id, img.name, img.executable, img.args,
       img.hash_sha256, own.forensix_role
FROM img LEFT JOIN ex ON ex.process_entity_id = img.entity_id LEFT JOIN own ON own.entity_id = img.entity_id
WHERE img.rn = 1 AND img.start_ts <= $at AND (ex.end_ts IS NULL OR ex.end_ts > $at OR $all)
ORDER BY img.start_ts, img.pid
"""


@click.command(epilog="""\b
Examples:
  forensix ps                         # processes alive at the end of the record
  forensix ps --at 2026-11-26T04:50:00Z
  forensix ps --all --format json     # every process ever seen, exited ones too""")
@store_option
@time_option("--at", "The moment to show (default: now)")
@click.option("--all", "show_all", is_flag=True, help="Include processes that had exited by then.")
@format_option()
def ps(store: str, at: int | None, show_all: bool, fmt: str) -> None:
    """The process table as recorded: alive at a moment, with their images."""
    from forensix.analysis.processes import add_user_names

    r = reader(store)
    # each uid named as its host's recorded user database had it when the image began
    emit(add_user_names(r.query(_PS_SQL, {"at": at or now_ns(), "all": show_all}), None, r, column="uid"), fmt)


_EVENT_COLUMNS = (
    "ts, host_name, event_category, event_action, event_outcome, process_pid, process_entity_id, process_name, "
    "user_id, file_path, file_target_path, destination_ip, destination_port, source_ip, source_port, "
    "target_pid, process_executable, process_args, process_exit_code, message"
)


@click.command(epilog="""\b
Examples:
  forensix events --action exec
  forensix events --pid 4242 --from -10m
  forensix events --path /etc/passwd --format json
  forensix events --hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  forensix events --entity 3f2a9c0d11e4b7a2 --all-columns --format json""")
@store_option
@click.option("--pid", type=int, help="Only this pid (every process that had it).")
@click.option("--entity", help="Only this process (entity id, 16 hex digits).")
@click.option("--action", multiple=True, help="Only these actions (exec, open, connect, ...).")
@click.option("--category", multiple=True, help="Only these categories (process, file, network, ...).")
@click.option("--path", help="Only events on this path (file or target); a trailing * matches a prefix.")
@click.option("--hash", "sha256", help="Only events of processes running this SHA-256 (process.hash.sha256).")
@time_option("--from", "Start of the window")
@time_option("--to", "End of the window")
@click.option("--limit", type=int, default=None, help="At most this many events.")
@click.option("--all-columns", is_flag=True, help="Every column of the store, not the usual selection.")
@format_option()
def events(
    store: str, pid: int | None, entity: str | None, action: tuple[str, ...], category: tuple[str, ...],
    path: str | None, sha256: str | None = None, from_: int | None = None, to: int | None = None, limit: int | None = None,
    all_columns: bool = False, fmt: str = "text", **kw: Any,
) -> None:
    """Recorded events, filtered, in time order."""
    where: list[str] = ["1=1"]
    params: dict[str, Any] = {}
    if pid is not None:
        where.append("process_pid = $pid")
        params["pid"] = pid
    if entity:
        where.append("process_entity_id = $eid")
        params["eid"] = parse_entity(entity)
    if action:
        where.append("event_action IN (SELECT unnest($actions))")
        params["actions"] = list(action)
    if category:
        where.append("event_category IN (SELECT unnest($cats))")
        params["cats"] = list(category)
    if path:
        if path.endswith("*"):
            where.append("(starts_with(file_path, $p) OR starts_with(file_target_path, $p))")
            params["p"] = path[:-1]
        else:
            where.append("(file_path = $p OR file_target_path = $p)")
            params["p"] = path
    if sha256:  # the exec carries the hash; the process's other events follow from its entity
        where.append("process_entity_id IN (SELECT process_entity_id FROM events WHERE process_hash_sha256 = $h)")
        params["h"] = sha256.lower()
    if from_ is not None:
        where.append("ts >= $from")
        params["from"] = from_
    if to is not None:
        where.append("ts <= $to")
        params["to"] = to
    cols = "*" if all_columns else _EVENT_COLUMNS
    sql = f"SELECT {cols} FROM events WHERE {' AND '.join(where)} ORDER BY ts, cpu, seq"
    if limit:
        sql += f" LIMIT {int(limit)}"
    emit(reader(store).query(sql, params), fmt)


# click names the --from option "from_"
events.params = [p for p in events.params]
for p in events.params:
    if p.name == "from":
        p.name = "from_"

COMMANDS = [ps, events]
