"""Who is recording: the host, its boot, its kernel."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["HostInfo", "local_host", "namespace_host"]


@dataclass(frozen=True)
class HostInfo:
    host_id: str  # /etc/machine-id, or the hostname when there is none
    host_name: str
    boot_id: str
    kernel: str


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def local_host() -> HostInfo:
    name = socket.gethostname()
    return HostInfo(
        host_id=_read("/etc/machine-id") or _read("/var/lib/dbus/machine-id") or name,
        host_name=name,
        boot_id=_read("/proc/sys/kernel/random/boot_id") or "unknown",
        kernel=os.uname().release,
    )


def namespace_host(machine: HostInfo, netns: int, name: str) -> HostInfo:
    """A network namespace of ``machine`` recorded as a host of its own (sensor/netns.py).

    Same boot and kernel; its own name, and an id derived from the machine's id, the
    namespace's inode and the name (32 hex digits, the shape of a machine-id). Entity ids
    are keyed by the host id (model/identity.py), so the namespace's processes never take
    the ids of the machine's or of another namespace's; and the name is in it because a
    dead namespace's inode is given to the next one.
    """
    digest = hashlib.blake2b(f"{machine.host_id}\0netns\0{netns}\0{name}".encode(), digest_size=16).hexdigest()
    return replace(machine, host_id=digest, host_name=name)
