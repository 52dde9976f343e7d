// SPDX-License-Identifier: GPL-2.0
/* Empty programs of each attach type this kernel allows, for bench/micro_attach.py: what
 * attaching costs a syscall before any program does work. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* a classic per-syscall tracepoint (perf event), as the sensor attaches every syscall hook */
SEC("tracepoint")
int empty_tp(void *ctx)
{
	return 0;
}

/* the raw_syscalls tracepoints: every syscall of every task */
SEC("raw_tp/sys_exit")
int empty_raw_exit(void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(empty_btf_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

/* a filter first: the syscall number, against a 512-bit set of the hooked ones */
const volatile __u64 hooked[8] = {};

SEC("tp_btf/sys_exit")
int BPF_PROG(filter_btf_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	if (nr < 0 || nr >= 512)
		return 0;
	if (!(hooked[(nr >> 6) & 7] & (1ULL << (nr & 63))))
		return 0;
	return 0;
}

/* the socket layer's raw tracepoints the sensor uses */
SEC("tp_btf/sock_send_length")
int BPF_PROG(empty_sock_send, struct sock *sk, int ret, int flags)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(empty_sock_recv, struct sock *sk, int ret, int flags)
{
	return 0;
}
