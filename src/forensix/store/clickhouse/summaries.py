"""Summary tables of the fleet questions, kept by ClickHouse itself at insert time.

A fleet question ("which hosts ran /tmp/.x/miner") over 10^8 events is a scan of the
events table, about a second on the 2-core test machine. Each question's answer is a
GROUP BY over few columns, so a materialized view (``CREATE MATERIALIZED VIEW ... TO``) on
every shard's local table folds each inserted block into a summary table of that
answer's partial aggregates (ClickHouse aggregate states: count, min/max time, the exact
set of processes, the first example), one row per answer key, host and UTC day. The
summary of a host lives on the host's shard, next to its events.

Exact, not approximate:

* every column an answer groups by is in the summary's sort key (a Nullable one as
  ``ifNull(c, d), isNull(c)``: old servers refuse Nullable keys, and NULL must stay apart
  from ``d``), so AggregatingMergeTree merges only rows of one answer row and day;
* partitions are the same UTC days as the source table's (``PARTITION BY day``, day as
  ``toYYYYMMDD`` of the same time column), so ``forensix retention`` drops a day from the
  events and from its summaries together (``ClickHouseStore.partitions`` lists both);
* the store's de-duplication leaves a re-sent frame out before the INSERT, so a view never
  sees it twice;
* a question with a window (``--from/--to``) takes whole UTC days inside the window from
  the summaries and scans the events only for the partial days at its ends.

Column types are the ones the view's SELECT yields (the tables are created ``AS SELECT ...
WHERE 0``): an aggregate state over a Nullable column is typed differently by 18.16
(``AggregateFunction(uniqExact, UInt64)``) and by current servers (``..., Nullable(UInt64)``),
and a view can only insert the state type its table has.

``0003_fleet_summaries`` creates the tables and views on every server and fills the
summaries from the rows already there: merges of the source tables are stopped, their
active parts listed, the views created, and exactly the listed parts summarized
(``_part IN``), so a row is counted by the backfill or by a view, not both. Two log hosts
starting at once: the first to create the parts table migrates the server, the other
waits until it is recorded (it must not insert before the views exist). An INSERT already
running at the instant a view is created (begun before it, committed after the parts
were listed) is the one thing the backfill can miss: the migration runs when a log host
starts, before it ingests, so only a log host of the previous version still writing at
that instant can cause it; stop those (or upgrade them first) when migrating a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from forensix.store.clickhouse.ddl import day_partition, local_name

__all__ = [
    "LOCK",
    "MIGRATION",
    "SOURCES",
    "SUMMARIES",
    "Summary",
    "backfill_sql",
    "lock_sql",
    "migration",
    "reset_sql",
    "restart_merges",
    "summary_tables",
    "tables_sql",
    "unlock_sql",
    "view_name",
]

MIGRATION = "0003_fleet_summaries"
SOURCES = ("events", "flows")  # the tables the views read: merges stopped while backfilling


@dataclass(frozen=True)
class Summary:
    name: str
    order: str  # the sort key: every column the answers group by, then day
    # view -> SELECT (``{src}``: its source table, the view's name up to "_"; ``{extra}``: AND ... or empty)
    selects: dict[str, str]


_EV_DAY = day_partition("events")
_FLOW_DAY = day_partition("flows")

SUMMARIES: dict[str, Summary] = {s.name: s for s in [
    Summary(
        "fleet_exec",
        "ifNull(executable, ''), isNull(executable), host_name, day, command_line, ifNull(sha256, ''), isNull(sha256)",
        {"events": f"""
SELECT process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       lower(process_hash_sha256) AS sha256, host_name, {_EV_DAY} AS day,
       countState() AS execs, minState(ts) AS min_ts, maxState(ts) AS max_ts,
       uniqExactState(process_entity_id) AS processes, argMinState(process_args, ts) AS example_args,
       argMinState(process_entity_id, ts) AS example_entity_id
FROM {{src}} WHERE event_action = 'exec'{{extra}}
GROUP BY executable, command_line, sha256, host_name, day"""}),
    Summary(
        "fleet_ip",
        "ip, host_name, action, ifNull(proc_name, ''), isNull(proc_name), ifNull(process_entity_id, 0), "
        "isNull(process_entity_id), ifNull(destination_ip, ''), isNull(destination_ip), "
        "ifNull(destination_port, 0), isNull(destination_port), day",
        # one row per address the event names (destination, source), once when both are the same
        {"events": f"""
SELECT arrayJoin(arrayDistinct(arrayFilter(x -> x != '', [ifNull(destination_ip, ''), ifNull(source_ip, '')]))) AS ip,
       host_name, CAST(event_action AS String) AS action, CAST(process_name AS Nullable(String)) AS proc_name,
       process_entity_id, destination_ip, destination_port, {_EV_DAY} AS day,
       countState() AS connections, minState(ts) AS min_ts, maxState(ts) AS max_ts
FROM {{src}} WHERE event_category = 'network' AND event_action IN ('connect', 'accept'){{extra}}
GROUP BY ip, host_name, action, proc_name, process_entity_id, destination_ip, destination_port, day"""}),
    Summary(
        "fleet_path",
        "key_path, key_is_target, host_name, action, ifNull(file_path, ''), isNull(file_path), day",
        # an event is kept under its file_path (key_is_target 0) and under its target (1),
        # by two views (the second reads only the few events with a target: renames, links);
        # the question counts a target row only when file_path does not match too
        {"events": f"""
SELECT ifNull(file_path, '') AS key_path, toUInt8(0) AS key_is_target, host_name,
       CAST(event_action AS String) AS action, file_path, {_EV_DAY} AS day, countState() AS times,
       uniqExactState(process_entity_id) AS processes, minState(ts) AS min_ts, maxState(ts) AS max_ts
FROM {{src}} WHERE file_path != ''{{extra}}
GROUP BY key_path, key_is_target, host_name, action, file_path, day""",
         "events_targets": f"""
SELECT ifNull(file_target_path, '') AS key_path, toUInt8(1) AS key_is_target, host_name,
       CAST(event_action AS String) AS action, file_path, {_EV_DAY} AS day, countState() AS times,
       uniqExactState(process_entity_id) AS processes, minState(ts) AS min_ts, maxState(ts) AS max_ts
FROM {{src}} WHERE file_target_path != ''{{extra}}
GROUP BY key_path, key_is_target, host_name, action, file_path, day""",
         # flow edges the events do not show (in_events = 0), as the question's UNION ALL has them
         "flows": f"""
SELECT ifNull(file_path, '') AS key_path, toUInt8(0) AS key_is_target, host_name,
       if(ifNull(write_bytes, 0) > 0, 'write', 'read') AS action, file_path, {_FLOW_DAY} AS day,
       countState() AS times, uniqExactState(toNullable(entity_id)) AS processes,
       minState(ifNull(last_ts, 0)) AS min_ts, maxState(ifNull(last_ts, 0)) AS max_ts
FROM {{src}} WHERE in_events = 0 AND file_path IS NOT NULL{{extra}}
GROUP BY key_path, key_is_target, host_name, action, file_path, day"""}),
    Summary(
        "fleet_hosts",
        "host_name, day",
        {"events": f"""
SELECT host_name, {_EV_DAY} AS day, countState() AS events, minState(ts) AS min_ts, maxState(ts) AS max_ts,
       argMaxState(CAST(host_id AS String), ts) AS latest_host_id
FROM {{src}}{{extra_where}}
GROUP BY host_name, day"""}),
]}


def _source(view: str) -> str:
    """The table a view reads: its key in ``Summary.selects`` up to the first "_"."""
    return view.split("_", 1)[0]


def _select(summary: Summary, view: str, src: str, extra: str = "") -> str:
    sql = summary.selects[view]
    return sql.replace("{src}", src).replace("{extra}", f" AND {extra}" if extra else "").replace(
        "{extra_where}", f" WHERE {extra}" if extra else "")


def view_name(summary: str, view: str, cluster: str | None) -> str:
    return f"{local_name(summary, cluster)}_from_{view}"


def summary_tables(cluster: str | None) -> list[str]:
    """The tables a server keeps summaries in (day partitions, dropped by retention)."""
    return [local_name(s, cluster) for s in SUMMARIES]


# rows per index mark: a summary row can hold thousands of processes (a uniqExact state),
# and a question reads whole granules of the rows its key range touches
GRANULE = 256
LOCK = "forensix_backfill_parts"  # the parts to backfill; its CREATE is the migration's lock on a server


def tables_sql(db: str, cluster: str | None) -> list[str]:
    """The summary tables on one server (and the Distributed tables over them)."""
    out: list[str] = []
    for s in SUMMARIES.values():
        first = next(iter(s.selects))
        body = _select(s, first, f"`{db}`.`{local_name(_source(first), cluster)}`", "0")
        out.append(f"CREATE TABLE IF NOT EXISTS `{db}`.`{local_name(s.name, cluster)}` "
                   f"ENGINE = AggregatingMergeTree() PARTITION BY day ORDER BY ({s.order}) "
                   f"SETTINGS index_granularity = {GRANULE} AS {body}")
        if cluster:
            out.append(f"CREATE TABLE IF NOT EXISTS `{db}`.`{s.name}` AS `{db}`.`{local_name(s.name, cluster)}` "
                       f"ENGINE = Distributed({cluster}, {db}, {local_name(s.name, cluster)}, cityHash64(host_name))")
    return out


def lock_sql(db: str) -> str:
    """Fails with "already exists" while another writer migrates this server."""
    return f"CREATE TABLE `{db}`.`{LOCK}` (table String, part String) ENGINE = Log"


def unlock_sql(db: str) -> str:
    return f"DROP TABLE IF EXISTS `{db}`.`{LOCK}`"


def reset_sql(db: str, cluster: str | None) -> list[str]:
    """What an attempt that failed half-way may have left (views, summarized rows): undone."""
    out = [f"DROP TABLE IF EXISTS `{db}`.`{view_name(s.name, view, cluster)}`"
           for s in SUMMARIES.values() for view in s.selects]
    return out + [f"TRUNCATE TABLE `{db}`.`{local_name(s.name, cluster)}`" for s in SUMMARIES.values()]


def backfill_sql(db: str, cluster: str | None) -> list[str]:
    """With the lock held: stop the source tables' merges, list their parts, create the
    views, summarize exactly the listed parts. ``restart_merges`` must follow, always."""
    sources = ", ".join(f"'{local_name(t, cluster)}'" for t in SOURCES)
    out = [f"SYSTEM STOP MERGES `{db}`.`{local_name(t, cluster)}`" for t in SOURCES]
    out.append(f"INSERT INTO `{db}`.`{LOCK}` SELECT table, name FROM system.parts "
               f"WHERE database = '{db}' AND table IN ({sources}) AND active")
    for s in SUMMARIES.values():
        for view in s.selects:
            src = f"`{db}`.`{local_name(_source(view), cluster)}`"
            out.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`{view_name(s.name, view, cluster)}` "
                       f"TO `{db}`.`{local_name(s.name, cluster)}` AS {_select(s, view, src)}")
    for s in SUMMARIES.values():
        for view in s.selects:
            table = local_name(_source(view), cluster)
            listed = f"_part IN (SELECT part FROM `{db}`.`{LOCK}` WHERE table = '{table}')"
            out.append(f"INSERT INTO `{db}`.`{local_name(s.name, cluster)}` "
                       f"{_select(s, view, f'`{db}`.`{table}`', listed)}")
    return out


def restart_merges(db: str, cluster: str | None) -> list[str]:
    return [f"SYSTEM START MERGES `{db}`.`{local_name(t, cluster)}`" for t in SOURCES]


def migration(db: str, cluster: str | None) -> list[str]:
    """``0003_fleet_summaries`` on one server as one list of statements (what the store runs,
    in this order; it also waits for the lock, undoes a failed attempt and restarts merges
    whatever happens: ``ClickHouseStore._summarize``)."""
    return (tables_sql(db, cluster) + [unlock_sql(db), lock_sql(db)] + backfill_sql(db, cluster)
            + restart_merges(db, cluster) + [unlock_sql(db)])
