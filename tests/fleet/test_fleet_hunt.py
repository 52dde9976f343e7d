"""`forensix hunt --store clickhouse://...` runs in ClickHouse, on every shard at once, and
finds what the DuckDB hunt finds on the same history.

The history: forensix.testing.generator's host (daemons, logins, cron, pid reuse, a planted
intrusion), forensix.testing.fleet's eight hosts (a miner on some) and two hosts whose
dropper runs on three UTC days (``_span``), written to a DuckDB store and to the real
2-shard 18.16 cluster. The rules: the curated set, SigmaHQ's Linux
rules the project tests with (tests/rules/fixtures/sigmahq), every operator
(tests/rules/fixtures/ops) and the modifiers of fixtures/hunt_modifiers.yml; the built-in
detectors too. The scans also run on current ClickHouse (chdb) and must agree."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from pyarrow import ipc

from forensix.cli.main import cli
from forensix.rules import default_detectors, hunt, load_rules
from forensix.rules import fleet_hunt as fleet_hunt_module
from forensix.rules.clickhouse_sql import Tables
from forensix.rules.compile import CompiledRule
from forensix.rules.fleet_hunt import _hunt_shard, _scan, fleet_hunt, shard_servers
from forensix.rules.rollup import rollup
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.store import stored_table
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.fleet import fleet
from forensix.testing.generator import StoreBuilder, generate

RULES = Path(__file__).parent.parent / "rules" / "fixtures"
MODIFIERS = Path(__file__).parent / "fixtures" / "hunt_modifiers.yml"
NARROW = Path(__file__).parent / "fixtures" / "hunt_narrow.yml"
DAY = 86_400


def _span(store: Any) -> None:
    """span01 runs /opt/kit/dropper (from cron) on three UTC days, span02 on the last: it
    connects out, writes a file and renames it into /etc/cron.d/, and its child curl too."""
    for name, days in (("span01", (0, 1, 2)), ("span02", (2,))):
        b = StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")
        init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
        cron = b.spawn(init, 400, 1, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
        for d in days:
            t = d * DAY + 600
            drop = b.spawn(cron, 3000 + d, t, "/opt/kit/dropper", ["/opt/kit/dropper", "--stage", str(d)],
                           sha256="0D1E" + "ab" * 30)  # stored as given; the summary keeps it lowered
            curl = b.spawn(drop, 3100 + d, t + 1, "/usr/bin/curl", ["curl", "-s", "http://198.51.100.23/x"])
            b.connect(curl, t + 2, ("10.2.0.1", 40000 + d), ("198.51.100.23", 80))
            b.connect(drop, t + 3, ("10.2.0.1", 45000 + d), ("203.0.113.9", 4444))
            b.write_file(drop, t + 4, f"/var/tmp/stage{d}", 64)
            b.rename(drop, t + 5, f"/var/tmp/stage{d}", f"/etc/cron.d/stage{d}")
            b.file_op(drop, t + 6, "unlink", f"/var/tmp/stage{d}.old")
        b.write(store)


def _repeats(store: Any) -> None:
    """rep01: a reader opens /etc/shadow over and over; the kernel counted the re-opens, so two
    rows stand for 500 and 3 opens (``event_count``): a roll-up's matches are 503 both ways."""
    b = StoreBuilder(host_id="rep01-machine-id", host_name="rep01", boot_id="boot-rep01")
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    reader = b.spawn(init, 700, 10, "/opt/kit/reader", ["/opt/kit/reader"])
    b.open(reader, 11, "/etc/shadow", event_count=500)
    b.open(reader, 12, "/etc/shadow", event_count=3)
    b.write(store)


def _write(store: Any) -> None:
    generate(store, events=20_000, seed=3)
    fleet(store, hosts=8, every=3)
    _span(store)
    _repeats(store)


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("hunt") / "fleet.duckdb"
    with open_writer(path) as w:
        _write(w)
    url = cluster.url(database=f"h_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        _write(ch)
    return str(path), url


def _rules() -> list[CompiledRule]:
    rs = load_rules([RULES / "ops", RULES / "sigmahq", MODIFIERS])
    return rs.ok


def _plain(t: pa.Table) -> list[str]:
    cols = [c for c in t.column_names if c != "detected_ts"]
    return sorted(str(r) for r in t.select(cols).to_pylist())


def test_fleet_hunt_finds_what_the_duckdb_hunt_finds(stores: tuple[str, str]) -> None:
    duck, url = stores
    rules = _rules()
    rd = open_reader(duck)
    try:
        want = hunt(rd, rules, default_detectors())
    finally:
        rd.close()
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, rules, default_detectors())
        shard_of = st._shard_of(sorted({str(h) for h in got.alerts.column("host_name").to_pylist()}))
    assert got.fallback == [] and len(got.in_clickhouse) == len(rules) and got.shards == 2
    # both ways of finding candidates ran: the summaries, and probes of the events' own columns
    # (the path rules through 0006's fleet_names, then fleet_files: test_fleet_paths.py)
    assert {s for _, s in got.narrowed} == {"fleet_exec", "fleet_names", "fleet_ip", "fleet_kinds"}, got.narrowed
    assert len(got.narrowed) >= 20 and len(got.probed) >= 20
    assert want.num_rows > 300
    assert _plain(got.alerts) == _plain(want)
    fired = set(got.alerts.column("rule_id").to_pylist())
    assert len(fired) >= 35, sorted(fired)
    mods = {r.rule_id for r in load_rules([MODIFIERS], builtin=False).ok}
    assert len(mods & fired) >= 12, sorted(mods - fired)
    assert set(shard_of.values()) == {0, 1}  # alerts come from the hosts of both shards


def test_time_window_and_cli(stores: tuple[str, str]) -> None:
    duck, url = stores
    lo, hi = "2026-09-21T14:15:00Z", "2026-09-21T18:00:00Z"

    def run(store: str) -> tuple[str, str]:
        r = CliRunner().invoke(cli, ["hunt", str(RULES / "ops"), "--store", store, "--from", lo, "--to", hi,
                                     "--format", "json"])
        assert r.exit_code == 0, (r.output, r.exception)
        return r.stdout, r.stderr

    def docs(out: str, store: str) -> list[str]:  # without the moment the hunt ran
        return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "event.created"}, sort_keys=True)
                      for line in out.replace(store, "S").splitlines())

    (a, _), (b, err) = run(duck), run(url)
    assert a.count("\n") > 20
    assert docs(a, duck) == docs(b, url)
    assert "rules hunted in ClickHouse on 2 shard(s), 0 over host slices" in err
    assert "candidate hosts and days from the summaries for " in err


def _at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


# (from, to): everything; days 1 and 2 (2026-09-22, and 09-23 cut before its events); the
# end of day 0 to the middle of day 1's events (both days cut)
WINDOWS = [(None, None), (_at("2026-09-22T00:00:00+00:00"), _at("2026-09-23T14:00:00+00:00")),
           (_at("2026-09-21T14:20:00+00:00"), _at("2026-09-22T14:23:24+00:00"))]


def test_candidates_find_what_the_duckdb_hunt_finds_in_every_window(stores: tuple[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    duck, url = stores
    rules = load_rules([NARROW], builtin=False).ok
    fired = []
    # (a summary's candidates on most of a shard's hosts and days send the rule to a probe instead)
    monkeypatch.setattr(fleet_hunt_module, "BROAD", 1.0)
    summaries = fleet_hunt_module._summaries
    for lo, hi in WINDOWS:
        rd = open_reader(duck)
        try:
            want = hunt(rd, rules, [], lo, hi)
        finally:
            rd.close()
        with ClickHouseStore(url) as st:
            got = fleet_hunt(st, rules, [], lo, hi)
            # and on a store without 0007's fleet_kinds: the rules no other summary covers are probed
            with monkeypatch.context() as m:
                m.setattr(fleet_hunt_module, "_summaries",
                          lambda srv, t: {k: v for k, v in summaries(srv, t).items() if k != "fleet_kinds"})
                probed = fleet_hunt(st, rules, [], lo, hi)
        assert _plain(got.alerts) == _plain(probed.alerts) == _plain(want), (lo, hi)
        fired.append(sorted({(r["rule_id"], r["host_name"]) for r in got.alerts.to_pylist()}))
        by_summary = {
            "narrow_image": "fleet_exec", "narrow_none": "fleet_exec", "narrow_parent": "fleet_exec",
            "narrow_not_cmdline": "fleet_exec", "narrow_sha256": "fleet_exec", "narrow_target": "fleet_names",
            "narrow_path_action": "fleet_names", "narrow_ip": "fleet_ip"}
        # (an exec, a network event: the hosts and days that have one, from fleet_kinds)
        assert dict(got.narrowed) == by_summary | {
            "probe_parent_only": "fleet_kinds", "probe_not_target": "fleet_kinds", "probe_port": "fleet_kinds"}
        assert dict(probed.narrowed) == by_summary
        assert {r for r, _ in probed.probed} == {"probe_parent_only", "probe_not_target", "probe_port"}
    whole, days12, cut = fired
    for rule in ("narrow_image", "narrow_parent", "narrow_not_cmdline", "narrow_sha256", "narrow_target",
                 "narrow_path_action", "narrow_ip", "probe_parent_only", "probe_port"):
        assert (rule, "span02") in whole, rule
    assert not any(r == "narrow_none" for r, _ in whole)
    assert ("narrow_ip", "host0000") in whole  # the fleet's miner, from the same summary
    # day 1 is span01's alone, and its "--stage 1" is what narrow_not_cmdline leaves out
    assert {h for _, h in days12} == {"span01"} and ("narrow_not_cmdline", "span01") not in days12
    assert ("narrow_image", "span01") in cut
    # every rule with candidates sent to a probe as "broad": the same alerts. Those whose every
    # test is on the exec's own image, command line or hash keep the summary's hosts and days
    # (it is sure of each: a probe would find them all again)
    monkeypatch.setattr(fleet_hunt_module, "BROAD", 0.0)
    with ClickHouseStore(url) as st:
        broad = fleet_hunt(st, rules, [])
    assert dict(broad.narrowed) == {"narrow_none": "fleet_exec", "narrow_image": "fleet_exec",
                                    "narrow_not_cmdline": "fleet_exec", "narrow_sha256": "fleet_exec"}
    assert "fleet_ip: candidates on more than 0% of its hosts and days" in dict(broad.probed)["narrow_ip"]
    assert sorted({(r["rule_id"], r["host_name"]) for r in broad.alerts.to_pylist()}) == whole
    # and the whole scans of before (what the benchmark compares with): the same alerts again
    with ClickHouseStore(url) as st:
        assert _plain(fleet_hunt(st, rules, [], narrow=False).alerts) == _plain(broad.alerts)


def test_a_rule_without_candidates_costs_one_summary_query(stores: tuple[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = stores
    monkeypatch.setattr(fleet_hunt_module, "BROAD", 1.0)  # the window's days are all span's: kept narrowed
    rules = load_rules([NARROW], builtin=False).ok
    by_name = {r.rule_id: r for r in rules}
    with ClickHouseStore(url) as st:
        none = fleet_hunt(st, [by_name["narrow_none"]])
        image = fleet_hunt(st, [by_name["narrow_image"]])
        window = fleet_hunt(st, [by_name["narrow_image"]], [], *WINDOWS[1])
    assert none.alerts.num_rows == 0 and none.scans == 0 and none.candidates == 0
    # span01 on three days, span02 on one: the exact rule read those four host-days only
    assert image.candidates == 4 and image.scans == 1 and image.alerts.num_rows > 0
    # days 1 and 2 of the window (day 2 in part): span01 twice, span02 once; the scan cuts day 2
    assert window.candidates == 3 and {r["host_name"] for r in window.alerts.to_pylist()} == {"span01"}


def test_the_plan_follows_coverage() -> None:
    from forensix.rules.candidates import SUMMARY_VIEWS, plan

    have = {v.name: v.columns for v in SUMMARY_VIEWS}
    rules = {r.rule_id: r for r in load_rules([NARROW], builtin=False).ok}
    assert plan(rules["narrow_image"], have).summary == "fleet_exec"
    # a store whose summary lacks a column it needs (or has none): the events are probed, named
    lacking = plan(rules["narrow_image"], {"fleet_exec": have["fleet_exec"] - {"command_line"}})
    assert lacking.summary is None and "fleet_exec: the summary lacks command_line" in lacking.why
    assert "fleet_exec: the store has no such summary" in plan(rules["narrow_image"], {}).why
    # a rule no summary of what events say covers: the kinds of event each host had each day
    # (0007's fleet_kinds) narrow it, else its events are probed
    assert plan(rules["probe_parent_only"], have).summary == "fleet_kinds"
    have = {k: v for k, v in have.items() if k != "fleet_kinds"}
    assert "it tests nothing fleet_exec holds" in plan(rules["probe_parent_only"], have).why
    assert "fleet_path: it can match an event without a path" in plan(rules["probe_not_target"], have).why
    assert "fleet_ip: it can match a connection without an address" in plan(rules["probe_port"], have).why
    assert "fleet_kinds: the store has no such summary" in plan(rules["probe_port"], have).why


def test_a_rule_clickhouse_cannot_say_is_named_and_the_others_run(stores: tuple[str, str], tmp_path: Path) -> None:
    _, url = stores
    bad = tmp_path / "args.yml"
    bad.write_text("title: on_args\nname: on_args\nlogsource: {product: linux, category: process_creation}\n"
                   "detection:\n  sel:\n    process.args|contains: pool\n  condition: sel\n")
    r = CliRunner().invoke(cli, ["hunt", str(bad), str(MODIFIERS), "--no-builtin", "--store", url,
                                 "--format", "json"])
    assert r.exit_code == 3, (r.output, r.exception)  # a rule was skipped (rules.hunt, as on DuckDB)
    assert "on_args: a test on the list/binary column process_args" in r.stderr
    # DuckDB cannot run it either: named, and the hunt goes on
    assert "skipped on_args: it fails over the slices too" in r.stderr
    assert "16 rules hunted in ClickHouse on 2 shard(s), 1 over host slices" in r.stderr
    assert r.stdout.count("mod_contains_all") >= 2


class Chdb:
    """A chdb session answering like ``connection.Server.table`` (current ClickHouse)."""

    def __init__(self, sess: Any) -> None:
        self.sess = sess

    def table(self, sql: str) -> pa.Table:
        return ipc.open_file(pa.py_buffer(self.sess.query(sql, "Arrow").bytes())).read_all()

    def close(self) -> None:
        pass


def _matches(tables: Any) -> list[str]:
    """(row, rule) pairs of scans' rows: how rules are grouped into scans differs by server."""
    out = []
    for t in tables:
        for r in t.to_pylist():
            out += [str({**r, "fx_rules": i}) for i in r["fx_rules"]]
    return sorted(out)


def test_the_scans_agree_on_18_16_and_current_clickhouse(stores: tuple[str, str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    chdb_session = pytest.importorskip("chdb.session")
    monkeypatch.setattr(fleet_hunt_module, "BROAD", 1.0)  # one server here, two shards there: other shares
    _, url = stores
    rules = _rules()
    sess = chdb_session.Session(str(tmp_path / "chdb"))
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS fx")
        for _, statements in MIGRATIONS:
            for stmt in statements("fx", None):
                sess.query(stmt)
        with ClickHouseStore(url) as st:
            for name in ("events", "processes", "flows", "accounts"):
                whole = st.select_table(name)
                stored = stored_table(name, whole, pa.array([0] * whole.num_rows, pa.uint64()))  # noqa: F841 - read by chdb
                sess.query(f"INSERT INTO fx.{name} SELECT * FROM Python(stored)")
            new_server = [(Chdb(sess), Tables("fx.events", "fx.processes", "fx.flows", "fx.accounts"))]
            old_servers = shard_servers(st)
            for start in range(0, len(rules), 40):
                chunk = rules[start:start + 40]
                old, new = _scan(old_servers, chunk, None, None), _scan(new_server, chunk, None, None)
                assert old.num_rows > 0
                assert sorted(map(str, old.to_pylist())) == sorted(map(str, new.to_pylist()))
            # the candidates (summaries, probes) and the narrowed scans, in a window that cuts days
            # (the operators' SQL is the scans' above: these rules take every way of candidates)
            narrow = load_rules([RULES / "sigmahq", MODIFIERS, NARROW]).ok
            for lo, hi in WINDOWS[2:]:
                olds = [_hunt_shard(srv, tables, narrow, lo, hi) for srv, tables in old_servers]
                new_shard = _hunt_shard(*new_server[0], narrow, lo, hi)
                assert [p.summary for p in new_shard.plans] == [p.summary for p in olds[0].plans]
                assert sum(p.summary is not None for p in new_shard.plans) >= 20
                old_rows = _matches(t for sh in olds for t in sh.rows)
                assert old_rows and old_rows == _matches(new_shard.rows)
                assert new_shard.candidates == sum(sh.candidates for sh in olds)
            for srv, _ in old_servers:
                srv.close()
    finally:
        sess.close()


def test_a_detector_with_too_many_rows_is_skipped_and_named(stores: tuple[str, str]) -> None:
    _, url = stores
    rules = load_rules([MODIFIERS], builtin=False).ok
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, rules, default_detectors(), max_replay_rows=10)
    assert got.skipped and all("(more than 10); hunt it per host" in why for _, why in got.skipped)
    assert any("forensix-store-touched" in name for name, _ in got.skipped), got.skipped
    assert "mod_contains_all" in set(got.alerts.column("rule_id").to_pylist())  # the rules ran all the same


def test_the_hunt_shows_a_roll_up_per_rule_first(stores: tuple[str, str]) -> None:
    """What an investigator reads: one line per rule (findings, matching events, hosts,
    first and last time, the hosts with most findings), the same from DuckDB and from the
    cluster, and the findings themselves only when asked for."""
    duck, url = stores

    def run(store: str, *extra: str) -> Any:
        r = CliRunner().invoke(cli, ["hunt", str(RULES / "ops"), "--store", store, *extra])
        assert r.exit_code == 0, (r.output, r.exception)
        return r

    found = [json.loads(line) for line in run(duck, "--format", "json").stdout.splitlines()]
    per_rule: dict[str, list[dict[str, Any]]] = {}
    for f in found:
        per_rule.setdefault(f["rule.title"], []).append(f)
    assert len(per_rule) >= 5 and len(found) > 20
    texts = []
    for store in (duck, url):
        r = run(store)
        lines = r.stdout.splitlines()
        assert lines[0].split()[:6] == ["LEVEL", "RULE", "FINDINGS", "MATCHES", "HOSTS", "FIRST_TS"], lines[0]
        assert len(lines) == 1 + len(per_rule)  # the roll-up only: no finding's line
        assert f"({len(found):,} findings: --detail lists them" in r.stderr
        texts.append(r.stdout)
        for title, fs in per_rule.items():
            row = next(ln for ln in lines if f"  {title[:58]}" in ln)
            hosts = {f.get("host.name") for f in fs}
            cells = row.split("  ")
            assert f"  {len(fs)}  " in row and f"  {len(hosts)}  " in row, (row, len(fs), len(hosts))
            assert f"  {sum(f.get('alert.count', 1) or 1 for f in fs)}  " in row, (row, fs[0].keys())
            busiest = max(sorted(hosts), key=lambda h: sum(f.get("host.name") == h for f in fs))
            assert busiest in cells[-1] and (len(hosts) <= 3 or f"+{len(hosts) - 3} more host" in row), row
    assert texts[0] == texts[1]  # the same roll-up from both stores
    # rows standing for repeats the kernel counted weigh their count in both (ClickHouse's
    # count in SQL once counted each row once: 2 matches instead of 503)
    assert [f.get("alert.count") for f in per_rule["op_shadow"] if f.get("host.name") == "rep01"] == [503]
    # the most severe rules come first
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4}
    levels = [order.get(ln.split()[0], 5) for ln in texts[0].splitlines()[1:]]
    assert levels == sorted(levels)
    # the findings on request: the first 3 by time, then every one
    some = run(url, "--limit", "3").stdout
    assert f"Findings (the first 3 of {len(found):,} findings, by time):" in some
    tail = some.split("by time):\n", 1)[1].splitlines()
    assert len(tail) == 4 and tail[0].startswith("TS ")
    every = run(duck, "--detail").stdout.split("(every finding, by time):\n", 1)[1].splitlines()
    assert len(every) == 1 + len(found)
    # machines: JSON as before, every finding; --limit cuts it too
    assert len(run(url, "--format", "json", "--limit", "2").stdout.splitlines()) == 2


def test_only_the_findings_shown_are_built(stores: tuple[str, str]) -> None:
    """A limit builds alerts for the first findings only, and they are the first of the
    whole hunt's, field for field; every finding still has its head (the roll-up's input)."""
    _, url = stores
    rules = load_rules([RULES / "ops", MODIFIERS]).ok
    with ClickHouseStore(url) as st:
        whole = fleet_hunt(st, rules, default_detectors())
        first = fleet_hunt(st, rules, default_detectors(), limit=7)
        none = fleet_hunt(st, rules, default_detectors(), limit=0)
    n = whole.alerts.num_rows
    assert n > 300 and whole.heads.num_rows == first.findings == none.findings == n
    assert first.alerts.num_rows == 7 and none.alerts.num_rows == 0
    cols = [c for c in whole.alerts.column_names if c != "detected_ts"]
    assert first.alerts.select(cols).to_pylist() == whole.alerts.slice(0, 7).select(cols).to_pylist()
    heads = ("rule_id", "host_id", "host_name", "boot_id", "ts", "last_ts", "alert_count")
    assert whole.heads.select(heads).to_pylist() == whole.alerts.select(heads).to_pylist()
    # a roll-up alone: the rules grouped by process alone are counted in ClickHouse (no row
    # per finding comes back), the others by their heads; the roll-up is the whole hunt's
    def pairs(t: pa.Table) -> set[tuple[str, str]]:
        return set(zip(t.column("rule_id").to_pylist(), t.column("host_name").to_pylist(), strict=True))

    # (a rule ClickHouse cannot count on one shard, a key longer than the grouping window, is
    # hunted match by match there, and counted on the other)
    assert len({r for r, _ in pairs(none.counted)}) >= 10 and not pairs(none.counted) & pairs(none.heads)
    assert none.heads.num_rows < n
    assert rollup(none.heads, counted=none.counted).to_pylist() == rollup(whole.alerts).to_pylist()
