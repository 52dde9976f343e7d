"""Acceptance: a real recording into the 2-shard cluster. A `forensix agent` recording this
kernel ships to one `forensix server`, a synthetic agent to another, both servers write to
the same cluster: the command run here is queryable once, on its host's shard, beside the
other log host's fleet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.clickhouse import Cluster
from forensix.testing.scenario import free_port, wait_for

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


@pytest.mark.bpf
def test_recorded_activity_lands_once_on_its_shard(cluster: Cluster, url: str, pki: Authority,
                                                   tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []

    def run(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(FX + args, stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            run(f"server{i}", ["server", "--pki", str(pki.dir), "--listen", f"127.0.0.1:{port}", "--store", url,
                               "--evidence", str(tmp_path / f"ev{i}"), "--no-rules"])
        for i in range(2):
            wait_for(lambda i=i: "listening on" in (tmp_path / f"server{i}.log").read_text(),  # type: ignore[misc]
                     60, f"log host {i} to listen")
        for host in ("alpha", "gamma"):
            (tmp_path / f"{host}.seal").write_bytes(pki.bundle(host).seal.read_bytes())
        rec = run("alpha", ["agent", "--server", f"127.0.0.1:{ports[0]}", "--bundle", str(pki.bundle("alpha").directory),
                            "--seal-key", str(tmp_path / "alpha.seal"), "--spool", str(tmp_path / "spool-a"),
                            "--heartbeat", "0.5", "--duration", "15"])
        syn = run("gamma", ["agent", "--server", f"127.0.0.1:{ports[1]}", "--bundle", str(pki.bundle("gamma").directory),
                            "--seal-key", str(tmp_path / "gamma.seal"), "--spool", str(tmp_path / "spool-g"),
                            "--heartbeat", "0.5", "--synthetic", "2000", "--batch-rows", "200", "--duration", "4"])
        marker = tmp_path / f"fx-fleet-marker-{os.getpid()}"
        st = ClickHouseStore(url)
        # the sensor is recording once alpha's first events are in the cluster
        wait_for(lambda: st.native("SELECT count() FROM events WHERE host_name = 'alpha' AND event_category != 'agent'")
              .column(0)[0].as_py() > 0, 60)
        subprocess.run(["sh", "-c", f"echo hi > {marker}"], check=True)
        assert rec.wait(90) == 0, (tmp_path / "alpha.log").read_text()[-3000:]
        assert syn.wait(90) == 0, (tmp_path / "gamma.log").read_text()[-3000:]
        try:
            q = f"SELECT host_name, event_action, count() AS n FROM events WHERE file_path = '{marker}' " \
                "GROUP BY host_name, event_action ORDER BY event_action"
            try:
                wait_for(lambda: any(r["event_action"] == "open" for r in st.native(q).to_pylist()), 90)
            except AssertionError:
                logs = {n: (tmp_path / f"{n}.log").read_text()[-1500:] for n in ("server0", "alpha")}
                raise AssertionError(f"the marker never reached ClickHouse: {logs}") from None
            rows = st.native(q).to_pylist()
            assert {r["host_name"] for r in rows} == {"alpha"}
            assert next(r["n"] for r in rows if r["event_action"] == "open") == 1  # once, not per retry
            # alpha's rows are all on the shard its name hashes to; gamma's fleet is in the same query
            shard = st.native("SELECT cityHash64('alpha') % 2").column(0)[0].as_py()
            on = [int(s.execute(f"SELECT count() FROM {st.db}.events_local WHERE host_name = 'alpha'")[0][0])
                  for s in st.shards]
            assert on[shard] > 0 and on[1 - shard] == 0, on
            wait_for(lambda: st.native("SELECT count() FROM events WHERE host_name = 'gamma'").column(0)[0].as_py() > 0,
                     60, "gamma's events")
        finally:
            st.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
