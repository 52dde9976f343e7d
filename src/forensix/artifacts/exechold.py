"""Hold every executed file from the moment of its exec (fanotify ``FAN_OPEN_EXEC``).

The collector (collect.py) opens what an exec ran at drain time, up to ~1.5 s later. A
tool downloaded, run, exited and deleted within that time was gone by then: the blind
spot anyone can make on purpose. fanotify closes it. Every real filesystem is marked
for ``FAN_OPEN_EXEC``, a notification (never a permission event: no exec waits for us).
The kernel queues an event for each file opened to be executed, and a queued event holds
a reference to the file; reading it gives a descriptor on exactly the file the kernel ran,
deleted or not. ``ExecHold.poll`` reads the queue every drain tick (after the process ring
is drained: the open precedes the exec's record, so each drained exec's event is queued by
then), keeps one descriptor per file (device, inode, mtime, ctime) with the pids that
exec-opened it, and closes the others. The collector asks ``take`` for an exec's pid and
inode (or a ``#!`` script's pid and path) and reads through a duplicate of that
descriptor (with ``pread``: the offset is shared), before ``/proc/PID/exe`` and the path.

Bounded and counted: at most ``max_files`` files held (512, or a quarter of
RLIMIT_NOFILE if less; one past it is closed and the
exec's artifact, if it is lost, says so), a pid's claim on a file lapses after
``timeout_s`` (the ELF interpreter, failed execs), and a queue overflow
(``FAN_Q_OVERFLOW``, the kernel's 16,384 events) is counted and named in the reason of
the executables it may have cost. Filesystems mounted later are marked when a mount
table changes (``POLLPRI`` on ``/proc/PID/mountinfo``): ours, and that of every other mount
namespace (a container's), found by a scan of ``/proc/*/ns/mnt`` every ``NS_SCAN_S`` (of the
processes the last scan did not find; of all every ``NS_FULL_SCAN_S``), or at the next tick
after the sensor recorded a mount, unshare or setns (``scan_soon``: all of them; the decoding
recorder and the raw agent both say so), and marked through ``/proc/PID/root``.

Not covered (read at drain time, as before): files on pseudo or kernel-internal
filesystems (memfd, ``SB_KERNMOUNT``: fanotify refuses to mark them), the execs on a
filesystem before it is marked (a tick after its mount; in a new mount namespace up to
``NS_SCAN_S`` after it appears), a script given to its interpreter as an argument (``sh x.sh`` is an ordinary open: the interpreter's fd on it is read
instead), and libraries mapped executable. Needs CAP_SYS_ADMIN and a kernel with
``FAN_OPEN_EXEC`` (5.0) and filesystem marks (4.20); without them ``ExecHold.open``
returns why, and the recorder says so in its start record.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import resource
import select
import struct
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["HOLD_SOURCE", "MAX_FILES", "TIMEOUT_S", "ExecHold"]

HOLD_SOURCE = "exec-time hold (fanotify)"  # the artifacts row's ``source`` for a copy read through it
MAX_FILES = 512  # distinct files held at once (each one descriptor)
# A pid's claim on a file it exec-opened lapses after this, unclaimed (the ELF interpreter, a
# failed exec, an exec record lost): the record is drained before the event is read, and
# matched in the same tick, so this only bounds how long such a file is held (and its
# filesystem busy for umount)
TIMEOUT_S = 3.0
NS_SCAN_S = 5.0  # how often /proc is scanned for mount namespaces not watched yet (its new processes)
# how often every process is looked at again, whatever the sensor recorded (a pid reused by a
# process in a namespace of its own within a scan period; an unshare outside what is recorded)
NS_FULL_SCAN_S = 60.0

_FAN_CLOEXEC, _FAN_NONBLOCK, _FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
_FAN_MARK_ADD, _FAN_MARK_MOUNT, _FAN_MARK_FILESYSTEM = 0x1, 0x10, 0x100
_FAN_OPEN_EXEC, _FAN_Q_OVERFLOW = 0x1000, 0x4000
_META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_META_VERSION = 3
_READ_BYTES = _META.size * 128  # descriptors a read creates at once: 128
# filesystems no executable lives on, several refusing marks: skipped without a word
_PSEUDO = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "bpf", "tracefs", "debugfs", "securityfs", "pstore", "configfs",
    "fusectl", "devpts", "mqueue", "binfmt_misc", "autofs", "efivarfs", "nsfs", "rpc_pipefs", "selinuxfs",
    "hugetlbfs"})


@dataclass(slots=True, eq=False)
class _File:
    fd: int
    key: tuple[int, int, int, int]  # st_dev, st_ino, mtime ns, ctime ns (at the first read)
    pids: set[int] = field(default_factory=set)  # pids whose exec-open of it no exec record has claimed yet


@dataclass(slots=True, eq=False)
class _Table:
    """A mount table watched for changes: ``/proc/PID/mountinfo`` of one process of the namespace."""

    file: io.FileIO
    ns: int  # the mount namespace's inode
    pid: str  # "self", or the process its mounts are reached through (/proc/PID/root)


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init = libc.fanotify_init
        self.init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self.init.restype = ctypes.c_int
        self.mark = libc.fanotify_mark
        self.mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        self.mark.restype = ctypes.c_int


class ExecHold:
    """The fanotify group and the files it holds. ``open`` makes one (or says why not)."""

    def __init__(self, fd: int, libc: _Libc, *, max_files: int = MAX_FILES, timeout_s: float = TIMEOUT_S) -> None:
        self.fd = fd
        self._libc = libc
        self.max_files = max_files
        self.timeout_s = timeout_s
        self._files: dict[tuple[int, int, int, int], _File] = {}
        self._by_pid: dict[int, list[_File]] = {}
        self._claims: deque[tuple[float, int, _File]] = deque()  # (read at, pid, file), oldest first
        self._lost_pids: dict[int, str] = {}  # pid -> why its exec-opened file was not held (recent)
        self._lost_claims: deque[tuple[float, int]] = deque()
        self._taken: list[tuple[int, _File]] = []  # claims taken since the last poll: released by it
        self.marked: dict[int, str] = {}  # st_dev -> "fs type at mount point" (filesystem or mount marks)
        self.refused: dict[tuple[int, str], str] = {}  # (st_dev, fs type) -> why a mark was refused (tried once)
        self.events = 0  # FAN_OPEN_EXEC events read
        self.held = 0  # files held, in all
        self.taken = 0  # execs that were read through the hold
        self.overflows = 0  # FAN_Q_OVERFLOW events: the kernel's queue was full, events were lost
        self.bound_hits = 0  # files not held because max_files were held
        self.expired = 0  # files closed with no exec record claiming them (the ELF interpreter, failed execs)
        self.peak = 0
        self.scans = 0  # scans of /proc for mount namespaces, and the processes they looked at (tests)
        self.scan_lookups = 0
        self._overflow_polls: deque[int] = deque([0, 0], maxlen=2)  # overflows read by the last two polls
        self._mounts = select.poll()  # the mount tables watched: POLLPRI when one changes
        self._tables: dict[int, _Table] = {}  # its fds -> the namespace each is the mount table of
        self._namespaces: set[int] = set()  # mount namespaces watched (ns inode)
        self._next_scan = 0.0
        self._scanned: set[str] = set()  # the pids the last scan found (an incremental one looks at the others)
        self._full_due = False  # the next scan looks at every process (scan_soon)
        self._next_full = 0.0
        own = _ns_of("self")
        self._watch(own if own is not None else 0, "self")
        self.mark_mounts()
        self._scan_namespaces()
        self._next_scan = time.monotonic() + NS_SCAN_S
        self._next_full = time.monotonic() + NS_FULL_SCAN_S

    # -- set-up -----------------------------------------------------------------------
    @classmethod
    def open(cls, **kw: float) -> ExecHold | str:
        """A hold over every real filesystem, or why there is none (to say in the start record)."""
        try:
            libc = _Libc()
        except (OSError, AttributeError) as e:
            return f"no fanotify in the C library ({e})"
        fd = libc.init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK,
                       os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC | os.O_NOATIME)
        if fd < 0:
            err = ctypes.get_errno()
            hint = {errno.EPERM: "needs CAP_SYS_ADMIN", errno.ENOSYS: "the kernel has no fanotify",
                    errno.EINVAL: "the kernel refuses these flags"}.get(err, os.strerror(err))
            return f"fanotify_init failed: {hint}"
        hold = cls(fd, libc, max_files=int(kw.get("max_files", _max_files())),
                   timeout_s=float(kw.get("timeout_s", TIMEOUT_S)))
        if not hold.marked:
            why = "; ".join(sorted(set(hold.refused.values()))) or "no filesystem to mark"
            hold.close()
            return f"no filesystem could be marked for FAN_OPEN_EXEC ({why})"
        return hold

    def _watch(self, ns: int, pid: str) -> None:
        try:
            f = open(f"/proc/{pid}/mountinfo", "rb", buffering=0)  # noqa: SIM115 - kept, polled for changes
        except OSError:
            return  # gone meanwhile: the next scan finds another of its processes
        self._tables[f.fileno()] = _Table(f, ns, pid)
        self._namespaces.add(ns)
        self._mounts.register(f, select.POLLPRI | select.POLLERR)

    def _unwatch(self, fd: int) -> None:
        t = self._tables.pop(fd)
        self._mounts.unregister(fd)
        self._namespaces.discard(t.ns)
        t.file.close()

    def _scan_namespaces(self, full: bool = True) -> None:
        """Watch the mount tables of namespaces not watched yet (a container's) and mark them.
        Not ``full``: only the processes the last scan did not find. A process enters a new mount
        namespace by being made in one (clone: a new pid) or by unshare or setns, which the sensor
        records and which makes the next scan a full one (``scan_soon``). Each process looked
        at is a readlink (~5 µs): every process every 5 s was ~1.5 ms a scan on a build."""
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        seen, self._scanned = self._scanned, set(pids)
        self.scans += 1
        for pid in pids if full else [p for p in pids if p not in seen]:
            self.scan_lookups += 1
            ns = _ns_of(pid)
            if ns is not None and ns not in self._namespaces:
                self._watch(ns, pid)
                for fd, t in list(self._tables.items()):
                    if t.ns == ns:
                        self.mark_mounts(fd)

    def scan_soon(self) -> None:
        """Scan every process for new mount namespaces at the next poll (the sensor recorded a
        mount, an unshare or a setns: a container may be starting)."""
        self._next_scan = 0.0
        self._full_due = True

    def mark_mounts(self, table: int | None = None) -> None:
        """Mark each filesystem of a mount table (``table``: its fd; None: every table): the
        whole filesystem, or (where that is refused) each of its mounts."""
        for fd in [table] if table is not None else list(self._tables):
            self._mark_table(fd)

    def _mark_table(self, fd: int) -> None:
        t = self._tables[fd]
        root = "" if t.pid == "self" else f"/proc/{t.pid}/root"
        if root and _ns_of(t.pid) != t.ns:  # its process is gone: found again through another one
            self._unwatch(fd)
            return
        by_dev: dict[int, list[tuple[str, str]]] = {}
        try:
            t.file.seek(0)
            text = t.file.read().decode(errors="replace")
        except OSError:
            self._unwatch(fd)
            return
        for line in text.splitlines():
            pre, _, post = line.partition(" - ")
            f, p = pre.split(" "), post.split(" ")
            if len(f) < 5 or not p or p[0] in _PSEUDO:
                continue
            major, _, minor = f[2].partition(":")
            dev = os.makedev(int(major), int(minor))
            if (dev, p[0]) not in self.refused:
                by_dev.setdefault(dev, []).append((root + _unescape(f[4]), p[0]))
        # every filesystem of the table, marked or not: a device number is reused once its
        # filesystem is gone (a tmpfs unmounted and mounted again), and marking twice is harmless
        for dev, mounts in by_dev.items():
            self._mark(dev, mounts)

    def _mark(self, dev: int, mounts: list[tuple[str, str]]) -> None:
        mounts = [(m, t) for m, t in mounts if _dev_of(m) == dev]  # a mount point hidden under another: not it
        if not mounts:
            return  # tried again when a mount table changes (another namespace may show it)
        why = ""
        for flag in (_FAN_MARK_FILESYSTEM, _FAN_MARK_MOUNT):
            done = False
            for path, typ in mounts if flag == _FAN_MARK_MOUNT else mounts[:1]:
                if self._libc.mark(self.fd, _FAN_MARK_ADD | flag, _FAN_OPEN_EXEC, -100, path.encode()) == 0:
                    self.marked[dev] = f"{typ} at {path}" + ("" if flag == _FAN_MARK_FILESYSTEM else " (mount)")
                    done = True
                elif not why:
                    why = f"{typ}: {os.strerror(ctypes.get_errno())}"
            if done:
                return
        self.marked.pop(dev, None)
        self.refused[(dev, mounts[0][1])] = why

    # -- each drain tick --------------------------------------------------------------
    def poll(self) -> int:
        """Read the queued events: hold one descriptor per file, close the rest. Marks new
        mounts first when the mount table changed. Returns the events read."""
        for pid, f in self._taken:  # the claims the collector took since the last poll
            if pid in f.pids:
                self._release(pid, f)
        self._taken.clear()
        for fd, _ in self._mounts.poll(0):
            if fd in self._tables:
                self.mark_mounts(fd)
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + NS_SCAN_S
            full = self._full_due or now >= self._next_full
            if full:
                self._full_due, self._next_full = False, now + NS_FULL_SCAN_S
            self._scan_namespaces(full)
        n = over = 0
        while True:
            try:
                buf = os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                break
            except OSError as e:  # EMFILE: the event is lost, counted like an overflow
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    over += 1
                    continue
                raise
            if not buf:
                break
            for _, vers, _, _, mask, fd, pid in _events(buf):
                if vers != _META_VERSION:
                    raise OSError(errno.EPROTO, f"fanotify metadata version {vers} (expected {_META_VERSION})")
                if mask & _FAN_Q_OVERFLOW:
                    over += 1
                if fd >= 0:
                    n += 1
                    self._add(fd, pid, now)
            if len(buf) < _READ_BYTES - _META.size:
                break
        self.events += n
        self.overflows += over
        self._overflow_polls.append(over)
        self._expire(now)
        return n

    def _add(self, fd: int, pid: int, now: float) -> None:
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        f = self._files.get(key)
        if f is not None:
            os.close(fd)  # held already
        elif len(self._files) >= self.max_files:
            os.close(fd)
            self.bound_hits += 1
            self._lost_pids[pid] = f"{self.max_files} files were held already (the hold's bound)"
            self._lost_claims.append((now, pid))
            return
        else:
            f = self._files[key] = _File(fd, key)
            self.held += 1
            self.peak = max(self.peak, len(self._files))
        f.pids.add(pid)
        self._by_pid.setdefault(pid, []).append(f)
        self._claims.append((now, pid, f))

    def _expire(self, now: float) -> None:
        limit = now - self.timeout_s
        while self._claims and self._claims[0][0] < limit:
            _, pid, f = self._claims.popleft()
            if pid in f.pids:
                self._release(pid, f, expired=True)
        while self._lost_claims and self._lost_claims[0][0] < limit:
            self._lost_pids.pop(self._lost_claims.popleft()[1], None)

    def _release(self, pid: int, f: _File, expired: bool = False) -> None:
        """The claim of ``pid`` on ``f`` ends; ``f`` is closed once no claim is left."""
        f.pids.discard(pid)
        files = self._by_pid.get(pid)
        if files is not None:
            files[:] = [g for g in files if g is not f]
            if not files:
                del self._by_pid[pid]
        if not f.pids and self._files.get(f.key) is f:
            del self._files[f.key]
            os.close(f.fd)
            self.expired += expired

    # -- the collector's side ---------------------------------------------------------
    def take(self, pid: int, inode: int | None = None, path: str | None = None) -> int | None:
        """A new descriptor (the caller closes it) on the file ``pid`` exec-opened with this
        inode (an executable) or path (a ``#!`` script), or None. A duplicate of the held one:
        it shares its offset, which no reader uses (the store reads with ``pread``); a fresh
        open through ``/proc/self/fd`` cost ~5.7 µs an exec against ~1 for ``dup``. The
        pid's claim on it ends at the next ``poll`` (the kernel merges the queued events of one
        pid opening one file, so two execs of it in a tick show as one), and the file is
        closed once no other pid claims it."""
        f = self._find(pid, inode, path)
        if f is None or self._files.get(f.key) is not f:  # (closed already: never reopen a reused fd number)
            return None
        try:
            fd: int | None = os.dup(f.fd)  # close-on-exec, as Python makes every descriptor
        except OSError:  # EMFILE
            fd = None
        self._taken.append((pid, f))
        if fd is not None:
            self.taken += 1
        return fd

    def _find(self, pid: int, inode: int | None, path: str | None) -> _File | None:
        for f in reversed(self._by_pid.get(pid, ())):  # the latest first (a pid reused meanwhile)
            if inode is not None and f.key[1] == inode:
                return f
            if inode is None and path is not None and _names(f.fd, path):
                return f
        return None

    def why_not(self, pid: int) -> str:
        """Why the hold had nothing for an exec of ``pid`` (for the artifact.missing reason)."""
        lost = self._lost_pids.get(pid)
        if lost:
            return f"not held at exec: {lost}"
        if any(self._overflow_polls):
            return f"not held at exec: the fanotify queue overflowed ({self.overflows} overflows since the start)"
        return "not held at exec (no exec-time event for it: a filesystem not marked, such as a memfd's or one " \
               "mounted in another mount namespace)"

    def summary(self) -> str:
        return (f"exec-time hold: {self.events} exec opens read, {self.held} files held (peak {self.peak} at once, "
                f"bound {self.max_files}), {self.taken} execs read through it, {self.bound_hits} not held at the "
                f"bound, {self.overflows} queue overflows, {self.expired} closed unclaimed; "
                f"{len(self.marked)} filesystems marked")

    def describe(self) -> str:
        """For the start record: what is marked."""
        return (f"executables held at exec (fanotify FAN_OPEN_EXEC on {len(self.marked)} filesystems: "
                f"{', '.join(sorted(self.marked.values()))})")

    def close(self) -> None:
        for f in self._files.values():
            os.close(f.fd)
        self._files.clear()
        self._by_pid.clear()
        self._claims.clear()
        self._taken.clear()
        for fd in list(self._tables):
            self._unwatch(fd)
        os.close(self.fd)


def _events(buf: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    if len(buf) % _META.size == 0:  # no info records (no FID flags): all alike
        return list(_META.iter_unpack(buf))
    out, off = [], 0
    while off + _META.size <= len(buf):
        ev = _META.unpack_from(buf, off)
        out.append(ev)
        off += max(ev[0], _META.size)
    return out


def _names(fd: int, path: str) -> bool:
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return name == path or name == f"{path} (deleted)"


def _max_files() -> int:
    """``MAX_FILES``, or a quarter of the descriptors the process may open if that is less
    (the agent's other descriptors, the deferred reads' among them, need the rest)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_FILES if soft == resource.RLIM_INFINITY else max(16, min(MAX_FILES, soft // 4))


def _ns_of(pid: str) -> int | None:
    """The mount namespace's inode, from its link's name ("mnt:[INODE]": half a stat's cost)."""
    try:
        name = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    try:
        return int(name[name.index("[") + 1: -1])
    except ValueError:
        return None


def _dev_of(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (\\040 for a space)."""
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
