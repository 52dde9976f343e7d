"""`forensix rules list|validate|test`, `forensix hunt`, `forensix alerts`."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import click
import pyarrow as pa

from forensix.cli.options import emit, format_option, reader, store_option, time_option
from forensix.model.identity import format_entity
from forensix.render.printable import printable
from forensix.rules import alert_records, default_detectors, hunt, load_rules
from forensix.rules.alerts import empty_alerts
from forensix.rules.engine import LiveEngine
from forensix.rules.guard import live_problem, trial
from forensix.rules.ir import CompiledRule
from forensix.rules.loader import RuleSet, coverage, start_summary
from forensix.rules.rollup import rollup
from forensix.rules.sql import rule_sql
from forensix.store.base import Reader
from forensix.store.open import is_remote

__all__ = ["COMMANDS"]

_RULE_COLUMNS = ["rule_id", "title", "level", "logsource", "status", "reason", "source"]


def _rules_table(rules: Sequence[CompiledRule], sql: bool = False) -> pa.Table:
    cols: dict[str, list[Any]] = {c: [getattr(r, c) for r in rules] for c in _RULE_COLUMNS}
    cols["tags"] = [" ".join(r.tags) for r in rules]
    if sql:
        cols["sql"] = [rule_sql(r) if r.ok else "" for r in rules]
    return pa.table(cols)


def _summary(rs: RuleSet) -> str:
    n = len(rs.rules)
    bad = [r for r in rs.rules if r.status == "error"]
    uns = [r for r in rs.rules if r.status == "unsupported"]
    return f"{n} rules: {n - len(bad) - len(uns)} load, {len(uns)} unsupported, {len(bad)} errors"


def _load(paths: Sequence[str], builtin: bool) -> RuleSet:
    return load_rules(list(paths), builtin=builtin)


_builtin_option = click.option(
    "--builtin/--no-builtin", default=True, show_default=True,
    help="Include the curated default rules and the built-in detectors.",
)


@click.group("rules")
def rules_group() -> None:
    """Sigma rules: list them, check which convert, test both engines on a store.

    \b
    Examples:
      forensix rules list                         # the curated default set
      forensix rules validate ~/sigma/rules/linux # what converts, and why not
      forensix rules test my-rules/ --store host.duckdb
    """


@rules_group.command("list")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@_builtin_option
@click.option("--sql", is_flag=True, help="Show each rule's retro-hunt SQL.")
@format_option()
def rules_list(paths: tuple[str, ...], builtin: bool, sql: bool, fmt: str) -> None:
    """List rules (curated set and PATHS) with whether each converts.

    \b
    Examples:
      forensix rules list
      forensix rules list ./my-rules --no-builtin --format json
    """
    rs = _load(paths, builtin)
    emit(_rules_table(rs.rules, sql), fmt)


@rules_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--strict", is_flag=True, help="Exit 1 when any rule does not load.")
@click.option("--all", "show_all", is_flag=True, help="Show the rules that load too.")
@format_option()
def rules_validate(paths: tuple[str, ...], strict: bool, show_all: bool, fmt: str) -> None:
    """Load rule files or trees (such as SigmaHQ's rules/linux) and report every rule
    that is broken (error) or cannot run on forensix events (unsupported), with why.

    \b
    Examples:
      forensix rules validate sigma/rules/linux
      forensix rules validate rule.yml --strict
    """
    rs = load_rules(list(paths), builtin=False)
    shown = rs.rules if show_all else rs.problems
    if shown:
        emit(_rules_table(shown), fmt)
    click.echo(_summary(rs), err=True)
    if strict and rs.problems:
        sys.exit(1)


@rules_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--list", "show", is_flag=True, help="Also list every rule that cannot run, with why.")
@format_option()
def rules_check(paths: tuple[str, ...], show: bool, fmt: str) -> None:
    """Coverage of rule trees (such as SigmaHQ's rules/linux, rules-emerging-threats,
    rules-threat-hunting): how many rules load, how many run - live in `forensix record
    --rules` and in `forensix hunt`, the same rules both ways - by log source, and how
    many are rejected, by reason.

    \b
    Examples:
      forensix rules check ~/sigma/rules/linux ~/sigma/rules-emerging-threats
      forensix rules check ~/sigma/rules-threat-hunting --list

    A rule that loads but that the live engine cannot run (a text test on the list column
    process.args) is named with the reason, and the exit status is then 3.
    """
    rs = load_rules(list(paths), builtin=False)
    ev = trial()
    cannot = [(r, why) for r in rs.ok if (why := live_problem(r, ev)) is not None]
    for r, why in cannot:  # counted and listed with the rules that do not run, with why
        rs.rules[rs.rules.index(r)] = replace(r, status="unsupported", reason=f"the live engine cannot run it: {why}")
    cov = coverage(rs)
    if fmt == "text":
        for line in cov.lines():
            click.echo(line)
    else:
        rows = [{"kind": "runnable", "what": k, "rules": n} for k, n in cov.by_logsource.items()]
        rows += [{"kind": "rejected", "what": k, "rules": n} for k, n in cov.rejected.items()]
        emit(pa.Table.from_pylist(rows, schema=pa.schema(
            [("kind", pa.string()), ("what", pa.string()), ("rules", pa.int64())])), fmt)
    if show and rs.problems:
        emit(_rules_table(rs.problems), fmt)
    for r, why in cannot:  # they load, yet the live engine (and the hunt) would skip them
        click.echo(f"skipped {r.rule_id} ({r.title}): the live engine cannot run it: {why}", err=True)
    if cannot:
        sys.exit(3)


def replay(rd: Reader, engine: LiveEngine, ts_from: int | None, ts_to: int | None, batch: int = 50_000) -> pa.Table:
    """Feed a store's history through a live engine, in time order, as a recorder would."""
    where = " AND ".join(
        [c for c in (f"ts >= {ts_from}" if ts_from is not None else "", f"ts < {ts_to}" if ts_to is not None else "") if c]
    ) or "TRUE"
    found = [engine.observe("processes", rd.query("SELECT * FROM processes ORDER BY image_ts"))]
    engine.observe("accounts", rd.query("SELECT * FROM accounts"))  # each host's users, as recorded
    gaps = rd.query("SELECT * FROM gaps ORDER BY ts_from")
    if gaps.num_rows:
        found.append(engine.observe("gaps", gaps))
    offset = 0
    while True:
        chunk = rd.query(
            f"SELECT * FROM events WHERE {where} ORDER BY ts, cpu, seq LIMIT {batch} OFFSET {offset}"
        )
        if chunk.num_rows == 0:
            break
        found.append(engine.observe("events", chunk))
        offset += chunk.num_rows
    fwhere = where.replace("ts >=", "first_ts >=").replace("ts <", "first_ts <")
    offset = 0
    while True:  # data-flow edges, as the recorder flushes them (the pipe detector reads them)
        chunk = rd.query(f"SELECT * FROM flows WHERE {fwhere} ORDER BY first_ts LIMIT {batch} OFFSET {offset}")
        if chunk.num_rows == 0:
            break
        found.append(engine.observe("flows", chunk))
        offset += chunk.num_rows
    found = [f for f in found if f.num_rows]
    return engine.settle(pa.concat_tables(found) if found else empty_alerts())


@rules_group.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@_builtin_option
@store_option
@time_option("--from", "Start of the window")
@time_option("--to", "End of the window")
@format_option()
def rules_test(paths: tuple[str, ...], builtin: bool, store: str, fmt: str, **kw: Any) -> None:
    """Run rules both ways over a store - replayed through the live engine, and as the
    retro-hunt's SQL - and show per rule how many events each matched (they must agree).

    A rule either engine cannot run is named with the reason and left out, the others run,
    and the exit status is then 3 (1: the engines disagree).

    \b
    Examples:
      forensix rules test --store host.duckdb
      forensix rules test ./my-rules --no-builtin --store host.duckdb
    """
    rs = _load(paths, builtin)
    ts_from, ts_to = kw.get("from"), kw.get("to")
    titles = {r.rule_id: r.title for r in rs.ok}
    engine = LiveEngine(rs.ok, detectors=default_detectors() if builtin else [],
                        notify=lambda line: click.echo(line, err=True))
    hunt_skipped: list[tuple[str, str]] = []  # rules the store could not run: named, the others ran
    rd = reader(store)
    try:
        live = replay(rd, engine, ts_from, ts_to)
        hunted = hunt(rd, rs.ok, default_detectors() if builtin else [], ts_from, ts_to, skipped=hunt_skipped)
    finally:
        rd.close()
    for rule_id, why in hunt_skipped:
        click.echo(f"skipped {rule_id} ({titles.get(rule_id, '?')}): the store cannot run it: {why}", err=True)
    # a rule one engine did not run has nothing to agree on: named above, left out here
    left_out = {i for i, _ in engine.skipped + engine.disabled + hunt_skipped}
    live_ids = _ids_by_rule(live)
    hunt_ids = _ids_by_rule(hunted)
    names = sorted((set(live_ids) | set(hunt_ids) | set(titles)) - left_out)
    table = pa.table(
        {
            "rule_id": names,
            "title": [titles.get(n, n) for n in names],
            "live": [len(live_ids.get(n, ())) for n in names],
            "hunt": [len(hunt_ids.get(n, ())) for n in names],
            "agree": [live_ids.get(n, set()) == hunt_ids.get(n, set()) for n in names],
        }
    )
    emit(table, fmt)
    if not all(table.column("agree").to_pylist()):
        click.echo("the live engine and the retro-hunt disagree (a bug: please report it)", err=True)
        sys.exit(1)
    if left_out:
        click.echo(f"{len(names)} rules compared ({len(left_out)} skipped)", err=True)
        sys.exit(3)


def _ids_by_rule(alerts: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    if alerts.num_rows == 0 or "alert_id" not in alerts.column_names:
        return out
    for rid, aid in zip(alerts.column("rule_id").to_pylist(), alerts.column("alert_id").to_pylist()):
        out.setdefault(rid, set()).add(aid)
    return out


def _session_text(r: dict[str, Any]) -> str:
    kind = r.get("entry_kind")
    if not kind:
        return ""
    eid = r.get("entry_entity_id")
    where = f" from {r['entry_source_ip']}" if r.get("entry_source_ip") else ""
    return f"{kind}{where} ({format_entity(eid)})" if eid else f"{kind}{where}"


def _alerts_view(alerts: pa.Table, store: str, fmt: str) -> pa.Table:
    """What a person reads: when, how bad, how many times, what, on what, by whom
    (command line, parent, user, session), and the report command to run next. JSON and
    CSV get every column under its ECS name (`alert_records`)."""
    recs = alert_records(alerts, store)
    if fmt != "text":
        reports = pa.array([r["report"] for r in recs], pa.string())
        return alerts.append_column("report", reports)
    rows = alerts.to_pylist()
    return pa.table(
        {
            "ts": alerts.column("ts"),
            "level": alerts.column("rule_level"),
            "count": [r.get("alert_count") or 1 for r in rows],
            "rule": alerts.column("rule_title"),
            "object": [r.get("object_name") or "" for r in rows],
            "command_line": [r.get("process_command_line") or "" for r in rows],
            "parent": [r.get("parent_command_line") or r.get("parent_executable") or "" for r in rows],
            "user": [r.get("user_name") or "" for r in rows],
            "session": [_session_text(r) for r in rows],
            "report": pa.array([r["report"] for r in recs], pa.string()),
        }
    )


@click.command("hunt")
@click.argument("rules", nargs=-1, type=click.Path(exists=True))
@_builtin_option
@store_option
@time_option("--from", "Start of the window")
@time_option("--to", "End of the window")
@click.option("--detectors/--no-detectors", "with_detectors", default=True, show_default=True,
              help="With the built-in rules: also the built-in detectors (gaps, copied binaries, chains). "
                   "--no-detectors runs only Sigma rules: on a fleet store the detectors replay rows in "
                   "Python and may take seconds where the Sigma rules take a fraction of one.")
@click.option("--save", is_flag=True, help="Store the alerts found (needs the store free for writing).")
@click.option("--detail", is_flag=True, help="After the roll-up per rule, every finding (text format).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Only the first N findings by time (text: after the roll-up; JSON/CSV: the records).")
@format_option()
def hunt_cmd(rules: tuple[str, ...], builtin: bool, with_detectors: bool, store: str, save: bool, detail: bool,
             limit: int | None, fmt: str, **kw: Any) -> None:
    """Retro-hunt: run Sigma rules (files or directories) over the recorded history.

    Text output is a roll-up first: per rule, its findings, matching events, hosts, first
    and last time and the hosts with most findings. The findings themselves follow with
    --detail (all) or --limit N (the first N by time). JSON and CSV give every finding
    with every field, as before (--limit N: the first N).

    A rule the store cannot run is named with the reason and skipped, the others run, and
    the exit status is then 3 (0: every loaded rule ran).

    \b
    Examples:
      forensix hunt --store host.duckdb                       # the curated set
      forensix hunt --store clickhouse://ch1:9000/forensix?cluster=fleet --detail
      forensix hunt sigma/rules/linux --no-builtin --from -2h --limit 20
      forensix hunt --store clickhouse://ch1:9000/forensix --no-detectors   # Sigma rules only
      forensix hunt rule.yml --format json > alerts.jsonl
    """
    rs = _load(rules, builtin)
    for r in rs.problems:
        click.echo(f"skipped {r.source}: {r.status}: {r.reason}", err=True)
    detectors = default_detectors() if builtin and with_detectors else []
    ctx = click.get_current_context()
    skipped: list[tuple[str, str]] = []  # rules the store could not run: named, the others ran
    summed = None  # (the roll-up, how many findings) when not every finding is built (a fleet hunt)
    if is_remote(store) and not ctx.meta.get("forensix.host"):  # ClickHouse: every host, in ClickHouse
        # only the findings shown are built into alerts: the roll-up needs no alert
        built = None if save or detail or (fmt != "text" and limit is None) else (limit or 0)
        found, summed = _hunt_fleet(store, rs.ok, detectors, kw.get("from"), kw.get("to"), skipped, built)
    else:
        rd = reader(store)
        try:
            found = hunt(rd, rs.ok, detectors, kw.get("from"), kw.get("to"), skipped=skipped)
        finally:
            rd.close()
        titles = {r.rule_id: r.title for r in rs.ok}
        for rule_id, why in skipped:
            click.echo(f"skipped {rule_id} ({titles.get(rule_id, '?')}): the store cannot run it: {why}", err=True)
    if save and found.num_rows:
        from forensix.store.open import open_writer

        w = open_writer(store)
        try:
            existing = set(w.query("SELECT alert_id FROM alerts").column("alert_id").to_pylist())
            # a finding already stored live keeps its row (its final count came with it)
            ids = found.column("alert_id").to_pylist()
            fresh = found.filter(pa.array([i not in existing for i in ids]))
            w.append("alerts", fresh)
            w.flush()
        finally:
            w.close()
    _show_findings(found, summed, store, fmt, detail, limit)
    ran = len(rs.ok) - len(skipped)
    click.echo(f"{found.num_rows if summed is None else summed[1]} alerts from {ran} rules" + (f" ({len(skipped)} skipped)" if skipped else ""),
               err=True)
    if skipped:
        sys.exit(3)


def _show_findings(found: pa.Table, summed: tuple[pa.Table, int] | None, store: str, fmt: str, detail: bool,
                   limit: int | None) -> None:
    """JSON/CSV: the findings (the first ``limit``). Text: the roll-up per rule (``summed``:
    the roll-up and how many findings, when ``found`` holds only those to show), then the
    findings when asked for (``detail``, or the first ``limit``)."""
    shown = found if limit is None else found.slice(0, limit)
    if fmt != "text":
        emit(_alerts_view(shown, store, fmt), fmt)
        return
    table, total = (rollup(found), found.num_rows) if summed is None else summed
    if total == 0:
        click.echo("no findings")
        return
    emit(table.drop_columns(["rule_id"]), fmt)
    if detail or limit is not None:
        click.echo("")
        what = "every finding" if shown.num_rows == total else f"the first {shown.num_rows:,} of {total:,} findings"
        click.echo(f"Findings ({what}, by time):")
        emit(_alerts_view(shown, store, fmt), fmt)
    else:
        click.echo(f"({total:,} findings: --detail lists them, --limit N the first N, "
                   "--format json every field)", err=True)


def _hunt_fleet(store: str, rules: Sequence[CompiledRule], detectors: Sequence[Any], since: int | None,
                until: int | None, skipped: list[tuple[str, str]],
                limit: int | None) -> tuple[pa.Table, tuple[pa.Table, int]]:
    """A hunt over a ClickHouse store, run in ClickHouse on every shard (rules.fleet_hunt):
    (the alerts of the first ``limit`` findings, (the roll-up of every finding, how many)).
    Rules its SQL cannot say are hunted over each host's slice, and named here."""
    from forensix.rules.fleet_hunt import fleet_hunt
    from forensix.store.clickhouse import ClickHouseStore

    with ClickHouseStore(store) as st:
        res = fleet_hunt(st, rules, detectors, since, until, limit=limit)
    for rule_id, why in res.fallback:
        click.echo(f"hunted over each host's slice (not as ClickHouse SQL): {rule_id}: {why}", err=True)
    for rule_id, err in res.failed:
        click.echo(f"skipped {rule_id}: it fails over the slices too: {err}", err=True)
    skipped += res.failed
    for name, why in res.skipped:
        click.echo(f"skipped the built-in detector {name}: {why}", err=True)
    click.echo(f"{len(res.in_clickhouse)} rules hunted in ClickHouse on {res.shards} shard(s), "
               f"{len(res.fallback)} over host slices", err=True)
    by = Counter(s for _, s in res.narrowed)
    click.echo(f"candidate hosts and days from the summaries for {len(res.narrowed)} rules ("
               + (", ".join(f"{n} {name}" for name, n in sorted(by.items())) or "none")
               + f"), from the events' own columns for {len(res.probed)}"
               + (f" ({', '.join(r for r, _ in res.probed)})" if res.probed else "")
               + f"; {res.scans} scans, exact rules over {res.candidates:,} host-days", err=True)
    return res.alerts, (rollup(res.heads, counted=res.counted), res.findings)


@click.command("alerts")
@store_option
@time_option("--from", "Start of the window")
@time_option("--to", "End of the window")
@click.option("--level", multiple=True, help="Only these levels (repeat).")
@click.option("--rule", "rule_ids", multiple=True, help="Only these rule ids (repeat).")
@format_option()
def alerts_cmd(store: str, level: tuple[str, ...], rule_ids: tuple[str, ...], fmt: str, **kw: Any) -> None:
    """List the alerts stored by the live engine (and saved hunts), each with the
    `forensix report` command for its detection point.

    \b
    Examples:
      forensix alerts --store host.duckdb
      forensix alerts --level high --level critical --format json
    """
    conds, params = ["TRUE"], {}
    if kw.get("from") is not None:
        conds.append("ts >= $from")
        params["from"] = kw["from"]
    if kw.get("to") is not None:
        conds.append("ts < $to")
        params["to"] = kw["to"]
    if level:
        conds.append("rule_level IN (SELECT unnest($levels))")
        params["levels"] = list(level)
    if rule_ids:
        conds.append("rule_id IN (SELECT unnest($rules))")
        params["rules"] = list(rule_ids)
    rd = reader(store)
    try:
        # a finding emitted live is stored again with its final count when it ends: the latest row
        found = rd.query(
            f"SELECT * FROM alerts WHERE {' AND '.join(conds)} QUALIFY row_number() OVER"
            " (PARTITION BY alert_id ORDER BY alert_count DESC NULLS LAST, detected_ts DESC) = 1 ORDER BY ts",
            params,
        )
    finally:
        rd.close()
    emit(_alerts_view(found, store, fmt), fmt)


# -- for `forensix record` (and the log host): the live engine as a recorder sink ----------


def record_rule_options(f: Any) -> Any:
    """The options `forensix record` offers for live detection."""
    f = click.option("--webhook", default=None, metavar="URL", help="POST each alert as JSON to URL.")(f)
    f = click.option(
        "--alerts-jsonl", default=None, type=click.Path(dir_okay=False),
        help="Append each alert as one JSON line to this file.",
    )(f)
    f = click.option("--no-rules", is_flag=True, help="Record only: no live detection.")(f)
    f = click.option(
        "--rules", "rule_paths", multiple=True, type=click.Path(exists=True),
        help="More Sigma rules (file or directory) besides the curated set; repeatable.",
    )(f)
    return f


def alert_lines(alerts: pa.Table, store: str | None = None) -> list[str]:
    """One line per alert, as the recorder prints them live."""
    out = []
    for rec, row in zip(alert_records(alerts, store), alerts.to_pylist()):
        ctx = [f"user {row['user_name']}" if row.get("user_name") else "",
               f"parent {(row.get('parent_command_line') or row.get('parent_executable') or '')[:120]}"
               if row.get("parent_executable") else "",
               f"session {_session_text(row)}" if row.get("entry_kind") else ""]
        more = "; ".join(c for c in ctx if c)
        more = f"  [{more}]" if more else ""
        out.append(printable(f"ALERT {row['rule_level']:<8} {rec['@timestamp']}  {row['summary']}{more}"
                             f"  -> {rec['report']}"))
    return out


def live_engine_for_record(
    store_sink: Any,
    store: str,
    *,
    rule_paths: Sequence[str] = (),
    alerts_jsonl: str | None = None,
    webhook: str | None = None,
    echo: Any = None,
    recorder_pids: Sequence[int] = (),
    protected: Sequence[str] = (),
    record_problems: bool = True,
    rules: RuleSet | None = None,
) -> LiveEngine:
    """The live engine `forensix record` adds after its store sink: curated rules plus
    ``rule_paths``, the built-in detectors guarding this recorder and its store, alerts
    to the store, to ``echo`` (a callable taking one line), JSON lines and a webhook.
    ``protected`` adds paths besides the store that only the recorder may modify (the
    shipping spool). ``record_problems``: a rule that cannot run, or was disabled, is said
    in the store too, as an agent warning of the host of the batch at hand (a recorder's
    own host; a log host's engine serves many hosts, and says it in its log only).
    ``rules``: the compiled rule set, when the caller has it already (cli/record_rules.py)."""
    import os

    from forensix.rules.alerts import (
        AlertOutput,
        CallbackOutput,
        JsonlOutput,
        SinkOutput,
        WebhookOutput,
    )
    from forensix.rules.precompile import load_rules_isolated

    # compiled in a child process: pySigma (~16 MB resident) never enters the recorder
    rs = rules if rules is not None else load_rules_isolated(list(rule_paths))
    outputs: list[AlertOutput] = [SinkOutput(store_sink)]
    if echo is not None:
        def _print(alerts: pa.Table) -> None:
            for line in alert_lines(alerts, store):
                echo(line)

        outputs.append(CallbackOutput(_print))
    if alerts_jsonl:
        outputs.append(JsonlOutput(alerts_jsonl, store))
    if webhook:
        outputs.append(WebhookOutput(webhook, store=store))
    pids = tuple(recorder_pids) or (os.getpid(),)
    # a rule it cannot run is said at start (and in the record, with the first events); the others run
    engine = LiveEngine(rs.ok, detectors=default_detectors(pids, (store, *protected)), outputs=outputs,
                        record=store_sink if record_problems else None)
    if echo is not None:  # once, at start: what runs, and what cannot and why
        if rule_paths:
            for line in start_summary(_live_counted(rs, engine), rule_paths):
                echo(line)
        for rule_id, why in engine.skipped:
            echo(f"skipped {rule_id} ({next(r.title for r in rs.ok if r.rule_id == rule_id)}): "
                 f"the live engine cannot run it: {why}")
        engine.notify = echo
    return engine


def _live_counted(rs: RuleSet, engine: LiveEngine) -> RuleSet:
    """``rs`` with the rules the engine skipped counted among those not run (each is
    named on a line of its own after the summary)."""
    skipped = {i for i, _ in engine.skipped}
    if not skipped:
        return rs
    return RuleSet([replace(r, status="unsupported", reason="the live engine cannot run it")
                    if r.ok and r.rule_id in skipped else r for r in rs.rules])


COMMANDS = [rules_group, hunt_cmd, alerts_cmd]
