"""`forensix agent` records what `forensix record` records: the machine's logs beside the
kernel (an sshd login line reaches the log host as an event), and the preservation switches
(--no-artifacts keeps no executed file; by default one run and deleted is kept).

Real `forensix agent` processes (raw, the default) on the real kernel, a real `forensix
server` over mutual TLS with a DuckDB store.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from forensix.pki.authority import Authority
from forensix.store.embedded import open_reader
from forensix.testing.loghost import FX, start_log_host
from forensix.testing.scenario import free_port, wait_for

pytestmark = pytest.mark.bpf

# an sshd line as Debian's auth.log has it (the address is from TEST-NET-3, RFC 5737)
LOGIN = "Dec  7 20:31:07 web1 sshd[4242]: Accepted publickey for deploy from 203.0.113.77 port 50122 ssh2"


def _run_agent(pki: Authority, tmp: Path, port: int, name: str, *opts: str, during: str) -> str:
    """One agent on its own spool: waits until it records, runs ``during`` (a shell line),
    stops it with SIGTERM once the log host has everything; returns its log."""
    b = pki.bundle("alpha")
    seal = tmp / f"{name}.seal"
    seal.write_bytes(b.seal.read_bytes())  # the agent evolves its copy
    log = tmp / f"{name}.log"
    p = subprocess.Popen(FX + ["agent", "--server", f"127.0.0.1:{port}", "--bundle", str(b.directory),
                               "--seal-key", str(seal), "--spool", str(tmp / f"{name}.spool"),
                               "--batch-ms", "100", "--drain", "60", *opts],
                         stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "recording: every program attached" in log.read_text() or p.poll() is not None, 90,
                 f"{name} recording")
        assert p.poll() is None, log.read_text()[-3000:]
        subprocess.run(["sh", "-c", during], check=True, timeout=60)
        time.sleep(2.5)  # two drain ticks, and the log follower's next look
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
    said = log.read_text()
    assert rc == 0, said[-3000:]
    assert "0 unacknowledged left in the spool" in said, said[-3000:]
    return said


def test_agent_ships_the_system_log_and_keeps_executables_unless_told(pki: Authority, tmp_path: Path) -> None:
    auth = tmp_path / "auth.log"
    auth.write_text("")
    tool_a, tool_b = tmp_path / "tool-a", tmp_path / "tool-b"
    port = free_port()
    store = tmp_path / "srv.duckdb"
    srv = start_log_host(pki, store, port, tmp_path / "server.log")
    try:
        # a tool copied, run, deleted at once; and the login line appended meanwhile
        _run_agent(pki, tmp_path, port, "with", "--system-log", str(auth),
                   during=f"cp /usr/bin/id {tool_a} && {tool_a} >/dev/null && rm {tool_a} && "
                          f"echo '{LOGIN}' >> {auth}")
        _run_agent(pki, tmp_path, port, "without", "--no-system-logs", "--no-artifacts",
                   during=f"cp /usr/bin/id {tool_b} && {tool_b} >/dev/null && rm {tool_b} && "
                          f"echo '{LOGIN.replace('4242', '4343')}' >> {auth}")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(60)
    r = open_reader(store)
    try:
        logins = r.query("SELECT event_action, source_ip, process_pid, message FROM events "
                         "WHERE event_module = 'system'").to_pylist()
        arts = r.query("SELECT path, sha256 FROM artifacts").to_pylist()
        execs = r.query("SELECT executable FROM processes WHERE source = 'exec'")["executable"].to_pylist()
    finally:
        r.close()
    assert str(tool_a) in execs and str(tool_b) in execs, "the workload was not recorded"  # not a vacuous check
    # the first agent followed the log; the second was told not to (its line is not shipped)
    assert logins == [{"event_action": "ssh-login", "source_ip": "203.0.113.77",
                       "process_pid": 4242,
                       "message": "sshd: Accepted publickey for deploy from 203.0.113.77 port 50122 ssh2"}], logins
    want = hashlib.sha256(Path(shutil.which("id") or "/usr/bin/id").read_bytes()).hexdigest()
    kept = {a["path"]: a["sha256"] for a in arts}
    assert kept.get(str(tool_a)) == want, kept  # run and deleted within a tick, kept by the exec-time hold
    assert str(tool_b) not in kept, kept  # --no-artifacts
