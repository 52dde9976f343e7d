"""Graph node keys of sockets: which are one host's own, and which may join two hosts.

A unix stream connection is keyed by its client's socket inode (``u:HOST:=INO``, the
connect's own and the accept's peer), a connected pair by its two inodes, and anything else
by its path (or, unnamed, by its peer's inode or its own inode) and a connection by its unordered pair of endpoints, so
both ends of one meet at one node. Inode numbers, unix paths and loopback addresses mean
something only on their host, so those keys carry the host_id as well (the way file keys
do, ``f:HOST:DEV:INO``): ``u:HOST:=INO``, ``u:HOST:PATH``, ``u:HOST:INO|INO``, ``c:A|B@HOST``. A connection
between two addresses, ``c:A|B``, has no host: on a fleet store it is where a connecting
process on one host meets the accepting one on another (analysis.crosshost checks it).
"""

from __future__ import annotations

import re

__all__ = ["SOCK_KEY", "UNIX_CONN", "UNIX_PAIR", "sock_host", "sock_name"]

# The key as SQL over an events row. Without the host, every host of a fleet store using
# /run/dbus/system_bus_socket or 127.0.0.1:5432 would meet at one node. An unknown or
# unspecified address counts as the host's own too: nothing could match it to a peer.
_ENDS = ("coalesce(source_ip, '?') || ':' || coalesce(source_port, 0)::VARCHAR",
         "coalesce(destination_ip, '?') || ':' || coalesce(destination_port, 0)::VARCHAR")
_HOST_ONLY_IP = ("(coalesce({c}, '?') IN ('?', '::1', '0.0.0.0', '::') OR {c} LIKE '127.%'"
                 " OR {c} LIKE '::ffff:127.%')")
# A unix stream connection is its client's socket: the connect names it (file_inode) and
# the accept names it as the accepted socket's peer (unix_peer_inode; at connect the peer,
# the server's embryo socket, has no inode yet). Keyed by the path, every client of
# /run/docker.sock met at one node, and a walk went from one client's bytes to another's
# reads without the server in between. A client that closed before the server accepted
# leaves the accept without its peer: such ends (and a connect no accept names) keep the
# path, where they still meet each other, as before (docs/analysis.md, Limits).
# (event_category: a fleet host's windowed top-up reads its network events for this scan,
# store.clickhouse.window, not the whole rest of the host)
_ACCEPTED = ("(SELECT ua.host_id || ':' || ua.unix_peer_inode::VARCHAR FROM events AS ua"
             " WHERE ua.event_category = 'network' AND ua.event_action = 'accept'"
             " AND ua.network_transport = 'unix' AND ua.unix_peer_inode <> 0)")
SOCK_KEY = f"""CASE WHEN network_transport = 'unix'
    THEN 'u:' || host_id || ':' || CASE
        WHEN event_action = 'accept' AND coalesce(unix_peer_inode, 0) <> 0 THEN '=' || unix_peer_inode::VARCHAR
        WHEN event_action = 'connect' AND host_id || ':' || file_inode::VARCHAR IN {_ACCEPTED}
             THEN '=' || file_inode::VARCHAR
        ELSE coalesce(unix_path, '@' || nullif(unix_peer_inode, 0)::VARCHAR,
                      '#' || nullif(file_inode, 0)::VARCHAR, '?') END
    ELSE 'c:' || least({_ENDS[0]}, {_ENDS[1]}) || '|' || greatest({_ENDS[0]}, {_ENDS[1]})
         || CASE WHEN {_HOST_ONLY_IP.format(c='source_ip')} OR {_HOST_ONLY_IP.format(c='destination_ip')}
                 THEN '@' || host_id ELSE '' END
    END"""

# a connected unix socket pair, by its host and the two inodes (host ids, machine-ids, hold no ':', as file keys assume)
UNIX_PAIR = re.compile(r"^u:([^:]*):(\d+)\|(\d+)$")
# a unix stream connection, by its host and its client's socket inode
UNIX_CONN = re.compile(r"^u:([^:]*):=(\d+)$")


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
