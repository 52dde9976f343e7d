"""The flush reads the slot caches in place (sensor/slots.py): no bpf() call, and exactly what
the kernel holds.

The slots of every CPU are one mmapable array; the flush reads the bank it took from the
mapping and zeroes the used slots there. Here a child writes 200 files and re-opens 100 of
them on one CPU; after the bank flip, the kernel's own copy of the bank (a batch lookup,
what the flush made two of per map before) must hold exactly the rows the flush returns,
and after the take the kernel's bank must be empty: a row read from a stale or wrong place,
or zeroes that never reached the kernel, fail here. A sensor whose slots are per-CPU arrays
(before this change) makes two bpf() calls per map and flush."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.bpf

N_FILES = 200

_CHILD = textwrap.dedent("""
    import os, sys
    os.sched_setaffinity(0, {int(sys.argv[2])})
    d = sys.argv[1]
    for i in range(%d):
        fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x" * (i + 1))
        os.close(fd)
    for _ in range(2):  # the second read-only open of a file in a period is a counted re-open
        for i in range(0, %d, 2):
            os.close(os.open(os.path.join(d, f"f{i}"), os.O_RDONLY))
    sys.stdout.write(str(os.getpid()))
""") % (N_FILES, N_FILES)


def _kernel_bank(fd: int, dt: np.dtype, ncpu: int, bank: int) -> np.ndarray:
    """The bank of every CPU as the kernel hands it out (one batch lookup of the whole array)."""
    from forensix.sensor import libbpf as lb

    info = (ctypes.c_uint32 * 32)()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    assert lb.lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) == 0
    entries, per_cpu = int(info[4]), info[0] == 6  # BPF_MAP_TYPE_PERCPU_ARRAY: the slots before
    keys = np.zeros(entries, np.uint32)
    vals = np.zeros(entries * ncpu if per_cpu else entries, dt)
    count, token = ctypes.c_uint32(entries), ctypes.c_uint32(0)
    ret = lb.lib.bpf_map_lookup_batch(fd, None, ctypes.byref(token), keys.ctypes.data, vals.ctypes.data,
                                      ctypes.byref(count), None)
    assert ret in (0, -2) and count.value == entries, (ret, count.value, entries)
    if per_cpu:  # each key's value for every CPU
        return vals.reshape(2, -1, ncpu)[bank].T.reshape(-1)
    return vals.reshape(ncpu, 2, -1)[:, bank].reshape(-1)


def _rows(k: np.ndarray, v: np.ndarray) -> set[bytes]:
    return {kr.tobytes() + vr.tobytes() for kr, vr in zip(k, v, strict=True)}


def test_the_flush_takes_the_slots_in_place_as_the_kernel_holds_them(tmp_path: Path) -> None:
    from forensix.sensor import libbpf as lb
    from forensix.sensor.abi import struct_dtype
    from forensix.sensor.loader import Sensor, SensorConfig
    from forensix.sensor.slots import SlotCaches, _slot_dtype

    ncpu = lb.lib.libbpf_num_possible_cpus()
    with Sensor(SensorConfig(ring_main_mb=8, ring_net_mb=8, ring_proc_mb=8, tty_rate=0)) as s:
        dts = {"flow_slots": (struct_dtype(s.abi, "fx_flow_key"), struct_dtype(s.abi, "fx_flow")),
               "open_slots": (struct_dtype(s.abi, "fx_open_key"), struct_dtype(s.abi, "fx_open_rep"))}
        slots = SlotCaches(s.map_fd("accounted"), ncpu, {n: (s.map_fd(n), *d) for n, d in dts.items()})
        try:
            old = slots.flip()  # start from an empty bank: the one filled until now is taken and dropped
            for name in dts:
                slots.take(name, old)
            out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), str(max(os.sched_getaffinity(0)))],
                                 capture_output=True, text=True, check=True, timeout=60)
            pid = int(out.stdout)
            bank = slots.flip()
            for name, (kdt, vdt) in dts.items():
                dt = _slot_dtype(kdt, vdt)
                kernel = _kernel_bank(s.map_fd(name), dt, ncpu, bank)
                used = kernel["v"]["last"] != 0 if name == "flow_slots" else kernel["k"]["start"] != 0
                k, v = slots.take(name, bank)
                took = _rows(k, v)
                assert _rows(kernel["k"][used], kernel["v"][used]) <= took, f"{name}: a row the kernel holds was not taken"
                if name == "open_slots":  # the flow slots' take adds the spill's rows (edges pushed out)
                    assert len(took) == int(used.sum()), f"{name}: rows taken that the kernel does not hold"
                assert (k["pid"] == pid).any(), f"{name}: none of the child's rows was taken"
                after = _kernel_bank(s.map_fd(name), dt, ncpu, bank).view(np.uint8)
                assert not after.any(), f"{name}: the taken bank is not empty in the kernel"
            assert slots.syscalls == 0, f"{slots.syscalls} bpf() calls to read and zero the slots"
        finally:
            slots.close()
