"""A recorded-looking history with one instance of every attack the curated rules cover,
and the benign neighbours of each (written through the real store code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from forensix.rules.alerts import empty_alerts
from forensix.rules.engine import LiveEngine
from forensix.testing.generator import O_CREAT, O_TRUNC, O_WRONLY, StoreBuilder

O_EXCL = 0o200

O_APPEND = 0o2000
RECORDER_PID = 4242


@dataclass
class Scenario:
    builder: StoreBuilder
    # rule name (Sigma `name`, or detector rule id) -> pids whose events must alert
    expected: dict[str, set[int]] = field(default_factory=dict)
    store_path: str = "/var/lib/forensix/host.duckdb"

    def expect(self, rule: str, pid: int) -> None:
        self.expected.setdefault(rule, set()).add(pid)


def _agent(b: StoreBuilder, t: float, action: str, **kw: Any) -> None:
    b._ev(None, b.t(t), "agent", action, process_pid=RECORDER_PID, **kw)


def build_scenario() -> Scenario:
    b = StoreBuilder()
    sc = Scenario(b)
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["/usr/sbin/sshd", "-D"])
    _agent(b, 0.8, "start", message=f"forensix recording; pid {RECORDER_PID}", file_path=sc.store_path)
    sh = b.spawn(sshd, 900, 10, "/usr/bin/bash", ["-bash"], uid=0, auid=1000, sid=3, tty="pts/0", cwd="/root")

    # -- benign neighbours -----------------------------------------------------------
    b.read_file(sshd, 11, "/etc/shadow")  # sshd checks a password
    chk = b.spawn(sshd, 901, 11.1, "/usr/sbin/unix_chkpwd", ["unix_chkpwd", "root", "nullok"])
    b.read_file(chk, 11.2, "/etc/shadow")
    b.write_file(sh, 12, "/root/.bash_history")  # bash saving history (O_TRUNC)
    lr = b.spawn(init, 902, 13, "/usr/sbin/logrotate", ["/usr/sbin/logrotate", "/etc/logrotate.conf"])
    b.rename(lr, 13.1, "/var/log/syslog", "/var/log/syslog.1")
    b.file_op(lr, 13.2, "unlink", "/var/log/syslog.7.gz")
    dpkg = b.spawn(sh, 903, 14, "/usr/bin/dpkg", ["dpkg", "-i", "cron.deb"])
    b.write_file(dpkg, 14.1, "/etc/cron.d/e2scrub_all")
    # dpkg unpacks into NAME.dpkg-new (created exclusively), sets the packaged times, renames it over
    b.open(dpkg, 14.15, "/usr/bin/crontab.dpkg-new", O_WRONLY | O_CREAT | O_EXCL)
    b.file_op(dpkg, 14.2, "utimes", "/usr/bin/crontab.dpkg-new", file_atime=b.t(-86400 * 400),
              file_mtime=b.t(-86400 * 400))
    b.rename(dpkg, 14.25, "/usr/bin/crontab.dpkg-new", "/usr/bin/crontab")
    # shutil.copy2: the copy written (truncated), then its source's times set (copystat)
    cpy = b.spawn(sh, 909, 14.3, "/usr/bin/python3.11", ["python3", "-c", "shutil.copy2('a', '/srv/b')"])
    b.open(cpy, 14.305, "/srv/a")  # the source, opened for reading first (as copy2 does)
    b.write_file(cpy, 14.31, "/srv/b")
    b.file_op(cpy, 14.32, "utimes", "/srv/b", file_atime=b.t(-86400 * 90), file_mtime=b.t(-86400 * 90))
    py = b.spawn(sh, 904, 15, "/usr/bin/python3.11", ["python3", "-m", "http.server", "--bind", "127.0.0.1"])
    b._ev(py, b.t(15.1), "network", "listen", network_transport="tcp", network_type="ipv4",
          source_ip="127.0.0.1", source_port=8000)
    gcc = b.spawn(sh, 905, 16, "/usr/bin/gcc", ["gcc", "-o", "/tmp/build/hello", "hello.c"])
    b.write_file(gcc, 16.1, "/tmp/build/hello")
    b.file_op(gcc, 16.2, "chmod", "/tmp/build/hello", file_mode=0o755)
    b.spawn(sh, 906, 16.3, "/tmp/build/hello", ["/tmp/build/hello"])
    touch = b.spawn(sh, 907, 16.5, "/usr/bin/touch", ["touch", "/root/notes"])
    b.file_op(touch, 16.6, "utimes", "/root/notes", file_atime=0, file_mtime=0)
    # the same touch as a sensor before 2026-12 recorded it: a NULL times pointer (a2), and
    # the registers past utimensat's four arguments read as the times set
    py = b.spawn(sh, 908, 16.55, "/usr/bin/python3.11", ["python3", "-c", "pathlib.Path('/root/notes').touch()"])
    b.file_op(py, 16.65, "utimes", "/root/notes", syscall="utimensat", a2=0, file_atime=4096, file_mtime=8192)
    b.connect(sh, 16.7, ("10.0.0.5", 41000), ("93.184.216.34", 443))

    # -- attacks ---------------------------------------------------------------------
    cat = b.spawn(sh, 1001, 20, "/usr/bin/cat", ["cat", "/etc/shadow"])
    b.read_file(cat, 20.1, "/etc/shadow")
    sc.expect("fx_shadow_read", 1001)
    cp = b.spawn(sh, 1002, 21, "/usr/bin/cp", ["cp", "/etc/shadow", "/tmp/.s"])
    b.read_file(cp, 21.1, "/etc/shadow")
    b.write_file(cp, 21.2, "/tmp/.s")
    sc.expect("fx_shadow_read", 1002)

    b.write_file(sh, 22, "/etc/cron.d/backdoor")
    sc.expect("fx_cron_drop", 900)

    chmod = b.spawn(sh, 1003, 23, "/usr/bin/chmod", ["chmod", "4755", "/tmp/rootsh"])
    b.file_op(chmod, 23.1, "chmod", "/tmp/rootsh", file_mode=0o4755)
    sc.expect("fx_setuid_tmp", 1003)

    rm = b.spawn(sh, 1004, 24, "/usr/bin/rm", ["rm", "-f", "/root/.bash_history"])
    b.file_op(rm, 24.1, "unlink", "/root/.bash_history", syscall="unlinkat", a0=4294967196)
    sc.expect("fx_history_removed", 1004)
    # a test's temp tree removed whole (pytest's cleanup): its history goes with its directory
    py = b.spawn(sh, 1030, 24.2, "/usr/bin/python3.11", ["python3", "-m", "pytest"])
    b.file_op(py, 24.3, "unlink", "/tmp/pytest-of-root/pytest-3/t0/home/.bash_history", syscall="unlinkat", a0=7)
    b.file_op(py, 24.31, "rmdir", "/tmp/pytest-of-root/pytest-3/t0/home", syscall="unlinkat", a0=6, a2=512)
    sc.expect("forensix-history-tree-removed", 1030)
    # find -delete walks too, but leaves the directory: still a wipe
    fd = b.spawn(sh, 1031, 24.4, "/usr/bin/find", ["find", "/home/bob", "-name", ".bash_history", "-delete"])
    b.file_op(fd, 24.5, "unlink", "/home/bob/.bash_history", syscall="unlinkat", a0=5)
    sc.expect("forensix-history-removed-in-walk", 1031)

    cp2 = b.spawn(sh, 1005, 25, "/usr/bin/cp", ["cp", "/usr/bin/id", "/tmp/.kworker"])
    b.read_file(cp2, 25.1, "/usr/bin/id")
    b.write_file(cp2, 25.2, "/tmp/.kworker")
    b.spawn(sh, 1006, 25.5, "/tmp/.kworker", ["/tmp/.kworker"])
    sc.expect("forensix-system-binary-copy-executed", 1006)
    sc.expect("forensix-written-then-executed", 1006)  # written by cp, run from /tmp

    b.spawn(sh, 1007, 26, "/usr/bin/sh", ["sh", "-c", "echo aWQK | base64 -d | sh"])
    sc.expect("fx_base64_shell", 1007)

    nc = b.spawn(sh, 1008, 27, "/usr/bin/nc.openbsd", ["nc", "-l", "-p", "4444"])
    b._ev(nc, b.t(27.1), "network", "listen", network_transport="tcp", network_type="ipv4",
          source_ip="0.0.0.0", source_port=4444)
    sc.expect("fx_high_port_listener", 1008)

    ua = b.spawn(sh, 1009, 28, "/usr/sbin/useradd", ["useradd", "-m", "eve"])
    b.write_file(ua, 28.1, "/etc/passwd+")
    b.rename(ua, 28.2, "/etc/passwd+", "/etc/passwd")
    sc.expect("fx_new_user", 1009)
    b.open(sh, 28.5, "/etc/passwd", O_WRONLY | O_APPEND)
    sc.expect("fx_passwd_written", 900)

    b.write_file(sh, 29, "/etc/ld.so.preload")
    sc.expect("fx_ld_preload", 900)

    rm2 = b.spawn(sh, 1010, 30, "/usr/bin/rm", ["rm", "/var/log/auth.log"])
    b.file_op(rm2, 30.1, "unlink", "/var/log/auth.log")
    sc.expect("fx_logs_tampered", 1010)
    b.open(sh, 30.5, "/var/log/wtmp", O_WRONLY | O_TRUNC | O_CREAT, 0o664)
    sc.expect("fx_logs_tampered", 900)

    ts = b.spawn(sh, 1011, 31, "/usr/bin/touch", ["touch", "-d", "2019-01-01", "/usr/bin/ls"])
    b.file_op(ts, 31.1, "utimes", "/usr/bin/ls", file_atime=b.t(-86400 * 3000), file_mtime=b.t(-86400 * 3000))
    sc.expect("fx_timestomp", 1011)
    # Python's os.utime backdating a file it did not write: the rule leaves python out by name,
    # the detector judges what it did
    ou = b.spawn(sh, 1019, 31.2, "/usr/bin/python3.11", ["python3", "-c", "os.utime('/etc/passwd', (t, t))"])
    b.file_op(ou, 31.3, "utimes", "/etc/passwd", file_atime=b.t(-86400 * 700), file_mtime=b.t(-86400 * 700))
    sc.expect("forensix-timestomp-not-a-copy", 1019)

    auk = b.spawn(sh, 1012, 32, "/usr/bin/tee", ["tee", "-a", "/root/.ssh/authorized_keys"])
    b.open(auk, 32.1, "/root/.ssh/authorized_keys", O_WRONLY | O_APPEND | O_CREAT, 0o600)
    sc.expect("fx_authorized_keys", 1012)

    b.spawn(sh, 1013, 33, "/usr/sbin/auditctl", ["auditctl", "-e", "0"])
    sc.expect("fx_audit_disabled", 1013)

    b.spawn(sh, 1018, 33.5, "/tmp/.x", ["/proc/self/fd/9"], deleted=True)  # deleted after it was opened
    sc.expect("fx_deleted_exec", 1018)

    ins = b.spawn(sh, 1014, 34, "/usr/sbin/insmod", ["insmod", "rk.ko"])
    b._ev(ins, b.t(34.1), "privilege", "finit_module", a0=3)
    sc.expect("fx_module_load", 1014)

    mod = b.spawn(sh, 1019, 34.2, "/usr/sbin/usermod", ["usermod", "-aG", "sudo", "eve"])
    sc.expect("fx_account_modified", mod.pid)
    rmu = b.spawn(sh, 1020, 34.3, "/usr/sbin/userdel", ["userdel", "eve"])
    sc.expect("fx_account_removed", rmu.pid)
    b.write_file(sh, 34.4, "/etc/systemd/system/evil.service")
    sc.expect("fx_systemd_unit", 900)
    key = b.spawn(sh, 1021, 34.5, "/usr/bin/cat", ["cat", "/root/.ssh/id_rsa"])
    b.read_file(key, 34.6, "/root/.ssh/id_rsa")
    sc.expect("fx_credential_read", key.pid)
    dec = b.spawn(sh, 1022, 34.7, "/usr/bin/base64", ["base64", "-d"])
    run = b.spawn(sh, 1023, 34.7, "/usr/bin/bash", ["bash"])
    b.flow(run, 34.8, 34.9, "pipe", read=40, file_type="fifo", inode=777_777, stored_once=True)
    b.flow(dec, 34.75, 34.85, "pipe", write=40, file_type="fifo", inode=777_777, stored_once=True)
    sc.expect("forensix-pipe-to-shell", run.pid)
    b.write_file(sh, 34.95, "/usr/local/bin/tool")
    b.spawn(sh, 1024, 34.97, "/usr/local/bin/tool", ["tool"])
    sc.expect("forensix-written-then-executed-other", 1024)
    b.open(sh, 34.98, "/root/.bashrc", O_WRONLY | O_APPEND)
    sc.expect("fx_shell_profile", 900)
    hist = b.spawn(sh, 1025, 34.99, "/usr/bin/cat", ["cat", "/root/.bash_history"])
    b.read_file(hist, 34.995, "/root/.bash_history")
    sc.expect("fx_history_read", hist.pid)
    # `dd if=/dev/zero bs=1 count=1 >> /usr/local/bin/tool`: the shell opens, dd copies a byte
    b.open(sh, 34.996, "/usr/local/bin/tool", O_WRONLY | O_APPEND | O_CREAT, 0o666)
    pad = b.spawn(sh, 1026, 34.997, "/usr/bin/dd", ["dd", "if=/dev/zero", "bs=1", "count=1"])
    b.flow(pad, 34.998, 34.998, "/dev/zero", read=1, file_type="char", inode=4, stored_once=True)
    b.flow(pad, 34.998, 34.999, "/usr/local/bin/tool", write=1, stored_once=True)
    sc.expect("forensix-binary-padding", pad.pid)
    # a near miss: a copier appending more than it read from the random device (a log, not padding)
    seed = b.spawn(sh, 1027, 34.9991, "/usr/bin/cat", ["cat"])
    b.open(seed, 34.9992, "/var/tmp/app.log", O_WRONLY | O_APPEND | O_CREAT, 0o644)
    b.flow(seed, 34.9993, 34.9993, "/dev/urandom", read=4096, file_type="char", inode=7, stored_once=True)
    b.flow(seed, 34.9994, 34.9995, "/var/tmp/app.log", write=5000, stored_once=True)

    # -- the recorder attacked -------------------------------------------------------
    bt = b.spawn(sh, 1015, 35, "/usr/sbin/bpftool", ["bpftool", "link", "detach", "id", "7"])
    b._ev(bt, b.t(35.1), "privilege", "bpf", a0=34)
    sc.expect("forensix-bpf-detach", 1015)
    b._ev(bt, b.t(35.2), "privilege", "bpf", a0=0)
    sc.expect("forensix-bpf-other-process", 1015)
    rm3 = b.spawn(sh, 1016, 36, "/usr/bin/rm", ["rm", "-f", sc.store_path + ".wal"])
    b.file_op(rm3, 36.1, "unlink", sc.store_path + ".wal")
    sc.expect("forensix-store-touched", 1016)
    kl = b.spawn(sh, 1017, 37, "/usr/bin/kill", ["kill", "-9", str(RECORDER_PID)])
    b._ev(kl, b.t(37.1), "process", "kill", target_pid=RECORDER_PID, signal=9)
    sc.expect("forensix-recorder-killed", 1017)
    _agent(b, 38, "stop", message="reason=signal SIGTERM; recorded")
    sc.expect("fx_agent_stopped", RECORDER_PID)
    return sc


def gaps_table(b: StoreBuilder) -> pa.Table:
    from forensix.store.schema import GAPS

    return pa.Table.from_pylist(
        [{"host_id": b.host_id, "host_name": b.host_name, "boot_id": b.boot_id, "ts_from": b.t(30),
          "ts_to": b.t(30.5), "cpu": 1, "event_class": "file", "count": 17, "reason": "ringbuf-full"}],
        schema=GAPS,
    )


def feed(engine: LiveEngine, tables: dict[str, pa.Table], batch: int = 7) -> pa.Table:
    """Hand a history to a live engine the way the recorder does: small batches in time order."""
    found = [engine.observe("processes", tables["processes"])]
    ev = tables["events"].sort_by([("ts", "ascending")])
    for start in range(0, ev.num_rows, batch):
        found.append(engine.observe("events", ev.slice(start, batch)))
    if "flows" in tables and tables["flows"].num_rows:  # as the recorder flushes edges: after their events
        found.append(engine.observe("flows", tables["flows"]))
    if "gaps" in tables:
        found.append(engine.observe("gaps", tables["gaps"]))
    found = [f for f in found if f.num_rows]
    return engine.settle(pa.concat_tables(found) if found else empty_alerts())
