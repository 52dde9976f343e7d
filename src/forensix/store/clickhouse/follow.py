"""Which hosts a deep analysis must see, asked of ClickHouse: where a detection point is, and
which hosts hold the other end of a connection.

A backtrack, forward or report on a fleet store given no ``--host`` would otherwise pull
every host's rows; at 10^8 events over 1,000 hosts that is the whole store in memory. Its
walk can only leave the hosts it started on through a TCP/UDP connection whose other end
is recorded on another host (processes, files and pipes are per host: their keys carry
the host or an entity id made from it). So the walk starts on the hosts of its detection
point, and when it reaches a connection, the hosts with a network event on that 4-tuple
are added and the walk runs again, until no new host is reached (``analysis.crosshost.
across_hosts``). Each question here is one SELECT over the Distributed tables (both 18.16
and current ClickHouse). With the fleet questions' summary tables (``0003_fleet_summaries``)
a file is placed by its path in ``fleet_path`` (sorted by path: a few granules, not a scan
of every host's file column), and a connection's hosts are first narrowed to those with
any connection to or from its addresses in ``fleet_ip`` (sorted by address); the events
are then read only for those hosts, named as literals (the events are sorted by host
first; 18.16 does not narrow by the set of an IN subquery).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from forensix.store.clickhouse.connection import literal

__all__ = ["ONE_HOST", "candidates_sql", "hosts_of_sql", "peers_sql"]

# the last item of a ``hosts_of_sql`` answer whose point is on one host: stop at the first
# SELECT that finds it
ONE_HOST = "-- one host"


def hosts_of_sql(kind: str, fields: Mapping[str, Any], summarized: bool = False) -> list[str] | None:
    """SELECTs of the hosts a detection point (``analysis.targets.Target``'s kind and fields)
    is recorded on; None when the kind cannot be placed (then the whole store is the slice).
    ``summarized``: the store has the summary tables of ``0003_fleet_summaries``."""
    if kind == "file" and fields.get("path") and summarized:
        # every path an event names (its file and, for renames and links, its target) and the
        # flow edges' paths are keys of fleet_path
        return [f"SELECT DISTINCT host_name FROM fleet_path WHERE key_path = {literal(fields['path'])}"]
    if kind == "file" and fields.get("path"):
        p = literal(fields["path"])
        return [f"SELECT DISTINCT host_name FROM events WHERE file_path = {p} OR file_target_path = {p}",
                f"SELECT DISTINCT host_name FROM flows WHERE file_path = {p}"]
    if kind == "process" and fields.get("entity") is not None:
        # an entity id is one host's (it is made from the host, boot, pid and start): the
        # small processes table names it; the scan of the events is for a process with events only
        e = int(fields["entity"])
        return [f"SELECT DISTINCT host_name FROM processes WHERE entity_id = {e}",
                f"SELECT DISTINCT host_name FROM events WHERE process_entity_id = {e}", ONE_HOST]
    if kind == "process" and fields.get("pid") is not None:
        return [(f"SELECT DISTINCT host_name FROM processes WHERE pid = {int(fields['pid'])} "
                f"AND start_ts <= {int(fields.get('at') or 2**62)}")]
    if kind == "endpoint" and fields.get("ip"):
        ip, port = literal(fields["ip"]), int(fields.get("port") or 0)
        return [(f"SELECT DISTINCT host_name FROM events WHERE event_category = 'network' AND "
                f"((destination_ip = {ip} AND destination_port = {port}) OR (source_ip = {ip} AND source_port = {port}))")]
    if kind == "session" and fields.get("session"):
        s = str(fields["session"]).strip()
        if s.isdigit() and len(s) < 16:  # an audit session id, as find_session reads it
            return [f"SELECT DISTINCT host_name FROM processes WHERE session_id = {int(s)}"]
        try:
            e = int(s.removeprefix("0x"), 16)
        except ValueError:
            return None
        return [f"SELECT DISTINCT host_name FROM processes WHERE entity_id = {e}"]
    return None


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "0.0.0.0", "::", "?")


def _crossing(connections: Iterable[tuple[tuple[str, int], tuple[str, int]]]
              ) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    return [c for c in sorted(set(connections)) if not (_loopback(c[0][0]) or _loopback(c[1][0]))]


def candidates_sql(connections: Iterable[tuple[tuple[str, int], tuple[str, int]]], known: Iterable[str]) -> str | None:
    """From the summaries: the hosts other than ``known`` with a connection to or from an
    address of these connections on one of their ports (a superset of ``peers_sql``'s answer, read from the
    address-sorted ``fleet_ip`` instead of every host's events); None when none can cross."""
    crossing = _crossing(connections)
    if not crossing:
        return None
    # an event on a connection names both ends, so its destination port is one of the two ports
    ips = sorted({ip for c in crossing for ip, _ in c})
    ports = sorted({int(p) for c in crossing for _, p in c})
    return (f"SELECT DISTINCT host_name FROM fleet_ip WHERE ip IN {literal(ips)} "
            f"AND ifNull(destination_port, 0) IN {literal(ports)} AND host_name NOT IN {literal(sorted(known))}")


def peers_sql(connections: Iterable[tuple[tuple[str, int], tuple[str, int]]], known: Iterable[str],
              among: Iterable[str] | None = None) -> str | None:
    """The SELECT of the hosts other than ``known`` (and, given ``among``, only of those: a
    literal list, which the events' sort key, host first, narrows to their rows) with a
    network event on one of these connections (two endpoints each, either direction); None
    when none can cross hosts (loopback is every host's own)."""
    conds = []
    for (ip1, p1), (ip2, p2) in _crossing(connections):
        a, c = literal(ip1), literal(ip2)
        conds.append(f"(source_ip = {a} AND source_port = {int(p1)} AND destination_ip = {c} AND destination_port = {int(p2)})")
        conds.append(f"(source_ip = {c} AND source_port = {int(p2)} AND destination_ip = {a} AND destination_port = {int(p1)})")
    if not conds:
        return None
    only = f"AND host_name IN {literal(sorted(set(among)))} " if among is not None else ""
    return (f"SELECT DISTINCT host_name FROM events WHERE event_category = 'network' "
            f"AND ifNull(network_transport, '') != 'unix' AND host_name NOT IN {literal(sorted(known))} {only}"
            f"AND ({' OR '.join(conds)})")
