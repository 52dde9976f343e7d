"""Two network namespaces joined by a veth pair: two "hosts" on one kernel, each recorded
as a host of its own (``forensix record --netns``, sensor/netns.py). Real namespaces and
a real link, made with iproute2 (``ip netns``, ``ip link``); root only."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["NetnsPair", "netns_pair"]


@dataclass(frozen=True)
class NetnsPair:
    names: tuple[str, str]  # under /run/netns
    addrs: tuple[str, str]  # IPv4 address of each side of the link

    def path(self, i: int) -> str:
        return f"/run/netns/{self.names[i]}"

    def inode(self, i: int) -> int:
        return os.stat(self.path(i)).st_ino

    def run(self, i: int, *argv: str) -> list[str]:
        """``argv`` run inside namespace ``i`` (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.names[i], *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def netns_pair(prefix: str = "fx", low: int | None = None) -> Iterator[NetnsPair]:
    """Two fresh namespaces with a veth pair between them (10.X.Y.1 and .2/30), removed after.

    Names and the subnet are random so that concurrent runs on one machine do not meet.
    ``low``: the /30's first address's last byte minus one, a multiple of 4 (8: .9 and .10,
    whose text order is the reverse of their numeric one), the third byte still random."""
    tag = secrets.token_hex(3)
    names = (f"{prefix}-{tag}-a", f"{prefix}-{tag}-b")
    links = (f"{prefix}{tag}a"[:15], f"{prefix}{tag}b"[:15])  # interface names: 15 bytes at most
    net = secrets.randbelow(1 << 14) << 2  # a /30 out of 10.200.0.0/16
    if low is not None:
        net = (net & ~0xFF) | (low & 0xFC)
    addrs = (f"10.200.{net >> 8}.{(net & 0xFF) + 1}", f"10.200.{net >> 8}.{(net & 0xFF) + 2}")
    made: list[str] = []
    try:
        for n in names:
            _ip("netns", "add", n)
            made.append(n)
        _ip("link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1])
        for n, link, addr in zip(names, links, addrs):
            _ip("-n", n, "addr", "add", f"{addr}/30", "dev", link)
            _ip("-n", n, "link", "set", link, "up")
            _ip("-n", n, "link", "set", "lo", "up")
        yield NetnsPair(names, addrs)
    finally:
        for n in made:  # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)
