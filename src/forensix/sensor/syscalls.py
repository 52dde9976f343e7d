"""Which syscalls the sensor hooks, with which handler, and what their arguments mean.

This table is data: the loader attaches the named handler program to each syscall's
exit (it reads the arguments from the registers saved at entry); the decoder maps raw arguments to store columns
with the ``args`` index per column. Syscall numbers come from the build's abi.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["O_CREAT", "SOCKET_RW", "STRING_ARGS", "SYSCALLS", "Syscall"]

O_CREAT = 0o100
O_WRONLY = 0o1
O_TRUNC = 0o1000


@dataclass(frozen=True)
class Syscall:
    handler: str  # BPF program attached at sys_exit_<name>
    category: str
    action: str
    args: dict[str, int] = field(default_factory=dict)  # store column -> argument index
    tracepoint: str | None = None  # when tracefs names it differently from __NR_<name>


def _s(handler: str, category: str, action: str, tp: str | None = None, **args: int) -> Syscall:
    return Syscall(handler, category, action, args, tp)


SYSCALLS: dict[str, Syscall] = {
    # files: kernel-resolved from the descriptor the call returned
    "open": _s("fx_exit_open", "file", "open", file_flags=1, file_mode=2),
    "creat": _s("fx_exit_open", "file", "open", file_mode=1),
    "openat": _s("fx_exit_open", "file", "open", file_flags=2, file_mode=3),
    "openat2": _s("fx_exit_open", "file", "open", file_flags=2, file_mode=3),
    # files: one name (base directory resolved in the kernel + the string passed)
    "unlink": _s("fx_exit_path", "file", "unlink"),
    "unlinkat": _s("fx_exit_path", "file", "unlink"),
    "rmdir": _s("fx_exit_path", "file", "rmdir"),
    "mkdir": _s("fx_exit_path", "file", "mkdir", file_mode=1),
    "mkdirat": _s("fx_exit_path", "file", "mkdir", file_mode=2),
    "mknod": _s("fx_exit_path", "file", "mknod", file_mode=1),
    "mknodat": _s("fx_exit_path", "file", "mknod", file_mode=2),
    "chmod": _s("fx_exit_path", "file", "chmod", file_mode=1),
    "fchmodat": _s("fx_exit_path", "file", "chmod", file_mode=2),
    "fchmodat2": _s("fx_exit_path", "file", "chmod", file_mode=2),
    "chown": _s("fx_exit_path", "file", "chown", file_uid=1, file_gid=2),
    "lchown": _s("fx_exit_path", "file", "chown", file_uid=1, file_gid=2),
    "fchownat": _s("fx_exit_path", "file", "chown", file_uid=2, file_gid=3),
    "truncate": _s("fx_exit_path", "file", "truncate"),
    "utime": _s("fx_exit_path", "file", "utimes", file_atime=4, file_mtime=5),
    "utimes": _s("fx_exit_path", "file", "utimes", file_atime=4, file_mtime=5),
    "utimensat": _s("fx_exit_path", "file", "utimes", file_atime=4, file_mtime=5),
    "futimesat": _s("fx_exit_path", "file", "utimes", file_atime=4, file_mtime=5),
    "setxattr": _s("fx_exit_path", "file", "setxattr"),
    "lsetxattr": _s("fx_exit_path", "file", "setxattr"),
    "removexattr": _s("fx_exit_path", "file", "removexattr"),
    "lremovexattr": _s("fx_exit_path", "file", "removexattr"),
    "chroot": _s("fx_exit_path", "privilege", "chroot"),
    # files: one descriptor
    "fchmod": _s("fx_exit_fd", "file", "chmod", file_mode=1),
    "fchown": _s("fx_exit_fd", "file", "chown", file_uid=1, file_gid=2),
    "ftruncate": _s("fx_exit_fd", "file", "truncate"),
    "fsetxattr": _s("fx_exit_fd", "file", "setxattr"),
    "fremovexattr": _s("fx_exit_fd", "file", "removexattr"),
    "finit_module": _s("fx_exit_fd", "privilege", "finit_module"),
    "setns": _s("fx_exit_fd", "privilege", "setns"),
    # files: two names
    "rename": _s("fx_exit_path2", "file", "rename"),
    "renameat": _s("fx_exit_path2", "file", "rename"),
    "renameat2": _s("fx_exit_path2", "file", "rename"),
    "link": _s("fx_exit_path2", "file", "link"),
    "linkat": _s("fx_exit_path2", "file", "link"),
    "symlink": _s("fx_exit_path2", "file", "symlink"),
    "symlinkat": _s("fx_exit_path2", "file", "symlink"),
    "pivot_root": _s("fx_exit_path2", "privilege", "pivot_root"),
    "mount": _s("fx_exit_mount", "privilege", "mount", mem_flags=3),
    "umount2": _s("fx_exit_mount", "privilege", "umount", tp="umount"),
    # memory
    "mmap": _s("fx_exit_mmap", "memory", "mmap", mem_len=1, mem_prot=2, mem_flags=3),
    "mprotect": _s("fx_exit_mmap", "memory", "mprotect", mem_addr=0, mem_len=1, mem_prot=2),
    "memfd_create": _s("fx_exit_memfd", "memory", "memfd_create", mem_flags=1),
    # network
    "connect": _s("fx_exit_sock", "network", "connect"),
    "accept": _s("fx_exit_sock", "network", "accept"),
    "accept4": _s("fx_exit_sock", "network", "accept"),
    "bind": _s("fx_exit_sock", "network", "bind"),
    "listen": _s("fx_exit_sock", "network", "listen"),
    "pipe": _s("fx_exit_pipe", "file", "pipe"),
    "pipe2": _s("fx_exit_pipe", "file", "pipe"),
    "socketpair": _s("fx_exit_pipe", "network", "socketpair"),
    # credentials (new ids are in the record's user_* fields)
    "setuid": _s("fx_exit_cred", "process", "setuid"),
    "setgid": _s("fx_exit_cred", "process", "setgid"),
    "setreuid": _s("fx_exit_cred", "process", "setreuid"),
    "setregid": _s("fx_exit_cred", "process", "setregid"),
    "setresuid": _s("fx_exit_cred", "process", "setresuid"),
    "setresgid": _s("fx_exit_cred", "process", "setresgid"),
    "setfsuid": _s("fx_exit_cred", "process", "setfsuid"),
    "setfsgid": _s("fx_exit_cred", "process", "setfsgid"),
    "capset": _s("fx_exit_cred", "process", "capset"),
    # other processes, the kernel, namespaces
    "kill": _s("fx_exit_other", "process", "kill", target_pid=0, signal=1),
    "tkill": _s("fx_exit_other", "process", "kill", target_pid=0, signal=1),
    "tgkill": _s("fx_exit_other", "process", "kill", target_pid=0, signal=2),
    "ptrace": _s("fx_exit_other", "process", "ptrace", target_pid=1),
    "bpf": _s("fx_exit_other", "privilege", "bpf"),
    "init_module": _s("fx_exit_other", "privilege", "init_module", mem_len=1),
    "delete_module": _s("fx_exit_other", "privilege", "delete_module"),
    "unshare": _s("fx_exit_other", "privilege", "unshare", mem_flags=0),
    "execve": _s("fx_exit_other", "process", "exec"),
    "execveat": _s("fx_exit_other", "process", "exec"),
    # reads and writes: data-flow edges (every call with --full)
    "read": _s("fx_exit_rw", "flow", "read"),
    "pread64": _s("fx_exit_rw", "flow", "read"),
    "readv": _s("fx_exit_rw", "flow", "read"),
    "preadv": _s("fx_exit_rw", "flow", "read"),
    "preadv2": _s("fx_exit_rw", "flow", "read"),
    "recvfrom": _s("fx_exit_rw", "flow", "read"),
    "recvmsg": _s("fx_exit_rw", "flow", "read"),
    "write": _s("fx_exit_rw", "flow", "write"),
    "pwrite64": _s("fx_exit_rw", "flow", "write"),
    "writev": _s("fx_exit_rw", "flow", "write"),
    "pwritev": _s("fx_exit_rw", "flow", "write"),
    "pwritev2": _s("fx_exit_rw", "flow", "write"),
    "sendto": _s("fx_exit_rw", "flow", "write"),
    "sendmsg": _s("fx_exit_rw", "flow", "write"),
    "sendfile": _s("fx_exit_rw", "flow", "transfer", tp="sendfile64"),
    "splice": _s("fx_exit_rw", "flow", "transfer"),
    "copy_file_range": _s("fx_exit_rw", "flow", "transfer"),
}

# Reads and writes that only sockets take. Their data is counted at the socket layer
# (fx_sock_send / fx_sock_recv, raw tracepoints in sock_sendmsg / sock_recvmsg), which
# sees every syscall that moves data through a socket; their syscall tracepoints are
# attached only where every call is recorded (--full) or the socket layer cannot be hooked.
SOCKET_RW = frozenset({"recvfrom", "recvmsg", "sendto", "sendmsg"})


# Arguments that point to a string the sensor copies into the record (bpf/sensor.bpf.c:
# fx_named / fx_str_user), by the string slot it lands in (enum fx_str). Where the copy is
# there and whole, the decoder leaves the pointer out of a0..a3: the string is the evidence,
# the address of the caller's buffer is not. Where the copy failed or was truncated, the
# pointer stays.
_AT1 = {1: "FX_S_RAW0"}  # *at(dirfd, path, ...)
_P0 = {0: "FX_S_RAW0"}  # (path, ...)
STRING_ARGS: dict[str, dict[int, str]] = {
    "open": _P0, "creat": _P0, "openat": _AT1, "openat2": _AT1,
    **{n: _AT1 for n in ("unlinkat", "mkdirat", "fchmodat", "fchmodat2", "fchownat", "futimesat", "mknodat",
                         "utimensat", "execveat")},
    **{n: _P0 for n in ("unlink", "rmdir", "mkdir", "mknod", "chmod", "chown", "lchown", "truncate", "utime",
                        "utimes", "setxattr", "lsetxattr", "removexattr", "lremovexattr", "chroot", "umount2",
                        "execve", "delete_module", "memfd_create")},
    "finit_module": {1: "FX_S_RAW0"}, "init_module": {2: "FX_S_RAW0"},
    **{n: {1: "FX_S_RAW0", 3: "FX_S_RAW1"} for n in ("renameat", "renameat2", "linkat")},
    **{n: {0: "FX_S_RAW0", 1: "FX_S_RAW1"} for n in ("rename", "link", "symlink", "pivot_root")},
    "symlinkat": {0: "FX_S_RAW0", 2: "FX_S_RAW1"},
    "mount": {0: "FX_S_RAW0", 1: "FX_S_RAW1", 2: "FX_S_PATH0"},
}
