"""The orphan watch: detach a pinned sensor whose agent died and that nobody adopted.

A pinned sensor outlives its agent (sensor/loader.py), and the kernel's heartbeat watch
(bpf/sensor.bpf.c) pauses it once no agent has beaten for the orphan timeout. A paused
sensor records nothing, but its programs stay attached: every syscall on the host still
pays their dispatch (the syscall slow path and a BPF run that returns at once). Only
user space can detach them, by dropping the links' last references, their pins.

This script is that user space. The agent starts it, beside the pins it makes, as
``sh -c 'read _; exec PYTHON -S -I orphan_watch.py PIN ARGS'`` with the read end of a
pipe only the agent holds as its input: while the agent lives the watch is a shell
blocked on that pipe (~1.6 MB, no wake-ups). When the agent dies (SIGKILL included) the
pipe ends and the shell becomes this script, which looks at the sensor's control word
every quarter of the timeout (at most every 10 s) and, once the sensor is paused with no
agent, writes the time into the ``accounted`` map (FX_ACC_DETACHED, for the agent that
adopts the sensor later: it re-attaches fresh programs to the same maps and writes the
time nothing was recorded as a gap) and removes the link pins. The maps stay pinned: the
rings keep what was recorded before the pause. An agent that adopts the sensor first
kills the watch (sensor/survival.py, ``stop_watch``); one that sees a new agent in the
control word leaves on its own.

Standard library only, run with ``-S -I``: it must start and stay small without the
agent's environment. Its argument after the pin directory is one JSON object (``spec``).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PAUSED_AGENT = 1  # events.h FX_PAUSED_AGENT
PAUSED_ORPHAN = 2  # events.h FX_PAUSED_ORPHAN


class _Bpf:
    def __init__(self, libbpf: str) -> None:
        self.lib = ctypes.CDLL(libbpf, use_errno=True)
        self.lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        self.lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]

    def open(self, path: Path) -> int:
        return int(self.lib.bpf_obj_get(str(path).encode()))

    def read(self, fd: int, key: int, size: int) -> bytes | None:
        k, buf = ctypes.c_uint32(key), ctypes.create_string_buffer(size)
        return buf.raw if self.lib.bpf_map_lookup_elem(fd, ctypes.byref(k), buf) == 0 else None

    def write(self, fd: int, key: int, value: bytes) -> None:
        k, buf = ctypes.c_uint32(key), ctypes.create_string_buffer(value, len(value))
        self.lib.bpf_map_update_elem(fd, ctypes.byref(k), buf, 0)


def _field(raw: bytes, m: dict[str, int]) -> int:
    return int.from_bytes(raw[m["offset"] : m["offset"] + m["size"]], "little")


def _put(raw: bytearray, m: dict[str, int], value: int) -> None:
    raw[m["offset"] : m["offset"] + m["size"]] = value.to_bytes(m["size"], "little")


def check(bpf: _Bpf, pin: Path, spec: dict[str, Any]) -> bool:
    """One look at the sensor; True when the watch's work is over (detached, stopped, adopted)."""
    ctl_fd = bpf.open(pin / "control")
    if ctl_fd < 0:
        return True  # unpinned: a clean stop or `forensix record --stop`
    try:
        raw = bpf.read(ctl_fd, 0, spec["control_size"])
        if raw is None:
            return True
        layout = spec["control"]
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        beat, timeout = _field(raw, layout["heartbeat"]), int(spec["timeout_s"] * 1e9)
        if _field(raw, layout["agent_tgid"]) != spec["agent"] and now - beat < timeout:
            return True  # another agent adopted the sensor: it runs a watch of its own
        paused = _field(raw, layout["paused"])
        # the kernel's timer pauses at the timeout; a kernel without BPF timers has none,
        # and an agent that died stopping had paused it already
        if not paused & (PAUSED_ORPHAN | PAUSED_AGENT):
            if not beat or now - beat <= timeout + int(spec["period_s"] * 1e9):
                return False
            new = bytearray(raw)
            _put(new, layout["paused"], paused | PAUSED_ORPHAN)
            _put(new, layout["orphaned_at"], now)
            bpf.write(ctl_fd, 0, bytes(new))
    finally:
        os.close(ctl_fd)
    acc = bpf.open(pin / "accounted")
    if acc >= 0:  # first the note, then the detach: an adopter killing us between sees the note
        bpf.write(acc, spec["acc_detached"], now.to_bytes(8, "little"))
        os.close(acc)
    for link in sorted(pin.glob("link-*")):
        link.unlink(missing_ok=True)  # the last reference: the kernel detaches the program
    return True


def main(argv: list[str]) -> int:
    pin, spec = Path(argv[1]), json.loads(argv[2])
    bpf = _Bpf(spec["libbpf"])
    while not check(bpf, pin, spec):
        time.sleep(spec["period_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
