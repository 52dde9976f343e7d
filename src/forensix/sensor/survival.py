"""What outlives the agent, and what an agent's death leaves in the record.

The `accounted` map (pinned with the sensor, written only by agents) says which kernel
drops are written as gaps already, and when the agent last stored a batch: the agent that
adopts a dead one's sensor writes gaps for exactly what its predecessor did not, and says
what it cannot know (`restart_gap`).

A pinned sensor outlives its agent (sensor/loader.py), but not for ever: the agent writes
a heartbeat into the sensor's control word, and a BPF timer (bpf/sensor.bpf.c, the
heartbeat watch) stops recording once the heartbeat is older than the orphan timeout.
The agent that adopts the sensor, or an agent that stalled that long and comes back,
resumes recording and writes the time nothing was recorded as a gap with its cause.

A paused sensor records nothing but its programs stay attached, and every syscall on the
host pays their dispatch. The orphan watch (sensor/orphan_watch.py), a process the agent
starts beside its pins, detaches them once the sensor is paused with no agent; the maps
stay pinned, and the agent that adopts the sensor later re-attaches fresh programs to
them (sensor/loader.py) and writes the gap.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.model.host import HostInfo
from forensix.sensor import libbpf as lb
from forensix.sensor.loader import ACC_DETACHED, PAUSED_ORPHAN
from forensix.store import schema

__all__ = ["ACC_EARLY", "ACC_LAST_WRITE", "ACC_WATCH", "OrphanWatch", "orphan_gap", "read_accounted", "read_slot",
           "restart_gap", "stop_watch", "write_accounted"]

ACC_LAST_WRITE = 8191  # events.h FX_ACC_LAST_WRITE
ACC_EARLY = 8190  # events.h FX_ACC_EARLY
ACC_WATCH = 8180  # events.h FX_ACC_WATCH: pid of the sensor's orphan watch
_WATCH_PY = Path(__file__).with_name("orphan_watch.py")


def read_accounted(fd: int, ncpu: int, ncls: int) -> tuple[np.ndarray, int, bool]:
    """Drops already written as gaps, per (cpu, class); the last write's boot ns; and
    whether ring space was given back before its records were stored."""
    out = np.zeros((ncpu, ncls), np.uint64)
    val = ctypes.c_uint64(0)
    for cpu in range(ncpu):
        for cls in range(ncls):
            key = ctypes.c_uint32(cpu * ncls + cls)
            if lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(val)) == 0:
                out[cpu, cls] = val.value

    def slot(k: int) -> int:
        key = ctypes.c_uint32(k)
        return int(val.value) if lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(val)) == 0 else 0

    return out, slot(ACC_LAST_WRITE), bool(slot(ACC_EARLY))


def write_accounted(fd: int, slots: dict[int, int]) -> None:
    for k, v in slots.items():
        key, val = ctypes.c_uint32(k), ctypes.c_uint64(v)
        lb.lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(val), 0)


def restart_gap(host: HostInfo, offset_ns: int, last_write_boot: int, early: bool) -> tuple[pa.Table, str, int]:
    """An agent died without detaching, and this one took over its sensor. The records
    in the rings were kept (drained now) and what the rings could not hold is in the
    kernel's counters, but the flow edges and re-open counts the dead agent had taken
    from the kernel and not yet stored are gone, and how many there were is unknown.
    Returns the gap rows, the message that says so, and its time."""
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    frm = last_write_boot or now
    ts_to = now + offset_ns
    row = {
        "host_id": host.host_id, "host_name": host.host_name, "boot_id": host.boot_id,
        "ts_from": frm + offset_ns, "ts_to": ts_to, "cpu": -1,
        "event_class": "flow", "count": 0, "count_unknown": True, "reason": "agent-restart",
    }
    rows = [row]
    if early:  # it had given ring space back before storing the records
        rows += [dict(row, event_class=c) for c in ("process", "file", "network")]
    message = ("unknown number of flow edges and re-open counts lost"
               + (", and of ring records it had read in a storm and not stored" if early else "")
               + ": the previous agent died without detaching; its sensor kept recording and this agent "
               "adopted it (ring records kept, ring overflow counted)")
    return pa.Table.from_pylist(rows, schema=schema.GAPS), message, ts_to


def orphan_gap(ctl: dict[str, int], host: HostInfo, offset_ns: int,
               detached_at: int = 0) -> tuple[pa.Table, str, int] | None:
    """Gap rows (one per class, count unknown), the message that says why, and its time,
    if the control word ``ctl`` shows the heartbeat watch stopped recording; else None.
    ``detached_at``: boot ns at which the orphan watch detached the paused programs."""
    if not ctl.get("paused", 0) & PAUSED_ORPHAN:
        return None
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    frm = ctl.get("orphaned_at") or now
    row = {
        "host_id": host.host_id, "host_name": host.host_name, "boot_id": host.boot_id,
        "ts_from": frm + offset_ns, "ts_to": now + offset_ns, "cpu": -1, "count": 0, "count_unknown": True,
        "reason": "agent-absent",
    }
    rows = pa.Table.from_pylist([dict(row, event_class=c) for c in ("process", "file", "network", "flow")],
                                schema=schema.GAPS)
    limit = ctl.get("orphan_ns", 0) / 1e9
    last = ctl.get("heartbeat", 0)
    message = (f"nothing recorded for {(now - frm) / 1e9:.1f} s: no agent heartbeat for {(frm - last) / 1e9:.1f} s "
               f"(timeout {limit:g} s; its agent, pid {ctl.get('agent_tgid', 0)}, had died or stalled), so the "
               f"sensor stopped recording until pid {os.getpid()} resumed it")
    if detached_at:
        message += (f"; the orphan watch detached its programs {max(detached_at - frm, 0) / 1e9:.1f} s into the "
                    f"pause (the host paid nothing for them since), and pid {os.getpid()} attached new ones to "
                    "its maps")
    return rows, message, now + offset_ns


def read_slot(fd: int, key: int) -> int:
    k, val = ctypes.c_uint32(key), ctypes.c_uint64(0)
    return int(val.value) if lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(k), ctypes.byref(val)) == 0 else 0


class OrphanWatch:
    """The orphan watch of the sensor pinned at ``pin`` (sensor/orphan_watch.py), started
    by the agent that runs the sensor. Until this agent exits it is a shell blocked on a
    pipe only we hold; ``close`` (a clean stop) ends it without it ever looking."""

    def __init__(self, pin: Path, accounted_fd: int, abi: dict[str, Any], timeout_s: float) -> None:
        layout = abi["structs"]["fx_control"]
        spec = {
            "timeout_s": timeout_s, "period_s": min(max(timeout_s / 4, 0.1), 10.0),
            "control_size": layout["size"], "control": {m["name"]: m for m in layout["members"]},
            "acc_detached": ACC_DETACHED, "libbpf": lb.lib._name, "agent": os.getpid(),
        }
        r, self._w = os.pipe()  # neither end is inherited by what we spawn later
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", 'read _; exec "$@"', "forensix-orphan-watch",
                 sys.executable, "-S", "-I", str(_WATCH_PY), str(pin), json.dumps(spec)],
                stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)  # a signal to our process group is not for it
        finally:
            os.close(r)
        write_accounted(accounted_fd, {ACC_WATCH: self.proc.pid, ACC_DETACHED: 0})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self._w)


def stop_watch(pin: Path, accounted_fd: int) -> int:
    """End the orphan watch a dead agent left for the sensor pinned at ``pin``, before
    adopting or unpinning the sensor (it must not detach what we take over); returns its
    pid, or 0 if none was running."""
    pid = read_slot(accounted_fd, ACC_WATCH)
    if pid <= 0:
        return 0
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        fd = os.pidfd_open(pid)
    except OSError:
        return 0
    try:
        if _WATCH_PY.name.encode() not in cmd or str(pin).encode() + b"\0" not in cmd:
            return 0  # the pid is another process's by now
        os.kill(pid, signal.SIGKILL)
        select.select([fd], [], [], 5.0)  # readable once it has exited
    except ProcessLookupError:
        return 0
    finally:
        os.close(fd)
    return pid
