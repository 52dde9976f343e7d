"""What an investigator points at: a file path, an entity id, pid@TIME, ip:port, a session.

``parse_target`` reads the text; ``resolve`` checks it against the store and says clearly
what is wrong (an unknown path, an entity id that does not exist, a time that does not
parse), with a hint.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from forensix.errors import UsageError
from forensix.model.identity import format_entity, parse_entity
from forensix.model.timefmt import format_ns, parse_time
from forensix.store.base import Reader

__all__ = ["EXIT_NOT_FOUND", "TARGET_HELP", "NotFound", "Target", "nearest_matches", "parse_target", "resolve"]

# An empty answer is not a success: the exit code of a detection point that matched nothing
# (2 is bad input, 1 a crash).
EXIT_NOT_FOUND = 3


class NotFound(UsageError):
    """The detection point matched nothing recorded; ``nearest`` says what is close to it."""

    def __init__(self, message: str, hint: str | None = None, nearest: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.nearest = nearest or []
        self.exit_code = EXIT_NOT_FOUND

TARGET_HELP = (
    "a file path (/etc/cron.d/x), an entity id (16 hex digits), pid@TIME (1234@2026-11-26T05:00:00Z),"
    " ip:port (203.0.113.7:443, [2001:db8::1]:80) or session:S"
)
_HEX16 = re.compile(r"^(0x)?[0-9a-fA-F]{16}$")
_PID_AT = re.compile(r"^(\d+)@(.+)$")
_ENDPOINT = re.compile(r"^\[?([0-9a-fA-F:.]+?)\]?:(\d{1,5})$")


@dataclass(frozen=True)
class Target:
    """A parsed detection point. ``kind``: file | process | endpoint | session."""

    kind: str
    path: str | None = None
    entity: int | None = None
    ip: str | None = None
    port: int | None = None
    session: str | None = None
    pid: int | None = None
    at: int | None = None

    def describe(self) -> str:
        if self.kind == "file":
            return f"file {self.path}"
        if self.kind == "process":
            return f"process {format_entity(self.entity or 0)}"
        if self.kind == "endpoint":
            return f"endpoint {self.ip}:{self.port}"
        return f"session {self.session}"


def parse_target(text: str) -> Target:
    s = text.strip()
    if not s:
        raise UsageError("empty target", TARGET_HELP)
    if s.startswith("session:"):
        return Target("session", session=s.removeprefix("session:"))
    if s.startswith("/"):
        return Target("file", path=s)
    if _HEX16.match(s):
        return Target("process", entity=parse_entity(s))
    m = _PID_AT.match(s)
    if m:
        return Target("process", pid=int(m.group(1)), at=parse_time(m.group(2)))
    m = _ENDPOINT.match(s)
    if m:
        try:
            ip = str(ipaddress.ip_address(m.group(1)))
        except ValueError:
            raise UsageError(f"{m.group(1)!r} is not an IP address", TARGET_HELP) from None
        port = int(m.group(2))
        if port > 65535:
            raise UsageError(f"port {port} is out of range", TARGET_HELP)
        return Target("endpoint", ip=ip, port=port)
    raise UsageError(f"cannot read {text!r} as a target", TARGET_HELP)


def resolve(reader: Reader, target: Target) -> Target:
    """Check the target exists in the store; turn pid@TIME into the entity alive then."""
    if target.kind == "file":
        _check_path(reader, target.path or "")
        return target
    if target.kind == "process" and target.entity is None:
        return Target("process", entity=_pid_at(reader, target.pid or 0, target.at or 0))
    if target.kind == "process":
        _check_entity(reader, target.entity or 0)
        return target
    if target.kind == "endpoint":
        _check_endpoint(reader, target.ip or "", target.port or 0)
    return target


def _check_path(reader: Reader, path: str) -> None:
    hit = reader.query(
        "SELECT 1 FROM events WHERE file_path = $p UNION ALL "
        "SELECT 1 FROM events WHERE file_target_path = $p LIMIT 1", {"p": path})
    if hit.num_rows:
        return
    hit = reader.query("SELECT 1 FROM flows WHERE file_path = $p LIMIT 1", {"p": path})
    if hit.num_rows:
        return
    near = nearest_matches(reader, path)
    raise NotFound(f"no recorded event touched {path}",
                   "check the spelling, the --store, or --host; nearest in the record below", near)


def nearest_matches(reader: Reader, path: str) -> list[str]:
    """What is near a path in the record: the same name in other directories, names in the
    same directory, other lives of the inodes the name had, and the record's time window."""
    parent, _, base = path.rstrip("/").rpartition("/")
    out: list[str] = []
    same = reader.query(
        """SELECT file_path, count(*) AS n, min(ts) AS a, max(ts) AS b FROM events
           WHERE file_path LIKE $b AND file_path <> $p GROUP BY 1 ORDER BY n DESC LIMIT 5""",
        {"b": f"%/{base}", "p": path}).to_pylist()
    out += [f"same name elsewhere: {r['file_path']} ({r['n']} events, {format_ns(r['a'])} .. {format_ns(r['b'])})"
            for r in same]
    sib = reader.query(
        """SELECT DISTINCT file_path FROM events WHERE file_path LIKE $d AND file_path NOT LIKE $dd
           AND file_path <> $p ORDER BY file_path LIMIT 5""",
        {"d": f"{parent}/%", "dd": f"{parent}/%/%", "p": path}).column("file_path").to_pylist()
    out += [f"in the same directory: {x}" for x in sib]
    lives = reader.query(
        """SELECT e.file_inode, coalesce(e.file_generation, 0) AS gen, arg_max(e.file_path, e.ts) AS last_name,
                  min(e.ts) AS a, max(e.ts) AS b FROM events e
           WHERE e.file_inode IN (SELECT DISTINCT file_inode FROM events WHERE file_path = $p
                                  AND coalesce(file_inode, 0) <> 0)
           GROUP BY 1, 2 ORDER BY a LIMIT 5""", {"p": path}).to_pylist()
    out += [f"inode {r['file_inode']} generation {r['gen']}: last named {r['last_name']}"
            f" ({format_ns(r['a'])} .. {format_ns(r['b'])})" for r in lives]
    w = reader.query("SELECT min(ts) AS a, max(ts) AS b, count(*) AS n FROM events").to_pylist()[0]
    if w["n"]:
        out.append(f"the record spans {format_ns(w['a'])} .. {format_ns(w['b'])} ({w['n']} events)")
    else:
        out.append("the record holds no events")
    return out


def _check_entity(reader: Reader, entity: int) -> None:
    hit = reader.query("SELECT 1 FROM processes WHERE entity_id = $e LIMIT 1", {"e": entity})
    if hit.num_rows:
        return
    hit = reader.query("SELECT 1 FROM events WHERE process_entity_id = $e LIMIT 1", {"e": entity})
    if not hit.num_rows:
        raise UsageError(f"no process with entity id {format_entity(entity)} in this store",
                         "list processes with `forensix tree` or `forensix ps`")


def _pid_at(reader: Reader, pid: int, at: int) -> int:
    t = reader.query(
        """SELECT entity_id, min(start_ts) AS start_ts FROM processes
           WHERE pid = $pid AND start_ts <= $at GROUP BY entity_id ORDER BY start_ts DESC LIMIT 1""",
        {"pid": pid, "at": at})
    if not t.num_rows:
        raise UsageError(f"no process with pid {pid} had started by {format_ns(at)}",
                         "pids are reused: give a time when the process ran (pid@TIME)")
    return int(t.column("entity_id")[0].as_py())


def _check_endpoint(reader: Reader, ip: str, port: int) -> None:
    hit = reader.query(
        """SELECT 1 FROM events WHERE event_category = 'network' AND (
             (destination_ip = $ip AND destination_port = $port) OR
             (source_ip = $ip AND source_port = $port)) LIMIT 1""", {"ip": ip, "port": port})
    if not hit.num_rows:
        raise UsageError(f"no recorded connection to or from {ip}:{port}",
                         "list connections with `forensix timeline --category network`")
