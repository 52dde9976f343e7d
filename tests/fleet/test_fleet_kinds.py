"""The rules on rare kinds of event, and keyword rules on execs, from 0007's summaries
(fleet_kinds, fleet_exec_other) on a real 2-shard cluster of Debian's ClickHouse 18.16:
the narrowed hunt finds exactly what the whole scans and the DuckDB hunt find.

The history: quiet hosts that run workers, and one host each for what the probed rules look
for, beside near misses that must not fire: an exec of a deleted file; a listener on a high
port of every address, one on loopback, an sshd, a UDP one; a module loaded, one that failed;
the recorder stopped by a signal, and by its command's exit; ``touch -t`` (SigmaHQ's File Time
Attribute Change) and a plain touch; an imported exec whose message names what it did and
whose path is not its executable (an exec fleet_exec does not describe whole: only
fleet_exec_other knows it, and a candidate dropped there would lose a hit). Half the hosts are
stored before 0007 (its back-fill summarizes them), the others through its views."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from forensix.rules import fleet_hunt as fleet_hunt_module
from forensix.rules import hunt, load_rules
from forensix.rules.candidates import SUMMARY_VIEWS, plan
from forensix.rules.compile import CompiledRule
from forensix.rules.fleet_hunt import fleet_hunt
from forensix.rules.rollup import rollup
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse import store as ch_store
from forensix.store.clickhouse.ddl import MIGRATIONS
from forensix.store.clickhouse.summaries import KINDS
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.clickhouse import Cluster
from forensix.testing.generator import StoreBuilder

RULES = Path(__file__).parent.parent / "rules" / "fixtures"
KIND_RULES = Path(__file__).parent / "fixtures" / "hunt_kinds.yml"
DAY = 86_400


def _host(name: str, plan_: Any) -> StoreBuilder:
    b = StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    work = b.spawn(init, 100, 60, "/usr/bin/worker", ["worker", "--job=1"])
    b.read_file(work, 61, "/etc/hosts")
    plan_(b, init)
    return b


def _listen(b: StoreBuilder, p: Any, t: float, ip: str, port: int, transport: str = "tcp",
            action: str = "listen") -> None:
    # (StoreBuilder has no listen of its own: the recorder's row, as forensix.sensor writes it)
    b._ev(p, b.t(t), "network", action, network_transport=transport, network_type="ipv4", source_ip=ip,
          source_port=port, syscall=action)


def _call(b: StoreBuilder, p: Any, t: float, call: str, outcome: str) -> None:
    b._ev(p, b.t(t), "privilege", call, syscall=call, event_outcome=outcome, ret=0 if outcome == "success" else -1)


def _plans() -> dict[str, Any]:
    def deleted(b: StoreBuilder, init: Any) -> None:
        b.spawn(init, 200, 300, "/tmp/.m/x", ["x", "--job=2"], deleted=True)

    def listens(b: StoreBuilder, init: Any) -> None:
        nc = b.spawn(init, 200, 300, "/usr/bin/nc", ["nc", "-lp", "4444"])
        _listen(b, nc, 301, "0.0.0.0", 4444, action="bind")
        _listen(b, nc, 302, "0.0.0.0", 4444)

    def near_listens(b: StoreBuilder, init: Any) -> None:
        py = b.spawn(init, 200, 300, "/usr/bin/python3", ["python3", "-m", "http.server"])
        _listen(b, py, 301, "127.0.0.1", 8080)
        sshd = b.spawn(init, 210, 310, "/usr/sbin/sshd", ["sshd", "-p", "2222"])
        _listen(b, sshd, 311, "0.0.0.0", 2222)
        _listen(b, py, 312, "0.0.0.0", 5353, transport="udp")

    def module(b: StoreBuilder, init: Any) -> None:  # the next UTC day
        mp = b.spawn(init, 200, DAY + 300, "/usr/sbin/modprobe", ["modprobe", "rootkit"])
        _call(b, mp, DAY + 301, "finit_module", "success")

    def failed_module(b: StoreBuilder, init: Any) -> None:
        ins = b.spawn(init, 200, 300, "/usr/sbin/insmod", ["insmod", "x.ko"])
        _call(b, ins, 301, "init_module", "failure")

    def stopped(reason: str) -> Any:
        def plan_(b: StoreBuilder, init: Any) -> None:
            b._ev(None, b.t(400), "agent", "stop", message=f"forensix stopped: reason={reason}")
        return plan_

    def touch(args: list[str]) -> Any:
        def plan_(b: StoreBuilder, init: Any) -> None:
            t = b.spawn(init, 200, 300, "/usr/bin/touch", args)
            b.file_op(t, 301, "utimes", args[-1], syscall="utimensat", a2=1, file_mtime=b.t(301) - 3 * DAY * 10**9)
        return plan_

    def imported(b: StoreBuilder, init: Any) -> None:
        p = b.spawn(init, 200, 300, "/usr/bin/env", ["env", "X=1"])
        row = b.events[-1]
        assert row["event_action"] == "exec"
        row.update(process_executable="env", file_path="/usr/bin/env",
                   message="backdate: touch -d yesterday /etc/passwd")  # what an importer may keep
        b.read_file(p, 301, "/etc/passwd")

    quiet = {f"quiet{i:02d}": (lambda b, init: None) for i in range(12)}
    return quiet | {
        "del01": deleted, "lsn01": listens, "lsn02": near_listens, "mod01": module, "mod02": failed_module,
        "stop01": stopped("signal sig=15"), "stop02": stopped("exit code=0"),
        "touch01": touch(["touch", "-t", "202001010000", "/tmp/x"]), "touch02": touch(["touch", "/tmp/y"]),
        "odd01": imported,
    }


@pytest.fixture(scope="module")
def stores(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    hosts = [_host(name, p) for name, p in _plans().items()]
    path = tmp_path_factory.mktemp("kinds") / "kinds.duckdb"
    with open_writer(path) as w:
        for b in hosts:
            b.write(w)
    url = cluster.url(database=f"k_{uuid.uuid4().hex[:12]}")
    mp = pytest.MonkeyPatch()
    # half the hosts stored by the previous version (no 0007), then 0007 back-fills them
    mp.setattr(ch_store, "MIGRATIONS", [m for m in MIGRATIONS if m[0] != KINDS])
    with ClickHouseStore(url, write=True) as st:
        for b in hosts[::2]:
            b.write(st)
        assert KINDS not in st.migrations()
    mp.undo()
    with ClickHouseStore(url, write=True) as st:
        assert KINDS in st.migrations()
        for b in hosts[1::2]:
            b.write(st)
    return str(path), url


def _rules() -> list[CompiledRule]:
    return load_rules([RULES / "sigmahq", KIND_RULES]).ok


def _by_title(title: str) -> CompiledRule:
    return next(r for r in _rules() if r.title == title)


def _plain(t: pa.Table) -> list[str]:
    cols = [c for c in t.column_names if c != "detected_ts"]
    return sorted(str(r) for r in t.select(cols).to_pylist())


_PROBED_BEFORE = ("Program run from a deleted file or from memory", "Listener opened on a high port on a non-loopback address",
                  "Kernel module loaded", "Recorder stopped", "File Time Attribute Change - Linux")


def test_the_narrowed_hunt_finds_what_whole_scans_and_duckdb_find(stores: tuple[str, str]) -> None:
    duck, url = stores
    rules = _rules()
    rd = open_reader(duck)
    try:
        want = hunt(rd, rules, [])
    finally:
        rd.close()
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, rules)
        whole = fleet_hunt(st, rules, narrow=False)
    assert _plain(got.alerts) == _plain(whole.alerts) == _plain(want)
    fired: dict[str, set[str]] = {}
    for r in got.alerts.to_pylist():
        fired.setdefault(r["rule_title"], set()).add(r["host_name"])
    # each rule on its host only: the near misses do not fire
    assert fired["Program run from a deleted file or from memory"] == {"del01"}
    assert fired["Listener opened on a high port on a non-loopback address"] == {"lsn01"}
    assert fired["Kernel module loaded"] == {"mod01"}
    assert fired["Recorder stopped"] == {"stop01"}
    assert fired["File Time Attribute Change - Linux"] == {"touch01", "odd01"}  # odd01 by its message only
    assert fired["kinds_message_keyword"] == {"odd01"}
    assert fired["kinds_failed_module"] == {"mod02"} and fired["kinds_listen_port"] == {"lsn02"}
    assert len(fired["kinds_every_exec"]) == len(_plans()) and "kinds_never" not in fired
    # the rules that were probed over every event now narrow by 0007's summaries
    narrowed = {next(r.title for r in rules if r.rule_id == i): s for i, s in got.narrowed}
    assert {t: narrowed.get(t) for t in _PROBED_BEFORE} == {
        "Program run from a deleted file or from memory": "fleet_kinds",
        "Listener opened on a high port on a non-loopback address": "fleet_kinds",
        "Kernel module loaded": "fleet_kinds", "Recorder stopped": "fleet_kinds",
        "File Time Attribute Change - Linux": "fleet_exec"}
    assert narrowed["kinds_message_keyword"] == "fleet_exec" and narrowed["kinds_never"] == "fleet_kinds"


@pytest.mark.parametrize(("title", "host_days"), [
    ("Program run from a deleted file or from memory", 1), ("Listener opened on a high port on a non-loopback address", 2),
    ("Kernel module loaded", 1), ("Recorder stopped", 2), ("File Time Attribute Change - Linux", 2),
    ("kinds_message_keyword", 1), ("kinds_never", 0)])
def test_each_probed_rule_reads_only_its_hosts_and_days(stores: tuple[str, str], title: str, host_days: int) -> None:
    """Alone, a rule reads the hosts and days its summary names (no probe of the events): the
    recorder's two stops are one kind (the message is not summarized), touch01 and the
    imported exec both may be a touch, lsn02's sshd listens on a high port of every address
    (the acting image is not summarized: the exact scan rules it out)."""
    _, url = stores
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, [_by_title(title)])
    assert got.probed == [] and got.candidates == host_days
    assert 0 < got.scans <= 2 if host_days else got.scans == 0  # an exact scan on a shard with candidates only


def test_a_rule_the_summary_is_sure_of_everywhere_skips_its_probe(stores: tuple[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every exec's command line is in fleet_exec: a rule on it is decided there, so its
    candidates (every host) need no probe of the events, and its roll-up is counted as before."""
    _, url = stores
    rule = _by_title("kinds_every_exec")
    monkeypatch.setattr(fleet_hunt_module, "BROAD", 0.0)  # every candidate set is "most of the shard"
    with ClickHouseStore(url) as st:
        got = fleet_hunt(st, [rule], limit=0, summed=False)
        whole = fleet_hunt(st, [rule], narrow=False)
        summed = fleet_hunt(st, [rule], limit=0)
    assert got.probed == [] and dict(got.narrowed) == {rule.rule_id: "fleet_exec"}
    assert got.scans == 2  # the counting scan on each shard, no probe
    assert rollup(got.heads, counted=got.counted).to_pylist() == rollup(whole.alerts).to_pylist()
    # counted from fleet_exec (rules/summed.py) but on odd01, whose exec fleet_exec_other holds: scanned alone
    assert summed.summed == [(rule.rule_id, len(_plans()) - 1, 1)] and summed.scans == 1
    assert rollup(summed.heads, counted=summed.counted).to_pylist() == rollup(whole.alerts).to_pylist()
    assert got.findings == whole.alerts.num_rows == len(_plans()) + 1  # every host's worker, and del01's x


def test_fleet_exec_other_holds_only_the_execs_fleet_exec_does_not_describe(stores: tuple[str, str]) -> None:
    _, url = stores
    with ClickHouseStore(url) as st:
        rows = st.native("SELECT host_name, executable, file_path, message FROM fleet_exec_other").to_pylist()
        # fleet_kinds: exactly the distinct kinds of the events, per host and day (back-filled or not)
        kinds = st.native("SELECT DISTINCT host_name, day, category, action, outcome, transport, module, deleted, "
                          "port, ip FROM fleet_kinds").to_pylist()
        listens = "event_action IN ('listen', 'bind')"
        events = st.native(
            "SELECT DISTINCT host_name, toUInt32(toYYYYMMDD(toDateTime(intDiv(ts, 1000000000), 'UTC'))) AS day, "
            "CAST(event_category AS Nullable(String)) AS category, CAST(event_action AS Nullable(String)) AS action, "
            "CAST(event_outcome AS Nullable(String)) AS outcome, CAST(network_transport AS Nullable(String)) AS transport, "
            f"event_module AS module, file_deleted AS deleted, if({listens}, source_port, NULL) AS port, "
            f"if({listens}, source_ip, NULL) AS ip FROM events").to_pylist()
    assert rows == [{"host_name": "odd01", "executable": "env", "file_path": "/usr/bin/env",
                     "message": "backdate: touch -d yesterday /etc/passwd"}]
    assert sorted(map(str, kinds)) == sorted(map(str, events)) and len({k["host_name"] for k in kinds}) == len(_plans())
    assert {(k["action"], k["port"], k["ip"]) for k in kinds if k["host_name"] == "lsn02" and k["port"]} == {
        ("listen", 8080, "127.0.0.1"), ("listen", 2222, "0.0.0.0"), ("listen", 5353, "0.0.0.0")}


def test_a_store_without_0007_plans_as_before() -> None:
    have = {v.name: v.columns for v in SUMMARY_VIEWS}  # fleet_exec, ..., fleet_kinds: no fleet_exec_other
    ftac = plan(_by_title("File Time Attribute Change - Linux"), have)
    assert ftac.summary == "fleet_exec" and ftac.view is not None and ftac.view.also is None
    with_other = plan(_by_title("File Time Attribute Change - Linux"), have | {"fleet_exec_other": frozenset(
        {"executable", "command_line", "sha256", "host_name", "day", "file_path", "file_target_path", "message",
         "category"})})
    assert with_other.view is not None and with_other.view.also is not None
    assert with_other.view.also.name == "fleet_exec_other"
    no_kinds = {k: v for k, v in have.items() if k != "fleet_kinds"}
    module = plan(_by_title("Kernel module loaded"), no_kinds)
    assert module.summary is None and "fleet_kinds: the store has no such summary" in module.why
