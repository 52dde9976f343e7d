"""Debian's real auditd, run for one test: own config dir and log, rules loaded with auditctl,
and everything put back afterwards (rules removed, enabled flag and backlog restored)."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

AUDITD = "/sbin/auditd"
AUDITCTL = "/sbin/auditctl"

CONF = """log_file = {log}
log_format = ENRICHED
log_group = root
priority_boost = 0
flush = INCREMENTAL_ASYNC
freq = 20
num_logs = 2
max_log_file = 64
max_log_file_action = ROTATE
space_left = 16
space_left_action = IGNORE
admin_space_left = 8
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
local_events = yes
write_logs = yes
plugin_dir = {plugins}
"""


def available() -> str | None:
    """Why auditd cannot run here (None: it can)."""
    if shutil.which(AUDITD) is None or shutil.which(AUDITCTL) is None:
        return "auditd is not installed (scripts/debian-packages.txt has it)"
    r = subprocess.run([AUDITCTL, "-s"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"auditctl -s failed: {r.stderr.strip()}"
    m = re.search(r"^pid (\d+)", r.stdout, re.MULTILINE)
    if m and m.group(1) != "0":
        return f"another auditd (pid {m.group(1)}) holds the audit socket"
    return None


def _status() -> dict[str, str]:
    r = subprocess.run([AUDITCTL, "-s"], capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


@contextlib.contextmanager
def running(work: Path, rules: list[list[str]]) -> Iterator[Path]:
    """auditd writing ``work/audit.log`` with ``rules`` loaded; yields the log's path."""
    conf = work / "auditd-conf"
    (conf / "plugins").mkdir(parents=True)
    log = work / "audit.log"
    (conf / "auditd.conf").write_text(CONF.format(log=log, plugins=conf / "plugins"))
    (conf / "auditd.conf").chmod(0o640)
    before = _status()
    proc = subprocess.Popen([AUDITD, "-n", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if _status().get("pid") == str(proc.pid):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"auditd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        subprocess.run([AUDITCTL, "-D"], capture_output=True, check=True)
        subprocess.run([AUDITCTL, "-b", "8192"], capture_output=True, check=True)
        for rule in rules:
            subprocess.run([AUDITCTL, *rule], capture_output=True, check=True)
        subprocess.run([AUDITCTL, "-e", "1"], capture_output=True, check=True)
        yield log
    finally:
        subprocess.run([AUDITCTL, "-D"], capture_output=True, check=False)
        proc.send_signal(signal.SIGTERM)  # auditd flushes its log and exits
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run([AUDITCTL, "-e", before.get("enabled", "0")], capture_output=True, check=False)
        subprocess.run([AUDITCTL, "-b", before.get("backlog_limit", "64")], capture_output=True, check=False)
