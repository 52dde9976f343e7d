"""The fleet benchmark's generator (bench/fleet_gen.py) on the real 2-shard cluster.

The numpy generator must write exactly the rows the reference INSERT ... SELECT writes (so
the figures taken on it describe the fleet the docs describe), every host's rows on the
shard its Distributed table would pick, and the counts the bench prints must be what the
data holds. A bench stopped with SIGTERM must stop the ClickHouse servers it started (they
run in sessions of their own: the signal never reaches them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bench import fleet_gen
from forensix.store.clickhouse import ClickHouseStore
from forensix.store.clickhouse.ddl import stored_columns
from forensix.testing.clickhouse import Cluster

ROOT = Path(__file__).resolve().parents[2]
EVENTS, HOSTS = 120_000, 200  # two processes of 50 events per host...; host0 runs the miner as its 8th
SUMMARIES = {
    "fleet_path": ("key_path, key_is_target, host_name, action, file_path, day, hour",
                   "countMerge(times), uniqExactMerge(processes), minMerge(min_ts), maxMerge(max_ts)"),
    "fleet_exec": ("executable, command_line, sha256, host_name, day, hour",
                   "countMerge(execs), uniqExactMerge(processes), minMerge(min_ts), maxMerge(max_ts)"),
    "fleet_ip": ("ip, host_name, action, proc_name, process_entity_id, destination_ip, destination_port, day, hour",
                 "countMerge(connections), minMerge(min_ts), maxMerge(max_ts)"),
    "fleet_hosts": ("host_name, day, hour", "countMerge(events), minMerge(min_ts), maxMerge(max_ts)"),
}


def _rows(st: ClickHouseStore, shard: int, sql: str) -> list[tuple[object, ...]]:
    return sorted(st.shards[shard].execute(sql.format(db=st.db)), key=repr)


@pytest.fixture(scope="module")
def fleets(cluster: Cluster) -> tuple[ClickHouseStore, ClickHouseStore]:
    tag = uuid.uuid4().hex[:8]
    ref = ClickHouseStore(cluster.url(database=f"gen_sql_{tag}"), write=True)
    new = ClickHouseStore(cluster.url(database=f"gen_np_{tag}"), write=True)
    fleet_gen.load_fleet_sql(ref, EVENTS, HOSTS)
    # chunks smaller than a host's span and not a multiple of the hosts: every seam is crossed
    fleet_gen.write_fleet(new, EVENTS, HOSTS, chunk=37_000)
    yield ref, new
    for st in (ref, new):
        for s in st.shards:
            s.execute(f"DROP DATABASE IF EXISTS `{st.db}`")
        st.close()


def test_numpy_generator_writes_the_reference_rows_on_the_same_shards(
        fleets: tuple[ClickHouseStore, ClickHouseStore]) -> None:
    ref, new = fleets
    for table in ("events", "flows", "processes"):
        order = ", ".join(f"`{c}`" for c, _ in stored_columns(table) if "args" not in c)
        sql = f"SELECT * FROM `{{db}}`.`{table}_local` ORDER BY {order}"
        for shard in range(len(ref.shards)):
            want, got = ref.shards[shard].execute(sql.format(db=ref.db)), new.shards[shard].execute(sql.format(db=new.db))
            assert want, f"{table} on shard {shard}: the reference wrote nothing there"
            assert got == want, f"{table} on shard {shard}: {len(got)} rows against {len(want)}"


def test_summaries_fed_by_the_views_are_the_same_once_merged(fleets: tuple[ClickHouseStore, ClickHouseStore]) -> None:
    ref, new = fleets
    for name, (keys, states) in SUMMARIES.items():
        sql = f"SELECT {keys}, {states} FROM `{{db}}`.`{name}_local` GROUP BY {keys}"
        for shard in range(len(ref.shards)):
            assert _rows(new, shard, sql) == _rows(ref, shard, sql), f"{name} on shard {shard}"


def test_the_fleet_holds_what_the_bench_says(fleets: tuple[ClickHouseStore, ClickHouseStore]) -> None:
    _, st = fleets
    per_host = st.native("SELECT host_name, count() AS n, countIf(event_action = 'exec') AS execs FROM events "
                         "GROUP BY host_name").to_pylist()
    assert len(per_host) == HOSTS
    assert {r["n"] for r in per_host} == {EVENTS // HOSTS}
    # every host runs processes of 50 events, the first its exec
    assert {r["execs"] for r in per_host} == {EVENTS // HOSTS // fleet_gen.PROCESS_EVENTS}
    miners = st.native(f"SELECT DISTINCT host_name FROM events WHERE event_action = 'exec' AND "
                       f"process_executable = '{fleet_gen.MINER}'").column(0).to_pylist()
    assert sorted(miners) == sorted(f"host{h}" for h in range(0, HOSTS, fleet_gen.MINER_EVERY))
    wrote = st.native(f"SELECT DISTINCT host_name FROM events WHERE file_path = '{fleet_gen.PRELOAD}' AND "
                      "(file_flags = 65 OR flow_write_count = 1)").column(0).to_pylist()
    assert sorted(wrote) == sorted(miners)
    flows = st.native("SELECT count() FROM flows").column(0)[0].as_py()
    assert flows == st.native("SELECT count() FROM events WHERE event_action = 'flow'").column(0)[0].as_py()


def test_the_fleet_reads_shadow_and_rotates_logs_as_a_host_does(
        fleets: tuple[ClickHouseStore, ClickHouseStore]) -> None:
    """Every generated process read /etc/shadow and renamed or deleted /var/log files, so the
    curated rules fx_shadow_read and fx_logs_tampered fired 77,639 and 84,422 times on the
    10^8 fleet: the generator, not the rules, was wrong. The miner is still planted."""
    _, st = fleets
    shadow = st.native("SELECT count() FROM events WHERE file_path LIKE '/etc/%shadow%'").column(0)[0].as_py()
    rotated = st.native("SELECT count() FROM events WHERE event_action IN ('unlink', 'rename', 'truncate') "
                        "AND file_path LIKE '/var/log/%'").column(0)[0].as_py()
    written = st.native("SELECT count() FROM events WHERE event_action IN ('open', 'flow') "
                        "AND file_path LIKE '/var/log/%'").column(0)[0].as_py()
    assert shadow == 0 and rotated == 0 and written > 0
    assert st.native(f"SELECT count() FROM events WHERE file_path = '{fleet_gen.PRELOAD}'").column(0)[0].as_py()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_bench_and_its_servers(tmp_path: Path) -> None:
    d = tmp_path / "ch"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    # big enough to be generating still when the signal comes
    bench = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fleet.py"), "--only-questions", "--events",
                              "30000000", "--hosts", "1000", "--cluster-dir", str(d)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    pids: list[int] = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and len(pids) < 2:
            state = d / "cluster.json"
            if state.exists():
                try:
                    pids = [s["pid"] for s in json.loads(state.read_text())["shards"] if s["pid"]]
                except ValueError:  # being written
                    pass
            time.sleep(0.2)
        assert len(pids) == 2, "the bench's servers did not start"
        time.sleep(3)  # into the generation
        bench.send_signal(signal.SIGTERM)
        bench.wait(60)
        assert bench.returncode == 128 + signal.SIGTERM, bench.stderr.read().decode()[-2000:] if bench.stderr else ""
        assert not [p for p in pids if _alive(p)], "ClickHouse servers left running after SIGTERM"
    finally:
        if bench.poll() is None:
            bench.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_the_project_servers_write_zstd_parts_smaller_than_lz4(cluster: Cluster, tmp_path: Path) -> None:
    """The generated config's <compression> section is what the servers use: the same rows
    take fewer bytes on the session's (zstd, the default) servers than on an lz4 one."""
    from forensix.testing.clickhouse import start_cluster, stop_cluster

    assert "<method>zstd</method>" in (cluster.shards[0].dir / "config.xml").read_text()
    lz4 = start_cluster(tmp_path / "lz4", shards=1, compression="lz4", tied=True)
    try:
        sizes = {}
        for name, url in (("zstd", cluster.url(database=f"codec_{uuid.uuid4().hex[:8]}", shard=0)),
                          ("lz4", lz4.url(database="codec"))):
            st = ClickHouseStore(url.split("?")[0], write=True)  # one server: the rows stay on it
            fleet_gen.write_fleet(st, 60_000, 50)
            srv = st.shards[0]
            srv.execute(f"OPTIMIZE TABLE `{st.db}`.events FINAL")
            sizes[name] = srv.execute("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND "
                                      f"database = '{st.db}' AND table = 'events'")[0][0]
            srv.execute(f"DROP DATABASE `{st.db}`")
            st.close()
        assert sizes["zstd"] < 0.8 * sizes["lz4"], sizes
    finally:
        stop_cluster(lz4, timeout=2.0)
