"""Logs a host already has, imported into the same tables as the recorder's events.

One module per format, each turning lines into the same rows (plaso's and LAUREL's habit):
``auditd`` (raw audit.log, rotated and gzipped), ``laurel`` (LAUREL's JSON lines),
``sysmon`` (Sysmon for Linux XML events from syslog or a journal export), ``suricata``
(EVE alerts as detection points, linked to the process that owned the connection), ``zeek``
(conn.log connections, linked the same way),
``journal`` (the host's own logs: sshd logins and failures, sudo, su, cron). Rows carry ``event_module`` = the source; every analysis,
rule and view reads them as it reads the kernel's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from forensix.imports.rows import Host, Processes
from forensix.imports.runner import FileResult, Importer, Parser
from forensix.store.base import Reader

__all__ = ["FORMATS", "FileResult", "Format", "Host", "Importer", "order_files"]


@dataclass(frozen=True)
class Format:
    name: str
    make: Callable[[Processes, Reader], Parser]  # the reader: the store imported into (for links)
    about: str
    # what the source cannot tell: the report's questions it leaves open
    cannot: tuple[str, ...]


def _auditd(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.auditd import AuditdParser

    return AuditdParser(procs)


def _laurel(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.laurel import LaurelParser

    return LaurelParser(procs)


def _sysmon(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.sysmon import SysmonParser

    return SysmonParser(procs)


def _suricata(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.eve import EveParser

    return EveParser(procs, reader)


def _zeek(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.zeek import ZeekConnParser

    return ZeekConnParser(procs, reader)


def _journal(procs: Processes, reader: Reader) -> Parser:
    from forensix.imports.journal import JournalParser

    return JournalParser(procs)


_AUDIT_CANNOT = (
    ("data flow: which process read or wrote how many bytes of a file or socket (no read/write edges "
    "unless read/write syscalls were audited)"),
    "only the syscalls the audit rules selected were logged: anything else the intruder did is not here",
    "process start times: a process is known from the first record that names it",
    "local addresses of connections (auditd logs the peer's address only)",
)
_FORMATS = [
    Format("auditd", _auditd, "auditd raw log (audit.log*, rotated, gzipped)", _AUDIT_CANNOT),
    Format("laurel", _laurel, "LAUREL JSON lines (its enriched form of audit events)", _AUDIT_CANNOT),
    Format("sysmon", _sysmon, "Sysmon for Linux XML events (syslog lines or a journal export)", (
        "data flow (Sysmon logs file creation and deletion, not reads and writes)",
        "files opened for writing that already existed (Sysmon logs FileCreate only)",
        "renames, chmod, chown, timestamps (not among Sysmon for Linux's events)",
    )),
    Format("suricata", _suricata, "Suricata EVE JSON alerts, linked to the process that owned the connection", (
        ("anything on the host: an IDS sees packets; an alert is linked to a process only where the store "
        "recorded the connection"),
    )),
    Format("zeek", _zeek, "Zeek conn.log (TSV or JSON), linked to the process that owned each connection", (
        ("anything on the host: Zeek sees packets; a connection is linked to a process only where the store "
        "recorded it"),
    )),
    Format("journal", _journal, "the host's own logs: journalctl -o json or -o export, auth.log, syslog", (
        "processes, files and connections (service messages only: sshd, sudo, su, cron)",
    )),
]
FORMATS: dict[str, Format] = {}
for _f in _FORMATS:
    if _f.name in FORMATS:
        raise RuntimeError(f"import format {_f.name!r} registered twice")
    FORMATS[_f.name] = _f


def order_files(paths: list[str]) -> list[str]:
    """Rotated logs oldest first: audit.log.3.gz, audit.log.2, audit.log.1, audit.log."""
    import re

    def key(p: str) -> tuple[str, int]:
        m = re.search(r"^(.*?)(?:\.(\d+))?(?:\.gz)?$", p)
        assert m is not None
        return (m.group(1), -int(m.group(2)) if m.group(2) else 0)

    return sorted(paths, key=key)
