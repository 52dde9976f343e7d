/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * events.h: the one event ABI between the forensix BPF sensor and its decoder.
 *
 * The Python decoder never restates these layouts: the build extracts them from the
 * BTF of the compiled object (bpftool btf dump -j) into abi.json, and a test checks
 * that abi.json matches the object that is loaded.
 *
 * A record in a ring buffer is a struct fx_event followed by up to FX_NSTR strings,
 * packed one after another; slen[i] is the length of string i including its NUL, or 0
 * when it is absent. Which string means what depends on the kind (see enum fx_str).
 */
#ifndef FORENSIX_EVENTS_H
#define FORENSIX_EVENTS_H

#define FX_NSTR 4
#define FX_STR_MAX 4096          /* one string, NUL included */
#define FX_PATH_DEPTH 48         /* dentry components walked before a path is truncated */

enum fx_kind {
	FX_KIND_FORK = 1,        /* a new process (not a thread); tpid/tstart = child */
	FX_KIND_EXEC = 2,        /* s0 exe (kernel-resolved), s1 argv (NUL-separated), s2 cwd, s3 filename as passed */
	FX_KIND_EXIT = 3,        /* the whole thread group is gone; ret = exit_code (status << 8 | signal) */
	FX_KIND_SYSCALL = 4,     /* nr = syscall number; args[] = raw arguments; ret = return value */
	FX_KIND_FLOW = 5,        /* data-flow edge: aggregated reads/writes on one open file; args[] = counters */
	FX_KIND_TTY = 6,         /* terminal bytes (bpf/tty.bpf.h): s0 = the bytes; args[] = enum fx_tty_arg */
};

/* Where each string of a FX_KIND_SYSCALL record comes from. */
enum fx_str {
	FX_S_PATH0 = 0,          /* object 0: kernel-resolved path (of the file, or of its base directory) */
	FX_S_RAW0 = 1,           /* object 0: the string the process passed */
	FX_S_PATH1 = 2,          /* object 1 (rename/link target, ...) */
	FX_S_RAW1 = 3,
};

enum fx_flags {
	FX_F_TRUNC0 = 1 << 0,    /* string i was truncated (bit i) */
	FX_F_TRUNC1 = 1 << 1,
	FX_F_TRUNC2 = 1 << 2,
	FX_F_TRUNC3 = 1 << 3,
	FX_F_BASE0 = 1 << 4,     /* PATH0 is the base directory (dirfd, cwd or root) of RAW0, not the object itself */
	FX_F_BASE1 = 1 << 5,     /* likewise PATH1 / RAW1 */
	FX_F_SOCK = 1 << 6,      /* the socket fields are filled */
	FX_F_DELETED0 = 1 << 7,  /* object 0 had no name left (i_nlink 0) when resolved */
	FX_F_DEPTH0 = 1 << 8,    /* PATH0 walk hit FX_PATH_DEPTH before the root */
	FX_F_DEPTH1 = 1 << 9,
	FX_F_CLOSE = 1 << 10,    /* FLOW: flushed because the file was closed */
	FX_F_TTY_MASKED = 1 << 11, /* TTY: input read with ECHO off in canonical mode (a password): bytes not copied */
	FX_F_UADDR = 1 << 12,    /* the peer address is the one the process passed: the kernel's socket had none left (a refused connect) */
};

/* Event classes: each has its own drop counter and sequence; PROC has its own ring. */
enum fx_class {
	FX_CLASS_PROC = 0,       /* fork, exec, exit, credentials: ring rb_proc */
	FX_CLASS_FILE = 1,
	FX_CLASS_NET = 2,
	FX_CLASS_FLOW = 3,
	FX_CLASS_OTHER = 4,
	FX_CLASS_TTY = 5,        /* terminal bytes */
	FX_CLASS_MAX = 6,
};

/* What args[i] of a FX_KIND_TTY record holds (ret: bytes the syscall moved; tty: the tty's name). */
enum fx_tty_arg {
	FX_TTY_DEV = 0,          /* the terminal: (driver major << 20) | minor, as the kernel's dev_t */
	FX_TTY_CUT = 1,          /* bytes of this terminal not kept since its previous record (rate limit) */
	FX_TTY_CUT_FROM = 2,     /* boot ns of the first of those */
	FX_TTY_LFLAG = 3,        /* the terminal's termios c_lflag at syscall exit (ECHO, ICANON) */
	FX_TTY_WRITE = 4,        /* 1: written to the terminal (output), 0: read from it (input) */
	FX_TTY_FD = 5,
};

struct fx_event {
	__u64 ts;                /* bpf_ktime_get_boot_ns() */
	__u64 seq;               /* per CPU and class; advanced for dropped records too */
	__u64 start;             /* start_boottime of the thread group leader */
	__u64 tstart;            /* start_boottime of the target (fork child) */
	__u64 cgroup;
	__s64 ret;
	__u64 args[6];
	__u64 ino[2];
	__u32 dev[2];
	__u32 imode[2];          /* i_mode of the resolved objects (type bits tell file/dir/sock/fifo) */
	__u32 igen[2];           /* i_generation: a reused inode number gets a new one (one object's life) */
	__u32 kind;              /* enum fx_kind */
	__u32 nr;                /* syscall number (x86_64) for FX_KIND_SYSCALL */
	__u32 cls;               /* enum fx_class */
	__u32 cpu;
	__u32 pid;               /* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 tpid;              /* target process: fork child, kill/ptrace target */
	__u32 uid, gid, euid, egid;
	__u32 auid, sessionid;   /* loginuid and audit session id */
	__u32 ns_mnt, ns_pid, ns_net, ns_user, ns_uts;  /* FORK and EXEC only */
	__u16 family;            /* socket: AF_INET, AF_INET6, AF_UNIX */
	__u16 sport, dport;      /* host byte order */
	__u16 sotype;            /* SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 protocol;
	__u16 flags;             /* enum fx_flags */
	__u16 slen[FX_NSTR];
	__u16 pad[3];
	__u64 peer_ino;          /* unix socket: inode of the peer socket */
	__u8 saddr[16];          /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[16];
	char tty[16];            /* FORK and EXEC only */
};

#define FX_SOCK_COUNTERS 2

/* Sensor configuration: the only .rodata variable, set by the loader before load. */
struct fx_config {
	__u32 agent_tgid;        /* the recorder itself: never recorded */
	__u32 full_rw;           /* 1: every read/write is a record, not a flow edge */
	__u32 every_open;        /* 1: every read-only re-open is a record of its own */
	__u32 tty_rate;          /* terminal bytes kept per terminal per second; 0: no terminal capture */
	__u32 sock_flows;        /* 1: socket reads/writes are counted at the socket layer (fx_sock_send/recv);
	                          * 2 (FX_SOCK_COUNTERS): that, and a TCP connection's own process by the
	                          * connection's counters (struct fx_tcp_own), not per call */
	__u32 netns;             /* non-zero: only tasks in this network namespace (its inode) are recorded */
};

/* Per terminal: bytes kept in the current second, and bytes cut not yet reported. */
struct fx_tty_budget {
	__u64 sec;               /* boot seconds of `used` */
	__u64 used;
	__u64 cut;               /* reported (and zeroed) by the terminal's next record */
	__u64 cut_from;          /* boot ns of the first cut byte not reported yet */
};

/*
 * Written by the agent while the sensor runs (the .data.control section): an agent that
 * adopts a sensor pinned by one that died names itself here, and pausing stops recording
 * at once. The agent_tgid of fx_config is that of the agent that loaded the sensor.
 */
struct fx_control {
	__u32 paused;            /* non-zero: every program returns at once (FX_PAUSED_*) */
	__u32 agent_tgid;        /* the agent now draining: never recorded */
	__u64 heartbeat;         /* boot ns of the agent's latest sign of life */
	__u64 orphan_ns;         /* no heartbeat for this long: stop recording (0: never) */
	__u64 orphaned_at;       /* boot ns at which the heartbeat timer stopped recording */
};
#define FX_PAUSED_AGENT 1        /* the agent stops (a clean stop) */
#define FX_PAUSED_ORPHAN 2       /* set by the heartbeat timer: no agent for orphan_ns */

/* Slots of the `accounted` map, which only the agent writes: it survives the agent. */
#define FX_ACC_LAST_WRITE 8191   /* boot ns of the agent's latest batch written to the store */
#define FX_ACC_EARLY 8190        /* 1: ring space was given back before its records were stored */
#define FX_ACC_BANK 8189         /* which bank of the per-CPU slot caches the programs fill (bit 0); the
                                  * agent adds 1 at each flush, so the word also counts the flushes */
#define FX_ACC_WATCH 8180        /* pid of the agent's orphan watch (sensor/orphan_watch.py) */
#define FX_ACC_DETACHED 8181     /* boot ns at which the orphan watch detached the paused programs */
/* Inserts into the flows and reopens hash maps, counted by the programs after each one (the
 * agent walks a map at a flush only when its count moved: an empty walk of 65,536 buckets and
 * the take's copies are ~0.2 ms); FX_ACC_COUNTING is set by the agent that loads programs that
 * count them (an adopted sensor's older programs do not: its maps are walked every flush). */
#define FX_ACC_FLOW_INSERTS 8182
#define FX_ACC_OPEN_INSERTS 8183
#define FX_ACC_COUNTING 8184

/*
 * The per-CPU slot caches in front of the flows and reopens hash maps: FX_SLOTS slots per
 * CPU and bank, two-way (a key may sit in slot i or i ^ 1). The programs fill the bank
 * FX_ACC_BANK names; the agent flips it, waits an RCU grace period (every program that read
 * the old bank has returned), then takes the old bank's slots with the hash maps and adds
 * the rows of one key together. The slots of all CPUs are one mmapable array, CPU c's bank b
 * at (2c + b) * FX_SLOTS, which the agent reads and zeroes in place.
 */
#define FX_SLOTS 512

/*
 * Aggregated reads and writes of one process on one file, pipe or socket (by inode),
 * between two flushes by the agent (every second): BackTracker's edge with its first
 * and last time. Reopening the same file does not make a new edge; an exec or a change
 * of uid does: the edge says which program moved the data, as whom.
 */
struct fx_flow_key {
	__u64 ino;
	__u32 dev;
	__u32 pid;
	__u32 exec_id;           /* the image (group leader's self_exec_id) */
	__u32 uid;               /* real uid, as fx_flow.uid */
	__u32 igen;              /* the inode's generation: a new file on a reused inode number is another edge */
	__u32 pad;
};

struct fx_flow {
	__u64 first, last;       /* boot ns */
	__u64 rcount, rbytes, wcount, wbytes;
	__u64 start;             /* the process's start_boottime */
	__u64 ino;
	__u32 dev, imode;
	__s32 fd;
	__u32 tid;
	__u32 uid;               /* real uid of the thread that first moved data on the edge */
	__u32 igen;              /* the inode's i_generation */
	char comm[16];           /* the process's name then: the pid may be another's by the flush */
};

/*
 * Re-opens of one file by one process with the same flags, between two flushes by the
 * agent (every second). The first open of a period is a full record; the repeats are
 * counted here and flushed as one summary row: causality kept, volume cut. (Opens that
 * truncate are facts of their own each time and never counted.)
 */
struct fx_open_key {
	__u64 ino;
	__u32 dev;
	__u32 pid;
	__u32 flags;
	__u32 exec_id;           /* the image: after an exec, the new program's opens are its own */
	__u64 start;             /* the process's start_boottime: a pid's next holder counts apart */
	__u32 uid, euid;         /* as whom: an open after a setuid is not a repeat of one before */
	__u32 igen;              /* the inode's generation: another file on a reused number is not a repeat */
	__u32 pad;
};

struct fx_open_rep {
	__u64 first, last;       /* boot ns of the first and latest repeat */
	__u64 count;             /* repeats not recorded one by one */
	char comm[16];           /* the process's name at its first open of the file */
};

/* A slot of the per-CPU caches (FX_SLOTS): empty while v.last (flows) or k.ino and
 * k.start (reopens) are 0. */
struct fx_flow_slot {
	struct fx_flow_key k;
	struct fx_flow v;
};

struct fx_open_slot {
	struct fx_open_key k;
	struct fx_open_rep v;
};

/*
 * A TCP connection's edge for its own process, counted by the kernel (FX_SOCK_COUNTERS): kept in
 * the socket's local storage from the first transfer of a process on it, which becomes its owner.
 * The owner's later transfers cost no edge work: the bytes it read and wrote are what the
 * connection's copied_seq and write_seq advanced by (the application's bytes, not the wire's), read
 * when the connection closes (inet_sock_set_state to TCP_CLOSE) and at the owner's first transfer
 * after each flush of the agent (FX_ACC_BANK counts the flushes); a transfer of another process on
 * it is counted per call as before and taken off the owner's share.
 */
struct fx_tcp_own {
	struct fx_flow v;        /* the owner's edge: process, thread, uid, name, descriptor, socket inode;
	                          * v.first: the start of the period not yet emitted */
	__u32 pid;
	__u32 exec_id;
	__u64 rseq, wseq;        /* copied_seq and write_seq (low 32 bits) up to which the owner's bytes
	                          * are emitted; 64 bits for the atomic adds of other processes' bytes */
	__u32 rsegs, wsegs;      /* data_segs_in / data_segs_out likewise */
	__u64 busy;              /* an emit in progress (a transfer and the close can meet) */
	__u64 gen;               /* the agent's flush (FX_ACC_BANK's count) of the latest emit */
};

/*
 * Records one process could not have kept, per CPU and class, between two accounting
 * passes of the agent (every second): the gap record names the process that caused it.
 * Keyed by CPU too, so that the rows of one CPU and class add up to its fx_counter.drops.
 */
struct fx_drop_key {
	__u64 start;             /* the process's start_boottime (with pid: its entity id) */
	__u32 pid;
	__u32 cls;               /* enum fx_class */
	__u32 cpu;
	__u32 pad;
};

struct fx_drop {
	__u64 count;
	__u64 first, last;       /* boot ns of the first and latest drop */
	char comm[16];           /* the process's name at its first drop */
};

/* Per CPU and class: records emitted or attempted, and how many were lost. */
struct fx_counter {
	__u64 seq;
	__u64 drops;
	__u64 first_drop;        /* boot ns of the first and latest drop */
	__u64 last_drop;
};

#endif /* FORENSIX_EVENTS_H */
