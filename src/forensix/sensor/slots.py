"""The sensor's per-CPU slot caches in front of the flows and reopens hash maps.

A read, write or repeated open finds its edge (or its re-open count) in a slot of the CPU it
runs on instead of looking it up in a hash map (bpf/sensor.bpf.c, "The slot caches"). The
programs fill one of two banks, named by the ``accounted`` map's ``FX_ACC_BANK`` word. To
take what the slots hold, the agent flips the bank, waits for an RCU grace period
(``membarrier(MEMBARRIER_CMD_GLOBAL)``: every BPF program runs inside an RCU read-side
section, so every program that could have read the old bank has returned), then reads the
old bank of every CPU and zeroes it. The same edge can be in the hash map (a slot given up
for another key is added there) and in slots of several CPUs: the rows of one key are added
together here, first and last time the earliest and latest, and the descriptor, thread and
program name those of the row that began first.

A flow slot's edge pushed out by another key goes first to the ``flow_spill`` ring (a copy,
where an insert into the hash map cost ~500 ns), and to the hash map only when the ring is
full; the flow slots are taken with what the ring holds, its rows added like a slot's.

The slots of every CPU are one mmapable array (CPU c's bank b at ``(2c + b) * FX_SLOTS``):
the bank is read and its used slots zeroed in place, without a bpf() call. A sensor pinned
by an older forensix keeps them in per-CPU arrays, taken with a batch lookup and a batch
update as before (~0.4 ms of syscalls and ~1 ms of copies and page faults a flush, whatever
the slots held).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable

import numpy as np

from forensix.errors import SensorError
from forensix.sensor import libbpf as lb
from forensix.sensor.ringbuf import RingBuffer

__all__ = ["ACC_BANK", "SlotCaches", "merge_flows", "merge_reopens"]

ACC_BANK = 8189  # events.h FX_ACC_BANK
_ACC_WORDS = 8182  # events.h FX_ACC_FLOW_INSERTS: the flip reads the words from it to FX_ACC_BANK in one call
_MEMBARRIER_CMD_GLOBAL = 1
_BPF_MAP_TYPE_ARRAY = 2
_BPF_F_MMAPABLE = 1 << 10
_SYS_MEMBARRIER = 324  # x86_64, as the sensor itself


_libc: ctypes.CDLL | None = None  # made once: a CDLL builds a class and dlopens (~0.1 ms a flush)


def _grace_period() -> None:
    """Wait until every BPF program that started before now has returned."""
    global _libc
    libc = _libc = _libc or ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_MEMBARRIER, _MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SensorError(f"membarrier(MEMBARRIER_CMD_GLOBAL) failed: {os.strerror(err)}",
                          "the flow slot caches need it (Linux 4.3, not with nohz_full)")


def _slot_dtype(kdt: np.dtype, vdt: np.dtype) -> np.dtype:
    """A slot as events.h lays it out: the key, then the value, 8-byte aligned."""
    size = -(-(kdt.itemsize + vdt.itemsize) // 8) * 8
    return np.dtype({"names": ["k", "v"], "formats": [kdt, vdt], "offsets": [0, kdt.itemsize], "itemsize": size})


class SlotCaches:
    """Take the slots of the bank the programs are not filling."""

    def __init__(self, accounted_fd: int, ncpu: int, caches: dict[str, tuple[int, np.dtype, np.dtype]],
                 spill_fd: int | None = None) -> None:
        self._acc = accounted_fd
        self._ncpu = ncpu
        self._maps: dict[str, tuple[int, np.dtype, int]] = {}
        # the mmapped slots: every CPU's two banks, as (cpu, bank, slot) rows and as their bytes
        self._mapped: dict[str, tuple[mmap.mmap, np.ndarray, np.ndarray]] = {}
        self.syscalls = 0  # bpf() calls made reading and zeroing the slots (tests: none when mmapped)
        for name, (fd, kdt, vdt) in caches.items():
            dt = _slot_dtype(kdt, vdt)
            info = _map_info(fd, name)
            if info[3] != dt.itemsize:
                raise SensorError(f"the sensor's {name} slots are {info[3]} bytes, this forensix reads {dt.itemsize}",
                                  "rebuild the sensor (make -C bpf) with this forensix")
            if info[0] == _BPF_MAP_TYPE_ARRAY and info[5] & _BPF_F_MMAPABLE:
                self._mapped[name] = _mmap_slots(fd, name, dt, int(info[4]), ncpu)
                self._maps[name] = (fd, dt, self._mapped[name][1].shape[2])
            else:  # per-CPU arrays: a sensor pinned by a forensix before the mmapped slots
                self._maps[name] = (fd, dt, int(info[4]) // 2)
        # the flow slots' spill (a sensor built before it has none: its slots give up to the map)
        self._spill = RingBuffer(spill_fd, int(_map_info(spill_fd, "flow_spill")[4])) if spill_fd is not None else None
        self.spilled = 0  # edges taken from the spill so far
        # the ``accounted`` words FX_ACC_FLOW_INSERTS .. FX_ACC_BANK as the last flip read them (the
        # recorder's insert counts: sensor/recorder.py _take_inserted), by key
        self.words: dict[int, int] = {}

    @property
    def names(self) -> list[str]:
        return list(self._maps)

    def _bank(self) -> int:
        key, val = ctypes.c_uint32(ACC_BANK), ctypes.c_uint64(0)
        lb.check_int(lb.lib.bpf_map_lookup_elem(self._acc, ctypes.byref(key), ctypes.byref(val)), "read the slot bank")
        return int(val.value) & 1

    def flip(self) -> int:
        """Point the programs at the other bank; returns the bank they left, now still.

        The word is counted up, not toggled: bit 0 is the bank, and the count tells a TCP
        connection's owner that a flush passed (bpf/events.h, struct fx_tcp_own)."""
        self.words = self._read_words()
        word = self.words[ACC_BANK]
        old = word & 1
        key, val = ctypes.c_uint32(ACC_BANK), ctypes.c_uint64(word + 1)
        lb.check_int(lb.lib.bpf_map_update_elem(self._acc, ctypes.byref(key), ctypes.byref(val), 0),
                     "flip the slot bank")
        _grace_period()
        return old

    def _read_words(self) -> dict[int, int]:
        """The ``accounted`` words from FX_ACC_FLOW_INSERTS to FX_ACC_BANK, in one bpf() call (each
        costs ~20 us of CPU here: the bank word and the recorder's two insert counts were three)."""
        n = ACC_BANK - _ACC_WORDS + 1
        keys, vals = (ctypes.c_uint32 * n)(), (ctypes.c_uint64 * n)()
        start, token, count = ctypes.c_uint32(_ACC_WORDS - 1), ctypes.c_uint32(0), ctypes.c_uint32(n)
        ret = lb.lib.bpf_map_lookup_batch(self._acc, ctypes.byref(start), ctypes.byref(token), keys, vals,
                                          ctypes.byref(count), None)
        if (ret < 0 and -ret != 2) or count.value != n:  # ENOENT: the map ends after them (it does not)
            raise SensorError(f"cannot read the slot bank: {os.strerror(-ret) if ret < 0 else 'a short read'}",
                              "check that the sensor is loaded")
        return dict(zip(keys, vals, strict=True))

    def take(self, name: str, bank: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values of the bank's slots that hold something, on every CPU; the bank
        is zeroed (empty) after."""
        if name in self._mapped:
            k, v = self._take_mapped(name, bank)
        else:
            k, v = self._take_batch(name, bank)
        if name == "flow_slots" and self._spill is not None:
            sk, sv = self._take_spill(self._maps[name][1])
            if len(sk):
                k, v = _cat([k, sk]), _cat([v, sv])
        return k, v

    def _take_mapped(self, name: str, bank: int) -> tuple[np.ndarray, np.ndarray]:
        """The used slots of the bank, read and zeroed in the mmapped array: after the flip's
        grace period no program writes them, and the zeroes are stored before the flip that
        hands the bank back to the programs (a bpf() call: they see them)."""
        _, slots, raw = self._mapped[name]
        dt = self._maps[name][1]
        cpu, at = np.nonzero(_used(name, slots[:, bank]))
        rows = raw[cpu, bank, at]  # a copy, the slots' bytes
        raw[cpu, bank, at] = 0
        return _split(rows, dt)

    def _take_batch(self, name: str, bank: int) -> tuple[np.ndarray, np.ndarray]:
        """``take`` of per-CPU arrays: one batch lookup, one batch update of zeroes."""
        fd, dt, per_bank = self._maps[name]
        self.syscalls += 2
        keys = np.arange(bank * per_bank, (bank + 1) * per_bank, dtype=np.uint32)
        vals = np.zeros((per_bank, self._ncpu), dt)
        count = ctypes.c_uint32(per_bank)
        token = ctypes.c_uint32(0)
        first_key = ctypes.c_uint32(bank * per_bank - 1) if bank else None
        # lookup_batch walks keys after in_batch: start after the key before the bank
        ret = lb.lib.bpf_map_lookup_batch(fd, ctypes.byref(first_key) if first_key is not None else None,
                                          ctypes.byref(token), keys.ctypes.data, vals.ctypes.data,
                                          ctypes.byref(count), None)
        err = -ret
        if ret < 0 and err != 2:  # ENOENT: the map's end came first (bank 1)
            raise SensorError(f"cannot read the {name} slots: {os.strerror(err)}", "check that the sensor is loaded")
        n = count.value
        got = vals[:n].reshape(-1)
        got = got[np.flatnonzero(_used(name, got))]
        zeros = np.zeros((per_bank, self._ncpu), dt)
        cnt = ctypes.c_uint32(per_bank)
        lb.check_int(lb.lib.bpf_map_update_batch(fd, keys.ctypes.data, zeros.ctypes.data, ctypes.byref(cnt), None),
                     f"empty the {name} slots")
        return _split(_raw(got).view(np.uint8).reshape(len(got), dt.itemsize), dt)

    def _take_spill(self, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The keys and values of the edges pushed out of the flow slots since the last take,
        in the order they left (every record of the spill is one slot). Read after the bank
        flip's grace period like the slots, so the edges pushed out of the old bank are all
        there; the ring's space is given back at once, as the slots are zeroed at once. Cut
        from the records' bytes: a web server spills ~30 k edges a second, and numpy copies
        a structured field ~5x slower than the bytes."""
        assert self._spill is not None
        d = self._spill.drain()
        if not len(d):
            return _split(np.zeros((0, dt.itemsize), np.uint8), dt)
        if (d.lengths != dt.itemsize).any():
            raise SensorError(f"the flow_spill ring holds records of {sorted(set(d.lengths.tolist()))} bytes, "
                              f"this forensix reads {dt.itemsize}", "rebuild the sensor (make -C bpf) with this forensix")
        n = len(d)
        self.spilled += n
        stride = (dt.itemsize + 8 + 7) & ~7  # each record: its 8-byte header, then the slot, 8-byte aligned
        first = int(d.offsets[0])
        raw = np.frombuffer(d.data, np.uint8)
        if (d.offsets == first + stride * np.arange(n)).all():  # back to back (the ring never discards here)
            rows = np.lib.stride_tricks.as_strided(raw[first:], (n, dt.itemsize), (stride, 1), writeable=False)
        else:
            rows = raw[d.offsets[:, None] + np.arange(dt.itemsize)]
        return _split(rows, dt)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
        for name in list(self._mapped):
            mm = self._mapped.pop(name)[0]  # its arrays go with the tuple: nothing holds the mapping
            mm.close()


def _mmap_slots(fd: int, name: str, dt: np.dtype, entries: int, ncpu: int) -> tuple[mmap.mmap, np.ndarray, np.ndarray]:
    """The slot array mapped: as (cpu, bank, slot) rows of ``dt``, and as their bytes."""
    if entries % (2 * ncpu):
        raise SensorError(f"the sensor's {name} has {entries} slots, not two banks for each of {ncpu} CPUs",
                          "rebuild the sensor (make -C bpf) with this forensix")
    size = -(-entries * dt.itemsize // mmap.PAGESIZE) * mmap.PAGESIZE
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as e:
        raise SensorError(f"cannot map the sensor's {name} slots: {e.strerror}", "check that the sensor is loaded") from e
    shape = (ncpu, 2, entries // (2 * ncpu))
    rows = np.frombuffer(mm, dt, entries).reshape(shape)
    return mm, rows, np.frombuffer(mm, np.uint8, entries * dt.itemsize).reshape(*shape, dt.itemsize)


def _split(rows: np.ndarray, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Slots given as their bytes (one row each, the slot first) as separate key and value arrays."""
    fields = dt.fields
    assert fields is not None  # _slot_dtype's: a key, then a value
    (kdt, ko), (vdt, vo) = fields["k"][:2], fields["v"][:2]
    k = np.ascontiguousarray(rows[:, ko: ko + kdt.itemsize]).view(kdt).reshape(-1)
    v = np.ascontiguousarray(rows[:, vo: vo + vdt.itemsize]).view(vdt).reshape(-1)
    return k, v


def _map_info(fd: int, name: str) -> ctypes.Array[ctypes.c_uint32]:
    """struct bpf_map_info of the map: type, id, key_size, value_size, max_entries, ..."""
    info = (ctypes.c_uint32 * 32)()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    lb.check_int(lb.lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)), f"info of {name}")
    return info


def _used(name: str, slots: np.ndarray) -> np.ndarray:
    used: np.ndarray = slots["v"]["last"] != 0 if name == "flow_slots" else slots["k"]["start"] != 0
    return used


def _groups(keys: np.ndarray, by: list[np.ndarray], then: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by key and the columns `by` (one group each), then within a group by the
    columns `then` (most significant first); returns the order and where each group starts."""
    group = [*reversed(by), *[keys[f] for f in reversed(keys.dtype.names or ())]]
    order = np.lexsort([*reversed(then), *group])
    same = np.ones(len(order), bool)
    same[0] = False
    for c in group:
        s = c[order]
        same[1:] &= s[1:] == s[:-1]
    return order, np.flatnonzero(~same)


def _row_hashes(k: np.ndarray, start: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's key bytes and process start: equal rows, equal hashes."""
    words = np.ascontiguousarray(k).view(np.uint8).reshape(len(k), -1)
    if words.shape[1] % 8:
        words = np.pad(words, ((0, 0), (0, 8 - words.shape[1] % 8)))
    h = start.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for w in np.ascontiguousarray(words).view(np.uint64).T:  # wraps around, as a hash should
        h = (h ^ w) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h


def _repeated(h: np.ndarray) -> np.ndarray:
    """Where a hash occurs more than once. Counted first by its top bits (a few times as many
    buckets as rows: ~one row in five shares one by chance), then exactly among those."""
    bits = max(10, (len(h) * 4).bit_length())
    bucket = (h >> np.uint64(64 - bits)).astype(np.intp)
    maybe = np.flatnonzero(np.bincount(bucket, minlength=1 << bits)[bucket] > 1)
    out = np.zeros(len(h), bool)
    if len(maybe):
        _, inv, cnt = np.unique(h[maybe], return_inverse=True, return_counts=True)
        out[maybe] = cnt[inv] > 1
    return out


def _raw(a: np.ndarray) -> np.ndarray:
    """A structured array as opaque rows: numpy copies those ~8x faster than field by field."""
    return a.view(np.dtype((np.void, a.dtype.itemsize)))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([_raw(p) for p in parts]).view(parts[0].dtype)


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return _raw(a).take(rows).view(a.dtype)


def merge_flows(fk: np.ndarray, fv: np.ndarray, sk: np.ndarray, sv: np.ndarray,
                hashes: Callable[[np.ndarray, np.ndarray], np.ndarray] = _row_hashes) -> tuple[np.ndarray, np.ndarray]:
    """The hash map's edges and the slots' as one row per (key, process).

    Most edges are in one place only (a web server's ~30 k new sockets a second each leave
    one slot or spill record): rows whose (key, process) hash no other row shares go out as
    they are, and only those that share one are grouped exactly (``_merge_exact``; a hash
    collision only costs that). Sorting every row by its 8 key columns cost ~0.7 us an edge
    on web-conn, most of the flush. ``hashes``: for tests (collisions on purpose)."""
    if not len(sv):
        return fk, fv
    k, v = _cat([fk, sk]), _cat([fv, sv])
    dup = _repeated(hashes(k, v["start"]))
    if not dup.any():
        return k, v
    if dup.all():
        return _merge_exact(k, v)
    rows = np.flatnonzero(dup)
    mk, mv = _merge_exact(_take(k, rows), _take(v, rows))
    keep = np.flatnonzero(~dup)
    return _cat([_take(k, keep), mk]), _cat([_take(v, keep), mv])


def _merge_exact(k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``merge_flows`` by sorting every row by its key, process and first time."""
    order, starts = _groups(k, [v["start"]], [v["first"]])
    if len(starts) == len(k):
        return k, v
    k, v = _take(k, order), _take(v, order)
    out_k, out_v = _take(k, starts), _take(v, starts)  # the earliest row: fd, tid, comm, first
    for f in ("rcount", "rbytes", "wcount", "wbytes"):
        out_v[f] = np.add.reduceat(v[f], starts)
    out_v["last"] = np.maximum.reduceat(v["last"], starts)
    return out_k, out_v


def _hash_groups(h: np.ndarray, k: np.ndarray, then: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """``_groups`` by the rows' hashes: rows ordered by hash, then by ``then``; each group a
    run of one hash. None if two distinct keys share a hash (their rows could interleave):
    the caller groups by the key columns instead."""
    order = np.lexsort([*reversed(then), h])
    hs, kb = h[order], _raw(np.ascontiguousarray(k))[order]
    same = np.ones(len(order), bool)
    same[0] = False
    same[1:] = hs[1:] == hs[:-1]
    if (kb[1:][same[1:]] != kb[:-1][same[1:]]).any():
        return None
    return order, np.flatnonzero(~same)


def merge_reopens(ok: np.ndarray, ov: np.ndarray, sk: np.ndarray, sv: np.ndarray,
                  hashes: Callable[[np.ndarray, np.ndarray], np.ndarray] = _row_hashes) -> tuple[np.ndarray, np.ndarray]:
    """The hash map's re-open counts and the slots' as one row per key: the count summed,
    the first and last repeat the earliest and latest, the name the first open's. Rows of a
    key no other row has go out as they are; a lone row without repeats (count 0: only its
    first open, already recorded) is left for the caller to drop, as every such row is.
    ``hashes``: for tests (collisions on purpose)."""
    if not len(sv):
        return ok, ov
    k, v = _cat([ok, sk]), _cat([ov, sv])
    # the hash map's row first (its name is the first open's), then the slots by time
    from_map = np.concatenate([np.zeros(len(ov), np.uint8), np.ones(len(sv), np.uint8)])
    h = hashes(k, np.zeros(len(k), np.uint64))  # the key holds the process's start
    dup = _repeated(h)
    if not dup.any():
        return k, v
    rows = np.flatnonzero(dup)
    mk, mv = _merge_reopens_exact(_take(k, rows), _take(v, rows), from_map[rows], h[rows])
    keep = np.flatnonzero(~dup)
    return _cat([_take(k, keep), mk]), _cat([_take(v, keep), mv])


def _merge_reopens_exact(k: np.ndarray, v: np.ndarray, from_map: np.ndarray,
                         h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    got = _hash_groups(h, k, [from_map, v["first"]])
    order, starts = got if got is not None else _groups(k, [], [from_map, v["first"]])
    k, v = _take(k, order), _take(v, order)
    out_k, out_v = _take(k, starts), _take(v, starts)
    out_v["count"] = np.add.reduceat(v["count"], starts)
    counted = v["count"] > 0
    big = np.iinfo(np.uint64).max
    out_v["first"] = np.minimum.reduceat(np.where(counted, v["first"], big), starts)
    out_v["first"][out_v["count"] == 0] = 0
    out_v["last"] = np.maximum.reduceat(np.where(counted, v["last"], 0), starts)
    return out_k, out_v
