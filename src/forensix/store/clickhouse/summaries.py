"""Summary tables of the fleet questions, kept by ClickHouse itself at insert time.

A fleet question ("which hosts ran /tmp/.x/miner") over 10^8 events is a scan of the
events table, about a second on the 2-core test machine. Each question's answer is a
GROUP BY over few columns, so a materialized view (``CREATE MATERIALIZED VIEW ... TO``) on
every shard's local table folds each inserted block into a summary table of that
answer's partial aggregates (ClickHouse aggregate states: count, min/max time, the exact
set of processes, the first example), keyed by answer, host, UTC day and UTC hour. The
summary of a host lives on the host's shard, next to its events.

Exact, not approximate:

* every column an answer groups by is in the summary's sort key (a Nullable one as
  ``ifNull(c, d), isNull(c)``: old servers refuse Nullable keys, and NULL must stay apart
  from ``d``), so AggregatingMergeTree merges only rows of one answer row and hour;
* partitions are the same UTC days as the source table's (``PARTITION BY day``, day as
  ``toYYYYMMDD`` of the same time column), so ``forensix retention`` drops a day from the
  events and from its summaries together (``ClickHouseStore.partitions`` lists both);
* the store's de-duplication leaves a re-sent frame out before the INSERT, so a view never
  sees it twice;
* a question with a window (``--from/--to``) takes whole UTC hours inside the window from
  the summaries and scans the events only for the partial hours at its ends.

Column types are the ones the view's SELECT yields (the tables are created ``AS SELECT ...
WHERE 0``): an aggregate state over a Nullable column is typed differently by 18.16
(``AggregateFunction(uniqExact, UInt64)``) and by current servers (``..., Nullable(UInt64)``),
and a view can only insert the state type its table has.

``0003_fleet_summaries`` (by day) and ``0005_hourly_summaries`` (this layout; 0003's
dropped) create the tables and views on every server and fill the summaries from the rows
already there: merges of the source tables are stopped, their active parts listed, the
views created, and exactly the listed parts summarized (``_part IN``), so a row is counted
by the backfill or by a view, not both. It runs with the server's migration lock held (the
parts table is the lock: ``ClickHouseStore._migrate`` takes it for every migration): a log
host starting at the same time waits, and must not insert before the views exist. An INSERT already
running at the instant a view is created (begun before it, committed after the parts
were listed) is the one thing the backfill can miss: the migration runs when a log host
starts, before it ingests, so only a log host of the previous version still writing at
that instant can cause it; stop those (or upgrade them first) when migrating a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from forensix.store.clickhouse.ddl import day_partition, local_name

__all__ = [
    "HOURLY",
    "KINDS",
    "KIND_SUMMARIES",
    "LOCK",
    "MIGRATION",
    "PATHS",
    "PATH_SUMMARIES",
    "SOURCES",
    "SUMMARIES",
    "SUMMARIZING",
    "UNKEYED",
    "UNKEYED_SUMMARIES",
    "Summary",
    "backfill_sql",
    "built_by",
    "lock_sql",
    "migration",
    "reset_sql",
    "restart_merges",
    "row_state",
    "summary_tables",
    "tables_sql",
    "unlock_sql",
    "view_name",
]

MIGRATION = "0003_fleet_summaries"
# the summaries again, keyed by UTC hour as well, fleet_path kept per event, fleet_hosts
# counting flow edges as the events view does: 0003's tables and views are dropped and
# everything re-summarized (``migration``)
HOURLY = "0005_hourly_summaries"
# the paths again, without the hour, with the open's flags and mode and the acting processes
# (``fleet_files``), and the distinct paths alone, their hosts as a set (``fleet_names``): what
# a hunt's path rules and a path prefix question read instead of a row per event
PATHS = "0006_path_names"
PATH_SUMMARIES = ("fleet_files", "fleet_names")  # 0006's tables: all it builds on a store with 0005's
# the kinds of event each host had each day, and the execs fleet_exec does not describe whole:
# what a rule on a rare kind of event, or on an exec's path or message, narrows by
KINDS = "0007_event_kinds"
KIND_SUMMARIES = ("fleet_kinds", "fleet_exec_other")  # 0007's tables: all it builds on a store with 0006's
# the hours with an exec whose finding fleet_exec cannot count by itself (no cpu or seq, no
# entity id, a row standing for several events): what a hunt needs to count a rule's findings
# from fleet_exec instead of scanning its matches (rules/summed.py)
UNKEYED = "0008_exec_unkeyed"
UNKEYED_SUMMARIES = ("fleet_exec_unkeyed",)  # 0008's table: all it builds on a store with 0007's
SUMMARIZING = (MIGRATION, HOURLY, PATHS, KINDS, UNKEYED)  # the migrations that (re)build the summaries: run as one
SOURCES = ("events", "flows")  # the tables the views read: merges stopped while backfilling


@dataclass(frozen=True)
class Summary:
    name: str
    order: str  # the sort key: every column the answers group by, then day and hour
    # view -> SELECT (``{src}``: its source table, the view's name up to "_"; ``{extra}``: AND ... or empty)
    selects: dict[str, str]
    engine: str = "AggregatingMergeTree()"


def _hour(table: str) -> str:
    """The UTC hour (0-23) of the table's time column, inside its day partition."""
    return day_partition(table).replace("toYYYYMMDD(", "toHour(", 1)


_EV_DAY, _EV_HOUR = day_partition("events"), _hour("events")
_FLOW_DAY, _FLOW_HOUR = day_partition("flows"), _hour("flows")


def row_state(kind: str, arg: str) -> str:
    """One row's aggregate state, without a GROUP BY (``arrayReduce`` makes a state of an
    array's values): ``count`` (arg ignored), ``uniqExact`` of a Nullable UInt64 (NULL is
    none), ``min``/``max``. The types are the same on 18.16 and current servers (a NULL is
    an empty array, not a Nullable argument), in the views and in ``fleet.py``'s scans."""
    if kind == "count":  # materialize: a constant state here and a column in another UNION ALL part clash
        return "arrayReduce('countState', [materialize(toUInt8(1))])"
    if kind == "uniqExact":
        return f"arrayReduce('uniqExactState', if(isNull({arg}), emptyArrayUInt64(), [assumeNotNull({arg})]))"
    return f"arrayReduce('{kind}State', [{arg}])"


def _row_states(entity: str, ts: str) -> str:
    """fleet_path's states, one row per event. Grouping on insert cost the shards ~2.5 µs per
    event when paths are distinct (18.16's aggregator on a key of several strings, then a
    block of as many rows); a row per event costs a fraction of it, and the table's
    background merges fold equal keys."""
    return (f"{row_state('count', '')} AS times, {row_state('uniqExact', entity)} AS processes, "
            f"{row_state('min', ts)} AS min_ts, {row_state('max', ts)} AS max_ts")


# a flow edge has no open flags or mode (typed as the events' columns)
_NO_FLAGS = "CAST(NULL AS Nullable(UInt32)) AS file_flags, CAST(NULL AS Nullable(UInt32)) AS file_mode"


def _file_states(entity: str, ts: str) -> str:
    """fleet_files' states, one row per event (no GROUP BY at insert, as fleet_path): the
    processes as the set of their ids (0 for none), so that a hunt can ask their images
    (``rules.candidates``) and a question count them."""
    return (f"{row_state('count', '')} AS times, {row_state('min', ts)} AS min_ts, {row_state('max', ts)} AS max_ts, "
            f"arrayReduce('groupUniqArrayState', [ifNull({entity}, toUInt64(0))]) AS procs")


def _files(key: str, target: int, cols: str, states: str, src_where: str) -> str:
    return f"""
SELECT ifNull({key}, '') AS key_path, toUInt8({target}) AS key_is_target, {cols}, {_EV_DAY} AS day{states}
FROM {{src}} WHERE {src_where}{{extra}}"""


def _flow_files(cols: str, states: str) -> str:
    return f"""
SELECT ifNull(file_path, '') AS key_path, toUInt8(0) AS key_is_target, {cols}, {_FLOW_DAY} AS day{states}
FROM {{src}} WHERE in_events = 0 AND file_path IS NOT NULL{{extra}}"""


_EV_FILES = "host_name, CAST(event_action AS String) AS action, file_path, file_flags, file_mode"
# (a target row's own path is ``source_path``: an alias ``file_path`` would stand for the
# column everywhere in the SELECT, its key_path and WHERE too)
_EV_NAMES = "CAST(event_action AS String) AS action, file_path AS source_path, file_flags, file_mode"
_NO_PATH = "CAST(NULL AS Nullable(String)) AS source_path"  # fleet_names' path rows: it is key_path
_MOVED = "event_action IN ('rename', 'link') AND ifNull(file_target_path, '') != ''"
_FLOW_ACTION = "if(ifNull(write_bytes, 0) > 0, 'write', 'read') AS action"
_EV_STATES = ", " + _file_states("process_entity_id", "ts")
_FLOW_STATES = ", " + _file_states("toNullable(entity_id)", "ifNull(last_ts, 0)")

# fleet_kinds' columns: the event's kind, and a listening socket's own address (few per host)
_LISTENS = "event_action IN ('listen', 'bind')"
_KINDS = (f"CAST(event_category AS Nullable(String)) AS category, CAST(event_action AS Nullable(String)) AS action, "
          f"CAST(event_outcome AS Nullable(String)) AS outcome, "
          f"CAST(network_transport AS Nullable(String)) AS transport, CAST(event_module AS Nullable(String)) AS module, "
          f"file_deleted AS deleted, if({_LISTENS}, source_port, CAST(NULL AS Nullable(UInt16))) AS port, "
          f"if({_LISTENS}, source_ip, CAST(NULL AS Nullable(String))) AS ip")
# an exec fleet_exec describes whole (candidates.py reads its path as the executable or none)
_ORDINARY_EXEC = ("ifNull(event_category = 'process', 0) AND isNull(file_target_path) AND isNull(message) AND "
                  "(isNull(file_path) OR ifNull(file_path = process_executable, 0))")

SUMMARIES: dict[str, Summary] = {s.name: s for s in [
    Summary(
        "fleet_exec",
        "ifNull(executable, ''), isNull(executable), host_name, day, hour, command_line, ifNull(sha256, ''), "
        "isNull(sha256)",
        {"events": f"""
SELECT process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       lower(process_hash_sha256) AS sha256, host_name, {_EV_DAY} AS day, {_EV_HOUR} AS hour,
       countState() AS execs, minState(ts) AS min_ts, maxState(ts) AS max_ts,
       uniqExactState(process_entity_id) AS processes, argMinState(process_args, ts) AS example_args,
       argMinState(process_entity_id, ts) AS example_entity_id
FROM {{src}} WHERE event_action = 'exec'{{extra}}
GROUP BY executable, command_line, sha256, host_name, day, hour"""}),
    Summary(
        "fleet_ip",
        "ip, host_name, action, ifNull(proc_name, ''), isNull(proc_name), ifNull(process_entity_id, 0), "
        "isNull(process_entity_id), ifNull(destination_ip, ''), isNull(destination_ip), "
        "ifNull(destination_port, 0), isNull(destination_port), day, hour",
        # one row per address the event names (destination, source), once when both are the same
        {"events": f"""
SELECT arrayJoin(arrayDistinct(arrayFilter(x -> x != '', [ifNull(destination_ip, ''), ifNull(source_ip, '')]))) AS ip,
       host_name, CAST(event_action AS String) AS action, CAST(process_name AS Nullable(String)) AS proc_name,
       process_entity_id, destination_ip, destination_port, {_EV_DAY} AS day, {_EV_HOUR} AS hour,
       countState() AS connections, minState(ts) AS min_ts, maxState(ts) AS max_ts
FROM {{src}} WHERE event_category = 'network' AND event_action IN ('connect', 'accept'){{extra}}
GROUP BY ip, host_name, action, proc_name, process_entity_id, destination_ip, destination_port, day, hour"""}),
    Summary(
        "fleet_path",
        "key_path, key_is_target, host_name, action, ifNull(file_path, ''), isNull(file_path), day, hour",
        # an event is kept under its file_path (key_is_target 0) and under its target (1),
        # by two views (the second reads only the few events with a target: renames, links);
        # the question counts a target row only when file_path does not match too. One row
        # per event (``_row_states``): merges fold them.
        {"events": f"""
SELECT ifNull(file_path, '') AS key_path, toUInt8(0) AS key_is_target, host_name,
       CAST(event_action AS String) AS action, file_path, {_EV_DAY} AS day, {_EV_HOUR} AS hour,
       {_row_states("process_entity_id", "ts")}
FROM {{src}} WHERE file_path != ''{{extra}}""",
         "events_targets": f"""
SELECT ifNull(file_target_path, '') AS key_path, toUInt8(1) AS key_is_target, host_name,
       CAST(event_action AS String) AS action, file_path, {_EV_DAY} AS day, {_EV_HOUR} AS hour,
       {_row_states("process_entity_id", "ts")}
FROM {{src}} WHERE file_target_path != ''{{extra}}""",
         # flow edges the events do not show (in_events = 0), as the question's UNION ALL has them
         "flows": f"""
SELECT ifNull(file_path, '') AS key_path, toUInt8(0) AS key_is_target, host_name,
       if(ifNull(write_bytes, 0) > 0, 'write', 'read') AS action, file_path, {_FLOW_DAY} AS day, {_FLOW_HOUR} AS hour,
       {_row_states("toNullable(entity_id)", "ifNull(last_ts, 0)")}
FROM {{src}} WHERE in_events = 0 AND file_path IS NOT NULL{{extra}}"""}),
    Summary(
        "fleet_hosts",
        "host_name, day, hour",
        # every row of the events view: the events, and the flow edges stored only in flows
        # (in_events = 0; their events row is at last_ts), as `forensix hosts` counts on DuckDB
        {"events": f"""
SELECT host_name, {_EV_DAY} AS day, {_EV_HOUR} AS hour, countState() AS events, minState(ts) AS min_ts,
       maxState(ts) AS max_ts, argMaxState(CAST(host_id AS String), ts) AS latest_host_id
FROM {{src}}{{extra_where}}
GROUP BY host_name, day, hour""",
         "flows": f"""
SELECT host_name, {_FLOW_DAY} AS day, {_FLOW_HOUR} AS hour, countState() AS events,
       minState(ifNull(last_ts, 0)) AS min_ts, maxState(ifNull(last_ts, 0)) AS max_ts,
       argMaxState(CAST(host_id AS String), ifNull(last_ts, 0)) AS latest_host_id
FROM {{src}} WHERE in_events = 0{{extra}}
GROUP BY host_name, day, hour"""}),    Summary(
        "fleet_files",
        "key_path, key_is_target, host_name, action, ifNull(file_path, ''), isNull(file_path), "
        "ifNull(file_flags, 0), isNull(file_flags), ifNull(file_mode, 0), isNull(file_mode), day",
        # as fleet_path (a row per event under its path, one under its target), with the open's
        # flags and mode and the processes' ids, by day, not hour: merges fold a host's rows of
        # a path into one a day, not 24 (what a path prefix question reads)
        {"events": _files("file_path", 0, _EV_FILES, _EV_STATES, "file_path != ''"),
         "events_targets": _files("file_target_path", 1, _EV_FILES, _EV_STATES, "file_target_path != ''"),
         "flows": _flow_files(f"host_name, {_FLOW_ACTION}, file_path, {_NO_FLAGS}", _FLOW_STATES)}),
    Summary(
        "fleet_names",
        "key_path, key_is_target, action, ifNull(file_flags, 0), isNull(file_flags), ifNull(file_mode, 0), "
        "isNull(file_mode), ifNull(source_path, ''), isNull(source_path), day",
        # the distinct paths (with action, flags, mode, a target's source and day), no host, no state:
        # plain columns, which merges de-duplicate. A few hundred thousand rows for a fleet of
        # 10^8 events: what a rule's path tests scan first, before fleet_files is read by path
        # A rename's or link's path row is left out when it has a target row: that row knows
        # its path too (file_path), and a rule testing the target would find the path row "maybe".
        # (18.16's backfill, `_part IN`, fails on a Nullable condition beside it: ifNull)
        {"events": _files("file_path", 0, _EV_NAMES.replace("file_path AS source_path", _NO_PATH), "",
                          f"ifNull(file_path, '') != '' AND NOT ({_MOVED})"),
         "events_targets": _files("file_target_path", 1, _EV_NAMES, "", "file_target_path != ''"),
         "flows": _flow_files(f"{_FLOW_ACTION}, {_NO_PATH}, {_NO_FLAGS}", "")},
        engine="ReplacingMergeTree()"),
    Summary(
        "fleet_kinds",
        "host_name, day, ifNull(category, ''), isNull(category), ifNull(action, ''), isNull(action), "
        "ifNull(outcome, ''), isNull(outcome), ifNull(transport, ''), isNull(transport), ifNull(module, ''), "
        "isNull(module), ifNull(deleted, 0), isNull(deleted), ifNull(port, 0), isNull(port), ifNull(ip, ''), "
        "isNull(ip)",
        # what kinds of event each host had each day: every event's category, action, outcome,
        # transport, log source and deleted mark, and a listening socket's address (listen, bind);
        # a handful of rows per host and day, grouped at insert (few distinct keys a block) and
        # de-duplicated by merges. What a rule on a rare kind of event (a module load, a listener,
        # an exec of a deleted file) reads first, instead of probing every event (0007)
        {"events": f"""
SELECT host_name, {_EV_DAY} AS day, {_KINDS}
FROM {{src}}{{extra_where}}
GROUP BY host_name, day, category, action, outcome, transport, module, deleted, port, ip"""},
        engine="ReplacingMergeTree()"),
    Summary(
        "fleet_exec_other",
        "host_name, day, ifNull(executable, ''), isNull(executable), command_line, ifNull(sha256, ''), "
        "isNull(sha256), ifNull(file_path, ''), isNull(file_path), ifNull(file_target_path, ''), "
        "isNull(file_target_path), ifNull(message, ''), isNull(message), ifNull(category, ''), isNull(category)",
        # the execs fleet_exec does not describe whole: an exec is of category process, its path
        # is its executable (or none), it has no target and no message, except in these rows (a
        # relative path made absolute, an imported record): with them a rule testing an exec's
        # category, path or message (a keyword rule tests five columns) narrows by fleet_exec (0007).
        # Few or none in a recorded fleet's day.
        {"events": f"""
SELECT process_executable AS executable, arrayStringConcat(process_args, ' ') AS command_line,
       lower(process_hash_sha256) AS sha256, host_name, {_EV_DAY} AS day, file_path, file_target_path, message,
       CAST(event_category AS Nullable(String)) AS category
FROM {{src}} WHERE event_action = 'exec' AND NOT ({_ORDINARY_EXEC}){{extra}}
GROUP BY executable, command_line, sha256, host_name, day, file_path, file_target_path, message, category"""},
        engine="ReplacingMergeTree()"),
    Summary(
        "fleet_exec_unkeyed",
        "host_name, day, hour",
        # the hours of each host with an exec a hunt cannot count as a finding of its own from
        # fleet_exec (0008): one without cpu or seq (its event key is not its own), without an
        # entity id (grouped by pid), or standing for several events (event_count). None in a
        # recorded fleet; an imported log's hosts may have some, and are then scanned
        {"events": f"""
SELECT host_name, {_EV_DAY} AS day, {_EV_HOUR} AS hour
FROM {{src}} WHERE event_action = 'exec' AND (isNull(cpu) OR isNull(seq) OR ifNull(process_entity_id, 0) = 0
  OR ifNull(event_count, 0) > 1){{extra}}
GROUP BY host_name, day, hour"""},
        engine="ReplacingMergeTree()"),
]}

# 0003's views that the current definitions no longer have (dropped by 0005 all the same)
_OLD_VIEWS = {"fleet_exec": ("events",), "fleet_ip": ("events",), "fleet_path": ("events", "events_targets", "flows"),
              "fleet_hosts": ("events",)}


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


def _chosen(names: Sequence[str] | None) -> list[Summary]:
    return [s for s in SUMMARIES.values() if names is None or s.name in names]


def tables_sql(db: str, cluster: str | None, names: Sequence[str] | None = None) -> list[str]:
    """The summary tables on one server (and the Distributed tables over them); ``names``:
    only these."""
    out: list[str] = []
    for s in _chosen(names):
        first = next(iter(s.selects))
        body = _select(s, first, f"`{db}`.`{local_name(_source(first), cluster)}`", "0")
        out.append(f"CREATE TABLE IF NOT EXISTS `{db}`.`{local_name(s.name, cluster)}` "
                   f"ENGINE = {s.engine} PARTITION BY day ORDER BY ({s.order}) "
                   f"SETTINGS index_granularity = {GRANULE} AS {body}")
        if cluster:
            # (fleet_names has no host: each shard's rows are its own hosts' all the same, and
            # nothing is inserted through a Distributed summary)
            key = "cityHash64(host_name)" if "host_name" in s.order else "rand()"
            out.append(f"CREATE TABLE IF NOT EXISTS `{db}`.`{s.name}` AS `{db}`.`{local_name(s.name, cluster)}` "
                       f"ENGINE = Distributed({cluster}, {db}, {local_name(s.name, cluster)}, {key})")
    return out


def lock_sql(db: str) -> str:
    """Fails with "already exists" while another writer migrates this server (every
    migration is applied under it: ``ClickHouseStore._migrate``)."""
    return f"CREATE TABLE `{db}`.`{LOCK}` (table String, part String) ENGINE = Log"


def unlock_sql(db: str) -> str:
    return f"DROP TABLE IF EXISTS `{db}`.`{LOCK}`"


def reset_sql(db: str, cluster: str | None, names: Sequence[str] | None = None) -> list[str]:
    """The summaries of an earlier layout (0003's), or what an attempt that failed half-way
    left, dropped; the tables created empty (``names``: only these summaries, their views and
    tables). Views first: a view whose table is gone would fail every INSERT into the events."""
    chosen = _chosen(names)
    # 0003's views go with the summaries they fed (never when only 0006's are rebuilt: some
    # share a name with 0005's)
    base = names is None or any(n not in (*PATH_SUMMARIES, *KIND_SUMMARIES, *UNKEYED_SUMMARIES) for n in names)
    old = {view_name(s, v, cluster) for s, vs in _OLD_VIEWS.items() for v in vs} if base else set()
    views = sorted(old | {view_name(s.name, v, cluster) for s in chosen for v in s.selects})
    out = [f"DROP TABLE IF EXISTS `{db}`.`{v}`" for v in views]
    for s in chosen:
        out += ([f"DROP TABLE IF EXISTS `{db}`.`{s.name}`"] if cluster else []) + [
            f"DROP TABLE IF EXISTS `{db}`.`{local_name(s.name, cluster)}`"]
    return out + tables_sql(db, cluster, names)


def backfill_sql(db: str, cluster: str | None, names: Sequence[str] | None = None) -> list[str]:
    """With the lock held: stop the source tables' merges, list their parts, create the
    views, summarize exactly the listed parts (``names``: only these summaries).
    ``restart_merges`` must follow, always."""
    chosen = _chosen(names)
    sources = ", ".join(f"'{local_name(t, cluster)}'" for t in SOURCES)
    out = [f"SYSTEM STOP MERGES `{db}`.`{local_name(t, cluster)}`" for t in SOURCES]
    out.append(f"INSERT INTO `{db}`.`{LOCK}` SELECT table, name FROM system.parts "
               f"WHERE database = '{db}' AND table IN ({sources}) AND active")
    for s in chosen:
        for view in s.selects:
            src = f"`{db}`.`{local_name(_source(view), cluster)}`"
            out.append(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`{view_name(s.name, view, cluster)}` "
                       f"TO `{db}`.`{local_name(s.name, cluster)}` AS {_select(s, view, src)}")
    for s in chosen:
        for view in s.selects:
            table = local_name(_source(view), cluster)
            listed = f"_part IN (SELECT part FROM `{db}`.`{LOCK}` WHERE table = '{table}')"
            out.append(f"INSERT INTO `{db}`.`{local_name(s.name, cluster)}` "
                       f"{_select(s, view, f'`{db}`.`{table}`', listed)}")
    return out


def built_by(due: Sequence[str]) -> list[str]:
    """The summaries to build on a server whose pending migrations ``due`` include some of
    ``SUMMARIZING``: 0006's, 0007's and 0008's own tables when only they are due (a store with 0005's
    summaries is not summarized again), every summary when 0003 or 0005 is."""
    due = [n for n in due if n in SUMMARIZING]
    own = {PATHS: PATH_SUMMARIES, KINDS: KIND_SUMMARIES, UNKEYED: UNKEYED_SUMMARIES}
    if any(n not in own for n in due):
        return list(SUMMARIES)
    return [s for s in SUMMARIES if any(s in own[n] for n in due)]


def restart_merges(db: str, cluster: str | None) -> list[str]:
    return [f"SYSTEM START MERGES `{db}`.`{local_name(t, cluster)}`" for t in SOURCES]


def migration(db: str, cluster: str | None, names: Sequence[str] | None = None) -> list[str]:
    """``0003_fleet_summaries``, ``0005_hourly_summaries`` (``names`` None: every summary),
    ``0006_path_names`` (``PATH_SUMMARIES``), ``0007_event_kinds`` (``KIND_SUMMARIES``) and
    ``0008_exec_unkeyed`` (``UNKEYED_SUMMARIES``) on one server as one list of statements (what the
    store runs, in this order, under the migration lock; it also waits for the lock, and
    restarts merges whatever happens: ``ClickHouseStore._summarize``). Each builds the
    summaries of this version from every row stored: a store that has none runs them once."""
    return ([unlock_sql(db), lock_sql(db)] + reset_sql(db, cluster, names) + backfill_sql(db, cluster, names)
            + restart_merges(db, cluster) + [unlock_sql(db)])
