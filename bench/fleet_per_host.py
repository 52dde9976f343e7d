"""Per-incident analyses on a ClickHouse fleet store: tree, backtrack, forward and report with
--host, and the walks without it that follow connections to other hosts (before and after
the walk went on from the crossing instead of starting again, alternating).

    python bench/fleet_per_host.py --url 'clickhouse://127.0.0.1:PORT/fleetbench?cluster=forensix'
    python bench/fleet.py --per-host-only --events 10000000 --hosts 1000 [--keep-cluster --cluster-dir DIR]

``--url``: an existing store (a kept cluster of ``bench/fleet.py --keep-cluster``), read
only: nothing is written, altered or dropped there. The steps on the generated fleet's own
hosts (host5, the miner on host97) always run; the realistic host (testhost) and the
two-host intrusion (web01, db01) only when the store has them (``bench/fleet.py
--per-host-only`` writes them beside the fleet it generates; ``--only-questions`` does not).

Each step opens a fresh reader as its command does (the host check, the pulls, the
analysis). Beside the wall time: seconds spent in ClickHouse questions (placing the
detection point, asking which hosts hold a connection's other end), in pulls, and how many
DuckDB queries the analysis sent. Rounds alternate the steps and, for the walks without
--host, which of the two ways goes first; the 1-minute load average is noted at each step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from forensix.store.clickhouse import ClickHouseReader, ClickHouseStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_gen import MINER, PRELOAD  # bench/ is not a package when run as a script

REAL_EVENTS = 100_000  # the realistic host the per-host analyses walk (about host5's 102,000)
HEADING = "## Per-host analyses at that scale"


@dataclass
class Step:
    name: str
    host: str | None  # --host; None: the walk starts on the detection point's hosts
    profile: str
    run: Callable[[Any], Any]  # reader -> answer
    size: Callable[[Any], int]  # answer -> objects
    restart: bool | None = None  # without --host: re-walk from the start (before) or go on (after)


@dataclass
class Seen:
    seconds: list[float] = field(default_factory=list)
    ch: list[float] = field(default_factory=list)
    pulls: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    size: int = 0
    pulled: str = ""


def _present(st: ClickHouseStore, hosts: list[str]) -> bool:
    got = st.native(f"SELECT DISTINCT host_name FROM processes WHERE host_name IN ({', '.join(map(repr, hosts))})")
    return set(got.column(0).to_pylist()) == set(hosts)


def _entity(st: ClickHouseStore, host: str, exe: str) -> str:
    from forensix.model.identity import format_entity

    t = st.native(f"SELECT min(entity_id) FROM processes WHERE host_name = '{host}' AND executable = '{exe}'")
    return format_entity(int(t.column(0)[0].as_py()))


def steps(st: ClickHouseStore, write: bool) -> tuple[list[Step], list[str]]:
    """The steps, and what was left out (the hosts they need are not in a store we may not write)."""
    from forensix.analysis.crosshost import across_hosts
    from forensix.analysis.graph import backtrack, forward
    from forensix.analysis.processes import tree
    from forensix.analysis.report import build_report
    from forensix.analysis.targets import parse_target

    def track(fn: Callable[..., Any], target: str) -> Callable[[Any], Any]:
        return lambda r: fn(r, parse_target(target))

    def across(fn: Callable[..., Any], target: str, restart: bool, report: bool = False) -> Callable[[Any], Any]:
        t = parse_target(target)
        graphs: Callable[[Any], list[Any]] = (lambda rep: [rep.graph, rep.impact]) if report else (lambda g: [g])
        return lambda r: across_hosts(r, t, lambda x: fn(x, t), graphs, restart=restart)

    def nodes(g: Any) -> int:
        return len(g.nodes)

    def rep_nodes(rep: Any) -> int:
        return len(rep.graph.nodes)

    miner = _entity(st, "host97", MINER)
    out = [
        Step("`tree --host host5`", "host5", "tree", lambda r: tree(r), lambda t: t.num_rows),
        Step(f"`backtrack {PRELOAD} --host host97` (the generated miner)", "host97", "backtrack",
             track(backtrack, PRELOAD), nodes),
        Step(f"`forward {miner} --host host97` (the miner)", "host97", "forward", track(forward, miner), nodes),
        Step(f"`report {PRELOAD} --host host97`", "host97", "report", track(build_report, PRELOAD), rep_nodes),
    ]
    for restart in (True, False):
        out.append(Step(f"`forward {miner}` (no --host: starts on host97; the fleet is asked who holds the other "
                        "end of its pool connection: nobody)", None, "forward",
                        across(forward, miner, restart), nodes, restart))
    skipped: list[str] = []
    if write and not _present(st, ["testhost", "web01", "db01"]):
        from forensix.testing.fleet import lateral_movement
        from forensix.testing.generator import generate

        t = time.monotonic()
        generate(st, REAL_EVENTS, REAL_EVENTS // 100)
        lateral_movement(st)
        print(f"wrote testhost and web01/db01 in {time.monotonic() - t:.0f} s", file=sys.stderr)
    if not _present(st, ["testhost", "web01", "db01"]):
        skipped.append("testhost, web01 and db01 are not in this store (read-only here): their steps, the walks "
                       "that cross hosts, were left out")
        return out, skipped
    web_bash = _entity(st, "web01", "/usr/bin/bash")
    out += [
        Step("`tree --host testhost`", "testhost", "tree", lambda r: tree(r), lambda t: t.num_rows),
        Step("`backtrack /etc/cron.d/evil --host testhost`", "testhost", "backtrack",
             track(backtrack, "/etc/cron.d/evil"), nodes),
        Step("`forward session:777 --host testhost`", "testhost", "forward", track(forward, "session:777"), nodes),
        Step("`report /etc/cron.d/evil --host testhost`", "testhost", "report",
             track(build_report, "/etc/cron.d/evil"), rep_nodes),
    ]
    for restart in (True, False):
        out += [
            Step(f"`forward {web_bash}` (web01's intruder shell; no --host: starts on web01, crosses to db01)", None,
                 "forward", across(forward, web_bash, restart), nodes, restart),
            Step("`backtrack /etc/cron.d/backdoor` (no --host: starts on db01, crosses to web01, and from its "
                 "attacker's connection to testhost, which the generator gives the same address)", None, "backtrack",
                 across(backtrack, "/etc/cron.d/backdoor", restart), nodes, restart),
            Step("`report /etc/cron.d/backdoor` (no --host: as the backtrack, then the session's forward walk)",
                 None, "report", across(build_report, "/etc/cron.d/backdoor", restart, report=True), rep_nodes,
                 restart),
        ]
    return out, skipped


def _label(s: Step) -> str:
    if s.restart is None:
        return s.name
    return f"{s.name}: {'before, re-walked from the start per host' if s.restart else 'after, goes on from the crossing'}"


def _once(st: ClickHouseStore, step: Step, seen: Seen) -> None:
    """One step on a fresh reader; the ClickHouse questions and the DuckDB queries counted."""
    asked = [0.0]
    native = st.native

    def timed_native(sql: str, params: Any = None) -> Any:
        t = time.monotonic()
        try:
            return native(sql, params)
        finally:
            asked[0] += time.monotonic() - t

    seen.load.append(os.getloadavg()[0])
    st.native = timed_native  # type: ignore[method-assign]  # the bench's own stopwatch, restored below
    try:
        t0 = time.monotonic()
        r = ClickHouseReader(st, host=step.host, profile=step.profile)
        query = r.query
        count = [0]

        def counted(sql: str, params: Any = None) -> Any:
            count[0] += 1
            return query(sql, params)

        r.query = counted  # type: ignore[method-assign]
        out = step.run(r)
        seconds = time.monotonic() - t0
    finally:
        st.native = native  # type: ignore[method-assign]
    pulls = sum(p.seconds for p in r.pulls)
    seen.seconds.append(seconds)
    seen.ch.append(asked[0])  # pulls go through select_table, not native
    seen.pulls.append(pulls)
    seen.queries.append(count[0])
    seen.size = step.size(out)
    slice_pulls = [p for p in r.pulls if p.part == "slice"]
    outside = [p for p in r.pulls if p.part != "slice"]
    seen.pulled = "; ".join(f"{p.table} {','.join(p.hosts or ['all'])} {p.rows:,} x {len(p.columns)} cols "
                            f"{p.seconds:.2f} s" for p in slice_pulls)
    if outside:  # a crossed-into host's rows outside its window, topped up as queries reached them
        seen.pulled += (f"; {len(outside)} top-ups outside the window, {sum(p.rows for p in outside):,} rows "
                        f"{sum(p.seconds for p in outside):.2f} s")
    r.close()


def per_host(st: ClickHouseStore, rounds: int = 3, write: bool = True,
             only: str = "") -> tuple[list[tuple[str, Seen]], list[str]]:
    """Every step ``rounds`` times, alternating (and flipping before/after each round);
    ``only``: the steps whose name holds one of these comma-separated words."""
    todo, skipped = steps(st, write)
    if only:
        todo = [s for s in todo if any(w.strip() in s.name for w in only.split(","))]
    seen = {_label(s): Seen() for s in todo}
    for i in range(rounds):
        order = todo if i % 2 == 0 else sorted(todo, key=lambda s: (s.name, not s.restart))
        for s in order:
            _once(st, s, seen[_label(s)])
    return [(_label(s), seen[_label(s)]) for s in todo], skipped


def render(rows: list[tuple[str, Seen]], skipped: list[str], events: int, hosts: int, command: str,
           generated: str = "") -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    loads = [x for _, s in rows for x in s.load]
    lines = [
        f"{HEADING} (the slice each command reads, pulled into DuckDB)", "",
        (f"Measured {now} with `{command}` on {events:,} events of {hosts:,} hosts{generated}; load average "
         f"(1 min) {min(loads):.1f}-{max(loads):.1f} during the steps. Each step opens a fresh reader as its command "
         f"does (the host check, the pulls, the analysis); best and worst of {len(rows[0][1].seconds)} rounds, the "
         "steps alternating within each round (the walks without --host: before and after in turn, their order "
         "flipped each round). ClickHouse s: questions other than pulls (placing the detection point, the hosts "
         "at a connection's other end); pulls s and DuckDB queries: of the best round."), "",
        "| step | best s | worst s | ClickHouse s | pulls s | DuckDB queries | objects | load | pulled (best round) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, s in rows:
        b = s.seconds.index(min(s.seconds))
        lines.append(f"| {name} | {min(s.seconds):.3f} | {max(s.seconds):.3f} | {s.ch[b]:.3f} | {s.pulls[b]:.3f} | "
                     f"{s.queries[b]} | {s.size:,} | {min(s.load):.1f}-{max(s.load):.1f} | {s.pulled} |")
    lines += [""] + [f"Left out: {x}." for x in skipped] + ([""] if skipped else [])
    return "\n".join(lines)


def write_section(out: Path, section: str) -> None:
    """Replace the per-host section of ``out`` (to the next ``## `` heading), or add it."""
    text = out.read_text() if out.exists() else ""
    head = "\n" + HEADING
    if head in text:
        before, rest = text.split(head, 1)
        ends = [i for i in (rest.find("\n## "), rest.find("\nAgainst the issue's goals")) if i >= 0]
        out.write_text(before + "\n" + section + (rest[min(ends):] if ends else "\n"))
    else:
        out.write_text(text + "\n" + section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the store: clickhouse://HOST:PORT/DATABASE?cluster=NAME (read only)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="", help="replace the per-host section of this file (default: print only)")
    ap.add_argument("--window-from", type=int, default=None,
                    help="events of a crossed-into host from which it is pulled in a time window (default: the "
                    "reader's; a huge number: never, every crossed host whole)")
    ap.add_argument("--only", default="", help="only the steps whose name holds one of these comma-separated "
                    "words (e.g. 'backdoor' for the walks that cross three hosts)")
    a = ap.parse_args()
    if a.window_from is not None:
        ClickHouseReader.window_from = a.window_from
    st = ClickHouseStore(a.url)
    try:
        events = int(st.native("SELECT count() FROM events").column(0)[0].as_py())
        hosts = int(st.native("SELECT uniqExact(host_name) FROM processes").column(0)[0].as_py())
        rows, skipped = per_host(st, a.rounds, write=False, only=a.only)
    finally:
        st.close()
    cmd = f"python bench/fleet_per_host.py --url URL --rounds {a.rounds}" + (f" --only '{a.only}'" if a.only else "")
    cmd += f" --window-from {a.window_from}" if a.window_from is not None else ""
    section = render(rows, skipped, events, hosts, cmd, " (an existing store, read only)")
    print(section)
    if a.out:
        write_section(Path(a.out), section)


if __name__ == "__main__":
    main()
