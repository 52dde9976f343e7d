"""Generated histories of several hosts in one store: what one kernel cannot record by itself.

``lateral_movement``: an intruder comes in over ssh to web01, from there ssh-es to db01
and plants a cron file on db01. The same 4-tuple was used by an unrelated connection from
web01 to db01 an hour earlier (ephemeral port reuse), and both hosts talk to their own
loopback with equal ports: a cross-host link must match the connection and its time, not
only the addresses. Ground truth is returned for the tests.

``fleet``: ``hosts`` hosts, each with the same small mix of daemons and commands, some of
them running a planted executable: for fleet questions and benchmarks.

``one_uid_two_users``: uid 1001 is alice on web01 and bob on db01; each runs a shell that
changes its uid and writes a file, and a descriptor it inherited (a flow with no path) has
the same device and inode as the other host's file: names and paths must come from the
row's own host.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from forensix.store.base import Writer
from forensix.testing.generator import O_CREAT, O_TRUNC, O_WRONLY, StoreBuilder

__all__ = ["Lateral", "content_sha256", "fleet", "lateral_movement", "one_uid_two_users"]

ATTACKER = ("203.0.113.66", 51515)
WEB, DB = "10.0.0.5", "10.0.0.6"


@dataclass
class Lateral:
    planted: str  # the file planted on db01
    ssh_client: int  # entity id of the ssh client on web01 that connected to db01
    web_bash: int  # the intruder's shell on web01 (parent of the ssh client)
    db_sshd: int  # the sshd on db01 that accepted the connection
    decoy: int  # the process on web01 that used the same 4-tuple an hour earlier
    connect_ts: int


def _host(name: str) -> StoreBuilder:
    return StoreBuilder(host_id=f"{name}-machine-id", host_name=name, boot_id=f"boot-{name}")


def lateral_movement(store: Writer) -> Lateral:
    """Write the two-host intrusion into ``store``; returns its ground truth."""
    web, db = _host("web01"), _host("db01")
    w_init = web.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    w_sshd = web.spawn(w_init, 500, 1, "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener]"])
    w_cron = web.spawn(w_init, 510, 2, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
    d_init = db.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    d_sshd = db.spawn(d_init, 600, 1, "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener]"])
    d_pg = db.spawn(d_init, 700, 3, "/usr/lib/postgresql/bin/postgres", ["postgres"])
    # an hour before: a backup job on web01 uses the very same 4-tuple to db01 (port reuse)
    decoy = web.spawn(w_cron, 3000, 100, "/usr/bin/rsync", ["rsync", "-a", "/srv", f"{DB}:/backup"])
    web.connect(decoy, 100.1, (WEB, 40001), (DB, 22))
    d_old = db.spawn(d_sshd, 3100, 100.2, "/usr/sbin/sshd", ["sshd: backup [priv]"])
    db.accept(d_sshd, 100.15, (DB, 22), (WEB, 40001))
    db.write_file(d_old, 101, "/backup/srv.tar", 4096)
    # loopback on both hosts, equal ports: never a link between the hosts
    for b, p in ((web, w_cron), (db, d_pg)):
        b.connect(p, 200, ("127.0.0.1", 45000), ("127.0.0.1", 5432))
    # the intrusion: ssh into web01, then from there into db01
    web.accept(w_sshd, 3700, (WEB, 22), ATTACKER)
    w_priv = web.spawn(w_sshd, 4000, 3700.01, "/usr/sbin/sshd", ["sshd: admin [priv]"])
    bash = web.spawn(w_priv, 4001, 3701, "/usr/bin/bash", ["-bash"], uid=1000, auid=1000, sid=777,
                     tty="pts/0", cwd="/home/admin")
    ssh = web.spawn(bash, 4010, 3710, "/usr/bin/ssh", ["ssh", f"admin@{DB}"])
    web.connect(ssh, 3710.1, (WEB, 40001), (DB, 22))
    web.flow(ssh, 3710.2, 3790, "socket:[77]", write=2048, read=4096, file_type="socket", inode=77)
    db.accept(d_sshd, 3710.15, (DB, 22), (WEB, 40001))
    d_priv = db.spawn(d_sshd, 5000, 3710.2, "/usr/sbin/sshd", ["sshd: admin [priv]"])
    d_bash = db.spawn(d_priv, 5001, 3711, "/usr/bin/bash", ["-bash"], uid=0, auid=1000, sid=31,
                      tty="pts/1", cwd="/root")
    planted = "/etc/cron.d/backdoor"
    d_sh = db.spawn(d_bash, 5010, 3720, "/usr/bin/tee", ["tee", planted])
    db.open(d_sh, 3720.1, planted, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    db.flow(d_sh, 3720.2, 3720.3, planted, write=64)
    for b in (web, db):
        b.write(store)
    return Lateral(planted, ssh.entity_id, bash.entity_id, d_sshd.entity_id, decoy.entity_id, web.t(3710.1))


def content_sha256(exe: str) -> str:
    """The SHA-256 the fleet's hosts see for ``exe``'s content (generated: a hash of its path)."""
    return hashlib.sha256(f"content of {exe}".encode()).hexdigest()


def fleet(store: Writer, hosts: int = 20, every: int = 5, rounds: int = 3) -> list[str]:
    """``hosts`` hosts with a few daemons and commands each; every ``every``-th host also
    runs /tmp/.x/miner, which connects to 198.51.100.23:3333 and writes /etc/ld.so.preload.
    Exec events carry the executable's SHA-256 (``content_sha256``), except the miner on
    the last infected host: its copy was changed (another hash), as a fleet hunt meets.
    Returns the names of the hosts that ran the miner."""
    infected = []
    for i in range(hosts):
        b = _host(f"host{i:04d}")
        init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
        cron = b.spawn(init, 400, 1, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
        for r in range(rounds):
            job = b.spawn(cron, 1000 + r, 60 * (r + 1), "/usr/bin/logrotate", ["logrotate", "/etc/logrotate.conf"],
                          sha256=content_sha256("/usr/bin/logrotate"))
            b.read_file(job, 60 * (r + 1) + 0.1, "/etc/logrotate.conf")
            b.connect(job, 60 * (r + 1) + 0.2, (f"10.1.{i // 250}.{i % 250}", 41000 + r), ("10.0.0.53", 53),
                      transport="udp")
        if i % every == 0:
            variant = "/tmp/.x/miner" if i + every < hosts else "/tmp/.x/miner (v2)"
            m = b.spawn(cron, 2000, 300 + i, "/tmp/.x/miner", ["/tmp/.x/miner", "--pool", "198.51.100.23:3333"],
                        sha256=content_sha256(variant))
            b.connect(m, 300.5 + i, (f"10.1.{i // 250}.{i % 250}", 50000), ("198.51.100.23", 3333))
            b.write_file(m, 301 + i, "/etc/ld.so.preload", 32)
            infected.append(b.host_name)
        b.write(store)
    return infected


def one_uid_two_users(store: Writer) -> dict[str, int]:
    """Write the history (see the module's docstring); returns each host's shell entity id."""
    shells = {}
    for name, user, path in (("web01", "alice", "/srv/web/upload.log"), ("db01", "bob", "/var/lib/db/wal.0")):
        b = _host(name)
        b.users(0, {0: "root", 1001: user})
        init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
        sh = b.spawn(init, 2000, 10, "/usr/bin/bash", ["-bash"], uid=1001)
        b.setuid(sh, 11, 1001)
        b._inodes[path] = 424242  # the same inode number on both hosts
        b.open(sh, 12, path, O_WRONLY | O_CREAT, 0o644)
        # a write through an inherited descriptor: the flow carries the inode, not the path
        b._ev(sh, b.t(13), "flow", "flow", fd=5, file_inode=424242, file_device=b.dev, file_type="file",
              flow_first_ts=b.t(12.5), flow_last_ts=b.t(13), flow_write_count=1, flow_write_bytes=64)
        b.write(store)
        shells[name] = sh.entity_id
    return shells
