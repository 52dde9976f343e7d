"""The path rules and path questions from 0006's summaries (fleet_names, fleet_files) on a
real 2-shard cluster of Debian's ClickHouse 18.16, beside the DuckDB store's answers.

The history: six hosts that touch cron files. pkg01's dpkg writes a cron file (an image the
rule excludes), evil01's dropper writes one (the intrusion), read01 only reads /etc/crontab,
swap01's process starts as dpkg and writes after exec'ing /tmp/sneaky (a match: the image as
of the write), swap02's starts as /tmp/sneaky and writes after exec'ing dpkg (excluded), and
late01's dropper writes a cron file on the next UTC day; twelve more hosts only read. A rule that tests the open's write
flags and the acting image (``NOT Image``) must read only the hosts and days it matches on,
decided from the summaries before any scan; one no host can match must scan nothing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from forensix.rules import load_rules
from forensix.rules.compile import CompiledRule
from forensix.rules.fleet_hunt import fleet_hunt
from forensix.rules.hunt import hunt_rules
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.fleet import ask
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import StoreBuilder

DAY = 86_400
T0 = 1_790_000_000  # the builder's time 0 (2026-09-21 14:13 UTC); its times are seconds after it
MID = 1_790_035_200  # the next UTC midnight


def _host(store: Any, name: str, plan: Any) -> None:
    b = StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    plan(b, init)
    b.write(store)


def _history(store: Any) -> None:
    def pkg(b: StoreBuilder, init: Any) -> None:
        dpkg = b.spawn(init, 200, 600, "/usr/bin/dpkg", ["dpkg", "-i", "job.deb"])
        b.write_file(dpkg, 601, "/etc/cron.d/pkgjob")
        b.read_file(dpkg, 602, "/etc/crontab")

    def evil(b: StoreBuilder, init: Any) -> None:
        drop = b.spawn(init, 300, 700, "/tmp/.x/dropper", ["/tmp/.x/dropper"])
        b.write_file(drop, 701, "/etc/cron.d/backdoor")

    def read(b: StoreBuilder, init: Any) -> None:
        cat = b.spawn(init, 400, 800, "/usr/bin/cat", ["cat", "/etc/crontab"])
        b.read_file(cat, 801, "/etc/crontab")
        b.read_file(cat, 802, "/etc/cron.d/pkgjob")

    def swap(first: str, then: str) -> Any:
        def plan(b: StoreBuilder, init: Any) -> None:
            p = b.spawn(init, 500, 900, first, [first])
            b.write_file(p, 901, "/var/tmp/before")  # not a cron file: its image does not matter
            b.exec(p, 902, then, [then])
            b.write_file(p, 903, "/etc/cron.d/swapped")
        return plan

    def late(b: StoreBuilder, init: Any) -> None:
        drop = b.spawn(init, 600, DAY + 3600, "/opt/kit/dropper", ["/opt/kit/dropper"])
        b.write_file(drop, DAY + 3601, "/etc/cron.d/late")

    for i in range(12):  # quiet hosts (a rule with candidates on most of a shard's hosts is scanned whole)
        _host(store, f"quiet{i:02d}", read)
    for name, plan in (("pkg01", pkg), ("evil01", evil), ("read01", read), ("swap01", swap("/usr/bin/dpkg", "/tmp/sneaky")),
                       ("swap02", swap("/tmp/sneaky", "/usr/bin/dpkg")), ("late01", late)):
        _host(store, name, plan)


def _rule(title: str) -> CompiledRule:
    return next(r for r in load_rules([]).ok if r.title == title)


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("paths") / "paths.duckdb"
    with open_writer(path) as w:
        _history(w)
    url = cluster.url(database=f"p_{uuid.uuid4().hex[:12]}")
    with ClickHouseStore(url, write=True) as ch:
        _history(ch)
    return path, url


def _hosts(alerts: Any) -> list[str]:
    return sorted(alerts.column("host_name").to_pylist())


def test_a_write_rule_with_not_image_reads_only_the_hosts_it_matches(stores: tuple[Path, str]) -> None:
    path, url = stores
    rule = _rule("File dropped in a cron directory")  # write flags, cron paths, NOT Image dpkg/apt/crontab
    with open_reader(path) as r:
        expected = hunt_rules(r, [rule])
    assert _hosts(expected) == ["evil01", "late01", "swap01"]
    with ClickHouseStore(url) as st:
        out = fleet_hunt(st, [rule])
        assert _hosts(out.alerts) == _hosts(expected)
        assert out.narrowed == [(rule.rule_id, "fleet_names")], out.probed
        # exactly the three hosts' days were read: pkg01 and swap02 (excluded images), read01
        # (reads only) were decided from the summaries, not scanned
        assert out.candidates == 3
        # in a window of the second day only: late01's day alone
        assert _hosts(fleet_hunt(st, [rule], ts_from=MID * 10**9).alerts) == ["late01"]


def test_a_path_rule_no_host_can_match_scans_nothing(stores: tuple[Path, str]) -> None:
    _, url = stores
    rules = [_rule("/etc/ld.so.preload written"), _rule("Shell startup file modified")]
    with ClickHouseStore(url) as st:
        out = fleet_hunt(st, rules)
    assert out.findings == 0
    assert out.scans == 0 and out.candidates == 0
    assert sorted(s for _, s in out.narrowed) == ["fleet_names", "fleet_names"]


@pytest.mark.parametrize("value", ["/etc/cron.d/*", "/etc/crontab", "/var/tmp/*", "/etc/*"])
def test_path_questions_from_the_days_give_the_scans_rows(stores: tuple[Path, str], value: str) -> None:
    _, url = stores
    s, hour = 10**9, 3600 * 10**9
    windows = [(None, None), (MID * s, None), (None, MID * s - 1),  # whole days
               ((T0 + 650) * s, None),  # from inside an hour of the first day
               (MID * s - 10 * hour, (MID + DAY) * s + 5 * hour)]  # whole hours around a whole day
    with ClickHouseStore(url) as st:
        assert st.paths_summarized()
        for since, until in windows:
            scan = ask(st.native, "path", value, since, until).to_pylist()
            assert scan or since is not None, value
            for files in (True, False):
                got = ask(st.native, "path", value, since, until, summarized=True, files=files,
                          each=st.native_each).to_pylist()
                assert got == scan, (value, since, until, files)
