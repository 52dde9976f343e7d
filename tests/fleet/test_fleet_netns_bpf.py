"""Cross-host provenance on a real recording: two network namespaces of this kernel, joined
by a veth pair, each recorded as a host of its own (`forensix agent --netns`) and shipped to
one log host on the ClickHouse cluster. A process on alpha connects to a server on beta,
which writes what it receives into a file: backtrack from that file reaches the connecting
process on alpha by the connection's 4-tuple and time, forward from it reaches the file,
and the report and the graph say that the connection crosses hosts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.model.host import local_host
from forensix.model.identity import format_entity
from forensix.pki.authority import Authority
from forensix.store.clickhouse import ClickHouseStore
from forensix.testing.netns import NetnsPair, netns_pair
from forensix.testing.scenario import FORENSIX, wait_for

SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1)
    print(s.getsockname()[1], flush=True)
    c, _ = s.accept()
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    with open(sys.argv[2], "wb") as f:
        f.write(data)
    """)
CLIENT = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    print(c.getsockname()[1], flush=True)
    c.sendall(sys.argv[3].encode()); c.close()
    """)


def _agent(pki: Authority, tmp: Path, host: str, addr: tuple[str, int], ns: NetnsPair, i: int) -> subprocess.Popen[bytes]:
    seal = tmp / f"{host}.seal"  # the seal key evolves: a copy, not the session's bundle
    seal.write_bytes(pki.bundle(host).seal.read_bytes())
    return subprocess.Popen(
        [*FORENSIX, "agent", "-v", "--server", f"{addr[0]}:{addr[1]}", "--bundle", str(pki.bundle(host).directory),
         "--seal-key", str(seal), "--spool", str(tmp / f"spool-{host}"), "--heartbeat", "0.5", "--duration", "120",
         "--netns", ns.path(i)],
        stdout=(tmp / f"{host}.log").open("wb"), stderr=subprocess.STDOUT)


def _stopped(p: subprocess.Popen[bytes]) -> int | None:
    """The exit code of a recorder told to stop; one that does not within a minute is killed."""
    try:
        return p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def _cli(*args: str) -> str:
    out = CliRunner().invoke(cli, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def _proc_node(doc: dict[str, Any], host: str, pid: int) -> dict[str, Any] | None:
    """The graph's node of process ``pid`` labelled with ``host`` (a graph over two hosts
    names each process's host)."""
    return next((n for n in doc["nodes"] if n["kind"] == "process" and n.get("process.pid") == pid
                 and n["label"].startswith(f"{host}: ")), None)


@pytest.mark.bpf
def test_backtrack_crosses_from_a_file_on_beta_to_the_client_on_alpha(
        url: str, pki: Authority, start_server: Any, tmp_path: Path) -> None:
    srv = start_server(url, tmp_path / "evidence")
    planted = tmp_path / f"planted-{uuid.uuid4().hex[:8]}"
    payload = f"payload-{uuid.uuid4().hex[:8]}"
    agents: list[subprocess.Popen[bytes]] = []
    # alpha .9, beta .10: as text beta's end sorts first (CI met it once by chance): the key and
    # the report's "alpha -> beta over <alpha's end> <-> <beta's end>" must not depend on it
    with netns_pair(low=8) as ns:
        try:
            agents = [_agent(pki, tmp_path, h, srv.addr, ns, i) for i, h in enumerate(("alpha", "beta"))]
            for h, a in zip(("alpha", "beta"), agents):
                wait_for(lambda h=h, a=a: a.poll() is not None  # type: ignore[misc]
                         or "every program attached" in (tmp_path / f"{h}.log").read_text(), 60, f"{h} to record")
                assert a.poll() is None, (tmp_path / f"{h}.log").read_text()[-3000:]
            server = subprocess.Popen(ns.run(1, sys.executable, "-c", SERVER, ns.addrs[1], str(planted)),
                                      stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None
            port = int(server.stdout.readline())
            client = subprocess.run(ns.run(0, sys.executable, "-c", CLIENT, ns.addrs[1], str(port), payload),
                                    capture_output=True, text=True, timeout=30, check=True)
            client_port = int(client.stdout)
            assert server.wait(30) == 0 and planted.read_text() == payload
            # a process of the machine's own namespace, at the same time: neither host's
            outside = subprocess.Popen([sys.executable, "-c", f"open({str(planted)!r}).read()"])
            assert outside.wait(30) == 0
        finally:
            for a in agents:
                a.send_signal(signal.SIGTERM)  # a clean stop: flows flushed, the spool delivered
            codes = [_stopped(a) for a in agents]
            for h, rc in zip(("alpha", "beta"), codes):
                assert rc == 0, (tmp_path / f"{h}.log").read_text()[-3000:]
    st = ClickHouseStore(url)
    try:
        def rows(sql: str) -> list[dict[str, Any]]:
            return st.native(sql).to_pylist()

        # the file's write edge (flows; ClickHouse's events table is the events alone)
        wait_for(lambda: rows(f"SELECT count() AS n FROM flows WHERE host_name = 'beta' AND file_path = '{planted}' "
                              "AND write_bytes > 0")[0]["n"] > 0, 60, "beta's write of the file")
        procs = rows("SELECT host_name, host_id, pid, entity_id, executable, args FROM processes "
                     "WHERE host_name IN ('alpha', 'beta') AND source = 'exec'")
        client_p = next(p for p in procs if p["args"] and payload in p["args"])
        server_p = next(p for p in procs if p["args"] and str(planted) in p["args"] and "-c" in p["args"])
        # each namespace is its own host: its own id, not the machine's, and only its own processes
        assert client_p["host_name"] == "alpha" and server_p["host_name"] == "beta"
        ids = {p["host_name"]: p["host_id"] for p in procs}
        assert len(set(ids.values())) == 2 and local_host().host_id not in ids.values()
        assert not [p for p in procs if p["pid"] in (os.getpid(), outside.pid)]
        assert not rows(f"SELECT count() AS n FROM events WHERE host_name IN ('alpha', 'beta') "
                        f"AND process_pid = {outside.pid}")[0]["n"]
        assert {p["host_name"] for p in procs if p["pid"] == client_p["pid"]} == {"alpha"}
        # the connection as each side's kernel saw it: the same 4-tuple, from either end
        conn = rows(f"SELECT host_name, event_action, process_pid, source_ip, source_port, destination_ip, "
                    f"destination_port FROM events WHERE event_action IN ('connect', 'accept') "
                    f"AND host_name IN ('alpha', 'beta') AND (source_port = {port} OR destination_port = {port})")
        assert {(r["host_name"], r["event_action"], r["process_pid"], r["source_ip"], r["source_port"],
                 r["destination_ip"], r["destination_port"]) for r in conn} == {
            ("alpha", "connect", client_p["pid"], ns.addrs[0], client_port, ns.addrs[1], port),
            ("beta", "accept", server_p["pid"], ns.addrs[1], port, ns.addrs[0], client_port)}
    finally:
        st.close()

    # backtrack from the file on beta, over the whole store: through beta's server to alpha's client
    back = json.loads(_cli("backtrack", str(planted), "--store", url, "--format", "json"))
    assert _proc_node(back, "beta", server_p["pid"]) is not None, back["nodes"]
    assert _proc_node(back, "alpha", client_p["pid"]) is not None, back["nodes"]
    crossing = [n for n in back["nodes"] if n["kind"] == "connection" and "(alpha -> beta)" in n["label"]]
    # the 4-tuple both kernels saw, its ends in the store's order (analysis/sockets.py: least first, as
    # text: alpha 10.200.36.9 and beta 10.200.36.10 put beta's end first; the random /30 decides)
    key = "c:" + "|".join(sorted((f"{ns.addrs[0]}:{client_port}", f"{ns.addrs[1]}:{port}")))
    assert [n["node"] for n in crossing] == [key], back["nodes"]
    # forward from alpha's client: over the connection to beta's server and the file it wrote
    fwd = json.loads(_cli("forward", format_entity(client_p["entity_id"]), "--store", url, "--format", "json"))
    assert _proc_node(fwd, "beta", server_p["pid"]) is not None, fwd["nodes"]
    assert any(n["kind"] == "file" and n.get("file.path") == str(planted) for n in fwd["nodes"]), fwd["nodes"]
    assert any(n["node"] == key and "(alpha -> beta)" in n["label"] for n in fwd["nodes"])
    # the fleet question answers from the summary tables: beta wrote it, alpha never touched it
    touched = [json.loads(line) for line in _cli("fleet", "path", str(planted), "--store", url, "--format",
                                                  "json").splitlines()]
    assert {(r["host.name"], r["action"]) for r in touched} == {("beta", "open"), ("beta", "write")}, touched
    # the report, and its graph (the backtrack's, drawn): both name the crossing and the hosts
    _cli("report", str(planted), "--store", url, "--output", str(tmp_path / "case"))
    report, dot = (tmp_path / "case.md").read_text(), (tmp_path / "case.dot").read_text()
    assert f"cross-host: alpha -> beta over {ns.addrs[0]}:{client_port} <-> {ns.addrs[1]}:{port}" in report
    assert "(alpha -> beta)" in dot and f"alpha: {Path(client_p['executable']).name} [{client_p['pid']}]" in dot
    assert f"beta: {Path(server_p['executable']).name} [{server_p['pid']}]" in dot


@pytest.mark.bpf
def test_record_one_namespace_into_duckdb_under_its_own_name(tmp_path: Path) -> None:
    """`forensix record --netns --host-name`: the namespace's processes only, under its name and
    an id of its own, with a pin directory of its own (the machine's recorder of the same
    store would neither adopt nor stop it)."""
    from forensix.sensor.loader import pin_dir_for
    from forensix.store.embedded import DuckDBStore

    store, ready = tmp_path / "b.duckdb", tmp_path / "ready"
    planted = tmp_path / f"planted-{uuid.uuid4().hex[:8]}"
    with netns_pair() as ns:
        inode = ns.inode(1)
        # the server runs before recording starts: the snapshot finds it, in the namespace
        server = subprocess.Popen(ns.run(1, sys.executable, "-c", SERVER, ns.addrs[1], str(planted)),
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        rec = subprocess.Popen([*FORENSIX, "record", "-q", "--store", str(store), "--netns", ns.path(1),
                                "--host-name", "web-b", "--no-artifacts", "--ready-file", str(ready),
                                "--duration", "120"], stderr=(tmp_path / "rec.log").open("wb"))
        try:
            wait_for(lambda: rec.poll() is not None or ready.exists(), 60, "the recorder to attach")
            assert rec.poll() is None, (tmp_path / "rec.log").read_text()[-3000:]
            assert pin_dir_for(store, inode).is_dir() and not pin_dir_for(store).exists()
            client = subprocess.Popen(ns.run(0, sys.executable, "-c", CLIENT, ns.addrs[1], str(port), "hello"),
                                      stdout=subprocess.PIPE, text=True)
            client_port = int(client.communicate(timeout=30)[0])
            assert server.wait(30) == 0 and client.returncode == 0
        finally:
            if server.poll() is None:
                server.kill()
            rec.send_signal(signal.SIGTERM)
            rc = _stopped(rec)
            if pin_dir_for(store, inode).exists():  # a recorder that did not stop left its sensor pinned
                subprocess.run([*FORENSIX, "record", "--stop", "--netns-inode", str(inode), "--store", str(store)],
                               capture_output=True, timeout=120, check=False)
            assert rc == 0, (tmp_path / "rec.log").read_text()[-3000:]
    assert not pin_dir_for(store, inode).exists()  # a clean stop leaves nothing pinned
    st = DuckDBStore(store, read_only=True)
    try:
        hosts = st.query("SELECT DISTINCT host_name, host_id FROM events").to_pylist()
        assert [h["host_name"] for h in hosts] == ["web-b"] and hosts[0]["host_id"] != local_host().host_id
        procs = {(r["pid"], r["source"]) for r in st.query("SELECT pid, source FROM processes").to_pylist()}
        assert (server.pid, "snapshot") in procs  # what ran in it when recording began, and nothing else
        assert not {p for p, _ in procs} & {client.pid, os.getpid(), os.getppid()}
        acc = st.query("SELECT process_pid, source_ip, source_port, destination_ip, destination_port FROM events "
                       "WHERE event_action IN ('accept', 'connect')").to_pylist()
        assert acc == [{"process_pid": server.pid, "source_ip": ns.addrs[1], "source_port": port,
                        "destination_ip": ns.addrs[0], "destination_port": client_port}]
        # the other namespaces' records were never attempted: each one the kernel tried is stored
        # (or in a gap), class by class and CPU by CPU, and none is counted as lost
        counters = json.loads(st.query("SELECT message FROM events WHERE event_action = 'counters'")
                              .column(0)[0].as_py())["attempted_lost"]
        stored = {(r["event_class"], r["cpu"]): r["n"] for r in st.query(
            "SELECT event_class, cpu, count(*) n FROM events WHERE seq IS NOT NULL GROUP BY ALL "
            "UNION ALL SELECT 'tty', cpu, count(*) FROM tty WHERE seq IS NOT NULL GROUP BY ALL").to_pylist()}
        tried = {(c, int(cpu)): (n, lost) for c, per in counters.items() for cpu, (n, lost) in per.items() if n}
        assert {k: n for k, (n, _) in tried.items()} == stored and all(lost == 0 for _, lost in tried.values())
        start = st.query("SELECT message FROM events WHERE event_action = 'start'").column(0).to_pylist()
        assert f"network namespace {inode} of host {local_host().host_id} as host web-b" in start[0]
    finally:
        st.close()
