"""The logical schema of a forensix store, declared once as Arrow schemas.

Field names follow ECS with dots written as underscores (``process.entity_id`` is
``process_entity_id``). The DuckDB DDL, the ClickHouse DDL, the decoder's output and the
JSON renderer's ECS names are all derived from these declarations.

Times are UTC nanoseconds since the epoch in ``BIGINT`` columns (DuckDB's TIMESTAMPTZ is
microseconds; evidence keeps the kernel's nanoseconds). Entity ids are unsigned 64-bit
integers derived from (host, boot id, pid, start time): see ``forensix.model.identity``.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "ACCOUNTS",
    "ALERTS",
    "ALERT_EVIDENCE",
    "ARTIFACTS",
    "ARTIFACT_BLOBS",
    "EVENTS",
    "FLOWS",
    "GAPS",
    "HOSTS",
    "IMPORTS",
    "PROCESSES",
    "SIDE_TABLES",
    "TABLES",
    "TTY",
    "ecs_name",
]

_u64 = pa.uint64()
_i64 = pa.int64()
_u32 = pa.uint32()
_i32 = pa.int32()
_u16 = pa.uint16()
_str = pa.string()
_bool = pa.bool_()

# Every table carries where a row came from: the host, its boot, and the agent stream.
_ORIGIN = [
    pa.field("host_id", _str, nullable=False),  # stable id: /etc/machine-id
    pa.field("host_name", _str),
    pa.field("boot_id", _str, nullable=False),  # /proc/sys/kernel/random/boot_id
]

EVENTS = pa.schema(
    _ORIGIN
    + [
        pa.field("ts", _i64, nullable=False),  # @timestamp, UTC ns
        pa.field("ts_boot", _i64),  # kernel CLOCK_BOOTTIME ns when recorded
        pa.field("cpu", _u16),
        pa.field("seq", _u64),  # per CPU and event class; gaps in it are losses
        pa.field("event_class", _str),  # the sensor's loss-accounting class: process, file, ...
        pa.field("event_kind", _str),  # event | state | alert (ECS event.kind)
        pa.field("event_category", _str, nullable=False),  # process|file|network|memory|...
        pa.field("event_action", _str, nullable=False),  # exec, open, rename, connect, ...
        pa.field("syscall", _str),  # the syscall name when one produced it
        pa.field("event_outcome", _str),  # success | failure
        pa.field("ret", _i64),  # syscall return value (negative errno on failure)
        # a summary row stands for event_count like events between event_start and event_end
        # (read-only re-opens of one file by one process within a second); null = one event
        pa.field("event_count", _u64),
        pa.field("event_start", _i64),
        pa.field("event_end", _i64),
        # the acting process
        pa.field("process_entity_id", _u64),
        pa.field("process_pid", _u32),
        pa.field("process_tid", _u32),
        pa.field("process_parent_pid", _u32),
        pa.field("process_name", _str),  # comm
        pa.field("user_id", _u32),
        pa.field("user_effective_id", _u32),
        pa.field("group_id", _u32),
        pa.field("group_effective_id", _u32),
        pa.field("user_audit_id", _u32),  # loginuid (4294967295 = unset)
        pa.field("process_session_id", _u32),  # audit sessionid
        pa.field("process_cgroup_id", _u64),
        # exec / exit
        pa.field("process_executable", _str),
        pa.field("process_args", pa.list_(_str)),
        pa.field("process_working_directory", _str),
        # SHA-256 of what the exec ran (hex), as preserved in the artifact store (forensix.artifacts)
        pa.field("process_hash_sha256", _str),
        pa.field("process_exit_code", _i32),  # exit status, or 128+signal
        pa.field("process_exit_signal", _i32),
        # the object of the action
        pa.field("file_path", _str),  # absolute path as the kernel resolved it
        pa.field("file_path_raw", _str),  # the string the process passed
        pa.field("file_path_resolution", _str),  # kernel | directory | none
        pa.field("file_path_truncated", _bool),
        # true: the file had no name left when the kernel resolved it (deleted while open, a
        # memfd, an O_TMPFILE): a program run from a deleted binary or from memory (/8)
        pa.field("file_deleted", _bool),
        pa.field("file_inode", _u64),
        pa.field("file_device", _u64),
        # the inode's i_generation: (device, inode, generation) is one file's life, since a freed
        # inode number is given to the next new file (ext4 at once). 0: the file system keeps none (/7)
        pa.field("file_generation", _u32),
        pa.field("file_type", _str),  # file, dir, symlink, fifo, socket, char, block
        pa.field("file_flags", _u32),  # open(2) flags
        pa.field("file_mode", _u32),  # mode argument (chmod, open O_CREAT, mkdir)
        pa.field("file_uid", _i64),  # chown owner argument
        pa.field("file_gid", _i64),
        pa.field("file_atime", _i64),  # times set by utimes/utimensat (UTC ns; 0 = now)
        pa.field("file_mtime", _i64),
        pa.field("file_target_path", _str),  # rename/link destination, symlink path
        pa.field("file_target_path_raw", _str),
        pa.field("file_target_inode", _u64),
        pa.field("fd", _i32),
        # network
        pa.field("network_transport", _str),  # tcp | udp | unix | raw
        pa.field("network_type", _str),  # ipv4 | ipv6 | unix
        pa.field("source_ip", _str),
        pa.field("source_port", _u16),
        pa.field("destination_ip", _str),
        pa.field("destination_port", _u16),
        pa.field("unix_path", _str),
        pa.field("unix_peer_inode", _u64),
        # another process acted upon (fork child, kill/ptrace target)
        pa.field("target_pid", _u32),
        pa.field("target_entity_id", _u64),
        pa.field("signal", _i32),
        # memory
        pa.field("mem_addr", _u64),
        pa.field("mem_len", _u64),
        pa.field("mem_prot", _u32),
        pa.field("mem_flags", _u32),
        # data-flow edges (event_action = flow)
        pa.field("flow_read_count", _u64),
        pa.field("flow_read_bytes", _u64),
        pa.field("flow_write_count", _u64),
        pa.field("flow_write_bytes", _u64),
        pa.field("flow_first_ts", _i64),
        pa.field("flow_last_ts", _i64),
        # raw syscall arguments (registers at entry), for auditd-style rules (a0..a3); null off
        # syscall rows, and null where the argument points to a string the row holds whole
        # (file_path_raw, file_target_path_raw; the pointee, not the caller's buffer address,
        # is the evidence: sensor.syscalls.STRING_ARGS). A failed or truncated copy keeps it.
        pa.field("a0", _u64),
        pa.field("a1", _u64),
        pa.field("a2", _u64),
        pa.field("a3", _u64),
        pa.field("message", _str),  # free text for agent / warning records
        # where the row came from: NULL = this recorder's kernel sensor; auditd, laurel, sysmon,
        # suricata, system (the host's own logs) = imported or followed (forensix.imports, /12)
        pa.field("event_module", _str),
        # the name of the rule that selected the event where the source has one: auditd's key (/12)
        pa.field("rule_name", _str),
    ]
)

# One row per process image: a fork creates image 0, every exec adds the next image.
PROCESSES = pa.schema(
    _ORIGIN
    + [
        pa.field("entity_id", _u64, nullable=False),
        pa.field("image_seq", _u32, nullable=False),
        pa.field("pid", _u32, nullable=False),
        pa.field("parent_entity_id", _u64),
        pa.field("parent_pid", _u32),
        pa.field("start_ts", _i64, nullable=False),  # process start, UTC ns
        pa.field("image_ts", _i64, nullable=False),  # when this image began (fork or exec)
        pa.field("executable", _str),
        pa.field("args", pa.list_(_str)),
        pa.field("working_directory", _str),
        pa.field("name", _str),
        pa.field("user_id", _u32),
        pa.field("user_effective_id", _u32),
        pa.field("group_id", _u32),
        pa.field("user_audit_id", _u32),
        pa.field("session_id", _u32),
        pa.field("tty", _str),
        pa.field("cgroup_id", _u64),
        pa.field("ns_mnt", _u32),
        pa.field("ns_pid", _u32),
        pa.field("ns_net", _u32),
        pa.field("ns_user", _u32),
        pa.field("ns_uts", _u32),
        pa.field("source", _str, nullable=False),  # fork | exec | snapshot
        pa.field("hash_sha256", _str),  # SHA-256 (hex) of the image's executable (forensix.artifacts)
    ]
)

# Data-flow edges: what a process read from or wrote to a file, pipe or socket, aggregated
# in the kernel. Analyses join on this narrow table; the ``events`` view shows each edge as
# a row too (event_action = 'flow'). An edge with ``in_events`` false is stored here only
# and the view derives its events row from it (format /5); ``in_events`` true or NULL: the
# same edge is also a row of events_base (edges that came through the ring buffer with their
# sequence number, and every edge of stores written before /5).
FLOWS = pa.schema(
    _ORIGIN
    + [
        pa.field("entity_id", _u64, nullable=False),
        pa.field("pid", _u32),
        pa.field("fd", _i32),
        pa.field("file_inode", _u64),
        pa.field("file_device", _u64),
        pa.field("file_type", _str),
        pa.field("file_path", _str),
        pa.field("first_ts", _i64),
        pa.field("last_ts", _i64),
        pa.field("read_count", _u64),
        pa.field("read_bytes", _u64),
        pa.field("write_count", _u64),
        pa.field("write_bytes", _u64),
        pa.field("reason", _str),  # close | periodic | exit
        pa.field("tid", _u32),  # the thread that first moved data on the edge
        pa.field("process_name", _str),
        pa.field("ts_boot", _i64),  # last_ts on the kernel's boot clock
        pa.field("in_events", pa.bool_()),
        pa.field("user_id", _u32),  # real uid of the thread that first moved data on the edge (/6)
        pa.field("file_generation", _u32),  # the inode's i_generation, as in events (/7)
    ]
)

# Loss is evidence: every window in which records were dropped, and why.
GAPS = pa.schema(
    _ORIGIN
    + [
        pa.field("ts_from", _i64, nullable=False),
        pa.field("ts_to", _i64, nullable=False),
        pa.field("cpu", _i32),  # -1 when not per CPU
        pa.field("event_class", _str),  # process | file | network | flow | ...
        pa.field("count", _u64, nullable=False),
        pa.field("reason", _str, nullable=False),  # ringbuf-full | spool-full | agent-down | ...
        # the process whose records were lost (NULL: not one process, or not known)
        pa.field("process_pid", _u32),
        pa.field("process_entity_id", _u64),
        pa.field("process_name", _str),
        # true: how much was lost is not known (count is then 0 and means nothing)
        pa.field("count_unknown", _bool),
    ]
)

HOSTS = pa.schema(
    _ORIGIN
    + [
        pa.field("kernel", _str),
        pa.field("first_seen", _i64),
        pa.field("boot_ts", _i64),  # UTC ns of boot (wall clock minus boottime)
        pa.field("agent_version", _str),
    ]
)

ALERTS = pa.schema(
    _ORIGIN
    + [
        pa.field("alert_id", _str, nullable=False),
        pa.field("ts", _i64, nullable=False),  # time of the (first) matching event
        pa.field("detected_ts", _i64),  # when the engine raised it
        pa.field("rule_id", _str, nullable=False),
        pa.field("rule_title", _str),
        pa.field("rule_level", _str),
        pa.field("tags", pa.list_(_str)),  # MITRE ATT&CK and others
        pa.field("process_entity_id", _u64),
        pa.field("process_pid", _u32),
        pa.field("entity_ids", pa.list_(_u64)),
        pa.field("event_keys", pa.list_(_str)),  # "cpu:seq:ts" of the matching events
        pa.field("summary", _str),
        pa.field("source", _str),  # live | hunt | builtin
        # one alert per finding (rule, process, object) within a window (rules/evidence.py), /10
        pa.field("alert_count", _u64),  # matching events it stands for
        pa.field("last_ts", _i64),  # time of the last of them
        pa.field("process_executable", _str),
        pa.field("process_command_line", _str),
        pa.field("parent_executable", _str),
        pa.field("parent_command_line", _str),
        pa.field("user_name", _str),
        pa.field("object_kind", _str),  # file | account | address | process | unit
        pa.field("object_name", _str),  # path, account name, ip:port, pid
        pa.field("entry_entity_id", _u64),  # the session's entry leader
        pa.field("entry_kind", _str),  # sshd | cron | console | systemd | daemon | unknown
        pa.field("entry_source_ip", _str),  # remote address of an ssh session
    ]
)
# The alert columns added by migration 0011 (evidence and grouping).
ALERT_EVIDENCE = frozenset(ALERTS.names[ALERTS.names.index("alert_count"):])

# Terminal bytes (bpf/tty.bpf.h): one row per read or write on a terminal, in order. Input
# typed at a prompt with ECHO off in canonical mode (a password) is never copied: ``masked``,
# no data, no length. What the per-terminal rate limit cut is counted on the next row.
TTY = pa.schema(
    _ORIGIN
    + [
        pa.field("ts", _i64, nullable=False),
        pa.field("ts_boot", _i64),
        pa.field("cpu", _u16),
        pa.field("seq", _u64),  # per CPU, class tty
        pa.field("process_entity_id", _u64),
        pa.field("process_pid", _u32),
        pa.field("process_name", _str),
        pa.field("user_id", _u32),
        pa.field("process_session_id", _u32),  # audit session id
        pa.field("tty", _str),  # the kernel's name: pts/3, tty1, console
        pa.field("tty_device", _u32),  # (major << 20) | minor, the kernel's dev_t
        pa.field("direction", _str, nullable=False),  # output (written to the terminal) | input (read) | unknown (a cut-only row)
        pa.field("syscall", _str),
        pa.field("bytes", _u64),  # what the syscall moved (null when masked)
        pa.field("data", pa.binary()),  # the bytes kept (null when masked)
        pa.field("cut_bytes", _u64),  # bytes of this terminal not kept since its previous row
        pa.field("cut_from_ts", _i64),  # when the first of those moved
        pa.field("masked", _bool),  # input read with ECHO off at a canonical prompt: not kept
        pa.field("echo", _bool),  # the terminal's ECHO flag at the call
        pa.field("canonical", _bool),  # the terminal's ICANON flag at the call
    ]
)

# Executed files preserved by content (forensix.artifacts): one row per (file, process) seen.
ARTIFACTS = pa.schema(
    _ORIGIN
    + [
        pa.field("ts", _i64, nullable=False),
        pa.field("sha256", _str),  # null: not preserved (reason says why)
        pa.field("size", _u64),
        pa.field("kind", _str),  # executable | script | library | memfd
        pa.field("path", _str),  # as the kernel named it when it ran
        pa.field("source", _str),  # how it was read: /proc/PID/exe, /proc/PID/map_files, path
        pa.field("process_entity_id", _u64),
        pa.field("process_pid", _u32),
        pa.field("stored", _bool),  # true: new content written to the store; false: already there, or refused
        pa.field("certain", _bool),  # false: the file may have changed between the exec and the copy
        pa.field("reason", _str),  # why it is missing or uncertain
    ]
)

# The bytes of preserved artifacts as an agent ships them to the log host (sealed and resent
# until acknowledged, like every batch), in chunks of at most 1 MiB: ``forensix artifacts get``
# on the log host's store reassembles them and checks the hash. A local store keeps its blobs
# in STORE.artifacts/ instead.
ARTIFACT_BLOBS = pa.schema(
    _ORIGIN
    + [
        pa.field("ts", _i64, nullable=False),
        pa.field("sha256", _str, nullable=False),
        pa.field("offset", _u64, nullable=False),  # where this chunk starts in the file
        pa.field("size", _u64, nullable=False),  # the whole file's size
        pa.field("data", pa.binary()),
    ]
)

# What was imported from which file, so that importing it again adds nothing (forensix.imports).
# A file is known by the hash of its first bytes (a rotated or gzipped copy is the same file);
# ``offset`` is how far it was imported, ``prefix_sha256`` the hash of those bytes.
IMPORTS = pa.schema(
    [
        pa.field("file_key", _str, nullable=False),  # sha256 of the first 4 KiB (decompressed)
        pa.field("path", _str),
        pa.field("format", _str, nullable=False),
        pa.field("offset", _i64, nullable=False),  # bytes (decompressed) imported so far
        pa.field("prefix_sha256", _str, nullable=False),
        pa.field("lines", _i64),
        pa.field("events", _i64),
        pa.field("skipped", _i64),  # lines skipped (each is a warning event too)
        pa.field("imported_ts", _i64),
        pa.field("host_id", _str),
    ]
)

# The recorded host's user and group database (/etc/passwd, /etc/group), so that a uid is
# named as the host named it at the time, wherever the store is read (forensix.analysis.users).
# A row is one user (or group) of one reading of the file: every reading is stored whole,
# with ``valid_from`` the file's change time (what it says held from then on); a user gone
# since the last reading gets a row with ``name`` NULL. Rows are read again after each change
# and once a day (so a store's retention keeps a copy). No password field is ever read.
ACCOUNTS = pa.schema(
    _ORIGIN
    + [
        pa.field("valid_from", _i64, nullable=False),  # UTC ns: the file's ctime (imports: the event's time)
        pa.field("recorded_ts", _i64, nullable=False),  # UTC ns: when it was read
        pa.field("kind", _str, nullable=False),  # user | group
        pa.field("uid", _u32),  # user rows
        pa.field("gid", _u32),  # a user's primary group; a group row's id
        pa.field("name", _str),  # NULL: no longer in the file
        pa.field("full_name", _str),  # GECOS
        pa.field("home", _str),
        pa.field("shell", _str),
        pa.field("members", pa.list_(_str)),  # group rows
        pa.field("source", _str),  # /etc/passwd, /etc/group; or the import format that named the uid
    ]
)

TABLES: dict[str, pa.Schema] = {
    "events": EVENTS,
    "processes": PROCESSES,
    "flows": FLOWS,
    "gaps": GAPS,
    "hosts": HOSTS,
    "alerts": ALERTS,
    "tty": TTY,
    "artifacts": ARTIFACTS,
    "artifact_blobs": ARTIFACT_BLOBS,
    "accounts": ACCOUNTS,
}

# Tables of the store's own bookkeeping: appended like the others, but no host's rows (analyses
# and the per-host reader never see them). Created by their migration (0013 for imports).
SIDE_TABLES: dict[str, pa.Schema] = {"imports": IMPORTS}

# Columns whose ECS name is not the plain dots-for-underscores translation.
_ECS_SPECIAL = {
    "ts": "@timestamp",
    "process_entity_id": "process.entity_id",
    "process_parent_pid": "process.parent.pid",
    "process_working_directory": "process.working_directory",
    "process_exit_code": "process.exit_code",
    "process_exit_signal": "process.exit_signal",
    "process_session_id": "process.session_id",
    "process_cgroup_id": "process.cgroup_id",
    "user_effective_id": "user.effective.id",
    "group_effective_id": "group.effective.id",
    "user_audit_id": "user.audit.id",
    "file_path_raw": "file.path_raw",
    "file_path_resolution": "file.path_resolution",
    "file_path_truncated": "file.path_truncated",
    "file_target_path": "file.target_path",
    "file_target_path_raw": "file.target_path_raw",
    "file_target_inode": "file.target_inode",
    "target_entity_id": "target.entity_id",
    "target_pid": "target.pid",
    "unix_peer_inode": "unix.peer_inode",
    "unix_path": "unix.path",
    "ts_boot": "event.boot_ns",
    "event_kind": "event.kind",
    "host_id": "host.id",
    "host_name": "host.name",
    "boot_id": "host.boot.id",
    "parent_entity_id": "process.parent.entity_id",
    # alerts (/10)
    "last_ts": "event.end",
    "detected_ts": "event.created",
    "parent_executable": "process.parent.executable",
    "parent_command_line": "process.parent.command_line",
    "entry_entity_id": "process.entry_leader.entity_id",
    "entry_kind": "process.entry_leader.entry_meta.type",
    "entry_source_ip": "process.entry_leader.entry_meta.source.ip",
    "process_hash_sha256": "process.hash.sha256",
    "hash_sha256": "process.hash.sha256",
}


def ecs_name(column: str) -> str:
    """The ECS-style dotted name of a store column (``file_path`` -> ``file.path``)."""
    special = _ECS_SPECIAL.get(column)
    if special is not None:
        return special
    head, _, tail = column.partition("_")
    if not tail:
        return column
    return f"{head}.{tail}"
