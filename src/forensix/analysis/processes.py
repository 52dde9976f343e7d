"""Processes as they stood at a time, and the process tree.

The store keeps one ``processes`` row per image (fork = image 0, each exec the next); the
image that counts at time T is the last one that began at or before T. End times and exit
codes come from ``exit`` events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pyarrow as pa

from forensix.analysis.users import RECORDED, entity_hosts, store_book
from forensix.store.base import Reader

__all__ = [
    "ENDS_SQL",
    "FOREVER",
    "UserNames",
    "add_user_names",
    "images_sql",
    "process_exists",
    "tree",
]

FOREVER = 2**62
UserNames = Callable[[Iterable[int]], Mapping[int, str]]


def add_user_names(table: pa.Table, names: UserNames | None, reader: Reader | None = None, *,
                   column: str = "user_id", at: str = "start_ts", entity: str = "entity_id",
                   name: str = "user_name") -> pa.Table:
    """Insert ``user_name`` and ``user_name_source`` after ``column``: each uid named as its
    host's recorded user database had it at the row's time ``at`` (``analysis.users``).

    ``names`` (tests, or a caller that knows better) names every uid instead, for every host.
    ``name``: the new columns' name (``NAME`` and ``NAME_source``), to name a second uid column."""
    if column not in table.column_names:
        return table
    uids = table.column(column).to_pylist()
    if names is not None:
        lookup = names([u for u in uids if u is not None])
        found = [lookup.get(u) if u is not None else None for u in uids]
        sources = [RECORDED if n is not None else None for n in found]
    elif reader is None:
        raise TypeError("add_user_names needs the store (reader) or the names")
    else:
        hosts = (table.column("host_id").to_pylist() if "host_id" in table.column_names
                 else entity_hosts(reader, table.column(entity).to_pylist()))
        when = table.column(at).to_pylist() if at in table.column_names else [None] * len(uids)
        found, sources = store_book(reader, {h for h in hosts if h}).names(hosts, uids, when)
    i = table.column_names.index(column) + 1
    table = table.add_column(i, name, pa.array(found, pa.string()))
    return table.add_column(i + 1, f"{name}_source", pa.array(sources, pa.string()))


def images_sql(at_param: str = "$at") -> str:
    """The image of every process current at ``at`` (its last image begun by then)."""
    # a join on the latest image number: several times faster than a window over wide rows
    return f"""
        SELECT p.* FROM processes p JOIN (
            SELECT entity_id, max(image_seq) AS last_seq FROM processes WHERE image_ts <= {at_param}
            GROUP BY entity_id) m ON p.entity_id = m.entity_id AND p.image_seq = m.last_seq
    """


ENDS_SQL = """
    SELECT process_entity_id AS entity_id, min(ts) AS end_ts,
           arg_min(process_exit_code, ts) AS exit_code, arg_min(process_exit_signal, ts) AS exit_signal
    FROM events WHERE event_action = 'exit' AND process_entity_id IS NOT NULL GROUP BY 1
"""


# forensix's own processes, named by the agent events the recorder writes for each (its own
# start, each store keeper it starts, its orphan watch): the process of that pid on that host
# that was alive when the event was written. They are recorded like any other process (an
# intruder may pose as one: the agent event is what tells them apart), and labelled.
OWN_ROLES = {"start": "forensix recorder", "store-keeper": "forensix store keeper",
             "orphan-watch": "forensix orphan watch"}
_ROLE_CASE = " ".join(f"WHEN '{a}' THEN '{r}'" for a, r in OWN_ROLES.items())
_ROLE_ACTIONS = ", ".join(f"'{a}'" for a in OWN_ROLES)
OWN_SQL = f"""
    SELECT DISTINCT p.entity_id, CASE a.event_action {_ROLE_CASE} END AS forensix_role
    FROM (SELECT host_id, process_pid, ts, event_action FROM events
          WHERE event_category = 'agent' AND event_action IN ({_ROLE_ACTIONS}) AND process_pid IS NOT NULL) a
    JOIN (SELECT host_id, entity_id, pid, min(start_ts) AS start_ts FROM processes GROUP BY ALL) p
      ON p.host_id = a.host_id AND p.pid = a.process_pid AND p.start_ts <= a.ts
    LEFT JOIN (SELECT process_entity_id, min(ts) AS end_ts FROM events
               WHERE event_action = 'exit' AND process_entity_id IS NOT NULL GROUP BY 1) x
      ON x.process_entity_id = p.entity_id
    WHERE x.end_ts IS NULL OR x.end_ts >= a.ts
"""


def process_exists(reader: Reader, entity: int) -> bool:
    t = reader.query("SELECT count(*) AS n FROM processes WHERE entity_id = $e", {"e": entity})
    return bool(t.column("n")[0].as_py())


def tree(reader: Reader, *, at: int | None = None, root: int | None = None,
         members: list[int] | None = None, alive_only: bool = False,
         names: UserNames | None = None) -> pa.Table:
    """The process tree, depth-first, parents before children, siblings by start time.

    ``at``: processes started by then, each with the image it had then (exited ones
    included, with their end; ``alive_only`` drops those that had ended). ``root``: only
    the subtree of that entity. ``members``: only these entities (a session).
    """
    at_ns = FOREVER if at is None else at
    conds = ["n.start_ts <= $at"]
    params: dict[str, object] = {"at": at_ns}
    if alive_only:
        conds.append("(e.end_ts IS NULL OR e.end_ts > $at)")
    if members is not None:
        ints = ", ".join(str(int(m)) for m in members) or "0"
        conds.append(f"n.entity_id IN ({ints})")
    root_cond = "entity_id = $root" if root is not None else (
        "parent_entity_id IS NULL OR parent_entity_id NOT IN (SELECT entity_id FROM nodes)")
    if root is not None:
        params["root"] = root
    sql = f"""
    WITH RECURSIVE
    ends AS ({ENDS_SQL}),
    own AS ({OWN_SQL}),
    nodes AS (
        SELECT n.entity_id, n.pid, n.parent_entity_id, n.user_id, n.user_effective_id,
               n.user_audit_id, n.session_id, n.tty, n.start_ts, e.end_ts, e.exit_code,
               n.executable, n.args, n.working_directory, o.forensix_role,
               row_number() OVER (ORDER BY n.start_ts, n.entity_id) AS rn
        FROM ({images_sql()}) n LEFT JOIN ends e USING (entity_id) LEFT JOIN own o USING (entity_id)
        WHERE {' AND '.join(conds)}
    ),
    t(entity_id, depth, path) AS (
        SELECT entity_id, 0, [rn] FROM nodes WHERE {root_cond}
        UNION ALL
        SELECT n.entity_id, t.depth + 1, list_append(t.path, n.rn)
        FROM t JOIN nodes n ON n.parent_entity_id = t.entity_id
        WHERE t.depth < 512
    )
    SELECT t.depth::INTEGER AS depth, n.entity_id, n.pid, n.parent_entity_id, n.user_id,
           n.user_effective_id, n.user_audit_id, n.session_id, n.tty, n.start_ts, n.end_ts,
           n.exit_code, n.executable, n.args, n.forensix_role
    FROM t JOIN nodes n USING (entity_id)
    ORDER BY t.path
    """
    return add_user_names(reader.query(sql, params), names, reader)
