"""User names as the recorded host had them at the time (``schema.ACCOUNTS``).

A uid is a number on one host: 1001 is alice on one machine, bob on the next, and nobody
on the investigator's laptop. Every analysis and alert that names a user asks the store
what the host's own ``/etc/passwd`` said (recorded by ``sensor.accounts``) as of the event's
time, never the machine it runs on. Each name comes with where it came from
(``user_name_source``), because a name that is not the host's own must say so:

* ``recorded``: the host's user database, as of that time;
* ``recorded later``: the time is before the first reading of the host's database that
  the store holds; the name is from its earliest reading (it may have differed then);
* ``no such user``: the host's database had no user with that uid then (the number is shown);
* ``this machine``: the store has no reading of the host's database (a store of an older
  forensix, an import) and the host is the machine running the analysis: its own database
  now, which may differ from then;
* ``not recorded``: no reading, and another machine: the number is shown, never a name
  from here;
* an import's format (``auditd`` ...): the name the host's own log gave with the event.
"""

from __future__ import annotations

import bisect
import functools
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from forensix.model.host import local_host
from forensix.store.base import Reader

__all__ = [
    "NOT_RECORDED",
    "NO_SUCH_USER",
    "RECORDED",
    "RECORDED_LATER",
    "SOURCE_NOTES",
    "THIS_MACHINE",
    "AccountBook",
    "entity_hosts",
    "store_book",
    "this_host_id",
]

RECORDED = "recorded"
RECORDED_LATER = "recorded later"
NO_SUCH_USER = "no such user"
THIS_MACHINE = "this machine"
NOT_RECORDED = "not recorded"

# what a person reading a table must be told about names that are not the host's own as of then
SOURCE_NOTES = {
    RECORDED_LATER: "from the host's earliest recorded user database, which is later than the event",
    NO_SUCH_USER: "the host's recorded user database had no such uid then: shown as the number",
    THIS_MACHINE: "from the user database of the machine running this command, now: the store has no "
                  "recorded user database of that host (recorded by an older forensix, or imported)",
    NOT_RECORDED: "the store has no recorded user database of that host: shown as the number",
}


@functools.lru_cache(maxsize=1)
def this_host_id() -> str:
    """The host id of the machine running this process (as the recorder names its host)."""
    return local_host().host_id


@dataclass
class _User:
    since: list[int] = field(default_factory=list)  # valid_from, ascending
    names: list[str | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


class AccountBook:
    """Every recorded reading of each host's users: (host, uid, time) -> (name, source)."""

    def __init__(self, local_id: str | None = None) -> None:
        self._users: dict[str, dict[int, _User]] = {}
        self._first: dict[str, int] = {}  # host -> its earliest reading
        self._complete: set[str] = set()  # hosts with readings of the whole file (not only a log's names)
        self._local = local_id if local_id is not None else this_host_id()

    def add(self, rows: pa.Table) -> None:
        """Rows of ``accounts`` (user rows are kept; a reading stored twice counts once)."""
        if not rows.num_rows:
            return
        cols = ["host_id", "uid", "valid_from", "recorded_ts", "name", "source", "kind"]
        data = rows.select(cols).to_pydict()
        order = sorted(range(rows.num_rows), key=lambda i: (data["valid_from"][i], data["recorded_ts"][i] or 0))
        for i in order:
            host, uid, since = data["host_id"][i], data["uid"][i], data["valid_from"][i]
            if data["kind"][i] != "user" or uid is None or host is None:
                continue
            u = self._users.setdefault(host, {}).setdefault(uid, _User())
            src = data["source"][i] or ""
            source = RECORDED if not src or src.startswith("/") else src
            if source == RECORDED:
                self._complete.add(host)
            at = bisect.bisect_right(u.since, since)
            if at and u.since[at - 1] == since:  # the same reading again: the later read wins
                u.names[at - 1], u.sources[at - 1] = data["name"][i], source
                continue
            u.since.insert(at, since)
            u.names.insert(at, data["name"][i])
            u.sources.insert(at, source)
            first = self._first.get(host)
            if first is None or since < first:
                self._first[host] = since

    def hosts(self) -> set[str]:
        return set(self._users)

    def name(self, host: str | None, uid: int | None, ts: int | None) -> tuple[str | None, str | None]:
        """(name, source) of ``uid`` on ``host`` at ``ts`` (None: the latest reading)."""
        if uid is None:
            return None, None
        users = self._users.get(host or "")
        if users is None:
            return self._unrecorded(host, uid)
        u = users.get(uid)
        if u is None:  # a log naming some uids says nothing of the others
            return (None, NO_SUCH_USER) if host in self._complete else self._unrecorded(host, uid)
        at = len(u.since) if ts is None else bisect.bisect_right(u.since, ts)
        if at:
            name = u.names[at - 1]
            return (name, u.sources[at - 1]) if name is not None else (None, NO_SUCH_USER)
        if ts is not None and ts < self._first[host or ""]:
            return u.names[0], RECORDED_LATER  # before anything recorded: the earliest reading
        if host in self._complete:
            return None, NO_SUCH_USER  # recorded, and the uid came later
        return self._unrecorded(host, uid)

    def _unrecorded(self, host: str | None, uid: int) -> tuple[str | None, str]:
        if host is None or host != self._local:
            return None, NOT_RECORDED
        try:
            return pwd.getpwuid(uid).pw_name, THIS_MACHINE
        except (KeyError, OverflowError):
            return None, THIS_MACHINE

    def names(self, hosts: Sequence[str | None], uids: Sequence[int | None],
              ts: Sequence[int | None]) -> tuple[list[str | None], list[str | None]]:
        """``name`` of each row, memoised per (host, uid, time)."""
        memo: dict[tuple[str | None, int | None, int | None], tuple[str | None, str | None]] = {}
        out_n: list[str | None] = []
        out_s: list[str | None] = []
        for key in zip(hosts, uids, ts):
            got = memo.get(key)
            if got is None:
                got = memo[key] = self.name(*key)
            out_n.append(got[0])
            out_s.append(got[1])
        return out_n, out_s


def _in_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def store_book(reader: Reader, hosts: Iterable[str] | None = None) -> AccountBook:
    """The recorded users of ``hosts`` (every host when None) in a store."""
    where = "kind = 'user'"
    if hosts is not None:
        wanted = sorted({h for h in hosts if h})
        if not wanted:
            return AccountBook()
        where += f" AND host_id IN ({_in_list(wanted)})"
    book = AccountBook()
    book.add(reader.query(
        f"SELECT DISTINCT host_id, uid, valid_from, recorded_ts, name, source, kind FROM accounts WHERE {where}"))
    return book


def entity_hosts(reader: Reader, entities: Sequence[int | None]) -> list[str | None]:
    """The host of each process (entity id), from ``processes``."""
    known = sorted({e for e in entities if e is not None})
    if not known:
        return [None] * len(entities)
    hosts = reader.query("SELECT DISTINCT host_id FROM processes").column("host_id").to_pylist()
    if len(hosts) == 1:
        return [hosts[0] if e is not None else None for e in entities]
    of: dict[int, str] = {}
    for start in range(0, len(known), 5000):
        chunk = ", ".join(str(int(e)) for e in known[start:start + 5000])
        t = reader.query(f"SELECT DISTINCT entity_id, host_id FROM processes WHERE entity_id IN ({chunk})")
        of.update(zip(t.column("entity_id").to_pylist(), t.column("host_id").to_pylist()))
    return [of.get(e) if e is not None else None for e in entities]
