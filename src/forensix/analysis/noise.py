"""Noise filters for dependency graphs and timelines, declared as data.

BackTracker's observation: a few objects (the dynamic loader cache, libc, /etc/passwd,
/dev/null, /proc) are read by nearly every process, so following them joins every process
to every other and buries the intrusion. Each filter names the objects it drops and in
which direction the edge must flow for it to be dropped: reading /etc/passwd is noise,
writing it never is. ``unless_written``: a system file that something wrote while
recorded is no longer "read-only" and is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FILTERS", "FILTER_NAMES", "SYSTEM_WRITES", "NoiseFilter", "noise_case", "path_predicate",
           "unix_predicate"]

# Writes that change how the system behaves: never noise, whatever filter would drop the
# path (turning ASLR off through /proc/sys/kernel/randomize_va_space, a cgroup's limits or
# release agent, a pinned BPF program, a module's parameters, the core pattern, sysrq).
SYSTEM_WRITES: tuple[str, ...] = (
    "/proc/sys/%", "/sys/kernel/%", "/sys/fs/cgroup/%", "/sys/fs/bpf/%", "/sys/module/%/parameters/%",
    "/proc/sysrq-trigger", "/sys/power/%", "/sys/firmware/efi/efivars/%", "/proc/%/attr/%",
    "/proc/%/setgroups", "/proc/%/uid_map", "/proc/%/gid_map", "/proc/%/oom_score_adj",
    "/sys/class/%", "/sys/bus/%", "/sys/devices/%", "/proc/irq/%",
)


@dataclass(frozen=True)
class NoiseFilter:
    name: str
    description: str
    directions: frozenset[str]  # "read" (object -> process) and/or "write" (process -> object)
    patterns: tuple[str, ...]  # SQL LIKE patterns on the path
    unless_written: bool = False
    unix: tuple[str, ...] = ()  # LIKE patterns on unix socket paths (dropped both ways)


FILTERS: tuple[NoiseFilter, ...] = (
    NoiseFilter(
        "libraries",
        "shared libraries, system binaries and other read-only system files (reads, mmaps and "
        "execs of files under /usr, /lib, /etc/alternatives, ... that nothing wrote while recorded)",
        frozenset({"read"}),
        ("/usr/lib/%", "/usr/lib64/%", "/lib/%", "/lib64/%", "/usr/local/lib/%", "/usr/share/%",
         "/usr/bin/%", "/usr/sbin/%", "/bin/%", "/sbin/%", "/usr/libexec/%", "/etc/alternatives/%",
         "/usr/include/%", "%.so", "%.so.%", "%/__pycache__/%", "%.pyc"),
        unless_written=True,
    ),
    NoiseFilter(
        "pseudo",
        "/proc, /sys and /dev pseudo-files (except /dev/shm and /dev/mqueue), both directions",
        frozenset({"read", "write"}),
        ("/proc/%", "/sys/%", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty%",
         "/dev/pts/%", "/dev/ptmx", "/dev/console", "/dev/full", "/dev/kmsg", "/dev/fuse",
         "/dev/char/%", "/dev/block/%", "/dev/input/%", "/dev/snd/%", "/dev/dri/%", "/dev/vsock",
         "/dev/log", "/dev/hugepages/%"),
    ),
    NoiseFilter(
        "hubs",
        "well-known hub files that every program reads (loader cache, passwd/group lookups, "
        "name service and locale configuration, time zone, CA bundle, utmp); reads only",
        frozenset({"read"}),
        ("/etc/ld.so.cache", "/etc/ld.so.preload", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
         "/etc/hosts", "/etc/host.conf", "/etc/resolv.conf", "/etc/gai.conf", "/etc/localtime",
         "/etc/locale.alias", "/etc/locale.conf", "/etc/default/locale", "/usr/lib/locale/%",
         "/etc/ssl/openssl.cnf", "/etc/ssl/certs/%", "/etc/login.defs", "/etc/inputrc",
         "/etc/terminfo/%", "/etc/mime.types", "/run/utmp", "/var/run/utmp", "/etc/environment",
         "/etc/profile", "/etc/bash.bashrc", "/etc/selinux/config", "/etc/machine-id",
         "/etc/os-release", "/usr/lib/os-release"),
        unix=("/run/systemd/journal/%", "/dev/log", "/run/dbus/system_bus_socket",
              "/var/run/dbus/system_bus_socket", "/run/nscd/socket", "/var/run/nscd/socket",
              "/run/systemd/userdb/%", "/run/systemd/notify", "/run/systemd/private"),
    ),
)
FILTERS = FILTERS + (
    NoiseFilter(
        "servers",
        "forking servers: going backward into a process that accepted many connections, only its "
        "latest accept before the time it mattered counts (the connection it forked a handler for)",
        frozenset({"read"}),
        (),
    ),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)


def _like_any(column: str, patterns: tuple[str, ...]) -> str:
    if not patterns:
        return "FALSE"
    ors = " OR ".join(f"{column} LIKE '" + p.replace("'", "''") + "'" for p in patterns)
    return f"({column} IS NOT NULL AND ({ors}))"


def path_predicate(column: str, direction: str, active: set[str], written: str | None = None) -> str:
    """SQL that is TRUE when an edge on ``column`` in ``direction`` is noise.

    ``written``: an SQL expression TRUE when the object was written while recorded (the
    ``unless_written`` exception); leave None to ignore the exception.
    """
    parts = []
    for f in FILTERS:
        if f.name not in active or direction not in f.directions:
            continue
        pred = _like_any(column, f.patterns)
        if direction == "write":
            pred = f"({pred} AND NOT {_like_any(column, SYSTEM_WRITES)})"
        if f.unless_written and written is not None:
            pred = f"({pred} AND NOT ({written}))"
        parts.append(pred)
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def unix_predicate(column: str, active: set[str]) -> str:
    pats = tuple(p for f in FILTERS if f.name in active for p in f.unix)
    return _like_any(column, pats)


def noise_case(active: set[str], skip: frozenset[str] = frozenset()) -> str:
    """SQL naming the filter that drops a graph hop's row (NULL: kept), over its columns
    ``src_kind``, ``dst_kind`` and ``path``; so the output can say what each filter hid."""
    whens = []
    for f in FILTERS:
        if f.name not in active or f.name in skip:
            continue
        one = {f.name}
        whens.append(f"WHEN src_kind = 'file' AND {path_predicate('path', 'read', one)} THEN '{f.name}'")
        whens.append(f"WHEN dst_kind = 'file' AND {path_predicate('path', 'write', one)} THEN '{f.name}'")
        if f.unix:
            whens.append(f"WHEN (src_kind = 'unix' OR dst_kind = 'unix') AND {unix_predicate('path', one)}"
                         f" THEN '{f.name}'")
    return "CASE " + " ".join(whens) + " ELSE NULL END" if whens else "NULL"
