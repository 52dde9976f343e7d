"""The child ``Sensor.detach_in_background`` forks holds its own sensor's links and nothing
else, and detaches them while the recorder's process lives on.

Before, the child inherited every descriptor: after a test run, nine such children of
pytest held up to 356 BPF links each (other in-process recorders' too). Then it held only
its own, but until the parent exited: in CI (2026-12-07) pytest ended with 2,403 link
descriptors open and ~27 finished recorders' programs still on every syscall, and the
transport tests timed out from the 86th percent on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf


def _link_ids(pid: int) -> dict[int, int]:
    """fd -> BPF link id of every link descriptor process ``pid`` holds."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf_link":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except FileNotFoundError:  # closed meanwhile
            continue
        ids = [int(line.split()[1]) for line in info.splitlines() if line.startswith("link_id:")]
        if ids:
            out[int(fd)] = ids[0]
    return out


def _system_link_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {int(x["id"]) for x in json.loads(out or "[]")}


def test_detach_child_detaches_our_links_while_we_live_and_no_others() -> None:
    from forensix.sensor import libbpf as lb
    from forensix.sensor.loader import Sensor, SensorConfig

    cfg = SensorConfig(ring_main_mb=8, ring_net_mb=8, ring_proc_mb=8, tty_rate=0)
    mine = Sensor(cfg)
    other = Sensor(cfg)
    try:
        mine.open_and_load()
        mine.attach()
        other.open_and_load()
        other.attach()
        ours = _link_ids(os.getpid())
        mine_ids = {ours[lb.lib.bpf_link__fd(x)] for x in mine._links}
        other_ids = {ours[lb.lib.bpf_link__fd(x)] for x in other._links}
        assert mine_ids and other_ids and not mine_ids & other_ids
        mine.detach_in_background()
        assert mine.reaper_pid is not None
        held = set(_link_ids(os.getpid()).values())
        assert not held & mine_ids, "the recorder still holds the links it left to the child"
        assert other_ids <= held
        deadline = time.monotonic() + 60
        while mine_ids & _system_link_ids():  # the child's exit detaches them, each an RCU wait
            assert time.monotonic() < deadline, "the detached sensor's programs are still attached after 60 s"
            time.sleep(0.2)
        assert other_ids <= _system_link_ids(), "the child took another recorder's links with it"
    finally:
        other.close()
        mine.close()
