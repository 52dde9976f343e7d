"""The host's own logs (journald, auth.log, syslog) as events: sshd, sudo, su, cron.

Three spellings of the same messages are read, decided line by line: journald's JSON
(``journalctl -o json``), its export format (``journalctl -o export``: ``KEY=value`` lines,
an entry per ``__CURSOR``, binary fields length-prefixed), and syslog text lines (RFC 3164
``Mmm dd HH:MM:SS host prog[pid]: msg``, or with an ISO 8601 time as Debian's rsyslog
writes). A message becomes an event with ``event_module`` = system: logins and failures
with their source address and key fingerprint, sudo and su with who became whom, cron's
commands; anything else is kept as a ``log`` event with its text.

``SystemLogFollower`` tails the same sources while ``forensix record`` runs, so the
service messages land beside the kernel's events and are sealed and shipped with them.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from forensix.imports.rows import BadLine, Batcher, Host, Processes, Row, json_object
from forensix.threadname import name_native_thread

__all__ = ["DEFAULT_FILES", "JournalParser", "SystemLogFollower", "classify", "default_sources"]

DEFAULT_FILES = ("/var/log/auth.log", "/var/log/secure", "/var/log/syslog", "/var/log/messages")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_BSD = re.compile(r"^(?:<\d{1,3}>)?([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\S+) ([^:\[\s]+)(?:\[(\d+)\])?: ?(.*)$")
_ISO = re.compile(r"^(?:<\d{1,3}>1? ?)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) (\S+) "
                  r"([^:\[\s]+)(?:\[(\d+)\])?: ?(.*)$")
_FIELD_NAME = re.compile(rb"^[A-Z0-9_]{1,64}$")

# sshd's line for a login: method, user, source address and port, and the key's type and
# fingerprint after "ssh2: " for a public key (forensix.imports.logins reads it back)
SSH_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+)"
                          r"(?: [^\s:]+)?(?:: (?P<key>.+))?")
# OpenSSH 9.8 and later log a connection's authentication as sshd-session (or sshd-auth)
_SSHD = ("sshd", "sshd-session", "sshd-auth")

# (program names, pattern over the message, category, action, outcome); named groups become columns
_RULES: list[tuple[tuple[str, ...], re.Pattern[str], str, str, str | None]] = [
    (_SSHD, SSH_ACCEPTED, "authentication", "ssh-login", "success"),
    (_SSHD, re.compile(r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+) "
                           r"port (?P<port>\d+)"), "authentication", "ssh-login-failed", "failure"),
    (_SSHD, re.compile(r"^Invalid user (?P<user>\S*) from (?P<ip>\S+)(?: port (?P<port>\d+))?"),
     "authentication", "ssh-invalid-user", "failure"),
    (_SSHD, re.compile(r"^(?:Disconnected from|Connection closed by) (?:(?:invalid |authenticating )?user "
                           r"(?P<user>\S+) )?(?P<ip>[0-9a-fA-F.:]+) port (?P<port>\d+)"),
     "session", "ssh-disconnect", None),
    (("sudo",), re.compile(r"^\s*(?P<user>\S+) : (?:(?P<why>[^;]*?) ; )?TTY=(?P<tty>\S+) ; PWD=(?P<pwd>.*?) ; "
                           r"USER=(?P<target>\S+) ;(?: .*?;)* COMMAND=(?P<cmd>.*)$"), "process", "sudo", "success"),
    (("su",), re.compile(r"^\(to (?P<target>\S+)\) (?P<user>\S+) on (?P<tty>\S+)"), "process", "su", "success"),
    (("su",), re.compile(r"^FAILED (?:su|SU) (?:\(to (?P<target>\S+)\) )?(?P<user>\S+) on (?P<tty>\S+)"),
     "process", "su", "failure"),
    (("cron", "CRON", "crond"), re.compile(r"^\((?P<user>[^)]+)\) CMD \((?P<cmd>.*)\)$"), "process", "cron-cmd", None),
    ((), re.compile(r"^pam_unix\((?P<svc>[^:]+):session\): session opened for user (?P<target>[^\s(]+)"
                    r"(?:\(uid=\d+\))?(?: by (?P<user>\S*?)(?:\(uid=(?P<uid>\d+)\))?)?$"),
     "session", "session-opened", "success"),
    ((), re.compile(r"^pam_unix\((?P<svc>[^:]+):session\): session closed for user (?P<target>\S+)"),
     "session", "session-closed", None),
    ((), re.compile(r"^pam_unix\((?P<svc>[^:]+):auth\): authentication failure;.*?(?:rhost=(?P<ip>\S*))?"
                    r"(?: +user=(?P<user>\S+))?$"), "authentication", "auth-failure", "failure"),
]


def classify(ident: str, message: str) -> dict[str, Any]:
    """The event columns a message says: action, category, outcome, source address, text."""
    for progs, pat, category, action, outcome in _RULES:
        if progs and ident not in progs:
            continue
        m = pat.match(message)
        if m is None:
            continue
        g = {k: v for k, v in m.groupdict().items() if v}
        row: dict[str, Any] = {"event_category": category, "event_action": action, "event_outcome": outcome}
        if "ip" in g and re.fullmatch(r"[0-9a-fA-F.:]+", g["ip"]):
            row["source_ip"] = g["ip"]
            row["network_type"] = "ipv6" if ":" in g["ip"] else "ipv4"
        if "port" in g:
            row["source_port"] = int(g["port"]) if int(g["port"]) < 65536 else None
        if "cmd" in g:
            row["process_args"] = g["cmd"].split()
        return row
    return {"event_category": "host", "event_action": "log"}


def _bsd_time(mon: str, day: str, hh: str, mm: str, ss: str, year: int | None) -> int:
    now = time.gmtime()
    y = year or now.tm_year
    t = calendar.timegm((y, _MONTHS[mon], int(day), int(hh), int(mm), int(ss), 0, 0, 0))
    if year is None and t > time.time() + 86400:
        t = calendar.timegm((y - 1, _MONTHS[mon], int(day), int(hh), int(mm), int(ss), 0, 0, 0))
    return t * 10**9


def _iso_time(text: str) -> int:
    from datetime import datetime, timedelta

    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    except ValueError:
        raise BadLine(f"time {text!r} is not ISO 8601") from None


class JournalParser:
    """Lines of journald JSON or export, or syslog text, into ``system`` events."""

    module = "system"

    def __init__(self, procs: Processes, reader: object = None, *, year: int | None = None) -> None:
        self.host = procs.host
        self.year = year  # for syslog lines without one (default: this year, or last if in the future)
        self._entry: dict[str, Any] = {}
        self._binary: tuple[str, int, bytearray] | None = None  # export: (field, bytes left, data)

    @property
    def idle(self) -> bool:
        return not self._entry and self._binary is None

    def feed(self, line: bytes, number: int) -> Iterator[Row]:
        if self._binary is not None:
            yield from self._binary_part(line)
            return
        if line.startswith(b"{"):
            yield from self._json(line)
        elif line.startswith(b"__CURSOR=") or (self._entry and b"=" in line[:65] and _FIELD_NAME.match(line.split(b"=", 1)[0])):
            yield from self._export(line)
        elif self._entry and _FIELD_NAME.match(line[:64]) and b"=" not in line:
            self._binary = (line.decode(), -1, bytearray())
        else:
            yield from self._finish_entry()
            yield from self._syslog(line)

    def finish(self) -> Iterator[Row]:
        self._binary = None
        yield from self._finish_entry()

    # -- journald --------------------------------------------------------------------
    def _json(self, line: bytes) -> Iterator[Row]:
        yield from self._finish_entry()
        obj = json_object(line)
        yield from self._journal_row(obj)

    def _export(self, line: bytes) -> Iterator[Row]:
        if line.startswith(b"__CURSOR="):
            yield from self._finish_entry()
        key, _, value = line.partition(b"=")
        self._entry[key.decode()] = value.decode("utf-8", errors="replace")

    def _binary_part(self, line: bytes) -> Iterator[Row]:
        assert self._binary is not None
        field, left, data = self._binary
        if left < 0:  # the first line after the name: 8 bytes of length, then the data
            if len(line) < 8:
                self._binary = None
                raise BadLine(f"binary field {field} without its length")
            left = int.from_bytes(line[:8], "little")
            if left > 1 << 24:
                self._binary = None
                raise BadLine(f"binary field {field} of {left} bytes")
            line = line[8:]
        data += line[:left]
        left -= len(line)
        if left > 0:  # the data held a newline: it goes on on the next line
            data += b"\n"
            left -= 1
        if left > 0:
            self._binary = (field, left, data)
            return
        self._binary = None
        self._entry[field] = bytes(data).decode("utf-8", errors="replace")
        yield from ()

    def _finish_entry(self) -> Iterator[Row]:
        if self._entry:
            entry, self._entry = self._entry, {}
            yield from self._journal_row(entry)

    def _journal_row(self, e: dict[str, Any]) -> Iterator[Row]:
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # journalctl -o json writes non-UTF-8 messages as byte arrays
            msg = bytes(b for b in msg if isinstance(b, int) and 0 <= b < 256).decode("utf-8", errors="replace")
        if not isinstance(msg, str):
            return
        try:
            ts = int(e.get("__REALTIME_TIMESTAMP") or e.get("_SOURCE_REALTIME_TIMESTAMP") or "x") * 1000
        except ValueError:
            raise BadLine("a journal entry without __REALTIME_TIMESTAMP") from None
        ident = str(e.get("SYSLOG_IDENTIFIER") or e.get("_COMM") or "")
        pid = _int(e.get("_PID") or e.get("SYSLOG_PID"))
        yield self._row(ts, ident, pid, msg, e.get("_HOSTNAME"), _int(e.get("_UID")))

    # -- syslog ----------------------------------------------------------------------
    def _syslog(self, line: bytes) -> Iterator[Row]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")  # syslog passes bytes through: keep them readable
        m = _BSD.match(text)
        if m is not None:
            mon, day, hh, mm, ss, host, ident, pid, msg = m.groups()
            if mon not in _MONTHS:
                raise BadLine(f"month {mon!r}")
            try:
                ts = _bsd_time(mon, day, hh, mm, ss, self.year)
            except (ValueError, OverflowError):
                raise BadLine("not a valid date") from None
            yield self._row(ts, ident, _int(pid), msg, host, None)
            return
        m = _ISO.match(text)
        if m is None:
            raise BadLine("not a syslog line, a journal entry or journal JSON")
        when, host, ident, pid, msg = m.groups()
        yield self._row(_iso_time(when), ident, _int(pid), msg, host, None)

    def _row(self, ts: int, ident: str, pid: int | None, msg: str, host: Any, uid: int | None) -> Row:
        cols = classify(ident, msg)
        values = {**self.host.origin(), "ts": ts, "event_kind": "event", "event_module": self.module,
                  "process_pid": pid, "process_name": ident[:64] or None, "user_id": uid,
                  "message": f"{ident}: {msg}" if ident else msg, **cols}
        return Row("events", values)


def _int(v: Any) -> int | None:
    try:
        i = int(v)
    except (TypeError, ValueError):
        return None
    return i if 0 <= i < 1 << 32 else None


# -- following while recording ---------------------------------------------------------------


def default_sources() -> list[str]:
    """What this host has: journald when it runs, else the classic log files that exist."""
    if Path("/run/systemd/journal/socket").exists() and shutil.which("journalctl"):
        return ["journald"]
    return [f for f in DEFAULT_FILES if Path(f).is_file()]


class SystemLogFollower(threading.Thread):
    """Tails journald (``journalctl -f -o json``) or log files and hands ``events`` tables to
    ``emit`` about once a second. Files are followed from their end, and reopened from their
    start when rotated (a new inode) or truncated."""

    def __init__(self, host: Host, sources: Sequence[str], emit: Callable[[pa.Table], None],
                 interval: float = 1.0) -> None:
        super().__init__(name="fx-syslog", daemon=True)
        self.sources = list(sources)
        self.emit = emit
        self.interval = interval
        self.parser = JournalParser(Processes(host))
        self.skipped = 0
        self._halt = threading.Event()  # not _stop: threading.Thread has a method of that name
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = Batcher(4096)
        self._lock = threading.Lock()  # the journald pipe's thread and the file poller feed one parser

    def stop(self) -> None:
        self._halt.set()
        if self._proc is not None:
            self._proc.terminate()
        self.join(timeout=5)

    def start(self) -> None:
        # the sources are opened here, on the caller's thread: a line written right after
        # start() returns (the recorded command's first) is after the position taken
        self._files: dict[str, tuple[BinaryIO, int]] = {}
        for src in self.sources:
            if src == "journald":
                self._proc = subprocess.Popen(["journalctl", "-f", "-o", "json", "-n", "0"], stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL)
                threading.Thread(target=self._pipe, daemon=True).start()
            else:
                self._open(self._files, src, at_end=True)
        super().start()

    def run(self) -> None:
        name_native_thread()
        files = self._files
        while not self._halt.wait(self.interval):
            self._poll(files)
            self._flush()
        self._poll(files)
        self._flush()
        for f, _ in files.values():
            f.close()

    def _open(self, files: dict[str, tuple[BinaryIO, int]], path: str, at_end: bool) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 - kept open while following
        except OSError:
            return
        if at_end:
            f.seek(0, os.SEEK_END)
        files[path] = (f, os.fstat(f.fileno()).st_ino)

    def _poll(self, files: dict[str, tuple[BinaryIO, int]]) -> None:
        for path in list(files):
            f, ino = files[path]
            for line in f.readlines():
                if line.endswith(b"\n"):
                    self._feed(line.rstrip(b"\r\n"))
                else:
                    f.seek(-len(line), os.SEEK_CUR)  # a line still being written: next time
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_ino != ino or st.st_size < f.tell():  # rotated or truncated: read the new file
                f.close()
                del files[path]
                self._open(files, path, at_end=False)
        for path in self.sources:
            if path != "journald" and path not in files:
                self._open(files, path, at_end=False)

    def _pipe(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._feed(line.rstrip(b"\n"))

    def _feed(self, line: bytes) -> None:
        if not line.strip():
            return
        with self._lock:
            try:
                for row in self.parser.feed(line, 0):
                    self._out.add(row)
            except BadLine:
                self.skipped += 1

    def _flush(self) -> None:
        with self._lock:
            tables = self._out.take()
        if "events" in tables:
            self.emit(tables["events"])
