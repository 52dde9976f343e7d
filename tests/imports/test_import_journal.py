"""The host's own logs: journald JSON and export, auth.log lines; followed while recording.

journald does not run on this machine kind (systemd is not PID 1), so the journal inputs are
written here in journald's documented formats (`journalctl -o json`, `-o export` with a
binary field), and the syslog lines in the form sshd, sudo, su and cron write them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.imports import FORMATS, Host, Importer
from forensix.imports.journal import SystemLogFollower, classify
from forensix.store.embedded import open_reader, open_writer

AUTH = """\
Nov 23 11:17:18 ip-172-31-60-25 sshd[6105]: Accepted password for grafana from 195.80.150.137 port 52172 ssh2
Nov 23 11:18:02 web1 sshd[6190]: Accepted publickey for root from 203.0.113.9 port 40022 ssh2: ED25519 SHA256:Zb3yKQ0xLkq3x1m2n3o4p5q6r7s8t9u0v1w2x3y4z5A
Nov 23 11:18:40 web1 sshd[6201]: Failed password for invalid user admin from 203.0.113.66 port 51000 ssh2
Nov 23 11:18:41 web1 sshd[6201]: Invalid user oracle from 203.0.113.66 port 51002
Nov 23 11:19:00 web1 sudo:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/cat /etc/shadow
Nov 23 11:19:05 web1 su[6300]: (to root) alice on pts/0
Nov 23 11:19:05 web1 su[6300]: pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)
Nov 23 11:20:01 web1 CRON[6400]: (root) CMD (/opt/automation/updater.sh)
this line is not syslog
2025-12-10T22:27:58.152234+09:00 web1 sshd[7001]: Accepted password for bob from 2001:db8::7 port 6000 ssh2
"""


def _import(tmp_path: Path, name: str, data: bytes) -> tuple[object, list[dict[str, object]]]:
    p = tmp_path / name
    p.write_bytes(data)
    w = open_writer(tmp_path / f"{name}.duckdb")
    res = Importer(w, "journal", FORMATS["journal"].make, Host("web1", "web1")).import_file(p)
    rows = w.query("SELECT ts, event_action, event_outcome, source_ip, source_port, process_pid, process_name, "
                   "process_args, message, event_module FROM events WHERE event_action <> 'import-warning' "
                   "ORDER BY ts").to_pylist()
    w.close()
    return res, rows


def test_auth_log_lines(tmp_path: Path) -> None:
    res, rows = _import(tmp_path, "auth.log", AUTH.encode())
    assert [n for n, _ in res.warnings] == [9]  # type: ignore[attr-defined]
    bob, rows = rows[0], rows[1:]  # the ISO-dated line is of 2025; the others (no year) of this year
    assert bob["source_ip"] == "2001:db8::7" and bob["ts"] == 1765373278152234000
    acts = [r["event_action"] for r in rows]
    assert acts[:8] == ["ssh-login", "ssh-login", "ssh-login-failed", "ssh-invalid-user", "sudo", "su",
                        "session-opened", "cron-cmd"]
    first = rows[0]
    assert (first["source_ip"], first["source_port"], first["process_pid"]) == ("195.80.150.137", 52172, 6105)
    assert "SHA256:Zb3yKQ0x" in str(rows[1]["message"])  # the key fingerprint stays with the login
    assert rows[2]["event_outcome"] == "failure"
    assert rows[4]["process_args"] == ["/usr/bin/cat", "/etc/shadow"]
    assert rows[7]["process_args"] == ["/opt/automation/updater.sh"]
    assert {r["event_module"] for r in rows} == {"system"}


def test_journal_json_and_export(tmp_path: Path) -> None:
    entries = [{"__REALTIME_TIMESTAMP": "1700000000123456", "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd",
                "_PID": "812", "_UID": "0", "MESSAGE": "Accepted publickey for deploy from 198.51.100.4 port 41234 ssh2"},
               {"__REALTIME_TIMESTAMP": "1700000001000000", "SYSLOG_IDENTIFIER": "sudo",
                "MESSAGE": list(b"  deploy : TTY=pts/1 ; PWD=/srv ; USER=root ; COMMAND=/bin/sh \xff")}]
    data = "\n".join(json.dumps(e) for e in entries).encode() + b"\n"
    res, rows = _import(tmp_path, "j.json", data)
    assert res.skipped == 0 and [r["event_action"] for r in rows] == ["ssh-login", "sudo"]  # type: ignore[attr-defined]
    assert rows[0]["ts"] == 1700000000123456000 and rows[0]["source_ip"] == "198.51.100.4"
    # journalctl -o export: KEY=value lines, a binary MESSAGE (it holds a newline) length-prefixed
    msg = b"Failed password for root from 192.0.2.5 port 2222 ssh2\nsecond line"
    export = (b"__CURSOR=s=1;i=1\n__REALTIME_TIMESTAMP=1700000002000000\nSYSLOG_IDENTIFIER=sshd\n_PID=900\n"
              b"MESSAGE\n" + len(msg).to_bytes(8, "little") + msg + b"\n\n"
              b"__CURSOR=s=1;i=2\n__REALTIME_TIMESTAMP=1700000003000000\nSYSLOG_IDENTIFIER=CRON\n_PID=901\n"
              b"MESSAGE=(root) CMD (run-parts /etc/cron.hourly)\n\n")
    res, rows = _import(tmp_path, "j.export", export)
    assert res.skipped == 0, res.warnings  # type: ignore[attr-defined]
    assert [r["event_action"] for r in rows] == ["ssh-login-failed", "cron-cmd"]
    assert rows[0]["source_ip"] == "192.0.2.5" and rows[0]["process_pid"] == 900
    assert "second line" in str(rows[0]["message"])


def test_unknown_messages_are_kept_as_log_events() -> None:
    assert classify("kernel", "eth0: link up") == {"event_category": "host", "event_action": "log"}
    assert classify("notsshd", "Accepted password for x from 1.2.3.4 port 1 ssh2")["event_action"] == "log"


def test_follower_tails_and_follows_rotation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Nov 23 10:00:00 web1 sshd[1]: Accepted password for old from 192.0.2.1 port 1 ssh2\n")
    got: list[pa.Table] = []
    f = SystemLogFollower(Host("web1", "web1"), [str(log)], got.append, interval=0.1)
    f.start()
    time.sleep(0.3)
    with log.open("a") as fh:
        fh.write(AUTH.splitlines()[0] + "\n")
        fh.write("Nov 23 11:17:19 web1 sshd[6105]: Accepted password for half")  # not yet a whole line
    time.sleep(0.4)
    with log.open("a") as fh:
        fh.write(" from 192.0.2.2 port 2 ssh2\n")
    time.sleep(0.4)
    log.rename(tmp_path / "auth.log.1")
    log.write_text(AUTH.splitlines()[2] + "\n")
    time.sleep(0.5)
    f.stop()
    rows = pa.concat_tables(got).to_pylist() if got else []
    ips = [r["source_ip"] for r in rows]
    assert ips == ["195.80.150.137", "192.0.2.2", "203.0.113.66"], ips  # not the line before it started


@pytest.mark.bpf
def test_recorder_follows_a_log_beside_the_kernel(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    store = tmp_path / "rec.duckdb"
    line = AUTH.splitlines()[1].replace("'", "")
    r = subprocess.run([sys.executable, "-c", "from forensix.cli.main import main; main()", "record", "--quiet",
                        "--no-rules", "--system-log", str(log), "--store", str(store), "--",
                        "sh", "-c", f"sleep 0.5; echo '{line}' >> {log}; sleep 1.5"],
                       capture_output=True, text=True, timeout=120, check=False, env={**os.environ})
    assert r.returncode == 0, r.stderr
    rows = open_reader(store).query("SELECT event_action, source_ip, event_module FROM events "
                                    "WHERE event_module = 'system'").to_pylist()
    assert rows == [{"event_action": "ssh-login", "source_ip": "203.0.113.9", "event_module": "system"}]
