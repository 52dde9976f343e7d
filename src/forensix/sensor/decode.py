"""Decode drained ring-buffer records into store tables, a whole batch at a time.

The fixed part of every record is gathered into a numpy structured array (layout from
abi.json); strings are compacted into Arrow buffers with one fancy-index gather; column
meanings per syscall come from the ``syscalls.SYSCALLS`` table. Per-record Python runs
only for process lifecycle records (fork, exec, exit, kill, ptrace), which are rare.

A record that cannot be decoded (too short, strings past its end, an unknown kind)
becomes a ``decode-warning`` event with its origin, never a crash and never silence.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensix.model.host import HostInfo
from forensix.model.identity import SnapshotIds, host_key
from forensix.sensor.abi import enum, struct_dtype
from forensix.sensor.ringbuf import Drained
from forensix.sensor.strings import _addresses, _cstr, _gather, comm_names
from forensix.sensor.syscalls import O_CREAT, STRING_ARGS, SYSCALLS
from forensix.sensor.tty import decode_tty
from forensix.store import schema

# _cstr: for sensor/tty.py, which imports it from here
__all__ = ["CLASS_NAMES", "Decoder", "ProcessCache", "_cstr", "comm_names", "empty_tables", "file_type_names", "file_types", "flows_table_of", "repeat"]

_NR_MAX = 1024
# syscalls whose socket records fill columns outside the network ones (descriptors, paths,
# targets, process lifecycle): always through _decode_fixed
_NOT_NET_ONLY = frozenset((
    "pipe", "pipe2", "socketpair", "creat", "open", "openat", "openat2", "memfd_create", "unlinkat", "mount",
    "symlink", "symlinkat", "execve", "execveat", "kill", "tkill", "tgkill", "ptrace",
))
# _decode_apart: socket rows decoded apart from the rest of a drain when at least this many,
# in at most this many runs
_APART_MIN = 64
_APART_RUNS = 16
_ARG_COLUMNS = (
    "file_flags", "file_mode", "file_uid", "file_gid", "file_atime", "file_mtime",
    "mem_addr", "mem_len", "mem_prot", "mem_flags", "target_pid", "signal",
)
_TYPES = {0o10: "file", 0o04: "dir", 0o12: "symlink", 0o01: "fifo", 0o14: "socket", 0o02: "char", 0o06: "block"}
_FT = np.array([_TYPES.get(i) for i in range(16)], dtype=object)
_AT_REMOVEDIR = 0x200
_EINPROGRESS = 115
_IPPROTO = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}
_SOCK_STREAM = 1
_SOCK_DGRAM = 2
CLASS_NAMES = np.array(["process", "file", "network", "flow", "other", "tty", None], dtype=object)
_CLASS_ARROW = pa.array(list(CLASS_NAMES), pa.string())


def file_type_names(imode: np.ndarray) -> np.ndarray:
    return np.asarray(_FT[(np.asarray(imode, np.uint32) >> 12) & 0xF])


def file_type_codes(imode: np.ndarray) -> np.ndarray:
    """The type bits of i_mode (0o10 file, 0o04 dir, ...; see ``file_types``)."""
    return np.asarray((np.asarray(imode, np.uint32) >> 12) & 0xF, np.int32)


_FT_ARROW = pa.array(list(_FT), pa.string())


def file_types(imode: np.ndarray) -> pa.Array:
    """``file_type_names`` as an Arrow column, by one take (no Python string per row)."""
    return _FT_ARROW.take(pa.array(file_type_codes(imode)))


def empty_tables() -> dict[str, list[pa.Table]]:
    return {name: [] for name in schema.TABLES}


def repeat(value: str, n: int) -> pa.Array:
    """``n`` copies of one string, built in C."""
    return pa.repeat(pa.scalar(value, pa.string()), n)


_repeat = repeat


def _join(base: pa.Array, raw: pa.Array) -> pa.Array:
    """A name the kernel resolved against ``base``: base + "/" + raw (raw absolute: root + raw)."""
    root = pc.equal(base, "/")
    base_trim = pc.if_else(pc.fill_null(root, False), "", base)
    sep = pc.if_else(pc.fill_null(pc.starts_with(raw, "/"), False), "", "/")
    joined = pc.binary_join_element_wise(base_trim, sep, raw, "")
    return pc.if_else(pc.is_null(base), raw, joined)


class _Vocab:
    """Strings the decoder emits, numbered once: a column is codes, then one take."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = list(dict.fromkeys(words))
        self.index = {w: i for i, w in enumerate(self.words)}
        self.array = pa.array(self.words, pa.string())

    def code(self, word: str) -> int:
        return self.index[word]

    def names(self, codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
        idx = pa.array(codes.astype(np.int32), mask=None if valid is None else ~valid)
        return self.array.take(idx)


@dataclass
class _Proc:
    pid: int
    parent: int | None
    image_seq: int = 0
    exe: str | None = None
    args: list[str] | None = None
    cwd: str | None = None
    exited: bool = False


@dataclass
class ProcessCache:
    """What the decoder knows of live processes: parents, current image, pid -> entity."""

    limit: int = 200_000
    procs: OrderedDict[int, _Proc] = field(default_factory=OrderedDict)
    by_pid: dict[int, int] = field(default_factory=dict)

    def add(self, eid: int, p: _Proc) -> None:
        self.procs[eid] = p
        self.procs.move_to_end(eid)
        self.by_pid[p.pid] = eid
        while len(self.procs) > self.limit:
            old, op = self.procs.popitem(last=False)
            if self.by_pid.get(op.pid) == old:
                del self.by_pid[op.pid]

    def get(self, eid: int) -> _Proc | None:
        return self.procs.get(eid)


# How long a file's earlier path is kept after it changed: longer than any flow edge or
# re-open count stays in the kernel's maps before a flush (about a second).
LABEL_HISTORY_NS = 30 * 10**9


class Decoder:
    def __init__(self, abi: dict[str, Any], host: HostInfo, offset_ns: int = 0) -> None:
        self.host = host
        self.hkey = host_key(host.host_id, host.boot_id)
        self.ids = SnapshotIds(self.hkey)
        self.dt = struct_dtype(abi, "fx_event")
        self.EV = self.dt.itemsize
        self.K = enum(abi, "fx_kind")
        self.F = enum(abi, "fx_flags")
        self.offset_ns = offset_ns
        self.tty_arg = enum(abi, "fx_tty_arg") if "fx_tty_arg" in abi["enums"] else {}
        self.tty_names: dict[int, str] = {}  # terminal device -> its name, for rows without a record
        self.cache = ProcessCache()
        self._nr_tables: dict[tuple[str, ...], np.ndarray] = {}
        self.labels: dict[int, str | None] = {}
        # keys whose path changed while recording (an inode number reused, a rename):
        # [(ts_boot from which the path holds, path), ...], oldest first
        self.label_history: dict[int, list[tuple[int, str | None]]] = {}
        self._history_limit = 10_000
        self.nr = {name: int(nr) for name, nr in abi["syscalls"].items()}
        self.sc_name = np.full(_NR_MAX, None, object)
        self.sc_cat = np.full(_NR_MAX, "syscall", object)
        self.sc_action = np.full(_NR_MAX, None, object)
        self.argidx = {c: np.full(_NR_MAX, -1, np.int64) for c in _ARG_COLUMNS}
        words = ["", "syscall", "success", "failure", "unknown", "kernel", "directory", "rmdir", "exec", "fork", "exit",
                 "flow", "process", "tcp", "udp", "unix", "ipv4", "ipv6", *_IPPROTO.values()]
        words += [sp.action for sp in SYSCALLS.values()] + [sp.category for sp in SYSCALLS.values()]
        words += [name for name in self.nr]
        self.vocab = _Vocab(words)
        self.proto_code = np.full(256, self.vocab.code(""), np.int64)
        for p_, name in _IPPROTO.items():
            self.proto_code[p_] = self.vocab.code(name)
        for name, nr in self.nr.items():
            if nr >= _NR_MAX:
                continue
            self.sc_name[nr] = name
            spec = SYSCALLS.get(name)
            if spec is None:
                continue
            self.sc_cat[nr] = spec.category
            self.sc_action[nr] = spec.action
            for col, i in spec.args.items():
                self.argidx[col][nr] = i
        # per raw argument a0..a3: the string slot holding what it points to (-1: none)
        slots = enum(abi, "fx_str")
        self.str_slot = np.full((4, _NR_MAX), -1, np.int64)
        for name, ptrs in STRING_ARGS.items():
            nr = self.nr.get(name, _NR_MAX)
            for i, slot in ptrs.items():
                if nr < _NR_MAX and i < 4:
                    self.str_slot[i, nr] = slots[slot]
        V = self.vocab
        self.sc_name_code = np.array([V.code(n) if n is not None else 0 for n in self.sc_name], np.int64)
        self.sc_action_code = np.array(
            [V.code(a) if a is not None else V.code(n) if n is not None else 0
             for a, n in zip(self.sc_action, self.sc_name)], np.int64)
        self.sc_cat_code = np.array([V.code(c) for c in self.sc_cat], np.int64)
        # syscalls whose socket records fill only network columns (_decode_network)
        self.net_only_nr = np.zeros(_NR_MAX, bool)
        for name, nr in self.nr.items():
            if nr < _NR_MAX and name not in _NOT_NET_ONLY and all(self.argidx[c][nr] < 0 for c in _ARG_COLUMNS):
                self.net_only_nr[nr] = True
        self._net_flags = self.F["FX_F_BASE0"] | self.F["FX_F_BASE1"] | self.F["FX_F_DELETED0"]

    # ------------------------------------------------------------------------------
    def _origin(self, n: int) -> dict[str, pa.Array]:
        return {k: _repeat(v, n) for k, v in (
            ("host_id", self.host.host_id), ("host_name", self.host.host_name), ("boot_id", self.host.boot_id),
        )}

    def _stamped(self, f: np.ndarray, n: int) -> dict[str, Any]:
        """The columns every decoded row starts from: host and boot, the record's time (wall
        and boot clock), CPU and sequence number."""
        ts_boot = f["ts"].astype(np.int64)
        cols: dict[str, Any] = self._origin(n)
        cols.update(ts=pa.array(ts_boot + self.offset_ns, pa.int64()), ts_boot=pa.array(ts_boot, pa.int64()),
                    cpu=pa.array(f["cpu"].astype(np.uint16)), seq=pa.array(f["seq"]))
        return cols

    def _nrs(self, *names: str) -> list[int]:
        return [self.nr[n] for n in names if n in self.nr]

    def _nr_table(self, names: tuple[str, ...]) -> np.ndarray:
        """A lookup table over syscall numbers: True for ``names`` (a gather, not a search)."""
        got = self._nr_tables.get(names)
        if got is None:
            got = np.zeros(_NR_MAX, bool)
            got[[n for n in self._nrs(*names) if n < _NR_MAX]] = True
            self._nr_tables[names] = got
        return got

    def decode(self, d: Drained) -> dict[str, pa.Table]:
        """Decode one drained batch into tables (events, processes, flows).

        A batch that joins several drains (``Drained.join``: the process ring, then the
        main ring) decodes to their rows in that order, at the fixed cost of one batch."""
        out: dict[str, pa.Table] = {}
        if len(d) == 0:
            return out
        raw = np.frombuffer(d.data, np.uint8)
        offs, lens = d.offsets, d.lengths
        EV = self.EV
        fits = lens >= EV
        good_idx = np.nonzero(fits)[0]
        fixed = self._gather_fixed(d.data, offs[good_idx]) if len(good_idx) else None
        warnings: list[tuple[int, str]] = [(int(i), f"record of {int(lens[i])} bytes is shorter than the {EV}-byte header") for i in np.nonzero(~fits)[0]]
        if fixed is not None:
            slen = fixed["slen"].astype(np.int64)
            over = EV + slen.sum(1) > lens[good_idx]
            known = np.isin(fixed["kind"], list(self.K.values()))
            for j in np.nonzero(over)[0]:
                warnings.append((int(good_idx[j]), "strings run past the end of the record"))
            for j in np.nonzero(~known & ~over)[0]:
                warnings.append((int(good_idx[j]), f"unknown event kind {int(fixed['kind'][j])}"))
        if warnings and d.parts:
            return self._decode_parts(d.parts)  # each warning names its record in its own drain
        if fixed is not None:
            keep = known & ~over
            tty = keep & (fixed["kind"] == self.K.get("FX_KIND_TTY", -1))
            if tty.any():  # terminal bytes: a table of their own (sensor/tty.py)
                out["tty"] = decode_tty(self, raw, offs[good_idx[tty]] + EV, fixed[tty], slen[tty])
                keep &= ~tty
            if not keep.all():  # a copy of the fixed part only when something is left out
                fixed, good_idx, slen = fixed[keep], good_idx[keep], slen[keep]
            # (a build's drains hold a few sockets: not worth a look per record)
            some = len(fixed) and np.count_nonzero(fixed["flags"] & self.F["FX_F_SOCK"]) >= min(_APART_MIN, len(fixed))
            net = self._network_rows(fixed, slen) if some else None
            if net is not None and net.all():
                out["events"] = self._decode_network(raw, offs[good_idx] + EV, fixed, slen)
            elif net is not None and self._worth_apart(net):
                out.update(self._decode_apart(raw, offs[good_idx] + EV, fixed, slen, net))
            elif len(fixed):
                ev, procs, flows = self._decode_fixed(raw, offs[good_idx] + EV, fixed, slen)
                out["events"] = ev
                if procs is not None:
                    out["processes"] = procs
                if flows is not None:
                    out["flows"] = flows
        if warnings:
            w = self.warning_events(warnings, d)
            out["events"] = pa.concat_tables([out["events"], w]) if "events" in out else w
        return out

    def _decode_parts(self, parts: Iterable[Drained]) -> dict[str, pa.Table]:
        """Each drain on its own, the tables of each name concatenated in drain order:
        the rows a recorder emitting one drain after the other would have stored."""
        got: dict[str, list[pa.Table]] = {}
        for part in parts:
            for name, t in self.decode(part).items():
                got.setdefault(name, []).append(t)
        return {name: ts[0] if len(ts) == 1 else pa.concat_tables(ts) for name, ts in got.items()}

    def _gather_fixed(self, data: bytes, offs: np.ndarray) -> np.ndarray:
        """The fixed part of each record as one structured array.

        Ring records are 8-byte aligned, so the gather moves 8-byte words: a 312-byte
        header is 39 words, not 312 bytes. The rows are taken from a sliding-window view
        (every position's next 39 words, no copy), one index per record: an index per
        word, (records x 39) of them, cost 2.5-5x as much.
        """
        EV = self.EV
        if EV % 8 == 0 and len(data) % 8 == 0 and not (offs % 8).any() and len(data) >= EV:
            words = np.frombuffer(data, np.uint64)
            rows: np.ndarray = np.lib.stride_tricks.sliding_window_view(words, EV // 8)[offs // 8]
            return rows.view(self.dt).ravel()
        raw = np.frombuffer(data, np.uint8)
        return raw[offs[:, None] + np.arange(EV)].view(self.dt).ravel()

    def warning_events(self, warnings: list[tuple[int, str]], d: Drained) -> pa.Table:
        import time

        n = len(warnings)
        now = time.time_ns()
        cols: dict[str, Any] = self._origin(n)
        cols.update(
            ts=pa.array([now] * n, pa.int64()),
            event_kind=pa.array(["event"] * n),
            event_category=pa.array(["agent"] * n),
            event_action=pa.array(["decode-warning"] * n),
            message=pa.array([f"ring record #{i} (offset {int(d.offsets[i])}): {why}" for i, why in warnings]),
        )
        return _table(schema.EVENTS, cols, n)

    # ------------------------------------------------------------------------------
    def _network_rows(self, f: np.ndarray, slen: np.ndarray) -> np.ndarray:
        """Per record: a socket syscall's whose row fills only network columns
        (codec.NET_COLUMNS): no path, target, deleted flag or argument column, and no
        process lifecycle (an accept or connect; not a socketpair's descriptors)."""
        flags = f["flags"]
        return np.asarray((f["kind"] == self.K["FX_KIND_SYSCALL"]) & ((flags & self.F["FX_F_SOCK"]) != 0)
                          & ((flags & self._net_flags) == 0) & self.net_only_nr[f["nr"].astype(np.int64) % _NR_MAX]
                          & ~slen[:, 1:].any(1) & (f["ino"][:, 1] == 0))

    @staticmethod
    def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(mask.view(np.int8))) + 1, [len(mask)]))
        return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))

    def _worth_apart(self, net: np.ndarray) -> bool:
        """Socket rows decoded apart when they are many and in a few runs (a drain holds each
        ring's records together): the events table is then their slices and the rest's,
        in ring order, without a copy. A build's few sockets: one decode, as before."""
        k = int(np.count_nonzero(net))
        if k < _APART_MIN:
            return False
        return len(self._runs(net)) <= _APART_RUNS

    def _decode_apart(
        self, raw: np.ndarray, sbase: np.ndarray, f: np.ndarray, slen: np.ndarray, net: np.ndarray
    ) -> dict[str, pa.Table]:
        """The tables of a batch whose network-only records (``net``) are decoded by
        ``_decode_network`` and the others together by ``_decode_fixed``: the same rows in the
        same order as one ``_decode_fixed`` of the batch (no other record's row depends on a
        socket record's: the process cache and file labels learn nothing from them)."""
        out: dict[str, pa.Table] = {}
        at, rest = np.flatnonzero(net), np.flatnonzero(~net)
        # (take: a boolean index of a structured array copies it field by field, ~20x slower)
        ev_net = self._decode_network(raw, sbase[at], f.take(at), slen[at])
        ev_rest, procs, flows = self._decode_fixed(raw, sbase[rest], f.take(rest), slen[rest])
        parts, at_net, at_rest = [], 0, 0
        for a, b in self._runs(net):
            if net[a]:
                parts.append(ev_net.slice(at_net, b - a))
                at_net += b - a
            else:
                parts.append(ev_rest.slice(at_rest, b - a))
                at_rest += b - a
        out["events"] = pa.concat_tables(parts)
        if procs is not None:
            out["processes"] = procs
        if flows is not None:
            out["flows"] = flows
        return out

    def _decode_network(self, raw: np.ndarray, sbase: np.ndarray, f: np.ndarray, slen: np.ndarray) -> pa.Table:
        """The events rows of a batch of socket records only (``_network_rows``): the rows
        ``_decode_fixed`` makes of them, with only the columns such a row fills built; the
        ~54 others are NULL by construction (``_table``). web-conn's drains are all accepts
        and connects: building every events column for them was ~60% of their decode."""
        n = len(f)
        V = self.vocab
        nr = f["nr"].astype(np.int64) % _NR_MAX
        flags = f["flags"].astype(np.int64)
        F = self.F
        ret = f["ret"].astype(np.int64)
        in_progress = self._nr_table(("connect",))[nr] & (ret == -_EINPROGRESS)
        failed = (ret < 0) & (ret > -4096) & ~in_progress
        ino0 = f["ino"][:, 0]
        has_gen = "igen" in (f.dtype.names or ())
        igen0 = f["igen"][:, 0] if has_gen else np.zeros(n, np.uint32)
        cols = self._stamped(f, n)
        cols.update(
            event_class=_CLASS_ARROW.take(pa.array(np.minimum(f["cls"], len(CLASS_NAMES) - 1).astype(np.int32))),
            event_kind=_repeat("event", n),
            event_category=V.names(self.sc_cat_code[nr]),
            event_action=V.names(self.sc_action_code[nr]),
            syscall=V.names(self.sc_name_code[nr]),
            event_outcome=V.names(
                np.where(failed, V.code("failure"), np.where(in_progress, V.code("unknown"), V.code("success")))),
            ret=pa.array(ret),
            process_entity_id=pa.array(self.ids.ids(f["pid"], f["start"])),
            process_pid=pa.array(f["pid"]),
            process_tid=pa.array(f["tid"]),
            process_name=comm_names(f["comm"]),
            user_id=pa.array(f["uid"]),
            user_effective_id=pa.array(f["euid"]),
            group_id=pa.array(f["gid"]),
            group_effective_id=pa.array(f["egid"]),
            user_audit_id=pa.array(f["auid"]),
            process_session_id=pa.array(f["sessionid"]),
            process_cgroup_id=pa.array(f["cgroup"]),
            file_path_truncated=pa.array((flags & (F["FX_F_TRUNC0"] | F["FX_F_TRUNC1"] | F["FX_F_DEPTH0"])) != 0),
            file_inode=pa.array(ino0, mask=ino0 == 0),
            file_device=pa.array(f["dev"][:, 0].astype(np.uint64), mask=ino0 == 0),
            file_generation=pa.array(igen0, mask=(ino0 == 0) | (not has_gen)),
            file_type=file_types(f["imode"][:, 0]),
        )
        args = np.ascontiguousarray(f["args"][:, :4])
        rows = np.arange(n)
        for a in range(4):  # as _decode_fixed: a pointer to a string copied whole is left out
            slot = self.str_slot[a, nr]
            k = np.maximum(slot, 0)
            copied = (slot >= 0) & (slen[rows, k] > 0) & (((flags >> k) & F["FX_F_TRUNC0"]) == 0)
            cols[f"a{a}"] = pa.array(args[:, a], mask=copied)
        s0 = _gather(raw, sbase, slen[:, 0])
        self._network(cols, f, np.ones(n, bool), s0, n)
        table = _table(schema.EVENTS, cols, n)
        self._remember_labels(table, ino0, f["dev"][:, 0], np.zeros(n, bool))  # (none: its size check only)
        return table

    def _decode_fixed(
        self, raw: np.ndarray, sbase: np.ndarray, f: np.ndarray, slen: np.ndarray
    ) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
        n = len(f)
        K, F = self.K, self.F
        kind = f["kind"]
        nr = np.where(kind == K["FX_KIND_SYSCALL"], f["nr"], 0).astype(np.int64) % _NR_MAX
        flags = f["flags"].astype(np.int64)
        # one copy out of the strided records: the argument columns below gather from it
        args = np.ascontiguousarray(f["args"])
        rows = np.arange(n)
        start = f["start"]
        pid = f["pid"]
        eid = self.ids.ids(pid, start)
        ts_boot = f["ts"].astype(np.int64)
        ts = ts_boot + self.offset_ns
        cum = np.zeros((n, 4), np.int64)
        cum[:, 1:] = np.cumsum(slen[:, :3], axis=1)
        s = [_gather(raw, sbase + cum[:, i], slen[:, i]) for i in range(4)]

        is_sys = kind == K["FX_KIND_SYSCALL"]
        is_exec = kind == K["FX_KIND_EXEC"]
        is_fork = kind == K["FX_KIND_FORK"]
        is_exit = kind == K["FX_KIND_EXIT"]
        is_flow = kind == K["FX_KIND_FLOW"]
        is_sock = (flags & F["FX_F_SOCK"]) != 0
        base0 = (flags & F["FX_F_BASE0"]) != 0
        base1 = (flags & F["FX_F_BASE1"]) != 0

        def nr_in(*names: str) -> np.ndarray:
            return np.asarray(self._nr_table(names)[nr] & is_sys)

        is_symlink = nr_in("symlink", "symlinkat")
        is_mount = nr_in("mount")
        is_pipe = nr_in("pipe", "pipe2", "socketpair")
        is_execfail = nr_in("execve", "execveat")

        # event names, as codes into small vocabularies (built in C by take, not per row)
        V = self.vocab
        act = np.where(is_sys, self.sc_action_code[nr], V.code("syscall"))
        cat = np.where(is_sys, self.sc_cat_code[nr], V.code("syscall"))
        rmdir = nr_in("unlinkat") & ((args[:, 2] & _AT_REMOVEDIR) != 0)
        act = np.where(rmdir, V.code("rmdir"), act)
        for mask, c_name, a_name in (
            (is_exec, "process", "exec"), (is_fork, "process", "fork"),
            (is_exit, "process", "exit"), (is_flow, "flow", "flow"),
        ):
            act = np.where(mask, V.code(a_name), act)
            cat = np.where(mask, V.code(c_name), cat)
        ret = f["ret"].astype(np.int64)
        # a non-blocking connect returns EINPROGRESS: under way, not failed
        in_progress = nr_in("connect") & (ret == -_EINPROGRESS)
        failed = ((is_sys & (ret < 0) & (ret > -4096)) | is_execfail) & ~in_progress

        # objects: paths
        joined0 = _join(s[0], s[1]) if base0.any() else None
        joined1 = _join(s[2], s[3]) if base1.any() or is_mount.any() else None
        # each override below runs only when its mask selects a row (most batches hold no
        # symlink or mount; the result is the same, without a pass over every column)
        path0 = pc.if_else(pa.array(base0), joined0, s[0]) if base0.any() else s[0]
        if is_sock.any():
            path0 = pc.if_else(pa.array(is_sock), pa.nulls(n, pa.string()), path0)
        path_raw = s[1]
        target_path = pc.if_else(pa.array(base1), joined1, s[2]) if base1.any() else s[2]
        target_raw = s[3]
        if is_symlink.any():
            symlink_m = pa.array(is_symlink)
            path0 = pc.if_else(symlink_m, target_path, path0)       # the link's own path
            path_raw = pc.if_else(symlink_m, s[3], path_raw)
            target_raw = pc.if_else(symlink_m, s[1], target_raw)    # what it points to
            target_path = pc.if_else(symlink_m, pa.nulls(n, pa.string()), target_path)
        message = pa.nulls(n, pa.string())
        if is_mount.any():
            mount_m = pa.array(is_mount)
            message = pc.if_else(
                mount_m,
                pc.binary_join_element_wise("fstype=", pc.fill_null(s[0], ""), " source=", pc.fill_null(s[1], ""), ""),
                message,
            )
            path0 = pc.if_else(mount_m, joined1, path0)
            path_raw = pc.if_else(mount_m, s[3], path_raw)
            target_path = pc.if_else(mount_m, pa.nulls(n, pa.string()), target_path)
        exec_m = pa.array(is_exec)
        has_exec = bool(is_exec.any())  # (most batches of a busy host hold no exec: its columns stay NULL)
        if has_exec:
            path_raw = pc.if_else(exec_m, s[3], path_raw)
            target_path = pc.if_else(exec_m, pa.nulls(n, pa.string()), target_path)
            target_raw = pc.if_else(exec_m, pa.nulls(n, pa.string()), target_raw)
        path_valid = pc.is_valid(path0).to_numpy(zero_copy_only=False)
        resolution = V.names(
            np.where(base0 | is_symlink | is_mount, V.code("directory"), V.code("kernel")),
            valid=path_valid & ~(is_sock | is_pipe | is_fork | is_exit),
        )
        truncated = (flags & (F["FX_F_TRUNC0"] | F["FX_F_TRUNC1"] | F["FX_F_DEPTH0"])) != 0

        ftype = file_types(f["imode"][:, 0])
        ino0 = f["ino"][:, 0]
        # the inode's generation (NULL in records of a sensor that did not read it)
        has_gen = "igen" in (f.dtype.names or ())
        igen0 = f["igen"][:, 0] if has_gen else np.zeros(n, np.uint32)
        # pseudo files (pipes, sockets, anonymous inodes) have no path: name them by inode
        pseudo = pc.and_(pc.equal(pc.fill_null(path0, ""), "/"), pa.array(file_type_codes(f["imode"][:, 0]) != 0o04))
        if pc.any(pseudo).as_py():
            pseudo_name = pc.binary_join_element_wise(
                pc.fill_null(ftype, "anon"), ":[", pa.array(ino0).cast(pa.string()), "]", ""
            )
            path0 = pc.if_else(pseudo, pseudo_name, path0)

        task_only = is_flow if is_flow.any() else None
        cols = self._stamped(f, n)
        cols.update(
            event_class=_CLASS_ARROW.take(pa.array(np.minimum(f["cls"], len(CLASS_NAMES) - 1).astype(np.int32))),
            event_kind=_repeat("event", n),
            event_category=V.names(cat),
            event_action=V.names(act),
            syscall=V.names(self.sc_name_code[nr], valid=is_sys),
            event_outcome=V.names(
                np.where(failed, V.code("failure"), np.where(in_progress, V.code("unknown"), V.code("success"))),
                valid=is_sys,
            ),
            ret=pa.array(ret, mask=~is_sys),
            process_entity_id=pa.array(eid),
            process_pid=pa.array(pid),
            process_tid=pa.array(f["tid"]),
            process_parent_pid=pa.array(f["ppid"], mask=~(is_exec | is_fork)),
            process_name=comm_names(f["comm"]),
            user_id=pa.array(f["uid"]),
            # an edge knows its process and the uid that moved the data, not the rest
            user_effective_id=pa.array(f["euid"], mask=task_only),
            group_id=pa.array(f["gid"], mask=task_only),
            group_effective_id=pa.array(f["egid"], mask=task_only),
            user_audit_id=pa.array(f["auid"], mask=task_only),
            process_session_id=pa.array(f["sessionid"], mask=task_only),
            process_cgroup_id=pa.array(f["cgroup"], mask=task_only),
            process_executable=pc.if_else(exec_m, s[0], pa.nulls(n, pa.string())) if has_exec else None,
            process_working_directory=pc.if_else(exec_m, s[2], pa.nulls(n, pa.string())) if has_exec else None,
            file_path=path0,
            file_path_raw=path_raw,
            file_path_resolution=resolution,
            file_path_truncated=pa.array(truncated),
            file_deleted=pa.array(np.ones(n, bool), mask=(flags & F["FX_F_DELETED0"]) == 0),
            file_inode=pa.array(ino0, mask=ino0 == 0),
            file_device=pa.array(f["dev"][:, 0].astype(np.uint64), mask=ino0 == 0),
            file_generation=pa.array(igen0, mask=(ino0 == 0) | (not has_gen)),
            file_type=ftype,
            file_target_path=target_path,
            file_target_path_raw=target_raw,
            file_target_inode=pa.array(f["ino"][:, 1], mask=f["ino"][:, 1] == 0),
            message=message,
        )
        # argv: NUL-separated
        if has_exec:
            argv = pc.utf8_rtrim(pc.if_else(exec_m, s[1], pa.nulls(n, pa.string())), characters="\x00")
            cols["process_args"] = pc.split_pattern(argv, "\x00")
        else:
            cols["process_args"] = pa.nulls(n, pa.list_(pa.string()))
        # exit
        code = ret
        sig = code & 0x7F
        exit_code = np.where(sig == 0, (code >> 8) & 0xFF, 128 + sig)
        if is_exit.any():  # (absent: NULL, as every row of a batch without exits had)
            cols["process_exit_code"] = pa.array(exit_code.astype(np.int32), mask=~is_exit)
            cols["process_exit_signal"] = pa.array(sig.astype(np.int32), mask=~(is_exit & (sig != 0)))
        # raw argument columns
        for col, idx in self.argidx.items():
            i = idx[nr]
            has = is_sys & (i >= 0)
            vals = args[rows, np.clip(i, 0, 5)]
            cols[col] = vals
            cols[col + "__mask"] = ~has
        cols["file_flags"] = np.where(nr_in("creat"), O_CREAT | 0o1 | 0o1000, cols["file_flags"])
        cols["file_flags__mask"] = cols["file_flags__mask"] & ~nr_in("creat")
        sig_col = cols.pop("signal")
        cols["signal"] = pa.array(sig_col.astype(np.int64).astype(np.int32), mask=cols.pop("signal__mask"))
        for a in range(4):  # a pointer to a string copied whole into the row is left out (syscalls.STRING_ARGS)
            slot = self.str_slot[a, nr]
            k = np.maximum(slot, 0)
            copied = (slot >= 0) & (slen[rows, k] > 0) & (((flags >> k) & F["FX_F_TRUNC0"]) == 0)
            cols[f"a{a}"] = pa.array(args[:, a], mask=~is_sys | copied)
        # fd
        fd = np.where(is_flow, ret, np.where(is_pipe, args[:, 4].astype(np.int64), -1))
        opened = nr_in("open", "openat", "openat2", "creat", "memfd_create") & (ret >= 0)
        fd = np.where(opened, ret, fd)
        cols["fd"] = pa.array(fd.astype(np.int32), mask=fd < 0)
        # flows
        if task_only is not None:  # (flow records: the flushes bring edges in maps, rarely in the ring)
            for k, name in enumerate(("flow_read_count", "flow_read_bytes", "flow_write_count", "flow_write_bytes")):
                cols[name] = pa.array(args[:, k], mask=~is_flow)
            cols["flow_first_ts"] = pa.array(args[:, 4].astype(np.int64) + self.offset_ns, mask=~is_flow)
            cols["flow_last_ts"] = pa.array(args[:, 5].astype(np.int64) + self.offset_ns, mask=~is_flow)
        # network (a build's batches hold no socket record: every column NULL)
        if is_sock.any():
            self._network(cols, f, is_sock, s[0], n)
        # targets: fork child; kill/ptrace resolved through the cache below
        tpid = f["tpid"]
        teid = np.where(is_fork, self.ids.ids(tpid, f["tstart"]), 0).astype(np.uint64)
        procs_table = self._lifecycle(f, eid, ts, is_fork, is_exec, s, cols["process_args"], teid, tpid)
        kill_like = (nr_in("kill", "tkill", "tgkill", "ptrace")) & (tpid > 0)
        for j in np.nonzero(kill_like)[0]:
            teid[j] = self.cache.by_pid.get(int(tpid[j]), 0)
        tmask = ~(is_fork | kill_like)
        cols["target_pid"] = pa.array(np.where(is_fork | kill_like, tpid, 0).astype(np.uint32), mask=tmask)
        cols.pop("target_pid__mask", None)
        cols["target_entity_id"] = pa.array(teid, mask=teid == 0)
        for j in np.nonzero(is_exit)[0]:
            p = self.cache.get(int(eid[j]))
            if p is not None:
                p.exited = True
        # Ring order is reservation order, which is time order up to the few records
        # being written on other CPUs at once: no sort (a full copy) is needed.
        table = _table(schema.EVENTS, cols, n)
        kernel_path = (resolution.is_valid().to_numpy(zero_copy_only=False)
                       & (flags & (F["FX_F_BASE0"])) == 0) & (ino0 != 0) & ~is_sock & ~is_flow
        self._remember_labels(table, ino0, f["dev"][:, 0], kernel_path)
        flows_table = flows_table_of(table, "superseded") if is_flow.any() else None
        return table, procs_table, flows_table

    @staticmethod
    def label_key(ino: np.ndarray, dev: np.ndarray) -> np.ndarray:
        i, d = (np.asarray(a, np.uint64) for a in (ino, dev))
        return np.asarray(i ^ (d << np.uint64(40)))

    def _remember_labels(self, table: pa.Table, ino: np.ndarray, dev: np.ndarray, mask: np.ndarray) -> None:
        """Paths the kernel resolved for (inode, device), to label the kernel's aggregated
        rows (flow edges, re-open counts), which carry inodes only (and their process's
        own name, from the kernel: a pid may be another process's by the flush).

        An inode number names another file once the first is deleted, and a rename gives
        a file another name: when a file's path changes, the time of the change is kept,
        so that an edge of the flush is named as its file was named when it began (an
        edge on the old /etc/passwd must not be called /etc/shadow because the new
        /etc/shadow took the freed inode before the flush).

        A batch names the same few files over and over: only the first row of each file
        and the rows where its path changes are turned into Python."""
        idx = np.nonzero(mask)[0]
        if len(self.labels) > 500_000:
            self.labels.clear()
            self.label_history.clear()
        if not len(idx):
            return
        if len(self.label_history) > self._history_limit:  # an edge is flushed within seconds of its start
            horizon = int(table["ts_boot"][int(idx[-1])].as_py() or 0) - LABEL_HISTORY_NS
            self.label_history = {k: h for k, h in self.label_history.items() if h[-1][0] >= horizon}
            # pruned again only when it has doubled: a busy host keeps more than 10,000
            # changed paths within the horizon, and a pass over all of them per batch cost
            # more than the rest of the labelling (a lookup by time finds the same path
            # whether older entries are kept or not)
            self._history_limit = max(10_000, 2 * len(self.label_history))
        keys = self.label_key(ino[idx], dev[idx])
        order = np.argsort(keys, kind="stable")  # each file's rows, in ring (time) order
        keys = keys[order]
        rows = pa.array(idx[order])
        paths = table["file_path"].take(rows)
        visit = np.ones(len(keys), bool)
        if len(keys) > 1:
            same = keys[1:] == keys[:-1]
            moved = pc.fill_null(pc.not_equal(paths[1:], paths[:-1]), True).to_numpy(zero_copy_only=False)
            visit[1:] = ~same | moved
        at = np.nonzero(visit)[0]
        ts = table["ts_boot"].take(pa.array(idx[order][at])).to_pylist()
        labels = self.labels
        for k, t, path in zip(keys[at].tolist(), ts, paths.take(pa.array(at)).to_pylist()):
            if k in labels and labels[k] != path:
                hist = self.label_history.setdefault(k, [(0, labels[k])])
                hist.append((t, path))
                del hist[:-8]
            labels[k] = path

    def named(self, ino: np.ndarray, dev: np.ndarray) -> bool:
        """Whether every (inode, device) has a name from an open decoded so far."""
        labels = self.labels
        return all(k in labels for k in np.unique(self.label_key(ino, dev)).tolist())

    def label(self, ino: np.ndarray, dev: np.ndarray, ts_boot: np.ndarray | None = None) -> pa.Array:
        """The file_path of aggregated rows, where known: as it was at ``ts_boot`` (each
        row's kernel time), or the last one known."""
        keys_all = self.label_key(ino, dev)
        # a flush names the same files many times: look each up once
        keys, at = np.unique(keys_all, return_inverse=True)
        at = at.ravel()
        ks = keys.tolist()
        out = pa.array([self.labels.get(k) for k in ks], pa.string()).take(pa.array(at))
        history = self.label_history
        moved = [u for u, k in enumerate(ks) if k in history] if ts_boot is not None and history else []
        if not moved:
            return out
        # only the rows of moved files are named again, by their file's history (a few
        # entries each): the other rows keep the one take above, never turned into Python
        rows = np.nonzero(np.isin(at, moved))[0]
        names: list[str | None] = []
        for u, t in zip(at[rows].tolist(), np.asarray(ts_boot)[rows].tolist()):
            hist = history[ks[u]]
            names.append(next((p for since, p in reversed(hist) if since <= t), hist[0][1]))
        mask = np.zeros(len(at), bool)
        mask[rows] = True
        return pc.replace_with_mask(out, pa.array(mask), pa.array(names, pa.string()))

    def _network(self, cols: dict[str, Any], f: np.ndarray, is_sock: np.ndarray, s0: pa.Array, n: int) -> None:
        fam = f["family"].astype(np.int64)
        inet = is_sock & ((fam == 2) | (fam == 10))
        proto = f["protocol"].astype(np.int64)
        sotype = f["sotype"].astype(np.int64)
        V = self.vocab
        tcode = self.proto_code[proto & 0xFF]
        none = tcode == V.code("")
        tcode = np.where(none & (sotype == _SOCK_STREAM), V.code("tcp"), tcode)
        tcode = np.where(none & (sotype == _SOCK_DGRAM), V.code("udp"), tcode)
        tcode = np.where(fam == 1, V.code("unix"), tcode)
        cols["network_transport"] = V.names(tcode, valid=is_sock & (tcode != V.code("")))
        ncode = np.where(fam == 2, V.code("ipv4"), np.where(fam == 10, V.code("ipv6"), V.code("unix")))
        cols["network_type"] = V.names(ncode, valid=is_sock & ((fam == 2) | (fam == 10) | (fam == 1)))
        cols["source_ip"] = _addresses(fam, f["saddr"], inet)
        cols["destination_ip"] = _addresses(fam, f["daddr"], inet)
        cols["source_port"] = pa.array(f["sport"], mask=~inet)
        cols["destination_port"] = pa.array(f["dport"], mask=~inet | (f["dport"] == 0))
        unix = is_sock & (fam == 1)
        cols["unix_path"] = pc.if_else(pa.array(unix), s0, pa.nulls(n, pa.string()))
        cols["unix_peer_inode"] = pa.array(f["peer_ino"], mask=~unix | (f["peer_ino"] == 0))

    def _lifecycle(
        self, f: np.ndarray, eid: np.ndarray, ts: np.ndarray, is_fork: np.ndarray, is_exec: np.ndarray,
        s: list[pa.Array], argv: pa.Array, teid: np.ndarray, tpid: np.ndarray,
    ) -> pa.Table | None:
        """One processes row per fork and exec. The columns the record carries are built
        vectorised; Python runs per row only for what the process cache decides (the
        child's inherited image, the image sequence, the parent of an unknown process)."""
        idx = np.nonzero(is_fork | is_exec)[0]
        n = len(idx)
        if not n:
            return None
        r = f[idx]
        take = pa.array(idx)
        exe_l = s[0].take(take).to_pylist()
        cwd_l = s[2].take(take).to_pylist()
        argv_l = argv.take(take).to_pylist()
        me_l = eid[idx].tolist()
        fork_l = is_fork[idx].tolist()
        child_l = teid[idx].tolist()
        tpid_l = tpid[idx].tolist()
        pid_l = r["pid"].tolist()
        ppid_l = r["ppid"].tolist()
        start_ts = np.where(is_fork[idx], r["tstart"], r["start"]).astype(np.int64) + self.offset_ns
        entity = np.zeros(n, np.uint64)
        image_seq = np.zeros(n, np.uint32)
        pid = np.where(is_fork[idx], tpid[idx], r["pid"]).astype(np.uint32)
        parent: list[int | None] = [None] * n
        exe: list[str | None] = [None] * n
        args: list[list[str] | None] = [None] * n
        cwd: list[str | None] = [None] * n
        cache = self.cache
        for k in range(n):
            me = me_l[k]
            if fork_l[k]:
                child = child_l[k]
                p = cache.get(me)
                if p is not None:
                    exe[k], args[k], cwd[k] = p.exe, p.args, p.cwd
                entity[k], parent[k] = child, me
                cache.add(child, _Proc(tpid_l[k], me, 0, exe[k], args[k], cwd[k]))
            else:
                p = cache.get(me)
                if p is None:
                    p = _Proc(pid_l[k], cache.by_pid.get(ppid_l[k]), 0)
                p.image_seq += 1
                p.exe, p.args, p.cwd = exe_l[k], argv_l[k], cwd_l[k]
                cache.add(me, p)
                entity[k], image_seq[k], parent[k] = me, p.image_seq, p.parent
                exe[k], args[k], cwd[k] = p.exe, p.args, p.cwd
        image_ts = np.where(is_fork[idx], start_ts, ts[idx])
        tty = _cstr(r["tty"])
        cols: dict[str, Any] = self._origin(n)
        cols.update(
            entity_id=entity, image_seq=image_seq, pid=pid,
            parent_entity_id=pa.array(parent, pa.uint64()),
            parent_pid=np.where(is_fork[idx], r["pid"], r["ppid"]).astype(np.uint32),
            start_ts=start_ts, image_ts=image_ts,
            executable=pa.array(exe, pa.string()), args=pa.array(args, pa.list_(pa.string())),
            working_directory=pa.array(cwd, pa.string()), name=_cstr(r["comm"]),
            user_id=r["uid"], user_effective_id=r["euid"], group_id=r["gid"], user_audit_id=r["auid"],
            session_id=r["sessionid"], tty=pc.if_else(pc.equal(tty, ""), pa.nulls(n, pa.string()), tty),
            cgroup_id=r["cgroup"], ns_mnt=r["ns_mnt"], ns_pid=r["ns_pid"], ns_net=r["ns_net"],
            ns_user=r["ns_user"], ns_uts=r["ns_uts"],
            source=self.vocab.names(np.where(is_fork[idx], self.vocab.code("fork"), self.vocab.code("exec"))),
        )
        return _table(schema.PROCESSES, cols, n)

    def process_rows(self, rows: Iterable[dict[str, Any]]) -> pa.Table:
        rows = list(rows)
        for r in rows:
            r.setdefault("host_id", self.host.host_id)
            r.setdefault("host_name", self.host.host_name)
            r.setdefault("boot_id", self.host.boot_id)
        return pa.Table.from_pylist(rows, schema=schema.PROCESSES)

    def remember(self, eid: int, pid: int, parent: int | None, exe: str | None, args: list[str] | None, cwd: str | None) -> None:
        """Teach the cache a process seen outside the stream (the /proc snapshot)."""
        self.cache.add(eid, _Proc(pid, parent, 0, exe, args, cwd))


_FLOW_SOURCE = (
    "event_action", "host_id", "host_name", "boot_id", "process_entity_id", "process_pid", "fd", "file_inode",
    "file_device", "file_type", "file_path", "flow_first_ts", "flow_last_ts", "flow_read_count",
    "flow_read_bytes", "flow_write_count", "flow_write_bytes", "process_tid", "process_name", "ts_boot",
    "user_id", "file_generation",
)


def flows_table_of(events: pa.Table, reason: str) -> pa.Table:
    """The narrow ``flows`` rows of the flow edges in an events table (which keeps them too:
    ``in_events`` true; edges that came through the ring buffer carry its sequence number)."""
    fl = events.select(list(_FLOW_SOURCE))  # filter 16 columns, not 80
    is_flow = pc.equal(fl["event_action"], "flow")
    if is_flow.null_count or not pc.all(is_flow).as_py():  # a periodic flush is all edges
        fl = fl.filter(is_flow)
    return pa.table(
        {
            "host_id": fl["host_id"], "host_name": fl["host_name"], "boot_id": fl["boot_id"],
            "entity_id": fl["process_entity_id"], "pid": fl["process_pid"], "fd": fl["fd"],
            "file_inode": fl["file_inode"], "file_device": fl["file_device"], "file_type": fl["file_type"],
            "file_path": fl["file_path"], "first_ts": fl["flow_first_ts"], "last_ts": fl["flow_last_ts"],
            "read_count": fl["flow_read_count"], "read_bytes": fl["flow_read_bytes"],
            "write_count": fl["flow_write_count"], "write_bytes": fl["flow_write_bytes"],
            "reason": repeat(reason, fl.num_rows),
            "tid": fl["process_tid"], "process_name": fl["process_name"], "ts_boot": fl["ts_boot"],
            "user_id": fl["user_id"], "file_generation": fl["file_generation"],
            "in_events": pa.repeat(pa.scalar(True), fl.num_rows),
        },
        schema=schema.FLOWS,
    )


_FIELDS: dict[int, tuple[pa.Schema, list[tuple[str, str, pa.DataType, Any]]]] = {}


def _fields(sch: pa.Schema) -> list[tuple[str, str, pa.DataType, Any]]:
    """(name, name of its mask, type, numpy dtype of an integer type) per field, once per
    schema: reading them off the schema built a Field and a DataType object per column and
    batch (~0.2 ms a batch)."""
    got = _FIELDS.get(id(sch))
    if got is None or got[0] is not sch:
        got = (sch, [(f.name, f.name + "__mask", f.type,
                      f.type.to_pandas_dtype() if pa.types.is_integer(f.type) else None) for f in sch])
        _FIELDS[id(sch)] = got
    return got[1]


def _table(sch: pa.Schema, cols: dict[str, Any], n: int) -> pa.Table:
    arrays = []
    for name, mask_name, typ, np_int in _fields(sch):
        v = cols.get(name)
        if v is None:
            arrays.append(pa.nulls(n, typ))
            continue
        if isinstance(v, np.ndarray):
            mask = cols.get(mask_name)
            if np_int is not None:
                v = pa.array(v.astype(np_int, copy=False), mask=mask)
            else:
                v = pa.array(v, mask=mask)
        if isinstance(v, pa.ChunkedArray):
            v = v.combine_chunks()
        if v.type != typ:
            v = v.cast(typ)
        arrays.append(v)
    return pa.Table.from_arrays(arrays, schema=sch)
