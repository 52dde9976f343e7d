"""Who is recording: the host, its boot, its kernel."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostInfo", "local_host"]


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
