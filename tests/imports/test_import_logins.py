"""A login's source address and key fingerprint from sshd's log line enrich its session.

The host history is hand-built (forensix.testing.StoreBuilder: the recorder's rows for two ssh
connections and a third sshd), and sshd's lines are imported the way `forensix import journal`
or the recorder's follower stores them, in the form sshd writes them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from forensix.analysis.sessions import sessions
from forensix.cli.main import cli
from forensix.imports import FORMATS, Host, Importer
from forensix.store.embedded import open_reader, open_writer
from forensix.testing.generator import StoreBuilder

KEY = "ED25519 SHA256:Zb3yKQ0xLkq3x1m2n3o4p5q6r7s8t9u0v1w2x3y4z5A"


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def test_sshd_login_line_enriches_its_session(tmp_path: Path) -> None:
    b = StoreBuilder()
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    # recorded: the accept gives the address; the log adds user, method and key
    b.accept(sshd, 99.99, ("10.0.0.5", 22), ("203.0.113.66", 51515))
    a = b.spawn(sshd, 600, 100, "/usr/sbin/sshd", ["sshd: root [priv]"])
    b.spawn(a, 601, 101, "/usr/bin/bash", ["-bash"], uid=0, auid=0, sid=7, tty="pts/0")
    b.exit(a, 200)
    # no accept recorded (the recorder missed it): the log gives the address, not the listener's
    # last accept before it
    c = b.spawn(sshd, 700, 300, "/usr/sbin/sshd", ["sshd: bob [priv]"])
    b.spawn(c, 701, 301, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=8, tty="pts/1")
    # a session with no login line
    d = b.spawn(sshd, 800, 500, "/usr/sbin/sshd", ["sshd: carol [priv]"])
    b.spawn(d, 801, 501, "/usr/bin/bash", ["-bash"], uid=1002, auid=1002, sid=9, tty="pts/2")
    store = tmp_path / "s.duckdb"
    w = open_writer(store)
    b.write(w)
    log = tmp_path / "auth.log"
    log.write_text(
        f"{_iso(b.t(100.4))} testhost sshd[600]: Accepted publickey for root from 203.0.113.66 port 51515 ssh2: {KEY}\n"
        f"{_iso(b.t(300.2))} testhost sshd[700]: Accepted password for bob from 2001:db8::7 port 6000 ssh2\n"
        # pid 800 again long after its session: a later sshd reusing the pid, not carol's login
        f"{_iso(b.t(100.5))} testhost sshd[800]: Accepted password for eve from 192.0.2.9 port 7000 ssh2\n"
        # another connection's line while carol's session runs: neither its pid nor its address
        f"{_iso(b.t(500.3))} testhost sshd[900]: Accepted password for dave from 192.0.2.10 port 7001 ssh2\n")
    res = Importer(w, "journal", FORMATS["journal"].make, Host(b.host_id, b.host_name)).import_file(log)
    assert res.skipped == 0  # type: ignore[attr-defined]
    w.close()
    rows = {x["leader_pid"]: x for x in sessions(open_reader(store), names=lambda u: {}).to_pylist()
            if x["kind"] == "sshd"}
    assert {k: (v["login_user"], v["login_method"], v["key_fingerprint"], v["source_ip"], v["source_port"])
            for k, v in rows.items() if k != 800} == {
        600: ("root", "publickey", KEY, "203.0.113.66", 51515),
        700: ("bob", "password", None, "2001:db8::7", 6000),
    }
    assert rows[800]["login_user"] is None and rows[800]["key_fingerprint"] is None
    assert rows[700]["description"] == "ssh from 2001:db8::7:6000"
    r = CliRunner().invoke(cli, ["sessions", "--kind", "sshd", "--store", str(store), "--format", "json"])
    assert r.exit_code == 0, r.output
    shown = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert any(KEY in json.dumps(s) for s in shown), shown
