"""Graph node keys of sockets: which are one host's own, and which may join two hosts.

A unix socket is keyed by its path (or, unnamed, by its peer's inode, its own inode, or the
two inodes of a connected pair) and a connection by its unordered pair of endpoints, so
both ends of one meet at one node. Inode numbers, unix paths and loopback addresses mean
something only on their host, so those keys carry the host_id as well (the way file keys
do, ``f:HOST:DEV:INO``): ``u:HOST:PATH``, ``u:HOST:INO|INO``, ``c:A|B@HOST``. A connection
between two addresses, ``c:A|B``, has no host: on a fleet store it is where a connecting
process on one host meets the accepting one on another (analysis.crosshost checks it).
"""

from __future__ import annotations

import re

__all__ = ["SOCK_KEY", "UNIX_PAIR", "sock_host", "sock_name"]

# The key as SQL over an events row. Without the host, every host of a fleet store using
# /run/dbus/system_bus_socket or 127.0.0.1:5432 would meet at one node. An unknown or
# unspecified address counts as the host's own too: nothing could match it to a peer.
_ENDS = ("coalesce(source_ip, '?') || ':' || coalesce(source_port, 0)::VARCHAR",
         "coalesce(destination_ip, '?') || ':' || coalesce(destination_port, 0)::VARCHAR")
_HOST_ONLY_IP = ("(coalesce({c}, '?') IN ('?', '::1', '0.0.0.0', '::') OR {c} LIKE '127.%'"
                 " OR {c} LIKE '::ffff:127.%')")
SOCK_KEY = f"""CASE WHEN network_transport = 'unix'
    THEN 'u:' || host_id || ':' || coalesce(unix_path, '@' || nullif(unix_peer_inode, 0)::VARCHAR,
                                            '#' || nullif(file_inode, 0)::VARCHAR, '?')
    ELSE 'c:' || least({_ENDS[0]}, {_ENDS[1]}) || '|' || greatest({_ENDS[0]}, {_ENDS[1]})
         || CASE WHEN {_HOST_ONLY_IP.format(c='source_ip')} OR {_HOST_ONLY_IP.format(c='destination_ip')}
                 THEN '@' || host_id ELSE '' END
    END"""

# a connected unix socket pair, by its host and the two inodes (host ids, machine-ids, hold no ':', as file keys assume)
UNIX_PAIR = re.compile(r"^u:([^:]*):(\d+)\|(\d+)$")


def sock_host(key: str) -> str | None:
    """The host_id a unix socket or host-local connection node belongs to; None for a
    connection between two addresses (it may join two hosts)."""
    if key.startswith("u:"):
        return key[2:].split(":", 1)[0]
    if key.startswith("c:") and "@" in key:
        return key.rpartition("@")[2]
    return None


def sock_name(key: str) -> str:
    """A socket node's key without its host: the unix path (or inodes), or the two endpoints."""
    if key.startswith("u:"):
        return key[2:].split(":", 1)[-1]
    return key[2:].partition("@")[0]
