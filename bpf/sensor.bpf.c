// SPDX-License-Identifier: GPL-2.0
/*
 * forensix kernel sensor (CO-RE).
 *
 * Process lifecycle comes from the sched tracepoints (tp_btf: typed task_struct and
 * linux_binprm). Everything else comes from the per-syscall tracepoints, which cost
 * nothing for syscalls that are not hooked. Only the exits are hooked: one handler per
 * family reads the arguments from the registers saved at entry and the result, resolving
 * paths and sockets from the kernel objects the syscall actually used (Garfinkel's
 * "Traps and Pitfalls": the string a process passed is kept beside, never trusted).
 *
 * Loss is counted, never silent: every record has a per-CPU, per-class sequence number
 * that advances even when the ring is full, and a per-CPU drop counter per class.
 * Process lifecycle records have a ring of their own (rb_proc).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <asm/unistd_64.h>
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load (libbpf rodata). */
const volatile struct fx_config cfg = {};
/* Written by the agent: paused at the end (recording stops at once, detaching can take its
 * time), and the agent's tgid, which changes when a new agent adopts a pinned sensor. */
struct fx_control fx_ctl SEC(".data.control") = {};
#define fx_paused (fx_ctl.paused)

#define AT_FDCWD -100
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFIFO 0010000
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define EACCES 13
#define EPERM 1
#define EINPROGRESS 115
#define E2BIG 7
#define PF_KTHREAD 0x00200000
#define STR_AREA (FX_NSTR * FX_STR_MAX)
/* Keep clang from dropping a mask it can prove redundant: the verifier needs it. */
#define fx_opaque(v) asm volatile("" : "+r"(v))

struct fx_scratch {
	struct fx_event ev;
	char str[STR_AREA + FX_STR_MAX];
	__u32 off;
	__u32 wake_bytes[3];     /* fx_wake_flags: bytes this CPU wrote into each ring since it last looked */
	__u32 wake_mark[3];      /* and the sixteenth of that ring's fill it saw then */
	__u64 wake_ring[3];      /* the ring's size (fixed at load), once asked */
};

struct fx_pathbuf {
	char b[2 * FX_STR_MAX];
};

/* A syscall's number and raw arguments, as fx_take reads them at its exit. */
struct fx_call {
	__u64 args[6];
	__u32 nr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} rb_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20);
} rb_main SEC(".maps");

/* Network and the rare rest (mount, modules, bpf, ptrace, kill): a file storm, however
 * large, cannot push a port scan or a module load out of the record (LTTng channels). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} rb_net SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FX_CLASS_MAX);
	__type(key, __u32);
	__type(value, struct fx_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_scratch);
} scratch SEC(".maps");

/* Drops already written as gap records, per (cpu * FX_CLASS_MAX + class), and the time of
 * the agent's latest write (FX_ACC_LAST_WRITE): pinned with the rest, so that an agent
 * that adopts the sensor writes gaps for exactly the drops its predecessor did not. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FX_ACC_LAST_WRITE + 1);
	__type(key, __u32);
	__type(value, __u64);
} accounted SEC(".maps");

/* Who caused the drops: the agent takes and empties it every second. Full (more than
 * this many processes dropping within a second) only means a drop is counted without
 * its process: the per-CPU counters stay exact, and the agent writes the rest as a gap
 * of no named process. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fx_drop_key);
	__type(value, struct fx_drop);
} proc_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_pathbuf);
} pathbufs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fx_flow_key);
	__type(value, struct fx_flow);
} flows SEC(".maps");

/*
 * The heartbeat watch: a pinned sensor whose agent died keeps recording (the next agent
 * drains its rings), but not forever. Every orphan_ns / 4 this timer compares the agent's
 * latest heartbeat with the clock; past orphan_ns it sets FX_PAUSED_ORPHAN, and every
 * program returns at once on the `paused` word it reads anyway: nothing added to the hot
 * path. The agent that adopts the sensor clears it and writes the pause as a gap.
 * The timer lives in a map of its own (tracing programs may not use a map with a timer),
 * armed once by fx_heartbeat_arm (BPF_PROG_TEST_RUN) and pinned with the rest.
 */
struct fx_heartbeat_timer {
	struct bpf_timer t;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fx_heartbeat_timer);
} heartbeat_timer SEC(".maps");

#define FX_CLOCK_BOOTTIME 7
#define FX_SEC 1000000000ULL

static __always_inline __u64 fx_heartbeat_period(void)
{
	__u64 p = fx_ctl.orphan_ns / 4;
	if (p < FX_SEC / 10)
		p = FX_SEC / 10;
	if (p > 10 * FX_SEC)
		p = 10 * FX_SEC;
	return p;
}

static int fx_heartbeat_check(void *map, __u32 *key, struct fx_heartbeat_timer *v)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 hb = fx_ctl.heartbeat, limit = fx_ctl.orphan_ns;
	if (limit && hb && now > hb + limit && !(fx_ctl.paused & FX_PAUSED_ORPHAN)) {
		fx_ctl.orphaned_at = now;
		fx_ctl.paused |= FX_PAUSED_ORPHAN;  /* no agent is there to race with */
	}
	bpf_timer_start(&v->t, fx_heartbeat_period(), 0);
	return 0;
}

SEC("syscall")
int fx_heartbeat_arm(void *ctx)
{
	__u32 zero = 0;
	struct fx_heartbeat_timer *v = bpf_map_lookup_elem(&heartbeat_timer, &zero);
	if (!v)
		return 1;
	bpf_timer_init(&v->t, &heartbeat_timer, FX_CLOCK_BOOTTIME);  /* -EBUSY: armed already */
	bpf_timer_set_callback(&v->t, fx_heartbeat_check);
	return bpf_timer_start(&v->t, fx_heartbeat_period(), 0) ? 2 : 0;
}

/* Keep the ABI types in the object's BTF even where no code names them. */
const struct fx_event *fx_abi_event __attribute__((unused));
const struct fx_flow_key *fx_abi_flow_key __attribute__((unused));
const struct fx_flow *fx_abi_flow __attribute__((unused));
const struct fx_counter *fx_abi_counter __attribute__((unused));
const struct fx_drop_key *fx_abi_drop_key __attribute__((unused));
const struct fx_drop *fx_abi_drop __attribute__((unused));
const struct fx_control *fx_abi_control __attribute__((unused));
const struct fx_open_key *fx_abi_open_key __attribute__((unused));
const struct fx_open_rep *fx_abi_open_rep __attribute__((unused));
const enum fx_kind *fx_abi_kind __attribute__((unused));
const enum fx_str *fx_abi_str __attribute__((unused));
const enum fx_flags *fx_abi_flags __attribute__((unused));
const enum fx_class *fx_abi_class __attribute__((unused));

/*
 * A sensor that records one network namespace as a host of its own (forensix record
 * --netns): a task of any other namespace is not there at all, as if on another machine
 * (no record, no sequence number, no drop: its absence is not a loss). cfg.netns is
 * rodata: in the default sensor it is 0 and the verifier drops this branch.
 * A task without an nsproxy (past exit_task_namespaces) cannot be placed: not ours.
 */
static __always_inline bool fx_other_netns(struct task_struct *t)
{
	if (!cfg.netns)
		return false;
	struct nsproxy *nsp = BPF_CORE_READ(t, nsproxy);
	return !nsp || BPF_CORE_READ(nsp, net_ns, ns.inum) != cfg.netns;
}

static __always_inline bool fx_skip(void)
{
	/* cfg.netns tested first: the default sensor does not even fetch the task */
	return fx_paused || (bpf_get_current_pid_tgid() >> 32) == fx_ctl.agent_tgid ||
	       (cfg.netns && fx_other_netns(bpf_get_current_task_btf()));
}

/* The same for a task already at hand: a load instead of a helper call. */
static __always_inline bool fx_skip_task(struct task_struct *t)
{
	return fx_paused || t->tgid == fx_ctl.agent_tgid || fx_other_netns(t);
}

/* One more record of (process, class) lost on this CPU; the counter is updated first. */
static __always_inline void fx_drop_proc(__u32 cls, __u64 ts, __u32 pid, __u64 start, const char *comm)
{
	struct fx_drop_key k = {.start = start, .pid = pid, .cls = cls, .cpu = bpf_get_smp_processor_id()};
	struct fx_drop *d = bpf_map_lookup_elem(&proc_drops, &k);
	if (d) {
		d->last = ts;
		__sync_fetch_and_add(&d->count, 1);
		return;
	}
	struct fx_drop n = {.count = 1, .first = ts, .last = ts};
	__builtin_memcpy(n.comm, comm, sizeof(n.comm));
	if (bpf_map_update_elem(&proc_drops, &k, &n, BPF_NOEXIST)) {
		/* another program on this CPU made the entry in between: count there */
		d = bpf_map_lookup_elem(&proc_drops, &k);
		if (d)
			__sync_fetch_and_add(&d->count, 1);
	}
}

static __always_inline void fx_count_drop(__u32 cls, __u64 ts, struct task_struct *t)
{
	struct fx_counter *c = bpf_map_lookup_elem(&counters, &cls);
	if (!c)
		return;
	c->seq++;
	c->drops++;
	if (!c->first_drop)
		c->first_drop = ts;
	c->last_drop = ts;
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));
	fx_drop_proc(cls, ts, t->tgid, t->group_leader->start_boottime, comm);
}

static __always_inline struct fx_scratch *fx_begin(__u32 kind, __u32 cls)
{
	__u32 zero = 0;
	struct fx_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return NULL;
	struct fx_event *e = &s->ev;
	__builtin_memset(e, 0, sizeof(*e));
	/* typed loads, not probe reads: each BPF_CORE_READ hop is a helper call (~10 ns) and
	 * every record starts here */
	struct task_struct *t = bpf_get_current_task_btf();
	const struct cred *cred = t->cred;
	e->ts = bpf_ktime_get_boot_ns();
	e->kind = kind;
	e->cls = cls;
	e->cpu = bpf_get_smp_processor_id();
	e->pid = t->tgid;
	e->tid = t->pid;
	e->uid = cred->uid.val;
	e->gid = cred->gid.val;
	e->start = t->group_leader->start_boottime;
	e->ppid = t->real_parent->tgid;
	e->euid = cred->euid.val;
	e->egid = cred->egid.val;
	e->auid = t->loginuid.val;
	e->sessionid = t->sessionid;
	e->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	s->off = 0;
	return s;
}

/*
 * Flags 0: the kernel wakes a waiting agent only for a record written into an empty ring (the
 * consumer caught up), so an idle agent sleeps in epoll until something happens and a busy one
 * is never woken per record. Between drains a busy agent sleeps too, until its drain is due
 * (sensor/pacing.py Pacer.sleep_busy): a ring past a quarter, and past each further sixteenth,
 * forces a wake-up, so a storm is drained at once (a quarter full is when the agent drains
 * early) without the agent looking 20 times a second.
 *
 * The fill is looked at once per 1/1024 of the ring this CPU wrote, not per record (the ring's
 * size, fixed when the sensor is loaded, is asked once per CPU and kept): reading it
 * (bpf_ringbuf_query) takes the ring's producer and consumer positions, lines that the other
 * CPUs' records and the agent's drains keep moving, a miss each before the reservation takes
 * the producer's line again (~60-100 ns of a ~600-ns network record, bench.micro_attach
 * webconn). A CPU that sees the fill in a sixteenth from the quarter on that it did not see before
 * forces the wake-up: each CPU at most once per sixteenth while the ring fills, and the fill
 * is seen within 1/1024 of the ring per CPU writing (1/16 with 64 CPUs) of each boundary.
 */
static __always_inline __u64 fx_wake_flags(struct fx_scratch *s, int i, void *rb, __u64 size)
{
	i &= 3;
	if (i > 2)
		return 0;
	__u32 seen = s->wake_bytes[i] + size + 8; /* the record's 8-byte header */
	__u64 ring = s->wake_ring[i];
	if (!ring)
		ring = s->wake_ring[i] = bpf_ringbuf_query(rb, BPF_RB_RING_SIZE);
	if (seen < (ring >> 10)) {
		s->wake_bytes[i] = seen;
		return 0;
	}
	s->wake_bytes[i] = 0;
	__u64 step = ring / 16;
	__u64 after = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) + size + 8;
	__u32 mark = step ? after / step : 0, last = s->wake_mark[i];
	s->wake_mark[i] = mark;
	return mark >= 4 && mark != last ? BPF_RB_FORCE_WAKEUP : 0;
}

static __always_inline void fx_submit(struct fx_scratch *s)
{
	struct fx_event *e = &s->ev;
	__u32 cls = e->cls;
	struct fx_counter *c = bpf_map_lookup_elem(&counters, &cls);
	if (!c)
		return;
	e->seq = c->seq++;
	__u32 off = s->off;
	if (off > STR_AREA)
		off = STR_AREA;
	__u64 size = sizeof(*e) + off;
	long r;
	/* wake-ups: fx_wake_flags */
	if (cls == FX_CLASS_PROC)
		r = bpf_ringbuf_output(&rb_proc, e, size, fx_wake_flags(s, 0, &rb_proc, size));
	else if (cls == FX_CLASS_NET || cls == FX_CLASS_OTHER)
		r = bpf_ringbuf_output(&rb_net, e, size, fx_wake_flags(s, 1, &rb_net, size));
	else
		r = bpf_ringbuf_output(&rb_main, e, size, fx_wake_flags(s, 2, &rb_main, size));
	if (r) {
		c->drops++;
		if (!c->first_drop)
			c->first_drop = e->ts;
		c->last_drop = e->ts;
		fx_drop_proc(cls, e->ts, e->pid, e->start, e->comm);
	}
}

/* Strings are packed in index order: callers add s0, s1, s2, s3 in that order. */
static __always_inline void fx_str_user(struct fx_scratch *s, int i, const void *uptr)
{
	__u32 off = s->off;
	if (off >= STR_AREA || !uptr)
		return;
	long n = bpf_probe_read_user_str(&s->str[off & (STR_AREA - 1)], FX_STR_MAX, uptr);
	if (n <= 0)
		return;
	s->ev.slen[i & (FX_NSTR - 1)] = n;
	if (n >= FX_STR_MAX)
		s->ev.flags |= (FX_F_TRUNC0 << i);
	s->off = off + n;
}

static __always_inline void fx_str_kernel(struct fx_scratch *s, int i, const void *kptr)
{
	__u32 off = s->off;
	if (off >= STR_AREA || !kptr)
		return;
	long n = bpf_probe_read_kernel_str(&s->str[off & (STR_AREA - 1)], FX_STR_MAX, kptr);
	if (n <= 0)
		return;
	s->ev.slen[i & (FX_NSTR - 1)] = n;
	if (n >= FX_STR_MAX)
		s->ev.flags |= (FX_F_TRUNC0 << i);
	s->off = off + n;
}

/* Raw bytes of user memory (argv: NUL-separated), NUL-terminated here. */
static __always_inline void fx_bytes_user(struct fx_scratch *s, int i, const void *uptr, __u64 len)
{
	__u32 off = s->off;
	if (off >= STR_AREA || !uptr)
		return;
	if (len >= FX_STR_MAX) {
		len = FX_STR_MAX - 1;
		s->ev.flags |= (FX_F_TRUNC0 << i);
	}
	len &= (FX_STR_MAX - 1);
	if (bpf_probe_read_user(&s->str[off & (STR_AREA - 1)], len, uptr))
		return;
	s->str[(off + len) & (STR_AREA + FX_STR_MAX - 1)] = 0;
	s->ev.slen[i & (FX_NSTR - 1)] = len + 1;
	s->off = off + len + 1;
}

/*
 * Walk a dentry up to the root of the namespace, crossing mount points, writing the
 * path backwards into pathbufs->b[0..FX_STR_MAX). One bpf_loop step per component or
 * mount crossing, so the verifier checks the step once instead of every unrolled path.
 */
struct fx_walk {
	struct dentry *dentry;
	struct mount *mnt;
	int pos;
	int res;       /* bit 16: buffer full; bit 17: FX_PATH_DEPTH reached */
	int done;
};

static long fx_walk_step(__u32 i, struct fx_walk *w)
{
	__u32 zero = 0;
	struct fx_pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb)
		return 1;
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != root) {
			/* a pseudo file (memfd, anonymous inode): its own name is all there is */
			w->done = 2;
			w->dentry = dentry;
			return 1;
		}
		if (mnt == up) {
			w->done = 1;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	int pos = w->pos;
	if (pos < 0 || pos > FX_STR_MAX - 1)
		return 1;
	struct qstr q = BPF_CORE_READ(dentry, d_name);
	__u32 len = q.len & (FX_STR_MAX - 1);
	int npos = pos - (int)len - 1;
	if (npos < 0) {
		w->res |= 1 << 16;
		w->done = 1;
		return 1;
	}
	__u32 at = npos;
	fx_opaque(at);
	bpf_probe_read_kernel(&pb->b[(at + 1) & (FX_STR_MAX - 1)], len, q.name);
	fx_opaque(at);
	pb->b[at & (FX_STR_MAX - 1)] = '/';
	w->pos = npos;
	w->dentry = parent;
	return 0;
}

static __always_inline int fx_walk(struct dentry *dentry, struct vfsmount *vfsmnt, struct fx_pathbuf *pb)
{
	struct fx_walk w = {
		.dentry = dentry,
		.mnt = container_of(vfsmnt, struct mount, mnt),
		.pos = FX_STR_MAX - 1,
	};
	pb->b[FX_STR_MAX - 1] = 0;
	bpf_loop(FX_PATH_DEPTH, fx_walk_step, &w, 0);
	if (!w.done)
		w.res |= 1 << 17;
	int pos = w.pos;
	if (w.done == 2 && pos == FX_STR_MAX - 1) {
		struct dentry *pseudo = w.dentry;
		struct qstr q = BPF_CORE_READ(pseudo, d_name);
		__u32 len = q.len & (FX_STR_MAX / 2 - 1);
		if (len) {
			pos = FX_STR_MAX - 1 - (int)len - 1;
			__u32 at = pos;
			fx_opaque(at);
			bpf_probe_read_kernel(&pb->b[(at + 1) & (FX_STR_MAX - 1)], len, q.name);
			fx_opaque(at);
			pb->b[at & (FX_STR_MAX - 1)] = '/';
		}
	}
	if (pos < 1 || pos > FX_STR_MAX - 1)
		pos = FX_STR_MAX - 1;
	if (pos == FX_STR_MAX - 1) {
		pos = FX_STR_MAX - 2;
		pb->b[pos] = '/';
	}
	return w.res | pos;
}

static __always_inline void fx_str_path(struct fx_scratch *s, int i, struct dentry *d, struct vfsmount *m)
{
	__u32 zero = 0;
	struct fx_pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb || !d || !m)
		return;
	int r = fx_walk(d, m, pb);
	int pos = r & (FX_STR_MAX - 1);
	if (r & (1 << 16))
		s->ev.flags |= (FX_F_TRUNC0 << i);
	if (r & (1 << 17))
		s->ev.flags |= (i < 2 ? FX_F_DEPTH0 : FX_F_DEPTH1);
	__u32 n = FX_STR_MAX - pos;
	__u32 off = s->off;
	if (off >= STR_AREA || n > FX_STR_MAX)
		return;
	n &= (2 * FX_STR_MAX - 1);
	if (bpf_probe_read_kernel(&s->str[off & (STR_AREA - 1)], n, &pb->b[pos]))
		return;
	s->ev.slen[i & (FX_NSTR - 1)] = n;
	s->off = off + n;
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* f as a typed (read-only) pointer, wherever it came from: its fields are then single loads */
static __always_inline struct file *fx_typed_file(struct file *f)
{
	return bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
}


/*
 * The open file behind fd in task t, as a typed (read-only) pointer: the callers on
 * the hot path (every read and write) load its fields directly, each a single
 * instruction, instead of one bpf_probe_read_kernel call per field.
 *
 * The verifier allows no variable offset into a typed pointer, so the fd array slot
 * itself is read through a typed view of the slot's address: a struct kiocb placed so
 * that its member ki_filp (a struct file *) is the slot. A load through such an
 * untrusted pointer is as safe as a probe read (a fault reads 0) and saves a helper
 * call (~5 ns of the ~90 ns a read or write costs here).
 */
static __always_inline struct file *fx_task_fd_file(struct task_struct *t, int fd)
{
	struct fdtable *fdt = t->files->fdt;
	if (!fdt || fd < 0 || (__u32)fd >= fdt->max_fds)
		return NULL;
	unsigned long slot = (unsigned long)fdt->fd + (__u32)fd * sizeof(struct file *);
	struct kiocb *view = bpf_rdonly_cast((void *)(slot - bpf_core_field_offset(struct kiocb, ki_filp)),
					     bpf_core_type_id_kernel(struct kiocb));
	return view->ki_filp;
}

static __always_inline struct file *fx_fd_file(int fd)
{
	return fx_task_fd_file(bpf_get_current_task_btf(), fd);
}

static __always_inline void fx_sock(struct fx_scratch *s, struct file *f, int strslot)
{
	struct fx_event *e = &s->ev;
	struct socket *sock = bpf_rdonly_cast(fx_typed_file(f)->private_data, bpf_core_type_id_kernel(struct socket));
	struct sock *sk = sock->sk;
	if (!sk)
		return;
	__u16 fam = sk->__sk_common.skc_family;
	e->family = fam;
	e->sotype = sock->type;
	e->protocol = sk->sk_protocol;
	e->flags |= FX_F_SOCK;
	if (fam == AF_INET) {
		__u32 sa = sk->__sk_common.skc_rcv_saddr;
		__u32 da = sk->__sk_common.skc_daddr;
		__builtin_memcpy(e->saddr, &sa, 4);
		__builtin_memcpy(e->daddr, &da, 4);
	} else if (fam == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else if (fam == AF_UNIX) {
		struct unix_sock *u = (struct unix_sock *)sk;
		struct unix_address *ua = BPF_CORE_READ(u, addr);
		struct sock *peer = BPF_CORE_READ(u, peer);
		/* an unbound client: the address that matters is the one it connected to */
		if (!ua && peer)
			ua = BPF_CORE_READ((struct unix_sock *)peer, addr);
		if (peer) {
			struct socket *ps = BPF_CORE_READ(peer, sk_socket);
			if (ps)
				e->peer_ino = BPF_CORE_READ(container_of(ps, struct socket_alloc, socket), vfs_inode.i_ino);
		}
		if (ua && strslot >= 0)
			fx_str_kernel(s, strslot, &ua->name[0].sun_path[0]);
		return;
	}
	if (fam == AF_INET || fam == AF_INET6) {
		e->sport = sk->__sk_common.skc_num;
		e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	}
}

/* Inode number, device and mode of object k's file; returns the mode. */
static __always_inline __u16 fx_inode(struct fx_event *e, int k, struct file *f)
{
	f = fx_typed_file(f);
	struct inode *ino = f->f_inode;
	__u16 mode = ino->i_mode;
	e->ino[k & 1] = ino->i_ino;
	e->dev[k & 1] = ino->i_sb->s_dev;
	e->imode[k & 1] = mode;
	e->igen[k & 1] = ino->i_generation;
	return mode;
}

/* Object i (0 or 1) is an open file: inode, device, type, kernel path (or socket). */
static __always_inline void fx_file(struct fx_scratch *s, int obj, struct file *f)
{
	if (!f)
		return;
	__u16 mode = fx_inode(&s->ev, obj, f);
	/* no name left: unlinked while open, a memfd, an O_TMPFILE (what runs from a deleted
	 * binary, or from memory, is exec'd through such a file) */
	struct file *tf = fx_typed_file(f);
	if (!obj && !tf->f_inode->i_nlink)
		s->ev.flags |= FX_F_DELETED0;
	if ((mode & S_IFMT) == S_IFSOCK) {
		fx_sock(s, f, obj ? FX_S_PATH1 : FX_S_PATH0);
		return;
	}
	fx_str_path(s, obj ? FX_S_PATH1 : FX_S_PATH0, tf->f_path.dentry, tf->f_path.mnt);
}

/*
 * Object i named by (dirfd, user path) that no longer has, or never had, an open file:
 * record the kernel-resolved base the kernel used (the task's root for an absolute
 * path, its cwd for AT_FDCWD, the directory dirfd refers to otherwise) and the string.
 */
static __always_inline void fx_named(struct fx_scratch *s, int obj, long dirfd, const char *upath)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	int pslot = obj ? FX_S_PATH1 : FX_S_PATH0;
	char c = 0;
	if (!upath)
		return;
	bpf_probe_read_user(&c, 1, upath);
	if (c == '/') {
		fx_str_path(s, pslot, BPF_CORE_READ(t, fs, root.dentry), BPF_CORE_READ(t, fs, root.mnt));
	} else if ((int)dirfd == AT_FDCWD) {
		fx_str_path(s, pslot, BPF_CORE_READ(t, fs, pwd.dentry), BPF_CORE_READ(t, fs, pwd.mnt));
	} else {
		struct file *f = fx_fd_file((int)dirfd);
		if (f)
			fx_str_path(s, pslot, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt));
	}
	s->ev.flags |= obj ? FX_F_BASE1 : FX_F_BASE0;
	fx_str_user(s, obj ? FX_S_RAW1 : FX_S_RAW0, upath);
}

static __always_inline void fx_task_extra(struct fx_event *e, struct task_struct *t)
{
	e->ns_mnt = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	e->ns_pid = BPF_CORE_READ(t, nsproxy, pid_ns_for_children, ns.inum);
	e->ns_net = BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
	e->ns_uts = BPF_CORE_READ(t, nsproxy, uts_ns, ns.inum);
	e->ns_user = BPF_CORE_READ(t, cred, user_ns, ns.inum);
	struct tty_struct *tty = BPF_CORE_READ(t, signal, tty);
	if (tty)
		BPF_CORE_READ_STR_INTO(&e->tty, tty, name);
}

/*
 * The number and arguments of the syscall this thread is leaving. No entry program is
 * needed: on x86_64 the user registers saved at syscall entry (di, si, dx, r10, r8, r9)
 * are still in the task's pt_regs at sys_exit; a syscall writes only ax. (execve
 * replaces them, but only when it succeeds, and a successful exec is recorded by
 * sched_process_exec.) A tracer changes them at its syscall-entry stop, before the
 * syscall reads them, so they are what the syscall used.
 */
static __always_inline bool fx_take_task(struct task_struct *t, struct fx_call *out, long id)
{
#ifdef FX_FLOOR
	return false; /* the floor build (make -C bpf floor): every syscall handler returns at once */
#endif
	if (fx_skip_task(t))
		return false;
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(t);
	out->nr = (__u32)(int)id; /* __syscall_nr is an int; the upper half is padding */
	out->pad = 0;
	out->args[0] = r->di;
	out->args[1] = r->si;
	out->args[2] = r->dx;
	out->args[3] = r->r10;
	out->args[4] = r->r8;
	out->args[5] = r->r9;
	return true;
}

static __always_inline bool fx_take(struct fx_call *out, long id)
{
	return fx_take_task(bpf_get_current_task_btf(), out, id);
}

static __always_inline struct fx_scratch *fx_sys(struct fx_call *c, long ret, __u32 cls)
{
	struct fx_scratch *s = fx_begin(FX_KIND_SYSCALL, cls);
	if (!s)
		return NULL;
	s->ev.nr = c->nr;
	s->ev.ret = ret;
#pragma unroll
	for (int i = 0; i < 6; i++)
		s->ev.args[i] = c->args[i];
	return s;
}

#ifdef FX_FLOOR
/* For measuring the floor of an entry+exit design: attach it to the sys_enter tracepoints. */
SEC("tracepoint")
int fx_nop(void *ctx)
{
	return 0;
}
#endif

/* ---- process lifecycle -------------------------------------------------------- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fx_fork, struct task_struct *parent, struct task_struct *child)
{
	/* no agent filter here: the command `forensix record -- CMD` starts is recorded */
	if (fx_paused || fx_other_netns(child))
		return 0;
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a thread, not a process */
	struct fx_scratch *s = fx_begin(FX_KIND_FORK, FX_CLASS_PROC);
	if (!s)
		return 0;
	s->ev.tpid = BPF_CORE_READ(child, tgid);
	s->ev.tstart = BPF_CORE_READ(child, start_boottime);
	s->ev.args[0] = BPF_CORE_READ(child, flags);
	fx_task_extra(&s->ev, child);
	fx_submit(s);
	return 0;
}

/* An exec record from the new image: the file the kernel runs, argv, cwd, the name as passed. */
static __always_inline void fx_exec_record(struct task_struct *p, struct file *exe, const char *filename,
					   int old_pid)
{
	struct fx_scratch *s = fx_begin(FX_KIND_EXEC, FX_CLASS_PROC);
	if (!s)
		return;
	struct fx_event *e = &s->ev;
	e->args[0] = old_pid;
	fx_task_extra(e, p);
	fx_file(s, 0, exe);                                        /* s0: the executable */
	unsigned long as = BPF_CORE_READ(p, mm, arg_start);
	unsigned long ae = BPF_CORE_READ(p, mm, arg_end);
	if (ae > as)
		fx_bytes_user(s, 1, (void *)as, ae - as);         /* s1: argv */
	fx_str_path(s, 2, BPF_CORE_READ(p, fs, pwd.dentry), BPF_CORE_READ(p, fs, pwd.mnt)); /* s2: cwd */
	fx_str_kernel(s, 3, filename);                             /* s3: as passed */
	fx_submit(s);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(fx_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (fx_skip())
		return 0;
	fx_exec_record(p, BPF_CORE_READ(bprm, file), BPF_CORE_READ(bprm, filename), old_pid);
	return 0;
}

static __always_inline void fx_exit_record(struct task_struct *p)
{
	struct fx_scratch *s = fx_begin(FX_KIND_EXIT, FX_CLASS_PROC);
	if (!s)
		return;
	s->ev.ret = BPF_CORE_READ(p, exit_code);
	s->ev.args[0] = BPF_CORE_READ(p, signal, group_exit_code);
	fx_submit(s);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(fx_exit, struct task_struct *p, bool group_dead)
{
	if (!group_dead || fx_skip())
		return 0;
	fx_exit_record(p);
	return 0;
}

/*
 * The same three from classic tracepoints, for kernels that refuse tp_btf (some
 * lockdown configurations). Always loaded; attached only when the typed ones cannot
 * be. Exec reads the executable from mm->exe_file instead of the binprm; the fork
 * record is written by the child on its first return from clone/fork/vfork, since the
 * classic fork tracepoint gives pids but not the child's start time.
 */
SEC("tracepoint/sched/sched_process_exec")
int fx_exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	if (fx_skip())
		return 0;
	struct task_struct *p = (struct task_struct *)bpf_get_current_task();
	unsigned int loc = ctx->__data_loc_filename & 0xFFFF;
	fx_exec_record(p, BPF_CORE_READ(p, mm, exe_file), (const char *)((unsigned long)ctx + loc), ctx->old_pid);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int fx_exit_tp(struct trace_event_raw_sched_process_exit *ctx)
{
	if (!ctx->group_dead || fx_skip())
		return 0;
	fx_exit_record((struct task_struct *)bpf_get_current_task());
	return 0;
}

SEC("tracepoint")
int fx_fork_child(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret != 0 || fx_paused)
		return 0; /* the parent's return, or paused */
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (fx_other_netns(t))
		return 0;
	if (BPF_CORE_READ(t, pid) != BPF_CORE_READ(t, tgid))
		return 0; /* a thread, not a process */
	struct fx_scratch *s = fx_begin(FX_KIND_FORK, FX_CLASS_PROC);
	if (!s)
		return 0;
	/* fx_begin described the child: the record is the parent's, the child its target */
	struct fx_event *e = &s->ev;
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	e->tpid = e->pid;
	e->tstart = e->start;
	e->pid = BPF_CORE_READ(parent, tgid);
	e->tid = e->pid;
	e->start = BPF_CORE_READ(parent, group_leader, start_boottime);
	e->ppid = BPF_CORE_READ(parent, real_parent, tgid);
	e->args[0] = BPF_CORE_READ(t, flags);
	fx_task_extra(e, t);
	fx_submit(s);
	return 0;
}

/* ---- syscalls ------------------------------------------------------------------- */

/*
 * The slot caches (events.h, FX_SLOTS). A flow or reopens hash lookup costs a read or write
 * here ~100 ns, most of it the bucket walk's cache misses (perf, bench/notes.md); a process
 * that moves data on the same few objects finds its edge in this CPU's slot instead: an
 * inlined array lookup, a compare and plain adds (a program runs to its end on one CPU,
 * and `slot_busy` sends one that starts while another holds this CPU's slots, preempted
 * or interrupted, to the hash map). A slot taken by another key goes into the hash map
 * (what every call did before), and the agent takes the bank it is not filling.
 */
/*
 * One plain array for all CPUs, CPU c's bank b at slots (2c + b) * FX_SLOTS on (the loader sets
 * max_entries to 2 * FX_SLOTS times the possible CPUs), mmapable: the agent reads and zeroes the
 * bank it takes in place, with no bpf() call. As a PERCPU_ARRAY each flush cost a batch lookup and
 * a batch update of every slot of every CPU (~0.4 ms of syscalls, the copies' page faults and
 * numpy's work on them ~1 ms more) whatever the slots held. Only this CPU's slots are touched by
 * a program (it runs to its end on one CPU, and `slot_busy` keeps out another one on it), as
 * with the per-CPU values; a CPU's slots are 139 KB (flows) apart from the next CPU's.
 */
#ifndef FX_PERCPU_SLOTS
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2 * FX_SLOTS);
	__type(key, __u32);
	__type(value, struct fx_flow_slot);
} flow_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2 * FX_SLOTS);
	__type(key, __u32);
	__type(value, struct fx_open_slot);
} open_slots SEC(".maps");
#define FX_SLOT_CPU_BASE (bpf_get_smp_processor_id() * 2)
#else
/* The layout before (`make -C bpf percpu`, never loaded by forensix itself): what an agent of this
 * tree finds when it adopts a sensor pinned by an older one (tests/sensor/test_slot_upgrade.py). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FX_SLOTS);
	__type(key, __u32);
	__type(value, struct fx_flow_slot);
} flow_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FX_SLOTS);
	__type(key, __u32);
	__type(value, struct fx_open_slot);
} open_slots SEC(".maps");
#define FX_SLOT_CPU_BASE 0
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} slot_busy SEC(".maps");

/*
 * Where an edge pushed out of its slot goes first: a ring that only the agent's flush reads
 * (records are struct fx_flow_slot, nothing else), added to the slots' rows by key and process
 * as a slot is. A copy here instead of an insert into the flows hash map: the insert (bucket
 * lock, a preallocated element, all of it cold) was ~500 of the ~650 ns a new edge cost under
 * load (bench.micro_edges), and a server with a connection per request makes two new edges a
 * request. A full spill sends the edge to the hash map, as before: nothing is dropped here.
 */
#define FX_SPILL_BYTES (8 << 20)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FX_SPILL_BYTES);
} flow_spill SEC(".maps");

const struct fx_flow_slot *fx_abi_flow_slot __attribute__((unused));
const struct fx_open_slot *fx_abi_open_slot __attribute__((unused));

/* log2(FX_SLOTS): the hash's top bits that pick a slot pair */
#define FX_SLOT_BITS 9
_Static_assert((1 << FX_SLOT_BITS) == FX_SLOTS, "FX_SLOT_BITS is log2(FX_SLOTS)");

/* The first of the two slots key h may sit in, in this CPU's bank the agent is not reading. The top
 * FX_SLOT_BITS bits of the product, the lowest cleared: every one of the FX_SLOTS / 2 pairs
 * (a shift of 56 took 8 bits, of which the mask kept 7: half the pairs were never used, and
 * the keys of a busy server crowded into the other half and out to the hash maps). */
static __always_inline __u32 fx_slot_index(__u64 h)
{
	__u32 key = FX_ACC_BANK;
	__u64 *bank = bpf_map_lookup_elem(&accounted, &key);
	__u32 b = bank ? (*bank & 1) : 0;
	return (FX_SLOT_CPU_BASE + b) * FX_SLOTS +
	       (((h * 0x9E3779B97F4A7C15ULL) >> (64 - FX_SLOT_BITS)) & (FX_SLOTS - 2));
}

/* This CPU's slots are ours until fx_slots_done (NULL: a program is inside another). */
static __always_inline __u32 *fx_slots_take(void)
{
	__u32 zero = 0;
	__u32 *busy = bpf_map_lookup_elem(&slot_busy, &zero);
	if (!busy || *busy)
		return NULL;
	*busy = 1;
	return busy;
}

static __always_inline bool fx_flow_key_eq(const struct fx_flow_key *a, const struct fx_flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline bool fx_open_key_eq(const struct fx_open_key *a, const struct fx_open_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5];
}

/* A record of (process, class) this sensor could not keep, named after the edge's process. */
static __always_inline void fx_count_drop_of(__u32 cls, __u64 ts, __u32 pid, __u64 start, const char *comm)
{
	struct fx_counter *c = bpf_map_lookup_elem(&counters, &cls);
	if (!c)
		return;
	c->seq++;
	c->drops++;
	if (!c->first_drop)
		c->first_drop = ts;
	c->last_drop = ts;
	fx_drop_proc(cls, ts, pid, start, comm);
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fx_open_key);
	__type(value, struct fx_open_rep);
} reopens SEC(".maps");

#define O_CREAT 0100
#define O_EXCL 0200
#define O_TRUNC 01000

/*
 * An open of a file this process already opened with the same flags since the last
 * flush is counted, not recorded again (a web server opens the same page for every
 * request; a storm opens one file a million times): the first open of the period is
 * the fact, the repeats a count with their first and last time. Returns true when the
 * open was absorbed. Never absorbed: an open that truncates (each one destroys what
 * was written since) and an exclusive create (it cannot repeat, so it takes no slot).
 * A full map only means the open is recorded in full.
 */
/* One insert into the flows or reopens hash map (FX_ACC_*_INSERTS): after the insert, so that an
 * agent that read the count before walking the map either finds the entry or sees the count move
 * and walks again at its next flush. */
static __always_inline void fx_count_insert(__u32 key)
{
	__u64 *n = bpf_map_lookup_elem(&accounted, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Add a slot's repeats (a slot given up) to the file's entry in the reopens hash map. */
static __always_inline void fx_reopen_merge(struct fx_open_key *k, struct fx_open_rep *s)
{
	if (!s->count)
		return; /* the open itself is recorded, and its entry made, when the slot is taken */
	struct fx_open_rep *v = bpf_map_lookup_elem(&reopens, k);
	if (!v) {
		/* only if the agent took the map within this bank's period, which it does not */
		if (bpf_map_update_elem(&reopens, k, s, BPF_NOEXIST))
			fx_count_drop_of(FX_CLASS_FILE, s->last, k->pid, k->start, s->comm);
		else
			fx_count_insert(FX_ACC_OPEN_INSERTS);
		return;
	}
	if (!v->count || s->first < v->first)
		v->first = s->first;
	if (s->last > v->last)
		v->last = s->last;
	__sync_fetch_and_add(&v->count, s->count);
}

static __always_inline bool fx_reopen(struct task_struct *t, struct file *f, __u64 flags)
{
	if ((flags & O_TRUNC) || ((flags & O_CREAT) && (flags & O_EXCL)) || !f)
		return false;
	struct inode *ino = f->f_inode;
	/* keyed by the process, not the pid: a process that takes a pid before the flush
	 * counts apart, and the repeats of the pid's previous holder are flushed, not lost */
	/* nor the image or the user: a program exec'd in the process, or the process after a
	 * setuid, that opens the file again is recorded in full (its rules see it), not counted
	 * under the image or user that opened it first */
	const struct cred *cred = t->cred;
	struct fx_open_key k = {
		.ino = ino->i_ino,
		.dev = ino->i_sb->s_dev,
		.pid = t->tgid,
		.flags = (__u32)flags,
		.exec_id = (__u32)t->group_leader->self_exec_id,
		.start = t->group_leader->start_boottime,
		.uid = cred->uid.val,
		.euid = cred->euid.val,
		.igen = ino->i_generation,
	};
	__u64 now = bpf_ktime_get_boot_ns();
	struct fx_open_slot *a = NULL, *b = NULL, *s = NULL;
	__u32 *busy = fx_slots_take();
	if (busy) {
		__u32 i = fx_slot_index(k.ino ^ ((__u64)k.pid << 32) ^ k.dev ^ ((__u64)k.flags << 40));
		a = bpf_map_lookup_elem(&open_slots, &i);
		i ^= 1;
		b = bpf_map_lookup_elem(&open_slots, &i);
		if (!a || !b) {
			*busy = 0;
			busy = NULL;
		} else if (fx_open_key_eq(&a->k, &k)) {
			s = a;
		} else if (fx_open_key_eq(&b->k, &k)) {
			s = b;
		}
		if (s) {
			if (!s->v.count)
				s->v.first = now;
			s->v.last = now;
			s->v.count++;
			*busy = 0;
			return true;
		}
	}
	struct fx_open_rep *v = bpf_map_lookup_elem(&reopens, &k);
	bool repeat = v != NULL;
	if (v) {
		if (!busy) {
			if (!v->count)
				v->first = now;
			v->last = now;
			__sync_fetch_and_add(&v->count, 1);
			return true;
		}
	} else {
		struct fx_open_rep n = {};
		bpf_get_current_comm(n.comm, sizeof(n.comm)); /* the summary row's name, whoever has the pid by then */
		/* a full map: the open is recorded in full, and so is every later one */
		long r = bpf_map_update_elem(&reopens, &k, &n, BPF_ANY);
		if (!r)
			fx_count_insert(FX_ACC_OPEN_INSERTS);
		if (r || !busy) {
			if (busy)
				*busy = 0;
			return false;
		}
	}
	if (!busy || !a || !b)
		return repeat;
	/* the file's repeats from now on go to a slot: the empty one, or the one used longest ago */
	s = !a->k.start ? a : !b->k.start ? b : a->v.last < b->v.last ? a : b;
	fx_reopen_merge(&s->k, &s->v);
	s->k = k;
	s->v.first = now;
	s->v.last = now;
	s->v.count = repeat ? 1 : 0;
	bpf_get_current_comm(s->v.comm, sizeof(s->v.comm));
	*busy = 0;
	return repeat;
}

SEC("tracepoint")
int fx_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	struct task_struct *t = bpf_get_current_task_btf();
	long ret = ctx->ret;
	if (ret < 0 && ret != -EACCES && ret != -EPERM)
		return 0; /* probing for files that do not exist is noise */
	if (!fx_take_task(t, &c, ctx->id))
		return 0;
	struct file *f = ret >= 0 ? fx_task_fd_file(t, ret) : NULL;
	__u64 flags = c.nr == __NR_openat ? c.args[2] : c.nr == __NR_open ? c.args[1] : 01101;
	if (c.nr != __NR_openat2 && !cfg.every_open && fx_reopen(t, f, flags))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ret, FX_CLASS_FILE);
	if (!s)
		return 0;
	long dirfd = AT_FDCWD;
	const char *upath = (const char *)c.args[0];
	if (c.nr == __NR_openat || c.nr == __NR_openat2) {
		dirfd = c.args[0];
		upath = (const char *)c.args[1];
	}
	if (c.nr == __NR_openat2) {
		struct open_how how = {};
		bpf_probe_read_user(&how, sizeof(how), (void *)c.args[2]);
		s->ev.args[2] = how.flags;
		s->ev.args[3] = how.mode;
	}
	if (ret >= 0) {
		fx_file(s, 0, f);
		fx_str_user(s, FX_S_RAW0, upath);
	} else {
		fx_named(s, 0, dirfd, upath);
	}
	fx_submit(s);
	return 0;
}

/*
 * New times given to utime(s)/utimensat/futimesat, as args[4] (atime) and args[5] (mtime)
 * in epoch ns: 0 for "now" (a NULL times pointer or UTIME_NOW), ~0 for UTIME_OMIT.
 * Timestomping shows as a time set into the past. The epoch itself (touch -t 197001010000,
 * as Atomic Red Team's T1070.006 does) is given as 1 ns, so it does not read as "now".
 */
static __always_inline void fx_times(struct fx_scratch *s, struct fx_call *c)
{
	const void *tp = (const void *)(c->nr == __NR_utimensat || c->nr == __NR_futimesat ? c->args[2] : c->args[1]);
	__s64 t[4] = {};
	/* args[4..5] hold whatever the registers held past the call's own arguments: a NULL
	 * times pointer (touch on an existing file, os.utime(p), futimens(fd, NULL)) is "now" */
	s->ev.args[4] = 0;
	s->ev.args[5] = 0;
	if (!tp)
		return;
	if (c->nr == __NR_utime) {
		bpf_probe_read_user(t, 16, tp);
		s->ev.args[4] = t[0] ? t[0] * 1000000000ULL : 1;
		s->ev.args[5] = t[1] ? t[1] * 1000000000ULL : 1;
		return;
	}
	bpf_probe_read_user(t, sizeof(t), tp);
	__u64 mul = c->nr == __NR_utimensat ? 1 : 1000; /* timespec ns, or timeval us */
	for (int i = 0; i < 2; i++) {
		__s64 sec = t[2 * i], frac = t[2 * i + 1];
		__u64 v;
		if (c->nr == __NR_utimensat && frac == ((1 << 30) - 1))
			v = 0;
		else if (c->nr == __NR_utimensat && frac == ((1 << 30) - 2))
			v = ~0ULL;
		else
			v = sec * 1000000000ULL + frac * mul;
		if (v == 0 && !(c->nr == __NR_utimensat && frac == ((1 << 30) - 1)))
			v = 1; /* the epoch, not "now" */
		s->ev.args[4 + i] = v;
	}
}

/* One path argument: unlink, rmdir, mkdir, chmod, chown, truncate, utimes, xattrs, chroot... */
SEC("tracepoint")
int fx_exit_path(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_FILE);
	if (!s)
		return 0;
	if (c.nr == __NR_utimensat || c.nr == __NR_utimes || c.nr == __NR_futimesat || c.nr == __NR_utime)
		fx_times(s, &c);
	switch (c.nr) {
	case __NR_unlinkat:
	case __NR_mkdirat:
	case __NR_fchmodat:
#ifdef __NR_fchmodat2
	case __NR_fchmodat2:
#endif
	case __NR_fchownat:
	case __NR_futimesat:
	case __NR_mknodat:
		fx_named(s, 0, c.args[0], (const char *)c.args[1]);
		break;
	case __NR_chroot:
		if (ctx->ret == 0) { /* the new root is the kernel's resolution of the argument */
			struct task_struct *t = (struct task_struct *)bpf_get_current_task();
			fx_str_path(s, FX_S_PATH0, BPF_CORE_READ(t, fs, root.dentry), BPF_CORE_READ(t, fs, root.mnt));
			fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);
		} else {
			fx_named(s, 0, AT_FDCWD, (const char *)c.args[0]);
		}
		break;
	case __NR_utimensat:
		if (c.args[1])
			fx_named(s, 0, c.args[0], (const char *)c.args[1]);
		else
			fx_file(s, 0, fx_fd_file(c.args[0]));
		break;
	default:
		fx_named(s, 0, AT_FDCWD, (const char *)c.args[0]);
	}
	fx_submit(s);
	return 0;
}

/* One descriptor: fchmod, fchown, ftruncate, fsetxattr, finit_module, setns, fchdir... */
SEC("tracepoint")
int fx_exit_fd(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	__u32 cls = (c.nr == __NR_finit_module || c.nr == __NR_setns) ? FX_CLASS_OTHER : FX_CLASS_FILE;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, cls);
	if (!s)
		return 0;
	fx_file(s, 0, fx_fd_file(c.args[0]));
	if (c.nr == __NR_finit_module)
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[1]); /* module parameters */
	fx_submit(s);
	return 0;
}

/* Two names: rename, link, symlink (whose first argument is text, not a path). */
SEC("tracepoint")
int fx_exit_path2(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_FILE);
	if (!s)
		return 0;
	switch (c.nr) {
	case __NR_renameat:
	case __NR_renameat2:
	case __NR_linkat:
		fx_named(s, 0, c.args[0], (const char *)c.args[1]);
		fx_named(s, 1, c.args[2], (const char *)c.args[3]);
		break;
	case __NR_symlink:
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);
		fx_named(s, 1, AT_FDCWD, (const char *)c.args[1]);
		break;
	case __NR_symlinkat:
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);
		fx_named(s, 1, c.args[1], (const char *)c.args[2]);
		break;
	case __NR_pivot_root:
	default: /* rename, link */
		fx_named(s, 0, AT_FDCWD, (const char *)c.args[0]);
		fx_named(s, 1, AT_FDCWD, (const char *)c.args[1]);
	}
	fx_submit(s);
	return 0;
}

SEC("tracepoint")
int fx_exit_mount(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_OTHER);
	if (!s)
		return 0;
	if (c.nr == __NR_mount) {
		fx_str_user(s, FX_S_PATH0, (const char *)c.args[2]);  /* filesystem type */
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);   /* source */
		fx_named(s, 1, AT_FDCWD, (const char *)c.args[1]);    /* mount point */
	} else { /* umount2 */
		fx_named(s, 0, AT_FDCWD, (const char *)c.args[0]);
	}
	fx_submit(s);
	return 0;
}

/*
 * A process maps each shared library four or five times (whole, then one mapping per
 * segment). What the evidence needs is that this process mapped this file, and with
 * which of read, write-shared and exec: a mapping that adds none of those to what
 * this process already mapped of the file is not recorded again. LRU: an evicted
 * entry only means the next mapping is recorded again.
 */
struct fx_mapkey {
	__u64 ino;
	__u32 dev;
	__u32 pid;
	__u32 igen;  /* another file on a reused inode number is mapped afresh */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fx_mapkey);
	__type(value, __u32);
} mapped SEC(".maps");

#define MAP_SHARED 0x01
static __always_inline bool fx_mapped_before(struct file *f, __u64 prot, __u64 flags)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fx_mapkey k = {
		.ino = BPF_CORE_READ(f, f_inode, i_ino),
		.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev),
		.pid = bpf_get_current_pid_tgid() >> 32,
		.igen = BPF_CORE_READ(f, f_inode, i_generation),
	};
	/* PROT_WRITE of a private mapping writes a copy in memory, never the file (ld.so maps
	 * each library's data segment so): the rights over the file are read and exec, and
	 * write only through a shared mapping */
	__u32 bits = (prot & 5) | ((flags & MAP_SHARED) && (prot & 2) ? 2 : 0);
	/* another process with the same pid, or this one after an exec, starts afresh */
	__u32 gen = (__u32)((BPF_CORE_READ(t, group_leader, start_boottime) >> 20) ^
			    ((__u64)BPF_CORE_READ(t, group_leader, self_exec_id) << 12)) << 4;
	__u32 *seen = bpf_map_lookup_elem(&mapped, &k);
	if (seen && (*seen & ~0xfu) == gen && (*seen & bits) == bits)
		return true;
	__u32 v = gen | bits | (seen && (*seen & ~0xfu) == gen ? (*seen & 0xf) : 0);
	bpf_map_update_elem(&mapped, &k, &v, BPF_ANY);
	return false;
}

SEC("tracepoint")
int fx_exit_mmap(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	__u64 prot = c.args[2];
	if (c.nr == __NR_mprotect) {
		if (!(prot & PROT_EXEC))
			return 0;
	} else if ((c.args[3] & MAP_ANONYMOUS) && !(prot & PROT_EXEC)) {
		return 0;
	}
	if (ctx->ret < 0 && ctx->ret > -4096)
		return 0;
	struct file *f = NULL;
	if (c.nr == __NR_mmap && !(c.args[3] & MAP_ANONYMOUS)) {
		f = fx_fd_file(c.args[4]);
		if (f && fx_mapped_before(f, prot, c.args[3]))
			return 0;
	}
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_FILE);
	if (!s)
		return 0;
	if (f)
		fx_file(s, 0, f);
	fx_submit(s);
	return 0;
}

SEC("tracepoint")
int fx_exit_memfd(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_FILE);
	if (!s)
		return 0;
	if (ctx->ret >= 0)
		fx_file(s, 0, fx_fd_file(ctx->ret));
	fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);
	fx_submit(s);
	return 0;
}

/*
 * A refused connect leaves the socket without its peer (tcp_disconnect clears the port):
 * the port a scan tried is then the one the process passed. Marked, since it is the
 * process's word, not the kernel's.
 */
static __always_inline void fx_connect_tried(struct fx_event *e, const void *uaddr, __u64 len)
{
	if (e->dport || (e->family != AF_INET && e->family != AF_INET6) || !uaddr)
		return;
	struct { __u16 family; __u16 port; __u32 v4; __u32 flow; __u8 v6[16]; } a = {};
	if (bpf_probe_read_user(&a, len < sizeof(a) ? 8 : sizeof(a), uaddr) || a.family != e->family)
		return;
	e->dport = bpf_ntohs(a.port);
	if (a.family == AF_INET)
		__builtin_memcpy(e->daddr, &a.v4, 4);
	else
		__builtin_memcpy(e->daddr, a.v6, 16);
	e->flags |= FX_F_UADDR;
}

SEC("tracepoint")
int fx_exit_sock(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret, nr = ctx->id;
	bool accept = nr == __NR_accept || nr == __NR_accept4;
	/* what makes no record is told from the tracepoint alone, before the registers are copied:
	 * a non-blocking server's accept loop ends with an EAGAIN at every wake-up (nginx: about
	 * one a connection); a failed connect is a record (a port scan's refusals) */
	if (ret < 0 && (accept || (ret != -EINPROGRESS && nr != __NR_connect)))
		return 0;
	struct fx_call c;
	if (!fx_take(&c, nr)) /* also an accept already waiting when recording began */
		return 0;
	int fd = accept ? ret : c.args[0];
	struct fx_scratch *s = fx_sys(&c, ret, FX_CLASS_NET);
	if (!s)
		return 0;
	fx_file(s, 0, fx_fd_file(fd));
	if (c.nr == __NR_connect && ret < 0 && ret != -EINPROGRESS)
		fx_connect_tried(&s->ev, (const void *)c.args[1], c.args[2]);
	fx_submit(s);
	return 0;
}

/* pipe, pipe2, socketpair: two descriptors that link processes. */
SEC("tracepoint")
int fx_exit_pipe(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id) || ctx->ret < 0)
		return 0;
	int fds[2] = {-1, -1};
	void *uptr = (void *)(c.nr == __NR_socketpair ? c.args[3] : c.args[0]);
	bpf_probe_read_user(fds, sizeof(fds), uptr);
	struct fx_scratch *s = fx_sys(&c, ctx->ret, c.nr == __NR_socketpair ? FX_CLASS_NET : FX_CLASS_FILE);
	if (!s)
		return 0;
	s->ev.args[4] = fds[0];
	s->ev.args[5] = fds[1];
	struct file *f0 = fx_fd_file(fds[0]);
	struct file *f1 = fx_fd_file(fds[1]);
	if (f0)
		fx_inode(&s->ev, 0, f0);
	if (f1)
		fx_inode(&s->ev, 1, f1);
	fx_submit(s);
	return 0;
}

/* Credentials after setuid & co: the record carries the new ids. */
SEC("tracepoint")
int fx_exit_cred(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	struct fx_scratch *s = fx_sys(&c, ctx->ret, FX_CLASS_PROC);
	if (!s)
		return 0;
	fx_submit(s);
	return 0;
}

/* kill, tkill, tgkill, ptrace, bpf, init/delete_module, unshare, execve failures. */
SEC("tracepoint")
int fx_exit_other(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	if (!fx_take(&c, ctx->id))
		return 0;
	long ret = ctx->ret;
	__u32 cls = FX_CLASS_OTHER;
	__u32 tpid = 0;
	switch (c.nr) {
	case __NR_kill:
	case __NR_tkill:
		if (c.args[1] == 0)
			return 0; /* signal 0 only probes */
		tpid = c.args[0];
		cls = FX_CLASS_PROC;
		break;
	case __NR_tgkill:
		if (c.args[2] == 0)
			return 0;
		tpid = c.args[0];
		cls = FX_CLASS_PROC;
		break;
	case __NR_ptrace:
		/*
		 * Only what changes who controls a process or what it runs: TRACEME, ATTACH,
		 * SEIZE, DETACH, KILL and every write into the tracee (POKE*, SET*REGS*).
		 * A tracer's steady state (SYSCALL, CONT, PEEK*, GET*) runs at thousands of
		 * calls a second under strace and says nothing new. Not on the process ring:
		 * a poke storm must not crowd out lifecycle records.
		 */
		switch (c.args[0]) {
		case 0: case 4: case 5: case 6: case 8: case 13: case 15: case 16: case 17:
		case 0x4205: case 0x4206:
			break;
		default:
			return 0;
		}
		tpid = c.args[1];
		break;
	case __NR_bpf:
		/* map element access is the steady state of every BPF tool */
		if (c.args[0] >= 1 && c.args[0] <= 4)
			return 0;
		if (c.args[0] >= 11 && c.args[0] <= 15)
			return 0;
		break;
	case __NR_execve:
	case __NR_execveat:
		/* a successful exec is recorded by sched_process_exec; a shell's PATH search
		 * (ENOENT, ENOTDIR) is noise, a refused one (EACCES, ENOEXEC...) is evidence */
		if (ret >= 0 || ret == -2 || ret == -20)
			return 0;
		cls = FX_CLASS_PROC;
		break;
	}
	struct fx_scratch *s = fx_sys(&c, ret, cls);
	if (!s)
		return 0;
	s->ev.tpid = tpid;
	if (c.nr == __NR_delete_module)
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[0]);
	else if (c.nr == __NR_init_module)
		fx_str_user(s, FX_S_RAW0, (const char *)c.args[2]);
	else if (c.nr == __NR_execve)
		fx_named(s, 0, AT_FDCWD, (const char *)c.args[0]);
	else if (c.nr == __NR_execveat)
		fx_named(s, 0, c.args[0], (const char *)c.args[1]);
	fx_submit(s);
	return 0;
}

#include "tty.bpf.h"

/* ---- data flow: reads and writes as edges -------------------------------------- */

static __always_inline bool fx_is_write(__u32 nr)
{
	return nr == __NR_write || nr == __NR_pwrite64 || nr == __NR_writev || nr == __NR_pwritev ||
	       nr == __NR_pwritev2 || nr == __NR_sendto || nr == __NR_sendmsg;
}

static __always_inline void fx_flow_emit(struct fx_flow *v, __u32 pid, __u16 flags)
{
	struct fx_scratch *s = fx_begin(FX_KIND_FLOW, FX_CLASS_FLOW);
	if (!s)
		return;
	struct fx_event *e = &s->ev;
	e->args[0] = v->rcount;
	e->args[1] = v->rbytes;
	e->args[2] = v->wcount;
	e->args[3] = v->wbytes;
	e->args[4] = v->first;
	e->args[5] = v->last;
	e->ret = v->fd;
	/* The edge's process: what fx_begin took from the current task is replaced by the edge's,
	 * or cleared where the edge does not know it (the decoder leaves those columns empty for
	 * every edge). The current task may be another process altogether: one whose edge took
	 * the slot the old edge was in (fx_flow_merge) */
	e->pid = pid;
	e->start = v->start;
	e->tid = v->tid;
	e->uid = v->uid;
	e->ppid = 0;
	e->gid = e->euid = e->egid = e->auid = e->sessionid = 0;
	e->cgroup = 0;
	__builtin_memcpy(e->comm, v->comm, sizeof(e->comm));
	e->ino[0] = v->ino;
	e->dev[0] = v->dev;
	e->imode[0] = v->imode;
	e->igen[0] = v->igen;
	e->flags = flags;
	fx_submit(s);
}

/* Add an edge's counts (a slot given up) to its entry in the flows hash map. */
static __always_inline void fx_flow_merge(struct fx_flow_key *k, struct fx_flow *s)
{
	struct fx_flow *v = bpf_map_lookup_elem(&flows, k);
	if (v && v->start != s->start) {
		/* the pid belongs to a new process now: end the old one's edge first */
		struct fx_flow old = *v;
		bpf_map_delete_elem(&flows, k);
		fx_flow_emit(&old, k->pid, 0);
		v = NULL;
	}
	if (!v) {
		long r = bpf_map_update_elem(&flows, k, s, BPF_NOEXIST);
		if (!r) {
			fx_count_insert(FX_ACC_FLOW_INSERTS);
			return;
		}
		v = r == -E2BIG ? NULL : bpf_map_lookup_elem(&flows, k); /* another CPU made it in between */
		if (!v || v->start != s->start) {
			fx_count_drop_of(FX_CLASS_FLOW, s->last, k->pid, s->start, s->comm);
			return;
		}
	}
	if (s->first < v->first) { /* the edge began in this slot: its descriptor and thread */
		v->first = s->first;
		v->fd = s->fd;
		v->tid = s->tid;
	}
	if (s->last > v->last)
		v->last = s->last;
	__sync_fetch_and_add(&v->rcount, s->rcount);
	__sync_fetch_and_add(&v->rbytes, s->rbytes);
	__sync_fetch_and_add(&v->wcount, s->wcount);
	__sync_fetch_and_add(&v->wbytes, s->wbytes);
}

/* Add one transfer to the edge of (this process, the file behind fd). */
static __always_inline void fx_flow_add(struct task_struct *t, struct file *f, int fd, bool wr, long bytes,
					__u64 now)
{
	struct inode *ino = f->f_inode;
	struct fx_flow_key k = {
		.ino = ino->i_ino,
		.dev = ino->i_sb->s_dev,
		.pid = t->tgid,
		.exec_id = (__u32)t->group_leader->self_exec_id,
		.uid = t->cred->uid.val,
		.igen = ino->i_generation,
	};
	__u64 start = t->group_leader->start_boottime;
	__u32 *busy = fx_slots_take();
	if (busy) {
		__u32 i = fx_slot_index(k.ino ^ ((__u64)k.pid << 32) ^ k.dev ^ ((__u64)k.exec_id << 20));
		struct fx_flow_slot *a = bpf_map_lookup_elem(&flow_slots, &i);
		i ^= 1;
		struct fx_flow_slot *b = bpf_map_lookup_elem(&flow_slots, &i);
		if (a && b) {
			struct fx_flow_slot *s = NULL;
			if (a->v.last && fx_flow_key_eq(&a->k, &k))
				s = a;
			else if (b->v.last && fx_flow_key_eq(&b->k, &k))
				s = b;
			if (s && s->v.start == start) {
				s->v.last = now;
				if (wr) {
					s->v.wcount++;
					s->v.wbytes += bytes;
				} else {
					s->v.rcount++;
					s->v.rbytes += bytes;
				}
				*busy = 0;
				return;
			}
			/* a new edge here: in the empty slot, or in place of the one used longest ago */
			if (!s)
				s = !a->v.last ? a : !b->v.last ? b : a->v.last < b->v.last ? a : b;
			/* the edge pushed out: to the spill, or to the hash map when the spill is full
			 * (no wake-up: the agent reads the spill at its flush, not per record) */
			if (s->v.last && bpf_ringbuf_output(&flow_spill, s, sizeof(*s), BPF_RB_NO_WAKEUP))
				fx_flow_merge(&s->k, &s->v);
			s->k = k;
			s->v.first = now;
			s->v.last = now;
			s->v.start = start;
			s->v.fd = fd;
			s->v.tid = t->pid;
			s->v.uid = k.uid; /* as whom the data moved (a setuid starts another edge) */
			bpf_get_current_comm(s->v.comm, sizeof(s->v.comm)); /* and by which program */
			s->v.ino = k.ino;
			s->v.dev = k.dev;
			s->v.imode = ino->i_mode;
			s->v.igen = k.igen;
			s->v.rcount = wr ? 0 : 1;
			s->v.rbytes = wr ? 0 : bytes;
			s->v.wcount = wr ? 1 : 0;
			s->v.wbytes = wr ? bytes : 0;
			*busy = 0;
			return;
		}
		*busy = 0;
	}
	struct fx_flow *v = bpf_map_lookup_elem(&flows, &k);
	if (v && v->start != start) {
		/* the pid belongs to a new process now: end the old one's edge first */
		struct fx_flow old = *v;
		bpf_map_delete_elem(&flows, &k);
		fx_flow_emit(&old, k.pid, 0);
		v = NULL;
	}
	if (v) {
		v->last = now;
		if (wr) {
			__sync_fetch_and_add(&v->wcount, 1);
			__sync_fetch_and_add(&v->wbytes, bytes);
		} else {
			__sync_fetch_and_add(&v->rcount, 1);
			__sync_fetch_and_add(&v->rbytes, bytes);
		}
		return;
	}
	struct fx_flow n = {};
	n.first = now;
	n.last = now;
	n.start = start;
	n.fd = fd;
	n.tid = t->pid;
	n.uid = k.uid;
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	n.ino = k.ino;
	n.dev = k.dev;
	n.imode = ino->i_mode;
	n.igen = k.igen;
	if (wr) {
		n.wcount = 1;
		n.wbytes = bytes;
	} else {
		n.rcount = 1;
		n.rbytes = bytes;
	}
	long r = bpf_map_update_elem(&flows, &k, &n, BPF_NOEXIST);
	if (!r)
		fx_count_insert(FX_ACC_FLOW_INSERTS);
	else if (r == -E2BIG)
		fx_count_drop(FX_CLASS_FLOW, now, t);
}

static __always_inline bool fx_counted_at_socket(struct file *f)
{
	return cfg.sock_flows == FX_SOCK_COUNTERS && (f->f_inode->i_mode & S_IFMT) == S_IFSOCK;
}

/*
 * read/write and friends: one descriptor (args[0]). sendfile, splice and
 * copy_file_range move data between two: a read edge on the source and a write
 * edge on the destination, so data passed file-to-socket in the kernel is seen too.
 */
SEC("tracepoint")
int fx_exit_rw(struct trace_event_raw_sys_exit *ctx)
{
	struct fx_call c;
	struct task_struct *t = bpf_get_current_task_btf(); /* once: every helper call counts here */
	long ret = ctx->ret;
	if (ret <= 0 || !fx_take_task(t, &c, ctx->id)) /* nothing moved (EAGAIN is common) */
		return 0;
	int out_fd = c.args[0], in_fd = -1;
	if (c.nr == __NR_sendfile)
		in_fd = c.args[1];
	else if (c.nr == __NR_splice || c.nr == __NR_copy_file_range) {
		in_fd = c.args[0];
		out_fd = c.args[2];
	}
	bool wr = in_fd >= 0 || fx_is_write(c.nr);
	struct file *f = fx_task_fd_file(t, out_fd);
	struct file *fin = in_fd >= 0 ? fx_task_fd_file(t, in_fd) : NULL;
	if (!f)
		return 0;
	fx_tty_rw(f, &c, ret, wr);
	if (cfg.full_rw) {
		struct fx_scratch *s = fx_sys(&c, ret, FX_CLASS_FLOW);
		if (!s)
			return 0;
		fx_file(s, 0, f);
		if (fin)
			fx_file(s, 1, fin);
		fx_submit(s);
		return 0;
	}
	/* FX_SOCK_COUNTERS: every transfer on a socket is the socket layer's (fx_sock_flow); checked
	 * before the clock is read, since most calls a server makes end here */
	bool out = !fx_counted_at_socket(f), in = fin && !fx_counted_at_socket(fin);
#ifdef FX_NOSOCK_BOUND
	/* measurement build only (make -C bpf nosock): sockets cost nothing past this check, as
	 * if the kernel kept their edges for free; the bound of any cheaper socket accounting */
	out = out && (f->f_inode->i_mode & S_IFMT) != S_IFSOCK;
#endif
	if (!out && !in)
		return 0;
	__u64 now = bpf_ktime_get_boot_ns();
	if (out)
		fx_flow_add(t, f, out_fd, wr, ret, now);
	if (in)
		fx_flow_add(t, fin, in_fd, false, ret, now);
	return 0;
}

/* ---- data flow on sockets, from the socket layer ---------------------------------- */

/*
 * Every send and receive on a socket passes sock_sendmsg/sock_recvmsg, whatever the
 * syscall: the raw (tp_btf) tracepoints there cost a few ns to enter, where a syscall
 * tracepoint costs its slow path and perf dispatch on every call of every process. The
 * calls that only sockets take (send*, recv*, their mmsg forms) and io_uring's are
 * counted here, into the same edge of (this process, the socket's inode) as fx_exit_rw
 * adds; read, write, readv, writev, sendfile and splice keep their syscall tracepoints
 * (files, pipes and terminals need them) and are counted at their exits, not twice.
 */
#define PF_IO_WORKER 0x00000010

static __always_inline bool fx_rw_hooked(long nr)
{
	return nr == __NR_read || nr == __NR_write || nr == __NR_readv || nr == __NR_writev ||
	       nr == __NR_sendfile || nr == __NR_splice;
}

/*
 * TCP connections by the kernel's counters (FX_SOCK_COUNTERS; events.h, struct fx_tcp_own). The
 * storage lives and dies with the socket; the owner's first transfer after a flush of the agent
 * and the close (fx_tcp_state) move what the owner moved since into the flows map, as a per-call
 * edge given up by its slot would be: a close can come in softirq, where no record may be built
 * in the per-CPU scratch another program on this CPU may be filling. (An iterator over the
 * storage, which would take open connections at each flush, is refused at load here.)
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fx_tcp_own);
} tcp_own SEC(".maps");

const struct fx_tcp_own *fx_abi_tcp_own __attribute__((unused));

static __always_inline bool fx_is_tcp(struct sock *sk)
{
	__u16 fam = sk->__sk_common.skc_family;
	return sk->sk_protocol == IPPROTO_TCP && sk->sk_type == 1 /* SOCK_STREAM */ &&
	       (fam == AF_INET || fam == AF_INET6);
}

/* Add an edge to the flows map from any context (no ring record, no per-CPU scratch). */
static __always_inline void fx_flow_put(struct fx_flow_key *k, struct fx_flow *s)
{
	struct fx_flow *v = bpf_map_lookup_elem(&flows, k);
	if (!v) {
		if (!bpf_map_update_elem(&flows, k, s, BPF_NOEXIST)) {
			fx_count_insert(FX_ACC_FLOW_INSERTS);
			return;
		}
		v = bpf_map_lookup_elem(&flows, k);
	}
	if (!v || v->start != s->start) {
		/* a full map, or the pid's next process holds the key: counted, atomically (a
		 * close in softirq may interrupt a program of this CPU that counts too) */
		__u32 cls = FX_CLASS_FLOW;
		struct fx_counter *c = bpf_map_lookup_elem(&counters, &cls);
		if (c) {
			__sync_fetch_and_add(&c->seq, 1);
			__sync_fetch_and_add(&c->drops, 1);
			c->last_drop = s->last;
		}
		fx_drop_proc(FX_CLASS_FLOW, s->last, k->pid, s->start, s->comm);
		return;
	}
	if (s->first < v->first) {
		v->first = s->first;
		v->fd = s->fd;
		v->tid = s->tid;
	}
	if (s->last > v->last)
		v->last = s->last;
	__sync_fetch_and_add(&v->rcount, s->rcount);
	__sync_fetch_and_add(&v->rbytes, s->rbytes);
	__sync_fetch_and_add(&v->wcount, s->wcount);
	__sync_fetch_and_add(&v->wbytes, s->wbytes);
}

/*
 * An edge into this CPU's flow slots (what a per-call edge costs), from any context: false
 * when another program holds them (this one interrupted it) or they are missing. A slot's
 * edge given up goes to the map with fx_flow_put (never a ring record: see above).
 */
static __always_inline bool fx_flow_slot_put(struct fx_flow_key *k, struct fx_flow *n)
{
	__u32 *busy = fx_slots_take();
	if (!busy)
		return false;
	__u32 i = fx_slot_index(k->ino ^ ((__u64)k->pid << 32) ^ k->dev ^ ((__u64)k->exec_id << 20));
	struct fx_flow_slot *a = bpf_map_lookup_elem(&flow_slots, &i);
	i ^= 1;
	struct fx_flow_slot *b = bpf_map_lookup_elem(&flow_slots, &i);
	if (!a || !b) {
		*busy = 0;
		return false;
	}
	struct fx_flow_slot *s = NULL;
	if (a->v.last && fx_flow_key_eq(&a->k, k))
		s = a;
	else if (b->v.last && fx_flow_key_eq(&b->k, k))
		s = b;
	if (s && s->v.start == n->start) {
		if (n->first < s->v.first) {
			s->v.first = n->first;
			s->v.fd = n->fd;
			s->v.tid = n->tid;
		}
		if (n->last > s->v.last)
			s->v.last = n->last;
		s->v.rcount += n->rcount;
		s->v.rbytes += n->rbytes;
		s->v.wcount += n->wcount;
		s->v.wbytes += n->wbytes;
		*busy = 0;
		return true;
	}
	if (!s)
		s = !a->v.last ? a : !b->v.last ? b : a->v.last < b->v.last ? a : b;
	if (s->v.last)
		fx_flow_put(&s->k, &s->v);
	s->k = *k;
	s->v = *n;
	*busy = 0;
	return true;
}

/*
 * Where the application's reading and writing stand in the connection's sequence space. A FIN
 * takes a sequence number of its own: the one we sent is in write_seq from FIN_WAIT1, FIN_WAIT2,
 * TIME_WAIT, LAST_ACK or CLOSING on (at the close tracepoint the state is still the old one);
 * the peer's is in copied_seq once the reader met it (the FIN arrived, nothing left unread).
 */
static __always_inline __u32 fx_tcp_rpos(struct sock *sk, struct tcp_sock *tp)
{
	__u32 c = tp->copied_seq;
	/* SOCK_DONE: the peer's FIN arrived (tcp_fin); RCV_SHUTDOWN alone is also set by our own
	 * close, and an orphaned socket in FIN_WAIT2 reaches TCP_CLOSE before any FIN */
	return (sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) && c == tp->rcv_nxt ? c - 1 : c;
}

static __always_inline __u32 fx_tcp_wpos(struct sock *sk, struct tcp_sock *tp)
{
	__u32 st = sk->__sk_common.skc_state;
	return tp->write_seq - (st == 4 || st == 5 || st == 6 || st == 9 || st == 11 ? 1 : 0);
}

/*
 * What the owner read and wrote since the last time, by the connection's sequence numbers:
 * copied_seq advances by what the application read, write_seq by what it queued to send
 * (sendfile and splice included). Calls are not counted: the counts are data segments. The
 * window is the per-call one: the owner's transfers keep their first and latest time (a clock
 * read each, the only per-call work left besides the storage lookup).
 */
static __always_inline void fx_tcp_emit(struct sock *sk, struct fx_tcp_own *o, __u32 rsub, __u32 wsub)
{
	if (!o->pid)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	if (__sync_val_compare_and_swap(&o->busy, 0, 1))
		return; /* the close and a transfer met: the other emits */
	/* rsub/wsub: the call under way, which is the next period's */
	__u32 rs = fx_tcp_rpos(sk, tp) - rsub, ws = fx_tcp_wpos(sk, tp) - wsub;
	__u32 ri = tp->data_segs_in, wo = tp->data_segs_out;
	__u32 dr = rs - (__u32)o->rseq, dw = ws - (__u32)o->wseq;
	if (dr || dw) {
		struct fx_flow_key k = {
			.ino = o->v.ino, .dev = o->v.dev, .pid = o->pid, .exec_id = o->exec_id,
			.uid = o->v.uid, .igen = o->v.igen,
		};
		struct fx_flow n = o->v;
		__u32 si = ri - o->rsegs, so = wo - o->wsegs;
		n.rbytes = dr;
		n.wbytes = dw;
		n.rcount = dr ? (si ? si : 1) : 0;
		n.wcount = dw ? (so ? so : 1) : 0;
		if (!fx_flow_slot_put(&k, &n))
			fx_flow_put(&k, &n);
		o->rseq = rs;
		o->wseq = ws;
		o->rsegs = ri;
		o->wsegs = wo;
		o->v.first = 0; /* the next transfer's time */
	}
	o->busy = 0;
}

/*
 * A transfer on a TCP connection in FX_SOCK_COUNTERS: true when the connection's counters
 * account for it (its owner's, or the one that makes this process the owner). Another
 * process's transfer (an inherited or passed socket) is counted per call, and taken off the
 * owner's share.
 */
#define FX_TCP_LONG 64

static __always_inline bool fx_tcp_owned(struct sock *sk, struct task_struct *t, struct file *f, int fd, bool wr,
					 int ret)
{
	if (!fx_is_tcp(sk))
		return false;
	struct task_struct *leader = t->group_leader;
	__u32 pid = t->tgid, exec_id = (__u32)leader->self_exec_id, uid = t->cred->uid.val;
	__u64 start = leader->start_boottime;
	struct fx_tcp_own *o = bpf_sk_storage_get(&tcp_own, sk, 0, 0);
	__u32 key = FX_ACC_BANK;
	__u64 *flushes = bpf_map_lookup_elem(&accounted, &key);
	__u64 gen = flushes ? *flushes : 0;
	if (o) {
		if (o->pid == pid && o->v.start == start && o->exec_id == exec_id && o->v.uid == uid) {
			if (o->gen != gen) { /* the first transfer since a flush: the period before is an edge */
				fx_tcp_emit(sk, o, wr ? 0 : ret, wr ? ret : 0);
				o->gen = gen;
			}
			__u64 now = bpf_ktime_get_boot_ns();
			if (!o->v.first)
				o->v.first = now;
			o->v.last = now;
			return true;
		}
		if (o->pid) {
			if (wr)
				__sync_fetch_and_add(&o->wseq, ret);
			else
				__sync_fetch_and_add(&o->rseq, ret);
		}
		return false;
	}
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	/* a connection that has not moved FX_TCP_LONG data segments yet stays per call: a storage
	 * made and closed per connection costs a short one (a request per connection) more than
	 * its few per-call edges; a kept-alive one passes it within its first requests */
	if (!tp || tp->data_segs_in + tp->data_segs_out < FX_TCP_LONG)
		return false;
	o = bpf_sk_storage_get(&tcp_own, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return false; /* no memory: per call, as before */
	if (o->pid)
		return false; /* another CPU made it in between */
	struct inode *ino = f->f_inode;
	__u64 now = bpf_ktime_get_boot_ns();
	/* the tracepoint fires after the call: this call's bytes are the owner's */
	o->rseq = (__u32)(fx_tcp_rpos(sk, tp) - (wr ? 0 : ret));
	o->wseq = (__u32)(fx_tcp_wpos(sk, tp) - (wr ? ret : 0));
	o->rsegs = tp->data_segs_in;
	o->wsegs = tp->data_segs_out;
	o->exec_id = exec_id;
	o->gen = gen;
	o->v.first = now;
	o->v.last = now;
	o->v.start = start;
	o->v.fd = fd;
	o->v.tid = t->pid;
	o->v.uid = uid;
	bpf_get_current_comm(o->v.comm, sizeof(o->v.comm));
	o->v.ino = ino->i_ino;
	o->v.dev = ino->i_sb->s_dev;
	o->v.imode = ino->i_mode;
	o->v.igen = ino->i_generation;
	o->pid = pid;
	return true;
}

static __always_inline void fx_sock_flow(struct sock *sk, int ret, bool wr)
{
#if defined(FX_FLOOR) || defined(FX_NOSOCK_BOUND)
	return;
#endif
	if (ret <= 0 || !cfg.sock_flows || cfg.full_rw)
		return;
	struct task_struct *t = bpf_get_current_task_btf();
	/* kernel threads (NFS, kTLS...) send on their own account: no process read or wrote */
	if (fx_skip_task(t) || (t->flags & PF_KTHREAD))
		return;
	bool counters = cfg.sock_flows == FX_SOCK_COUNTERS; /* fx_exit_rw leaves every socket to us */
	bool every = counters;
#ifdef FX_NORW_BOUND
	every = true; /* measurement build only (make -C bpf norw): no read/write syscall hook at all */
#endif
	int fd = -1;
	if (!(t->flags & PF_IO_WORKER)) { /* an io_uring worker is in no syscall of its own */
		struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(t);
		long nr = r->orig_ax;
		if (!every && fx_rw_hooked(nr))
			return;
		if (nr == __NR_splice)
			fd = wr ? r->dx : r->di;
		else if (nr == __NR_sendto || nr == __NR_recvfrom || nr == __NR_sendmsg || nr == __NR_recvmsg ||
			 nr == __NR_sendmmsg || nr == __NR_recvmmsg || fx_rw_hooked(nr))
			fd = r->di;
	}
	struct socket *sock = sk->sk_socket;
	if (!sock)
		return;
	struct file *f = sock->file;
	if (!f)
		return;
	if (counters && fx_tcp_owned(sk, t, f, fd, wr, ret))
		return;
	fx_flow_add(t, f, fd, wr, ret, bpf_ktime_get_boot_ns());
}

#ifdef FX_NORW_BOUND
/*
 * Measurement build only (make -C bpf norw; bench.micro_attach / bench.web_kernel configuration
 * NAME:norw+close): the least a close hook that ends a lifetime-derived file edge must do, attached
 * to sys_enter_close (at the exit the descriptor is gone): which file, whether it is one whose edge
 * the open began (not a socket), and when. Never loaded by forensix.
 */
SEC("tracepoint")
int fx_close_bound(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (fx_skip_task(t))
		return 0;
	struct file *f = fx_task_fd_file(t, (int)ctx->args[0]);
	if (!f || (f->f_inode->i_mode & S_IFMT) == S_IFSOCK)
		return 0;
	__u32 key = FX_ACC_BANK;
	__u64 *w = bpf_map_lookup_elem(&accounted, &key);
	if (w)
		fx_opaque(*w); /* a stand-in for the edge's lookup: one map load */
	__u64 now = bpf_ktime_get_boot_ns();
	fx_opaque(now);
	return 0;
}
#endif

/* A TCP connection closes: what its owner moved since the last flush goes to the flows map. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fx_tcp_state, struct sock *sk, int oldstate, int newstate)
{
#ifdef FX_FLOOR
	return 0;
#endif
	if (newstate != TCP_CLOSE || cfg.sock_flows != FX_SOCK_COUNTERS || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct fx_tcp_own *o = bpf_sk_storage_get(&tcp_own, sk, 0, 0);
	if (!o)
		return 0;
	/* emitted: a later emit finds nothing new, and the storage goes with the socket (a delete
	 * here would only cost the close its time) */
	fx_tcp_emit(sk, o, 0, 0);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(fx_sock_send, struct sock *sk, int ret, int flags)
{
	fx_sock_flow(sk, ret, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fx_sock_recv, struct sock *sk, int ret, int flags)
{
	fx_sock_flow(sk, ret, false);
	return 0;
}
