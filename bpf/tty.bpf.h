/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Terminal I/O capture (included by sensor.bpf.c, called from the read/write exit handler).
 *
 * What is a terminal is decided from the file the descriptor refers to at syscall exit,
 * never from a program's name: a character device whose i_rdev is a pty slave
 * (majors 136-143), a virtual console or serial line (major 4), /dev/tty or
 * /dev/console (5:0, 5:1). /dev/ptmx (5:2), the master side a terminal emulator or sshd
 * holds, is not: what the session sees is what its slave carries. The terminal itself
 * is taken from the open file's tty_struct (so /dev/tty counts as the pts it stands for).
 *
 * Bounded per terminal per second (cfg.tty_rate bytes): what is cut is counted and the
 * count rides on the terminal's next record (FX_TTY_CUT, FX_TTY_CUT_FROM); what is still
 * pending at the end is read from tty_budget by the recorder.
 *
 * Passwords: input read while the terminal has ECHO off in canonical mode (ICANON on)
 * is what getpass(3), `read -s`, sudo, su and ssh prompts do; its bytes never leave the
 * kernel (FX_F_TTY_MASKED, no data). A line editor (readline) turns ECHO off too, but
 * also ICANON, and echoes what it reads itself: that input is kept.
 */
#ifndef FORENSIX_TTY_BPF_H
#define FORENSIX_TTY_BPF_H

#define FX_S_IFCHR 0020000
#define FX_TTY_ECHO 0000010
#define FX_TTY_ICANON 0000002
#define FX_PTY_MASTER_MAJOR 128   /* 128-135: unix98 pty masters */
#define FX_PTY_SLAVE_MAJOR 136    /* 136-143: unix98 pty slaves (/dev/pts/N) */
#define FX_TTY_MAJOR 4            /* virtual consoles, serial lines */
#define FX_TTYAUX_MAJOR 5         /* 5:0 /dev/tty, 5:1 /dev/console, 5:2 /dev/ptmx */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct fx_tty_budget);
} tty_budget SEC(".maps");

const struct fx_tty_budget *fx_abi_tty_budget __attribute__((unused));
const enum fx_tty_arg *fx_abi_tty_arg __attribute__((unused));

static __always_inline bool fx_tty_rdev(__u32 rdev)
{
	__u32 major = rdev >> 20, minor = rdev & 0xfffff;
	if (major >= FX_PTY_SLAVE_MAJOR && major < FX_PTY_SLAVE_MAJOR + 8)
		return true;
	if (major == FX_TTY_MAJOR)
		return true;
	return major == FX_TTYAUX_MAJOR && minor < 2;
}

/* How many of `bytes` the terminal's budget for this second still takes; counts the rest. */
static __always_inline __u64 fx_tty_take(__u32 dev, __u64 bytes, __u64 now, __u64 *cut, __u64 *cut_from)
{
	struct fx_tty_budget *b = bpf_map_lookup_elem(&tty_budget, &dev);
	__u64 sec = now / 1000000000ULL;
	if (!b) {
		struct fx_tty_budget n = {.sec = sec};
		bpf_map_update_elem(&tty_budget, &dev, &n, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&tty_budget, &dev);
		if (!b)
			return bytes; /* no map room: keep it rather than lose it unseen */
	}
	if (b->sec != sec) {
		b->sec = sec;
		b->used = 0;
	}
	__u64 rate = cfg.tty_rate;
	__u64 take = b->used >= rate ? 0 : rate - b->used;
	if (take > bytes)
		take = bytes;
	__sync_fetch_and_add(&b->used, take);
	if (take < bytes) {
		if (!b->cut)
			b->cut_from = now;
		__sync_fetch_and_add(&b->cut, bytes - take);
	}
	if (!take)
		return 0;
	/* this record reports what was cut before it */
	*cut = b->cut;
	*cut_from = b->cut_from;
	b->cut = 0;
	return take;
}

/* The user buffer of a read or write: args[1], or the first iovec of readv/writev. */
static __always_inline const void *fx_tty_buf(struct fx_call *c, __u64 *len)
{
	switch (c->nr) {
	case __NR_read:
	case __NR_write:
	case __NR_pread64:
	case __NR_pwrite64:
		return (const void *)c->args[1];
	case __NR_readv:
	case __NR_writev:
	case __NR_preadv:
	case __NR_pwritev: {
		struct iovec iov = {};
		bpf_probe_read_user(&iov, sizeof(iov), (const void *)c->args[1]);
		if (iov.iov_len < *len)
			*len = iov.iov_len; /* the rest of the vector is counted, not copied */
		return iov.iov_base;
	}
	}
	*len = 0; /* sendfile, splice into a terminal: counted, not copied */
	return NULL;
}

static __always_inline void fx_tty_rw(struct file *f, struct fx_call *c, long ret, bool wr)
{
	if (!cfg.tty_rate)
		return;
	struct inode *ino = f->f_inode;
	if ((ino->i_mode & S_IFMT) != FX_S_IFCHR || !fx_tty_rdev(ino->i_rdev))
		return;
	struct tty_file_private *priv = BPF_CORE_READ(f, private_data);
	struct tty_struct *tty = BPF_CORE_READ(priv, tty);
	if (!tty)
		return;
	__u32 major = BPF_CORE_READ(tty, driver, major);
	if (major >= FX_PTY_MASTER_MAJOR && major < FX_PTY_MASTER_MAJOR + 8)
		return;
	__u32 dev = (major << 20) | (BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index));
	__u64 now = bpf_ktime_get_boot_ns(), cut = 0, cut_from = 0;
	__u64 take = fx_tty_take(dev, ret, now, &cut, &cut_from);
	if (!take)
		return;
	struct fx_scratch *s = fx_begin(FX_KIND_TTY, FX_CLASS_TTY);
	if (!s)
		return;
	struct fx_event *e = &s->ev;
	__u32 lflag = BPF_CORE_READ(tty, termios.c_lflag);
	e->nr = c->nr;
	e->ret = ret;
	e->args[FX_TTY_DEV] = dev;
	e->args[FX_TTY_CUT] = cut;
	e->args[FX_TTY_CUT_FROM] = cut ? cut_from : 0;
	e->args[FX_TTY_LFLAG] = lflag;
	e->args[FX_TTY_WRITE] = wr;
	e->args[FX_TTY_FD] = c->args[0];
	BPF_CORE_READ_STR_INTO(&e->tty, tty, name);
	if (!wr && (lflag & FX_TTY_ICANON) && !(lflag & FX_TTY_ECHO)) {
		e->flags |= FX_F_TTY_MASKED; /* a password at a prompt: its bytes stay here */
		fx_submit(s);
		return;
	}
	__u64 len = take;
	const void *buf = fx_tty_buf(c, &len);
	if (len > STR_AREA - 1)
		len = STR_AREA - 1;
	len &= (STR_AREA - 1);
	if (!buf || (len && bpf_probe_read_user(&s->str[0], len, buf)))
		len = 0;
	if (len) {
		s->str[len & (STR_AREA + FX_STR_MAX - 1)] = 0;
		e->slen[0] = len + 1;
		s->off = len + 1;
	}
	if (len < take) {
		/* part of what the budget took is not in the record either: counted with the cut */
		e->flags |= FX_F_TRUNC0;
		if (!e->args[FX_TTY_CUT])
			e->args[FX_TTY_CUT_FROM] = now;
		e->args[FX_TTY_CUT] += take - len;
	}
	fx_submit(s);
}

#endif /* FORENSIX_TTY_BPF_H */
