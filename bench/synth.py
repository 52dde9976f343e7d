"""Synthetic but realistic event batches for the store benchmarks.

A host with a few thousand processes: mostly file opens and data-flow edges over a
working set of paths, some mmaps, execs, forks, exits and connects, with the string
columns repeating the way a real recording repeats them. Generation is vectorised
(numpy) and kept out of every timed section.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from forensix.store import schema

# (category, action, syscall, share)
MIX = (
    ("file", "open", "openat", 0.55),
    ("flow", "flow", None, 0.22),
    ("memory", "mmap", "mmap", 0.08),
    ("process", "exec", "execve", 0.04),
    ("process", "fork", "clone", 0.04),
    ("process", "exit", None, 0.04),
    ("network", "connect", "connect", 0.03),
)
N_PROCS = 3000
N_PATHS = 20000
COMMS = ["bash", "sh", "make", "gcc", "cc1", "as", "ld", "nginx", "python3", "sshd", "cron",
         "systemd", "git", "tar", "gzip", "sed", "awk", "grep", "cat", "ls", "cp", "rm",
         "curl", "apt-get", "dpkg", "perl", "find", "sort", "xargs", "env"]
DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/include", "/etc", "/home/alice/src/proj",
        "/tmp", "/var/log", "/proc/self", "/usr/share/locale", "/usr/bin", "/var/lib/dpkg"]


def _strings(pool: np.ndarray, idx: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    vals = pool[idx]
    return pa.array(vals, type=pa.string(), mask=None if mask is None else ~mask)


class EventGenerator:
    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.entities = rng.integers(1, 2**63, N_PROCS, dtype=np.uint64)
        self.pids = rng.integers(300, 4_000_000, N_PROCS).astype(np.uint32)
        self.comms = np.array(COMMS, dtype=object)
        self.proc_comm = rng.integers(0, len(COMMS), N_PROCS)
        dirs = np.array(DIRS, dtype=object)
        self.paths = np.array(
            [f"{dirs[i % len(DIRS)]}/f{i:05d}.{['so', 'h', 'c', 'conf', 'o'][i % 5]}"
             for i in range(N_PATHS)], dtype=object)
        self.path_inode = rng.integers(1, 2**31, N_PATHS, dtype=np.uint64)
        self.ts = 1_790_000_000_000_000_000
        self.seq = 0
        shares = np.array([m[3] for m in MIX])
        self.p = shares / shares.sum()
        self.cats = np.array([m[0] for m in MIX], dtype=object)
        self.acts = np.array([m[1] for m in MIX], dtype=object)
        self.sysc = np.array([m[2] for m in MIX], dtype=object)
        self.exes = np.array([f"/usr/bin/{c}" for c in COMMS], dtype=object)
        self.args = [[f"/usr/bin/{c}", "-c", f"arg{i}"] for i, c in enumerate(COMMS)]

    def batch(self, n: int) -> pa.Table:
        rng = self.rng
        kind = rng.choice(len(MIX), n, p=self.p)
        proc = (rng.zipf(1.3, n) - 1) % N_PROCS  # a few busy processes, a long tail
        path = (rng.zipf(1.2, n) - 1) % N_PATHS
        ts = self.ts + np.cumsum(rng.integers(100, 20_000, n))
        self.ts = int(ts[-1])
        seq = np.arange(self.seq, self.seq + n, dtype=np.uint64)
        self.seq += n
        is_file = (kind == 0) | (kind == 1) | (kind == 2)
        is_exec = kind == 3
        is_fork = kind == 4
        is_exit = kind == 5
        is_net = kind == 6
        is_flow = kind == 1
        comm_idx = self.proc_comm[proc]
        is_open = kind == 0
        is_mmap = kind == 2
        # mmap: libraries mapped at fresh addresses, half of them at a fixed hint (as ld.so does)
        map_addr = (0x7F0000000000 + rng.integers(0, 2**28, n) * 4096).astype(np.uint64)
        map_len = (rng.integers(1, 512, n) * 4096).astype(np.uint64)
        map_hint = np.where(rng.random(n) < 0.5, map_addr, 0).astype(np.uint64)
        # raw arguments as the decoder writes them: openat(AT_FDCWD, path -> left out, flags, mode),
        # mmap(hint, len, prot, flags), connect(fd, sockaddr pointer, addrlen); null off syscalls
        a0 = np.where(is_open, np.uint64(2**64 - 100),
                      np.where(is_mmap, map_hint, rng.integers(3, 40, n).astype(np.uint64)))
        a1 = np.where(is_mmap, map_len, (0x7FFC00000000 + rng.integers(0, 2**20, n) * 8).astype(np.uint64))
        a2 = np.where(is_open, 0o2000000, np.where(is_mmap, 5, 16)).astype(np.uint64)
        a3 = np.where(is_mmap, 0x802, 0).astype(np.uint64)
        has_args = is_open | is_mmap | is_net
        cols: dict[str, pa.Array] = {
            "host_id": pa.array(np.full(n, "4f2c1e0d9b8a7f6e5d4c3b2a19081726", dtype=object)),
            "host_name": pa.array(np.full(n, "bench-host", dtype=object)),
            "boot_id": pa.array(np.full(n, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", dtype=object)),
            "ts": pa.array(ts.astype(np.int64)),
            "ts_boot": pa.array((ts - 1_789_999_000_000_000_000).astype(np.int64)),
            "cpu": pa.array(rng.integers(0, 2, n).astype(np.uint16)),
            "seq": pa.array(seq),
            "event_kind": pa.array(np.full(n, "event", dtype=object)),
            "event_category": _strings(self.cats, kind, None),
            "event_action": _strings(self.acts, kind, None),
            "syscall": _strings(self.sysc, kind, None),
            "event_outcome": pa.array(np.full(n, "success", dtype=object)),
            "ret": pa.array(np.where(kind == 0, rng.integers(3, 64, n),
                                     np.where(is_mmap, map_addr.astype(np.int64), 0)).astype(np.int64)),
            "process_entity_id": pa.array(self.entities[proc]),
            "process_pid": pa.array(self.pids[proc]),
            "process_tid": pa.array(self.pids[proc]),
            "process_parent_pid": pa.array(self.pids[(proc + 1) % N_PROCS]),
            "process_name": _strings(self.comms, comm_idx, None),
            "user_id": pa.array(np.where(proc % 3 == 0, 1000, 0).astype(np.uint32)),
            "user_effective_id": pa.array(np.where(proc % 3 == 0, 1000, 0).astype(np.uint32)),
            "group_id": pa.array(np.where(proc % 3 == 0, 1000, 0).astype(np.uint32)),
            "group_effective_id": pa.array(np.where(proc % 3 == 0, 1000, 0).astype(np.uint32)),
            "user_audit_id": pa.array(np.where(proc % 3 == 0, 1000, 4294967295).astype(np.uint32)),
            "process_session_id": pa.array((proc % 40).astype(np.uint32)),
            "process_cgroup_id": pa.array((proc % 12 + 1000).astype(np.uint64)),
            "process_executable": _strings(self.exes, comm_idx, is_exec),
            "process_args": pa.array(
                [self.args[c] if e else None for c, e in zip(comm_idx, is_exec)],
                type=pa.list_(pa.string()),
            ),
            "process_working_directory": _strings(
                np.array(["/home/alice/src/proj"], dtype=object), np.zeros(n, int), is_exec),
            "process_exit_code": pa.array(np.zeros(n, np.int32), mask=~is_exit),
            "file_path": _strings(self.paths, path, is_file | is_exec),
            "file_path_raw": _strings(self.paths, path, kind == 0),
            "file_inode": pa.array(self.path_inode[path], mask=~(is_file | is_exec)),
            "file_device": pa.array(np.full(n, 2049, np.uint64), mask=~(is_file | is_exec)),
            "file_flags": pa.array(np.full(n, 0o2000000, np.uint32), mask=kind != 0),
            "fd": pa.array(rng.integers(3, 40, n).astype(np.int32), mask=~is_flow),
            "network_transport": _strings(np.array(["tcp"], dtype=object), np.zeros(n, int), is_net),
            "destination_ip": _strings(np.array(["127.0.0.1"], dtype=object), np.zeros(n, int), is_net),
            "destination_port": pa.array(np.full(n, 443, np.uint16), mask=~is_net),
            "target_pid": pa.array(self.pids[(proc + 7) % N_PROCS], mask=~is_fork),
            "target_entity_id": pa.array(self.entities[(proc + 7) % N_PROCS], mask=~is_fork),
            "mem_len": pa.array(map_len, mask=~is_mmap),
            "mem_prot": pa.array(np.full(n, 5, np.uint32), mask=kind != 2),
            "mem_flags": pa.array(np.full(n, 0x802, np.uint32), mask=~is_mmap),
            "file_mode": pa.array(np.zeros(n, np.uint32), mask=~is_open),
            "a0": pa.array(a0, mask=~has_args),
            "a1": pa.array(a1, mask=~(is_mmap | is_net)),
            "a2": pa.array(a2, mask=~has_args),
            "a3": pa.array(a3, mask=~has_args),
            "flow_read_count": pa.array(rng.integers(1, 500, n).astype(np.uint64), mask=~is_flow),
            "flow_read_bytes": pa.array(rng.integers(1, 10**6, n).astype(np.uint64), mask=~is_flow),
            "flow_write_count": pa.array(np.zeros(n, np.uint64), mask=~is_flow),
            "flow_write_bytes": pa.array(np.zeros(n, np.uint64), mask=~is_flow),
            "flow_first_ts": pa.array((ts - 1_000_000).astype(np.int64), mask=~is_flow),
            "flow_last_ts": pa.array(ts.astype(np.int64), mask=~is_flow),
        }
        arrays = []
        for f in schema.EVENTS:
            a = cols.get(f.name)
            arrays.append(a.cast(f.type) if a is not None else pa.nulls(n, f.type))
        return pa.Table.from_arrays(arrays, schema=schema.EVENTS)


def split_flows(events: pa.Table) -> tuple[pa.Table, pa.Table]:
    """A batch as the recorder stores it: flow edges in ``flows`` only (``in_events`` false,
    the events view derives their rows), every other event in ``events``."""
    import pyarrow.compute as pc

    from forensix.sensor.decode import flows_table_of

    is_flow = pc.equal(events.column("event_action"), "flow")
    flows = flows_table_of(events.filter(is_flow), "periodic")
    flows = flows.set_column(flows.schema.get_field_index("in_events"), "in_events",
                             pa.repeat(pa.scalar(False), flows.num_rows))
    return events.filter(pc.invert(is_flow)), flows

