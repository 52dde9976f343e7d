"""SigmaHQ's rules for the host's own logs (sshd, sudo, auth, cron, syslog and the builtin
keyword rules) run over `system` events: imported auth.log lines in `forensix hunt`, and the
lines the recorder's follower reads in `forensix record`'s live engine.

The rules are SigmaHQ's own (tests/imports/fixtures/sigma, sources in the README there). The
log lines are in the form sshd, sudo, useradd and crontab write them (the useradd lines are the
examples quoted in SigmaHQ's rule); each rule also meets a near miss it must not match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from forensix.cli.main import cli

FIX = Path(__file__).parent / "fixtures"
RULES = [FIX / "sigma" / f for f in ("lnx_sshd_susp_ssh.yml", "lnx_sudo_exploit_cve_2019_14287.yml",
                                     "lnx_privileged_user_creation.yml", "lnx_cron_crontab_file_modification.yml")]
SSHD, SUDO = "Suspicious OpenSSH Daemon Error", "Sudo Privilege Escalation CVE-2019-14287 - Builtin"
USERADD, CRONTAB = "Privileged User Has Been Created", "Modifying Crontab"

BURST = "".join(f"Nov 23 11:18:{40 + i} web1 sshd[6201]: Failed password for invalid user admin from 203.0.113.66 "
                f"port {51000 + i} ssh2\n" for i in range(6))
AUTH = BURST + """\
Nov 23 11:18:47 web1 sshd[6201]: ssh_dispatch_run_fatal: Connection from 203.0.113.66 port 51006: Corrupted MAC on input. [preauth]
Nov 23 11:18:48 web1 backup[7000]: copy failed: Corrupted MAC on input.
Nov 23 11:19:00 web1 sudo[7002]:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=#-1 ; COMMAND=/usr/bin/id
Nov 23 11:19:01 web1 sudo[7003]:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id
Nov 23 11:19:02 web1 notsudo[7001]: alice : TTY=pts/0 ; PWD=/home/alice ; USER=#-1 ; COMMAND=/usr/bin/id
Dec 21 17:13:54 testserver useradd[1337]: new user: name=john, UID=0, GID=0, home=/home/john, shell=/bin/bash
Dec 21 16:42:19 testserver useradd[1338]: new user: name=butter1, UID=1000, GID=1000, home=/home/butter1, shell=/bin/bash
Dec 21 17:20:01 web1 crontab[6500]: (root) REPLACE (root)
Dec 21 17:20:02 web1 CRON[6501]: (root) CMD (/usr/local/bin/rotate-backups)
"""


def test_sigmahq_syslog_rules_hunt_imported_auth_log(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(AUTH)
    store = str(tmp_path / "s.duckdb")
    run = CliRunner().invoke
    r = run(cli, ["import", "journal", str(log), "--store", store, "--quiet"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["hunt", *map(str, RULES), "--no-builtin", "--store", store, "--format", "json"])
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    by_rule: dict[str, list[int]] = {}
    for h in hits:
        by_rule.setdefault(h["rule.title"], []).append(h["process.pid"])
    # sshd's error, sudo run as user #-1, a uid-0 user created, a crontab replaced; each once:
    # not the other program's line with sshd's words (backup[7000]), not sudo as root (7003) nor
    # a line of another program in sudo's form (notsudo[7001]), not a uid-1000 user (1338), not
    # cron running a command (6501)
    assert by_rule == {SSHD: [6201], SUDO: [7002], USERADD: [1337], CRONTAB: [6500]}, hits


@pytest.mark.bpf
def test_sigmahq_syslog_rules_run_live_on_followed_lines(tmp_path: Path) -> None:
    """The recorder follows auth.log; its live engine raises SigmaHQ's sshd and sudo rules on
    lines written while it records, and not on the near misses written beside them."""
    log = tmp_path / "auth.log"
    log.write_text("")
    alerts = tmp_path / "alerts.jsonl"
    lines = [ln for ln in AUTH.splitlines() if "sshd" in ln or "sudo" in ln]
    script = "sleep 0.5; " + "; ".join(f"printf '%s\\n' '{ln}' >> {log}" for ln in lines) + "; sleep 2.5"
    r = subprocess.run([sys.executable, "-c", "from forensix.cli.main import main; main()", "record", "--quiet",
                        *[a for p in RULES for a in ("--rules", str(p))], "--alerts-jsonl", str(alerts),
                        "--system-log", str(log), "--store", str(tmp_path / "rec.duckdb"), "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120, check=False, env={**os.environ})
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    mine = sorted((a["rule.title"], a.get("process.pid")) for a in got if a.get("rule.title") in (SSHD, SUDO))
    assert mine == sorted([(SSHD, 6201), (SUDO, 7002)]), got
