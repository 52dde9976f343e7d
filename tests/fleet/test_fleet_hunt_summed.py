"""An exec rule's roll-up counted from fleet_exec (rules/summed.py) on a real 2-shard cluster of
Debian's ClickHouse 18.16: the same findings per rule and host, first and last time, as the
whole scan's count and as DuckDB's hunt, in windows that take whole hours from the summary and
windows that cut hours (scanned), and the hosts the summary cannot decide scanned:

* ``plainNN``: workers (one exec each) every 20 minutes for 30 hours (across a UTC midnight);
* ``twice01``: a process that execs twice, both matching (``env worker --job=7``, then
  ``worker --job=7``), once a second apart and once 15 minutes apart (two findings of one
  process: the count of processes would say one);
* ``noargs01``: an exec recorded without its argv (its command line is its image's: the
  summary keeps "" and cannot say);
* ``import01``: an exec without cpu and seq (an imported record: fleet_exec_unkeyed, 0008);
* ``other01``: an exec with a message (fleet_exec_other, 0007).

Half the hosts are stored before 0008 (its back-fill summarizes them), the others through its
view."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from forensix.rules import hunt, load_rules
from forensix.rules.compile import CompiledRule
from forensix.rules.fleet_hunt import fleet_hunt
from forensix.rules.rollup import rollup
from forensix.rules.summed import hours
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse import store as ch_store
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.summaries import UNKEYED
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import StoreBuilder

RULES = Path(__file__).parent / "fixtures" / "hunt_summed.yml"
H = 3_600
HOUR_NS = H * 10**9
ODD = ("twice01", "noargs01", "import01", "other01")  # the hosts the summary cannot decide for summed_job


def _host(name: str) -> StoreBuilder:
    b = StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    for k in range(0, 90, 3 if name in ODD else 1):  # every 20 minutes (an hour for the odd ones)
        b.spawn(init, 100 + k, 600 + k * 1200, "/usr/bin/worker", ["worker", f"--job={k % 8}"])
    t = 5 * H + 300
    if name == "twice01":
        for pid, gap in ((900, 1.0), (901, 900.0)):
            p = b.spawn(init, pid, t, "/usr/bin/env", ["env", "worker", "--job=7"])
            b.exec(p, t + gap, "/usr/bin/worker", ["worker", "--job=7"])
            t += 2 * H
    elif name == "noargs01":
        b.spawn(init, 900, t, "/usr/bin/worker", ["worker", "--job=7"])
        b.events[-1].update(process_args=None)  # the image keeps the argv
    elif name == "import01":
        b.spawn(init, 900, t, "/usr/bin/worker", ["worker", "--job=7"])
        b.events[-1].update(cpu=None, seq=None)
    elif name == "other01":
        b.spawn(init, 900, t, "/usr/bin/worker", ["worker", "--job=7"])
        b.events[-1].update(message="imported: worker --job=7")
    return b


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    hosts = [_host(n) for n in (*(f"plain{i:02d}" for i in range(6)), *ODD)]
    path = tmp_path_factory.mktemp("summed") / "summed.duckdb"
    with open_writer(path) as w:
        for b in hosts:
            b.write(w)
    url = cluster.url(database=f"s_{uuid.uuid4().hex[:12]}")
    mp = pytest.MonkeyPatch()
    mp.setattr(ch_store, "MIGRATIONS", [m for m in MIGRATIONS if m[0] != UNKEYED])
    with ClickHouseStore(url, write=True) as st:
        for b in hosts[::2]:
            b.write(st)
        assert UNKEYED not in st.migrations()
    mp.undo()
    with ClickHouseStore(url, write=True) as st:  # 0008 back-fills the first half
        assert UNKEYED in st.migrations()
        for b in hosts[1::2]:
            b.write(st)
    return str(path), url


def _rules() -> dict[str, CompiledRule]:
    return {r.rule_id: r for r in load_rules([RULES], builtin=False).ok}


def _per_host(heads: pa.Table, counted: pa.Table | None = None) -> list[tuple[Any, ...]]:
    """(rule, host, findings, matches, first, last) of a hunt's findings (their heads or
    alerts, and the findings counted per host)."""
    per: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 2**63, 0])
    for r in heads.to_pylist():
        v = per[(r["rule_id"], r["host_name"])]
        v[0] += 1
        v[1] += r["alert_count"] or 1
        v[2], v[3] = min(v[2], r["ts"]), max(v[3], r["last_ts"] or r["ts"])
    for r in (counted.to_pylist() if counted is not None else ()):
        v = per[(r["rule_id"], r["host_name"])]
        v[0] += r["findings"]
        v[1] += r["matches"]
        v[2], v[3] = min(v[2], r["ts"]), max(v[3], r["last_ts"])
    return sorted((*k, *v) for k, v in per.items())


def _windows() -> list[tuple[int | None, int | None]]:
    t0 = StoreBuilder().t(0)
    hour = t0 // HOUR_NS * HOUR_NS
    return [
        (None, None),
        (hour + 3 * HOUR_NS, hour + 20 * HOUR_NS),  # whole hours, across midnight: the summary alone
        (t0 + 3 * H * 10**9 + 1, t0 + 25 * H * 10**9 + 7),  # both ends cut an hour: those scanned
        (t0 + 5 * H * 10**9, None),  # from a cut hour on
        (None, t0 + 6 * H * 10**9 + 10**9),  # up to a cut hour
        (t0 + 5 * H * 10**9 + 60 * 10**9, t0 + 5 * H * 10**9 + 1_900 * 10**9),  # inside an hour or two: no whole one
    ]


def test_the_summed_roll_up_is_the_scans_and_duckdbs_in_every_window(stores: tuple[str, str]) -> None:
    duck, url = stores
    rules = list(_rules().values())
    rd = open_reader(duck)
    try:
        with ClickHouseStore(url) as st:
            for since, until in _windows():
                want = hunt(rd, rules, [], since, until)
                got = fleet_hunt(st, rules, [], since, until, limit=0)
                scanned = fleet_hunt(st, rules, [], since, until, limit=0, summed=False)
                assert not scanned.summed and ("summed_job", "summed_image") == tuple(r for r, _, _ in got.summed)
                assert _per_host(got.heads, got.counted) == _per_host(scanned.heads, scanned.counted) \
                    == _per_host(want), (since, until)
                assert rollup(got.heads, counted=got.counted).to_pylist() == rollup(want).to_pylist()
                assert got.findings == want.num_rows
    finally:
        rd.close()


def test_the_fast_path_counts_the_decided_hosts_and_scans_only_the_others(stores: tuple[str, str]) -> None:
    """No window: the six plain hosts counted from fleet_exec with no scan of their events;
    the four odd ones scanned for the rule alone (their days only): twice01's process with
    two matches 15 minutes apart is two findings there, noargs01's argv comes from its image."""
    _, url = stores
    rules = _rules()
    with ClickHouseStore(url) as st:
        job = fleet_hunt(st, [rules["summed_job"]], limit=0)
        scanned = fleet_hunt(st, [rules["summed_job"]], limit=0, summed=False)
        image = fleet_hunt(st, [rules["summed_image"]], limit=0)
        never = fleet_hunt(st, [rules["summed_never"]], limit=0)
    assert job.summed == [("summed_job", 6, 4)]
    assert job.candidates == 2 * len(ODD) and scanned.candidates == 2 * (6 + len(ODD))  # host-days scanned
    counts = {r[1]: r[2:4] for r in _per_host(job.heads, job.counted)}
    assert counts["twice01"] == (30 + 3, 30 + 4) and counts["noargs01"] == (31, 31)  # findings, matches
    assert counts["plain03"] == (90, 90)
    # an image rule: twice01's env is no worker (one match a process), noargs01's image is known
    assert image.summed == [("summed_image", 8, 2)] and image.candidates == 2 * 2
    # a rule with few candidates is scanned over them as before (noargs01's day: its "" may be anything)
    assert never.summed == [] and never.scans == 1 and never.findings == 0


def test_a_window_inside_whole_hours_reads_no_event(stores: tuple[str, str]) -> None:
    """Whole hours of the next UTC day (the odd execs are on the first): every host counted
    from the summary, no scan at all."""
    _, url = stores
    t0 = StoreBuilder().t(0)
    hour = t0 // HOUR_NS * HOUR_NS
    since, until = hour + 11 * HOUR_NS, hour + 14 * HOUR_NS
    assert hours(since, until).cuts == () and since // (24 * HOUR_NS) > (t0 + 6 * HOUR_NS) // (24 * HOUR_NS)
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, [_rules()["summed_image"]], [], since, until, limit=0)
    assert got.scans == 0 and got.summed == [("summed_image", 10, 0)] and got.findings == 6 * 9 + 4 * 3


def test_hours_of_a_window() -> None:
    t0 = StoreBuilder().t(0)  # 800 s into an hour
    hour = t0 // HOUR_NS * HOUR_NS
    whole = hours(hour, hour + 2 * HOUR_NS)
    assert (whole.cuts, whole.empty) == ((), False) and whole.hi is not None and whole.lo is not None
    cut = hours(t0, t0 + 2 * HOUR_NS)
    assert cut.cuts == ((t0, hour + HOUR_NS), (hour + 2 * HOUR_NS, t0 + 2 * HOUR_NS)) and len(cut.cut) == 2
    inside = hours(t0, t0 + 60 * 10**9)
    assert inside.empty and inside.cuts == ((t0, t0 + 60 * 10**9),) and len(inside.cut) == 1
    assert hours(None, None).cuts == () and not hours(None, None).empty


@pytest.mark.parametrize("limit", [1, 40])
def test_a_limit_shows_the_first_findings_of_the_whole_hunt(stores: tuple[str, str], limit: int) -> None:
    """``--limit N``: the summed rules' findings counted, their first N scanned up to a bound
    from the summary's hours; the alerts shown are the first N of the whole hunt's (and of
    DuckDB's), field for field, and every finding is counted once."""
    duck, url = stores
    rules = list(_rules().values())
    cols: list[str] | None = None
    rd = open_reader(duck)
    try:
        with ClickHouseStore(url) as st:
            for since, until in _windows()[::2]:
                whole = fleet_hunt(st, rules, [], since, until)
                got = fleet_hunt(st, rules, [], since, until, limit=limit)
                want = hunt(rd, rules, [], since, until)
                cols = cols or [c for c in whole.alerts.column_names if c != "detected_ts"]
                assert not whole.summed and ("summed_job", "summed_image") == tuple(r for r, _, _ in got.summed)
                assert got.alerts.select(cols).to_pylist() == whole.alerts.slice(0, limit).select(cols).to_pylist()
                assert _plain(got.alerts) == _plain(want.slice(0, limit))
                assert _per_host(got.heads, got.counted) == _per_host(whole.alerts) == _per_host(want)
                assert got.findings == whole.alerts.num_rows == want.num_rows
                # far fewer matches sent back than the whole hunt's (without a window: over 30 hours)
                assert got.matched_rows < whole.matched_rows / 2 or (since, until) != (None, None)
    finally:
        rd.close()


def _plain(t: pa.Table) -> list[str]:
    return [str({k: v for k, v in r.items() if k != "detected_ts"}) for r in t.to_pylist()]
