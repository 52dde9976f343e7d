"""What a rule can name: forensix columns, derived columns, and Sigma's Linux taxonomy.

A rule sees one *view* of an event: every column of the ``events`` table plus a few
derived columns (``fx_*``) that Sigma's fields need but the raw event does not carry
(the acting process's command line, its parent's image, the user name, the open flags
as text). Both engines build this same view: the retro-hunt as SQL over the store
(``forensix.rules.sql``), the live engine over Arrow batches (``forensix.rules.live``).
Each derived column is declared here once, with its SQL; the Arrow side implements
the same names and a test checks that the two sets agree.

Sigma field names are mapped to view columns per log source (``SIGMA_FIELDS``); a log
source itself becomes a predicate over ``event_category`` / ``event_action``
(``LOGSOURCES``).
"""

from __future__ import annotations

import pwd
import time
from dataclasses import dataclass

import pyarrow as pa

from forensix.analysis.users import this_host_id
from forensix.store.schema import EVENTS, ecs_name

__all__ = [
    "AUDIT_TYPES",
    "DERIVED",
    "KEYWORD_COLUMNS",
    "LOGSOURCES",
    "OPEN_FLAG_NAMES",
    "SERVICES",
    "SIGMA_FIELDS",
    "VIEW_TYPES",
    "WRITE_OPEN_MASK",
    "Derived",
    "LogSource",
    "native_column",
    "user_names",
]

# open(2) flags on x86_64 and arm64 (asm-generic).
O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_NOFOLLOW, O_PATH = 0o200000, 0o400000, 0o10000000
# Flags shown in ``fx_flags`` after the access mode, in this order.
OPEN_FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (O_CREAT, "O_CREAT"),
    (O_EXCL, "O_EXCL"),
    (O_TRUNC, "O_TRUNC"),
    (O_APPEND, "O_APPEND"),
    (O_DIRECTORY, "O_DIRECTORY"),
    (O_NOFOLLOW, "O_NOFOLLOW"),
    (O_PATH, "O_PATH"),
)
WRITE_OPEN_MASK = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC


@dataclass(frozen=True)
class Derived:
    """A column of the rule view computed from the event and the process context.

    ``sql`` is an expression over ``e`` (the event), ``p`` (the acting process's image
    as of the event time), ``pp`` (its parent's image as of the event time) and ``u``, ``uh``,
    ``uf`` (the event's uid in its host's recorded user database: as of the event time, the
    host's first reading, the uid's first name; see ``sql.view_sql``). ``context`` says which
    of those it needs.
    """

    name: str
    type: pa.DataType
    sql: str
    context: str = ""  # "" | "p" | "pp" | "u"


def user_names() -> dict[int, str]:
    """uid -> name from this machine's password database: right only for events of this machine's
    own host when the store has no recorded reading of it (``analysis.users``)."""
    try:
        return {e.pw_uid: e.pw_name for e in pwd.getpwall()}
    except OSError:
        return {}


_USERS: tuple[float, dict[int, str]] = (0.0, {})


def cached_user_names(max_age_s: float = 60.0) -> dict[int, str]:
    """``user_names`` re-read at most once a minute (the live engine asks every batch)."""
    global _USERS
    now = time.monotonic()
    if now - _USERS[0] > max_age_s:
        _USERS = (now, user_names())
    return _USERS[1]


def _user_sql() -> str:
    """The event's user name as its host's recorded user database had it at the event time
    (``u``), before the first reading the uid's earliest name (``uh``, ``uf``), as
    ``analysis.users`` names it; a host with no reading at all: this machine's names if it is
    this machine, else NULL (never another machine's names)."""
    names = user_names()
    local = "CAST(NULL AS VARCHAR)"
    if names:
        whens = " ".join(
            f"WHEN {uid} THEN '{name.replace(chr(39), chr(39) * 2)}'" for uid, name in sorted(names.items())
        )
        here = this_host_id().replace("'", "''")
        local = f"CASE WHEN e.host_id = '{here}' THEN CASE e.user_id {whens} END END"
    return (f"CASE WHEN uh.first_from IS NULL THEN {local} WHEN u.valid_from IS NOT NULL THEN u.name"
            " WHEN e.ts < uh.first_from THEN uf.first_name END")


def _flags_sql() -> str:
    parts = ["CASE e.file_flags & 3 WHEN 0 THEN 'O_RDONLY' WHEN 1 THEN 'O_WRONLY' ELSE 'O_RDWR' END"]
    parts += [f"CASE WHEN e.file_flags & {bit} <> 0 THEN '{name}' END" for bit, name in OPEN_FLAG_NAMES]
    return f"CASE WHEN e.file_flags IS NULL THEN NULL ELSE concat_ws('|', {', '.join(parts)}) END"


def _audit_arg_sql(i: int) -> str:
    exec_arg = f"e.process_args[{i + 1}]"
    if i > 3:
        return f"CASE WHEN e.event_action = 'exec' THEN {exec_arg} END"
    return f"CASE WHEN e.event_action = 'exec' THEN {exec_arg} ELSE lower(hex(e.a{i})) END"


# the target user in sudo's log line (imports.journal classifies the line as action ``sudo``)
SUDO_USER_RE = r" ; USER=([^ ;]+) ;"

_FILE_CREATE_ACTIONS = ("mkdir", "symlink", "link", "memfd_create")


def _derived() -> dict[str, Derived]:
    s = pa.string()
    cmd = "array_to_string(e.process_args, ' ')"
    items = [
        Derived("fx_image", s, "coalesce(e.process_executable, p.executable)", "p"),
        Derived("fx_command_line", s, f"coalesce({cmd}, p.fx_cmd)", "p"),
        Derived("fx_parent_image", s, "pp.executable", "pp"),
        Derived("fx_parent_command_line", s, "pp.fx_cmd", "pp"),
        Derived("fx_parent_name", s, "pp.name", "pp"),
        Derived("fx_user", s, _user_sql(), "u"),
        Derived(
            "fx_target_filename",
            s,
            "CASE WHEN e.event_action IN ('rename', 'link') THEN e.file_target_path ELSE e.file_path END",
        ),
        Derived(
            "fx_initiated",
            s,
            "CASE e.event_action WHEN 'connect' THEN 'true' WHEN 'accept' THEN 'false' END",
        ),
        Derived("fx_flags", s, _flags_sql()),
        Derived("fx_mode", s, "printf('%04o', e.file_mode & 4095)"),
        Derived(
            "fx_nametype",
            s,
            "CASE WHEN e.file_path IS NULL THEN NULL"
            " WHEN e.event_action IN ('unlink', 'rmdir') THEN 'DELETE'"
            f" WHEN e.event_action IN {_FILE_CREATE_ACTIONS}"
            f" OR (e.event_action = 'open' AND e.file_flags & {O_CREAT} <> 0) THEN 'CREATE'"
            " ELSE 'NORMAL' END",
        ),
        Derived(
            "fx_success",
            s,
            "CASE e.event_outcome WHEN 'success' THEN 'yes' WHEN 'failure' THEN 'no' END",
        ),
    ]
    # Sigma's Hashes ("SHA256=..."; Sysmon's form), from the hash of what the exec ran (forensix.artifacts)
    items.append(Derived("fx_hashes", s, "'SHA256=' || upper(e.process_hash_sha256)"))
    items.append(
        Derived(
            "fx_time_back",
            pa.int64(),
            # the further back of the two times set (0 = now, -1 = left as it was); a NULL
            # times pointer is "now" too, whatever a sensor before 2026-12 read past it
            "CASE WHEN e.event_action = 'utimes' AND NOT coalesce("
            "(e.syscall IN ('utimensat', 'futimesat') AND e.a2 = 0) OR (e.syscall IN ('utimes', 'utime') AND e.a1 = 0),"
            " false) THEN greatest("
            "CASE WHEN e.file_mtime NOT IN (0, -1) THEN e.ts - e.file_mtime END, "
            "CASE WHEN e.file_atime NOT IN (0, -1) THEN e.ts - e.file_atime END) END",
        )
    )
    items += [Derived(f"fx_audit_a{i}", s, _audit_arg_sql(i)) for i in range(10)]
    # sudo's log line names the target user (``USER=root`` or ``#-1``) that no column holds
    items.append(Derived(
        "fx_sudo_user", s,
        f"CASE WHEN e.event_action = 'sudo' THEN nullif(regexp_extract(e.message, '{SUDO_USER_RE}', 1), '') END",
    ))
    return {d.name: d for d in items}


DERIVED: dict[str, Derived] = _derived()

EVENTS_COLUMNS: frozenset[str] = frozenset(EVENTS.names)

# The type of every column a rule may name.
VIEW_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in EVENTS}
VIEW_TYPES.update({d.name: d.type for d in DERIVED.values()})

# Field-less Sigma values (keywords) are searched in these columns.
KEYWORD_COLUMNS = ("fx_command_line", "fx_image", "file_path", "file_target_path", "message")

_ECS_TO_COLUMN = {ecs_name(f.name): f.name for f in EVENTS}


def native_column(name: str) -> str | None:
    """A forensix column named by a rule directly (``file_path`` or ECS ``file.path``)."""
    if name in VIEW_TYPES:
        return name
    return _ECS_TO_COLUMN.get(name)


# -- Sigma's Linux taxonomy -> view columns ---------------------------------------------

_PROCESS = {
    "Image": "fx_image",
    "CommandLine": "fx_command_line",
    "ParentImage": "fx_parent_image",
    "ParentCommandLine": "fx_parent_command_line",
    "User": "fx_user",
    "CurrentDirectory": "process_working_directory",
    "ProcessId": "process_pid",
    "ParentProcessId": "process_parent_pid",
    "LogonId": "process_session_id",
    "Computer": "host_name",
    "Hashes": "fx_hashes",
    "sha256": "process_hash_sha256",
}
_FILE = {
    **_PROCESS,
    "TargetFilename": "fx_target_filename",
    "SourceFilename": "file_path",
}
_NETWORK = {
    **_PROCESS,
    "DestinationIp": "destination_ip",
    "DestinationPort": "destination_port",
    "SourceIp": "source_ip",
    "SourcePort": "source_port",
    "Initiated": "fx_initiated",
    "Protocol": "network_transport",
}
_AUDITD = {
    "SYSCALL": "syscall",
    "syscall": "syscall",
    "name": "file_path",
    "nametype": "fx_nametype",
    "exe": "fx_image",
    "comm": "process_name",
    "uid": "user_id",
    "euid": "user_effective_id",
    "gid": "group_id",
    "egid": "group_effective_id",
    "auid": "user_audit_id",
    "ses": "process_session_id",
    "pid": "process_pid",
    "ppid": "process_parent_pid",
    "success": "fx_success",
    "exit": "ret",
    "cwd": "process_working_directory",
    "proctitle": "fx_command_line",
    **{f"a{i}": f"fx_audit_a{i}" for i in range(10)},
    # imported auditd rows (forensix.imports, event_module auditd/laurel) carry the rule's key;
    # the recorder's own rows have none, so a key matches imported events only
    "key": "rule_name",
}

# Sigma's sudo log source: USER is the user sudo ran the command as
_SUDO = {"USER": "fx_sudo_user"}

SIGMA_FIELDS: dict[str, dict[str, str]] = {
    "process_creation": _PROCESS,
    "file_event": _FILE,
    "file_delete": _FILE,
    "file_change": _FILE,
    "file_access": _FILE,
    "file_rename": _FILE,
    "network_connection": _NETWORK,
    "auditd": _AUDITD,
    "forensix": {**_NETWORK, **_FILE},
    "sudo": _SUDO,
}

# Fields of the taxonomy that forensix cannot provide, with the reason (reported per rule).
UNSUPPORTED_FIELDS: dict[str, str] = {
    "key": "auditd rule keys exist only in auditd's own rules; forensix records without them",
    "OriginalFileName": "PE metadata does not exist on Linux",
    "md5": "forensix keeps SHA-256 hashes only (Hashes, sha256)",
    "sha1": "forensix keeps SHA-256 hashes only (Hashes, sha256)",
    "DestinationHostname": "forensix records addresses, not DNS names",
    "SourceHostname": "forensix records addresses, not DNS names",
    "IntegrityLevel": "a Windows concept",
    "Company": "PE metadata does not exist on Linux",
    "Product": "PE metadata does not exist on Linux",
    "Description": "PE metadata does not exist on Linux",
    "ParentUser": "the parent's user is not in the event view",
}


# Programs whose lines a Sigma log source covers. OpenSSH 9.8 and later log as sshd-session
# and sshd-auth; Debian's cron logs as CRON, crontab edits as crontab.
_SSHD = ("sshd", "sshd-session", "sshd-auth")
_CRON = ("cron", "CRON", "crond", "crontab", "anacron")
# What Debian writes to auth.log and Red Hat to secure (the authpriv facility).
_AUTH = (*_SSHD, "sudo", "su", "login", "passwd", "chpasswd", "chage", "useradd", "userdel", "usermod",
         "groupadd", "groupdel", "groupmod", "gpasswd", "newgrp", "chsh", "chfn", "pkexec", "polkitd",
         "systemd-logind", "CRON", "cron", "crond", "doas", "runuser", "unix_chkpwd", "gdm-password",
         "lightdm", "vsftpd", "dovecot")


@dataclass(frozen=True)
class LogSource:
    """Which events a Sigma log source covers: category and actions (None = all)."""

    name: str
    category: str | None
    actions: tuple[str, ...] | None
    write_opens: bool = False  # also 'open' with a write/create/truncate flag
    ip_only: bool = False  # IP connections only (Sigma's network_connection has no Unix sockets)
    module: str | None = None  # event_module of the rows (the host's own logs: system)
    programs: tuple[str, ...] | None = None  # the logging program (process_name), None = any


LOGSOURCES: dict[str, LogSource] = {
    "process_creation": LogSource("process_creation", "process", ("exec",)),
    "file_event": LogSource(
        "file_event", "file", ("rename", "link", "symlink", "mkdir", "truncate"), write_opens=True
    ),
    "file_delete": LogSource("file_delete", "file", ("unlink", "rmdir")),
    "file_change": LogSource(
        "file_change", "file", ("chmod", "chown", "utimes", "setxattr", "removexattr", "truncate")
    ),
    "file_access": LogSource("file_access", "file", ("open",)),
    "file_rename": LogSource("file_rename", "file", ("rename",)),
    "network_connection": LogSource("network_connection", "network", ("connect", "accept"), ip_only=True),
    "auditd": LogSource("auditd", None, None),
    "forensix": LogSource("forensix", None, None),
    # The host's own logs, followed live by the recorder and imported by `forensix import journal`
    # (forensix.imports.journal): rows of event_module system, process_name the syslog identifier.
    "sshd": LogSource("sshd", None, None, module="system", programs=_SSHD),
    "sudo": LogSource("sudo", None, None, module="system", programs=("sudo",)),
    "cron": LogSource("cron", None, None, module="system", programs=_CRON),
    "auth": LogSource("auth", None, None, module="system", programs=_AUTH),
    "syslog": LogSource("syslog", None, None, module="system"),
    "clamav": LogSource("clamav", None, None, module="system", programs=("clamd", "freshclam", "clamonacc")),
    "guacamole": LogSource("guacamole", None, None, module="system", programs=("guacd",)),
    "vsftpd": LogSource("vsftpd", None, None, module="system", programs=("vsftpd",)),
    # product: linux with neither category nor service (SigmaHQ's rules/linux/builtin keyword
    # rules): written for the system's log text, so they read the same rows as syslog
    "linux": LogSource("linux", None, None, module="system"),
}

# Sigma's `service:` values and the log source each reads.
SERVICES: dict[str, str] = {s: s for s in (
    "auditd", "forensix", "sshd", "sudo", "cron", "auth", "syslog", "clamav", "guacamole", "vsftpd")}

# auditd record types and which forensix events would have produced such a record.
# A value is (category or None, actions or None, column that must be present or None).
AUDIT_TYPES: dict[str, tuple[str | None, tuple[str, ...] | None, str | None]] = {
    "SYSCALL": (None, None, "syscall"),
    "EXECVE": ("process", ("exec",), None),
    "PROCTITLE": (None, None, "process_entity_id"),
    "CWD": ("process", ("exec",), None),
    "PATH": (None, None, "file_path"),
    "SOCKADDR": ("network", None, None),
    "BPF": ("privilege", ("bpf",), None),
    "KERN_MODULE": ("privilege", ("init_module", "finit_module", "delete_module"), None),
    # user-space records, produced only by imported auditd logs (forensix.imports.audit_event)
    **{t: (None, (t.lower(),), None) for t in (
        "USER_AUTH", "USER_ACCT", "USER_LOGIN", "USER_LOGOUT", "USER_ERR", "USER_CHAUTHTOK", "LOGIN",
        "USER_START", "USER_END", "CRED_ACQ", "CRED_DISP", "CRED_REFR", "USER_CMD", "USER_ROLE_CHANGE",
        "ADD_USER", "DEL_USER", "ADD_GROUP", "DEL_GROUP", "USER_MGMT", "GRP_MGMT", "SERVICE_START",
        "SERVICE_STOP", "DAEMON_START", "DAEMON_END", "CONFIG_CHANGE", "ANOM_PROMISCUOUS")},
}
