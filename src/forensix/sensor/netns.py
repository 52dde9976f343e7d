"""One network namespace recorded as a host of its own (``forensix record --netns``).

A container or an ``ip netns`` namespace has addresses of its own: to a peer it is another
machine. The sensor keeps only the tasks whose ``nsproxy->net_ns`` is that namespace
(``cfg.netns`` in bpf/sensor.bpf.c), and the recording gets a host name and a host id of
its own, so two namespaces of one kernel are two hosts of a fleet store and a connection
between them is followed like one between two machines (analysis/crosshost.py).

A namespace is named by its inode (``ns.inum``, what ``stat`` gives for ``/run/netns/NAME``
or ``/proc/PID/ns/net``). Inodes of dead namespaces are reused: the inode is resolved when
recording starts, and the host id also carries the name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from forensix.errors import UsageError
from forensix.model.host import HostInfo, local_host, namespace_host

__all__ = ["NetNamespace", "netns_of", "recorded_host", "resolve_netns"]

# linux/nsfs.h: NS_GET_NSTYPE = _IO(0xb7, 0x3); sched.h: CLONE_NEWNET
_NS_GET_NSTYPE = (0xB7 << 8) | 0x3
_CLONE_NEWNET = 0x40000000
_NS_TYPES = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
             0x10000000: "user", 0x20000000: "pid", 0x00000080: "time"}
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
_HINT = ("give a network namespace: /run/netns/NAME (see `ip netns list`), /proc/PID/ns/net of a "
         "process inside it, or --netns-inode N (`readlink /proc/PID/ns/net` shows net:[N])")


@dataclass(frozen=True)
class NetNamespace:
    inode: int
    label: str  # for the default host name: NAME of /run/netns/NAME, else net-INODE
    path: str | None = None


def _label(path: str, inode: int) -> str:
    p = Path(path)
    if any(p.parent == d for d in NETNS_DIRS):
        return p.name
    return f"net-{inode}"


def _from_path(path: str) -> NetNamespace:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no network namespace at {path}: the path does not exist", _HINT) from None
    except OSError as e:
        raise UsageError(f"cannot open the network namespace {path}: {e.strerror}", _HINT) from None
    try:
        st = os.fstat(fd)
        try:
            kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
        except OSError as e:
            if e.errno not in (errno.ENOTTY, errno.EINVAL):
                raise UsageError(f"cannot tell what {path} is: {e.strerror}", _HINT) from None
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a namespace file"
            raise UsageError(f"{path} is {what}, not a network namespace", _HINT) from None
    finally:
        os.close(fd)
    if kind != _CLONE_NEWNET:
        raise UsageError(f"{path} is a {_NS_TYPES.get(kind, hex(kind))} namespace, not a network namespace", _HINT)
    return NetNamespace(st.st_ino, _label(path, st.st_ino), path)


def _candidates() -> list[str]:
    """Files that name live network namespaces: the mounted ones, then each process's."""
    out = [str(p) for d in NETNS_DIRS if d.is_dir() for p in sorted(d.iterdir())]
    out += [f"/proc/{n}/ns/net" for n in os.listdir("/proc") if n.isdigit()]
    return out


def _from_inode(inode: int) -> NetNamespace:
    for path in _candidates():
        try:
            if os.stat(path).st_ino == inode:
                return _from_path(path)
        except (OSError, UsageError):
            continue  # a process that exited, a file that is no namespace
    raise UsageError(f"no network namespace has inode {inode}: none is mounted under /run/netns and no "
                     "process is in it (it may have ended)", _HINT)


def resolve_netns(path: str | None = None, inode: int | None = None) -> NetNamespace:
    """The namespace named by a path or by an inode; a ``UsageError`` with a hint if there is
    none (a path that does not exist or is not a network namespace, an inode no live
    namespace has)."""
    if path is not None and inode is not None:
        ns = _from_path(path)
        if ns.inode != inode:
            raise UsageError(f"{path} is network namespace {ns.inode}, not {inode}", "give one of --netns, --netns-inode")
        return ns
    if path is not None:
        return _from_path(path)
    if inode is None or inode <= 0 or inode >= 1 << 32:
        raise UsageError(f"{inode} is not a namespace inode", _HINT)
    return _from_inode(inode)


def netns_of(pid: int) -> int | None:
    """The network namespace (inode) of a process; None if it is gone or not readable."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def recorded_host(path: str | None, inode: int | None, name: str | None) -> tuple[int, HostInfo | None]:
    """What the options --netns / --netns-inode / --host-name ask to record: the namespace's
    inode (0: the whole host) and the host it is recorded as (None: this machine)."""
    if path is None and inode is None:
        if name is not None:
            raise UsageError("--host-name names a network namespace recorded as a host",
                             "give --netns too (the whole machine is recorded under its own name)")
        return 0, None
    ns = resolve_netns(path, inode)
    machine = local_host()
    name = f"{machine.host_name}-{ns.label}" if name is None else name.strip()
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise UsageError(f"{name!r} is not a host name", "give a name without spaces, e.g. --host-name web01")
    return ns.inode, namespace_host(machine, ns.inode, name)
