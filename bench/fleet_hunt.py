"""Fleet hunt benchmark: `forensix hunt --store clickhouse://...` over bench/fleet.py's fleet.

    python bench/fleet_hunt.py [--events 100000000] [--hosts 1000] [--runs 3] [--detectors]
                               [--shown rollup|all] [--per-rule] [--cluster-dir DIR]
                               [--out docs/benchmarks-fleet-hunt.md]

Generates the fleet of bench/fleet.py (the same INSERT ... SELECT from system.numbers, in a
local 2-shard cluster of Debian's ClickHouse 18.16) and times the hunt of the curated rules
plus SigmaHQ's Linux rules the project tests with, in ClickHouse (``rules.fleet_hunt``),
two ways side by side, alternating run by run: with candidates (the summaries, probes of
the events' own columns, then the exact rules over the candidate hosts and days only) and
by whole scans (``narrow=False``, the hunt before candidates). Three rule sets: the 33
rules (none matches this fleet), plus a rule that matches the planted miner (every 97th
host), plus one that matches every exec (candidates on every host: the worst case). With
``--detectors`` also with the built-in detectors (which pull their rows). With
``--cluster-dir`` a cluster started there (``scripts/clickhouse.sh start``) is used and a
fleet already generated in it is reused. Load averages are printed beside every figure:
other work on the machine slows these runs. ``--shown rollup`` (the default) times what
``forensix hunt`` does by default: every finding counted and rolled up per rule, no alert
built; ``--shown all`` builds every finding's alert with its evidence (``--format json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

# the fleet of bench/fleet.py, generated the same way
from fleet import load_fleet

from forensix.rules import default_detectors, load_rules
from forensix.rules.fleet_hunt import fleet_hunt
from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.clickhouse import load_cluster, start_cluster, stop_cluster

DB = "fleetbench"
SIGMAHQ = ROOT / "tests" / "rules" / "fixtures" / "sigmahq"
MATCHING = ROOT / "bench" / "fixtures" / "fleet_hunt_matching.yml"


def _load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def generate(url: str, events: int, hosts: int) -> float:
    st = ClickHouseStore(url, write=True)
    try:
        have = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        if have >= events:
            return 0.0
        return load_fleet(st, events, hosts)
    finally:
        st.close()


def copy_fleet(cluster: Any, source: str, database: str) -> float:
    """A database of this version's store filled from ``source`` (a fleet generated before,
    never written to): the stored rows copied shard by shard (INSERT ... SELECT of each local
    table), through this version's views that ``source`` lacks (their summaries built as at
    insert), the summaries both have copied as they are. Seconds taken. (Not ``Merge`` tables
    over ``source`` instead of a copy: a probe's PREWHERE through one made both 18.16 servers
    of a cluster crash, a segfault, where the same query on the MergeTree tables runs.)"""
    from forensix.store.clickhouse.connection import Server
    from forensix.store.clickhouse.summaries import SUMMARIES, backfill_sql, view_name

    t = time.monotonic()
    ClickHouseStore(cluster.url(database=database), write=True).close()  # every migration, on empty tables
    name = cluster.name

    def one(shard: Any) -> None:  # (the shards at once: a copy is mostly one thread a server)
        srv = Server("127.0.0.1", shard.tcp_port, timeout=6 * 3600.0)
        try:
            have = {str(r[0]) for r in srv.execute(f"SELECT name FROM system.tables WHERE database = '{source}'")}
            old = [s for s in SUMMARIES if f"{s}_local" in have]
            views = {view_name(s, v, name) for s in old for v in SUMMARIES[s].selects}
            for v in sorted(views):  # the summaries ``source`` has are copied, not built again
                srv.execute(f"DROP TABLE IF EXISTS `{database}`.`{v}`")
            for table in [*schema.TABLES, *old]:
                local = f"{table}_local"
                cols = [str(r[0]) for r in srv.execute(f"DESCRIBE TABLE `{database}`.`{local}`")]
                theirs = {str(r[0]) for r in srv.execute(
                    f"SELECT name FROM system.columns WHERE database = '{source}' AND table = '{local}'")}
                both = ", ".join(f"`{c}`" for c in cols if c in theirs)
                print(f"shard {shard.tcp_port}: {local} (load {_load()})", flush=True)
                srv.execute(f"INSERT INTO `{database}`.`{local}` ({both}) SELECT {both} FROM `{source}`.`{local}`",
                            settings={"allow_experimental_low_cardinality_type": 1})
            # the views dropped above again, as every store of this version has them
            for stmt in backfill_sql(database, name, old):
                if stmt.startswith("CREATE MATERIALIZED VIEW"):
                    srv.execute(stmt)
        finally:
            srv.close()

    with ThreadPoolExecutor(max_workers=len(cluster.shards)) as pool:
        list(pool.map(one, cluster.shards))
    return time.monotonic() - t


def measure(url: str, runs: int, detectors: bool, ways: tuple[bool, ...] = (True, False),
            limit: int | None = None) -> list[dict[str, Any]]:
    base = load_rules([SIGMAHQ]).ok
    extra = {r.rule_id: r for r in load_rules([MATCHING], builtin=False).ok}
    sets = [("33 rules", base), ("33 + the miner rule", base + [extra["bench_miner"]]),
            ("33 + miner + every-exec rule", base + list(extra.values()))]
    if detectors:
        sets.append(("33 rules + built-in detectors", base))
    out = []
    with ClickHouseStore(url) as st:
        n = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        for label, rules in sets:
            dets = default_detectors() if "detectors" in label else []
            for i in range(runs):
                # alternate which way goes first: a machine busy with other work slows both alike
                for narrow in (ways if i % 2 == 0 else ways[::-1]):
                    before = _load()
                    t = time.monotonic()
                    res = fleet_hunt(st, rules, dets, narrow=narrow, limit=limit)
                    s = time.monotonic() - t
                    row = {"what": label, "how": "candidates" if narrow else "whole scans", "run": i + 1,
                           "seconds": s, "events": n, "rules": len(res.in_clickhouse),
                           "narrowed": len(res.narrowed), "probed": len(res.probed), "scans": res.scans,
                           "host_days": res.candidates, "matched": res.matched_rows,
                           "replayed": res.replayed_rows, "alerts": res.findings,
                           "load_before": before, "load_after": _load()}
                    print(row, flush=True)
                    out.append(row)
    return out


# how a rule alone is hunted, side by side: what `forensix hunt` does by default (a roll-up,
# findings counted in ClickHouse where it can), the same roll-up from every finding's head
# counted in Python (before this), and every finding built into an alert (--format json)
WAYS: dict[str, dict[str, Any]] = {
    "roll-up counted in ClickHouse": {"limit": 0},
    # the same, an exec rule's findings never counted from fleet_exec (rules/summed.py): by its scan
    "roll-up counted by scans": {"limit": 0, "summed": False},
    "roll-up counted in Python": {"limit": 0, "count": False},
    "every alert": {"limit": None},
}


def per_rule(url: str, ways: list[str], only: list[str] | None = None) -> list[dict[str, Any]]:
    """Each rule hunted alone with candidates (summary or probe, exact scan, findings), each
    way in turn (the order alternates rule by rule): seconds, how its candidates came, rows
    matched and findings."""
    rules = load_rules([SIGMAHQ]).ok + load_rules([MATCHING], builtin=False).ok
    if only:
        rules = [r for r in rules if any(o in r.title for o in only)]
    out = []
    with ClickHouseStore(url) as st:
        for n, r in enumerate(rules):
            for way in (ways if n % 2 == 0 else ways[::-1]):
                before = _load()
                t = time.monotonic()
                res = fleet_hunt(st, [r], [], **WAYS[way])
                s = time.monotonic() - t
                how = (f"summary {res.narrowed[0][1]}" if res.narrowed else "probe" if res.probed else
                       "over host slices" if res.fallback else "?")
                if res.summed:  # counted from fleet_exec: on how many hosts (and how many scanned)
                    how += f", counted from it on {res.summed[0][1]:,} hosts ({res.summed[0][2]:,} scanned)"
                row = {"rule": r.title[:60], "how": how, "way": way, "seconds": s, "scans": res.scans,
                       "host_days": res.candidates, "matched": res.matched_rows, "alerts": res.findings,
                       "load": before}
                print(row, flush=True)
                out.append(row)
    return out


def render_rules(rows: list[dict[str, Any]]) -> list[str]:
    ways = list(dict.fromkeys(r["way"] for r in rows))
    lines = ["", "Each rule alone (`--per-rule`), candidates; seconds each way (run one after the other, the order",
             "alternating rule by rule); rows sent back: matches, or (rule, host) counts:", "",
             "| rule | candidates from | " + " | ".join(f"{w} (s)" for w in ways)
             + " | scans | host-days read | rows sent back | findings | load before |",
             "|---|---|" + "---:|" * len(ways) + "---:|---:|---:|---:|---|"]
    for title in dict.fromkeys(r["rule"] for r in rows):
        mine = {r["way"]: r for r in rows if r["rule"] == title}
        first = mine[ways[0]]
        secs = " | ".join(f"{mine[w]['seconds']:.2f}" if w in mine else "" for w in ways)
        lines.append(f"| {title} | {first['how']} | {secs} | {first['scans']} | {first['host_days']:,} | "
                     f"{first['matched']:,} | {first['alerts']:,} | {first['load']} |")
    return lines


def render(a: argparse.Namespace, rows: list[dict[str, Any]], gen_s: float, events: int) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cmd = f"python bench/fleet_hunt.py --events {a.events} --hosts {a.hosts} --runs {a.runs}" + (
        " --detectors" if a.detectors else "") + (f" --how {a.how}" if a.how != "both" else "") + (
        " --per-rule" if a.per_rule else "") + f" --shown {a.shown}" + (" --hunt-only" if a.hunt_only else "") + (
        " --no-sets" if a.no_sets else "") + (f" --ways {a.ways}" if a.ways else "") + (
        f" --cluster-dir {a.cluster_dir}" if a.cluster_dir else "") + (f" --only '{a.only}'" if a.only else "") + (
        f" --database {a.database}" if a.database != DB else "")
    lines = [
        f"## {now}" + (f": {a.label}" if a.label else ""),
        "",
        f"Measured {now} on {platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}) with `{cmd}`.",
        (f"The fleet of bench/fleet.py ({events:,} events of {a.hosts:,} hosts"
         + (f", generated in {gen_s:.0f} s" if gen_s else ", generated before") + ") in a local 2-shard cluster of"),
        "Debian's ClickHouse 18.16 on the same 2 CPUs; `forensix hunt --store clickhouse://...` with the curated",
        "rules and SigmaHQ's Linux rules of tests/rules/fixtures/sigmahq (33 in ClickHouse), run on both shards at",
        "once, two ways alternating run by run: *candidates* (candidate hosts and days from the summary tables,",
        "or from a probe of the events' own columns, then the exact rules over those only) and *whole scans*",
        "(the hunt before candidates, `fleet_hunt(..., narrow=False)`). The two added rules are",
        "bench/fixtures/fleet_hunt_matching.yml. " + ("Findings counted and rolled up per rule, no alert built (what "
        "`forensix hunt` prints by default)." if a.shown == "rollup" else "Every finding built into an alert with "
        "its evidence (`forensix hunt --format json`)."),
        "Load average (1, 5, 15 min) before and after each run:",
        "other engineers' work shares the machine.",
        "",
        ("| rules | how | run | seconds | narrowed by summaries | probed | scans | host-days read | rows matched | "
         "rows replayed | findings | load before | load after |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    if not rows:  # each rule alone only (--no-sets): no table of rule sets
        return "\n".join(lines[:-3]) + "\n"
    for r in rows:
        lines.append(f"| {r['what']} | {r['how']} | {r['run']} | {r['seconds']:.2f} | {r['narrowed']} | {r['probed']} | "
                     f"{r['scans']} | {r['host_days']:,} | {r['matched']:,} | {r['replayed']:,} | {r['alerts']} | "
                     f"{r['load_before']} | {r['load_after']} |")
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["what"], r["how"])
        best[key] = min(best.get(key, float("inf")), r["seconds"])
    lines += ["", "Best of the runs, side by side:", "",
              "| rules | whole scans (s) | candidates (s) | ratio |", "|---|---:|---:|---:|"]
    for what in dict.fromkeys(r["what"] for r in rows):
        w, c = best.get((what, "whole scans")), best.get((what, "candidates"))
        if w is not None and c is not None:
            lines.append(f"| {what} | {w:.2f} | {c:.2f} | {w / c:.1f}x |")
    lines += ["", "scans: queries over the events or flows, all shards (a summary query is not one); host-days",
              "read: the (host, UTC day) pairs the exact rules read, all shards; rows matched: rows the shards",
              "sent back (Sigma matches); rows replayed: rows pulled for the built-in detectors (docs/fleet.md).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--detectors", action="store_true", help="also the 33 rules with the built-in detectors")
    ap.add_argument("--cluster-dir", help="use the cluster started in this directory (and keep its data)")
    ap.add_argument("--how", choices=("both", "candidates", "whole"), default="both",
                    help="candidates, whole scans, or both alternating")
    ap.add_argument("--per-rule", action="store_true", help="also each rule alone, with candidates")
    ap.add_argument("--shown", choices=("rollup", "all"), default="rollup",
                    help="rollup: alerts built for no finding, what `forensix hunt` shows by default (a roll-up "
                         "per rule); all: every finding built into an alert with its evidence (--format json)")
    ap.add_argument("--hunt-only", action="store_true",
                    help="never write to the cluster (no generation, no migration): hunt a fleet generated before")
    ap.add_argument("--no-sets", action="store_true", help="only each rule alone (with --per-rule)")
    ap.add_argument("--ways", default="", help="with --per-rule: these ways only, comma-separated (of WAYS)")
    ap.add_argument("--only", default="", help="with --per-rule: the rules whose title has one of these "
                    "comma-separated words")
    ap.add_argument("--database", default=DB,
                    help="the database of the fleet on the cluster (another than fleetbench: e.g. one filled from it "
                         "with --copy-from, whose views built this version's summaries)")
    ap.add_argument("--copy-from", default="",
                    help="first fill --database from this database of the cluster (read only): its rows through this "
                         "version's views it lacks, its summaries copied")
    ap.add_argument("--label", default="", help="a word on what this run is (in the heading)")
    ap.add_argument("--out", default="docs/benchmarks-fleet-hunt.md",
                    help="the figures are added at the top of this file (older ones are kept)")
    a = ap.parse_args()
    ways = {"both": (True, False), "candidates": (True,), "whole": (False,)}[a.how]
    own = a.cluster_dir is None
    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="fx-fleet-hunt-")) / "ch", shards=2) if own \
        else load_cluster(a.cluster_dir)
    try:
        url = cluster.url(database=a.database)
        if a.copy_from:
            print(f"filled {a.database} from {a.copy_from} in {copy_fleet(cluster, a.copy_from, a.database):.0f} s "
                  f"(load {_load()})", flush=True)
        gen_s = 0.0 if a.hunt_only else generate(url, a.events, a.hosts)
        print(f"generated in {gen_s:.0f} s (load {_load()})", flush=True)
        with ClickHouseStore(url) as st:
            events = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        limit = 0 if a.shown == "rollup" else None
        rows = [] if a.no_sets else measure(url, a.runs, a.detectors, ways, limit)
        chosen = [w.strip() for w in a.ways.split(",") if w.strip()] or (
            ["roll-up counted in ClickHouse", "roll-up counted in Python"] if a.shown == "rollup" else ["every alert"])
        only = [o.strip() for o in a.only.split(",") if o.strip()]
        rules = per_rule(url, chosen, only) if a.per_rule else []
    finally:
        if own:
            stop_cluster(cluster)
    report = render(a, rows, gen_s, events) + ("\n".join(render_rules(rules)) + "\n" if rules else "")
    out = Path(a.out)
    title = "# Fleet hunt benchmark (ClickHouse)\n"
    old = out.read_text() if out.exists() else ""
    out.write_text(title + "\n" + report + "\n" + old.removeprefix(title).lstrip("\n"))
    print(report)


if __name__ == "__main__":
    main()
