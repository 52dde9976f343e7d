"""The child ``Sensor.detach_in_background`` forks holds its own sensor's links and nothing
else: not the links of another recorder alive in the same process, nor its pipe ends.

Before, the child inherited every descriptor: after a test run, nine such children of
pytest held up to 356 BPF links each (other in-process recorders' too) and unwound for
minutes, keeping closed recorders' programs attached."""

from __future__ import annotations

import os
import signal
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


def test_detach_child_holds_only_its_own_links() -> None:
    from forensix.sensor import libbpf as lb
    from forensix.sensor.loader import Sensor, SensorConfig

    cfg = SensorConfig(ring_main_mb=8, ring_net_mb=8, ring_proc_mb=8, tty_rate=0)
    mine = Sensor(cfg)
    other = Sensor(cfg)
    r, w = os.pipe()  # a pipe of the process's own, as a recorder's wake-up pipe
    child = None
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
        child = mine.reaper_pid
        assert child is not None
        deadline = time.monotonic() + 30
        while True:  # the child closes what it inherited first thing
            fds = set(map(int, os.listdir(f"/proc/{child}/fd")))
            held = _link_ids(child)  # after the count: read before it, it could predate the closing
            if len(fds) <= len(mine_ids) + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert set(held.values()) == mine_ids, (len(held), len(mine_ids), len(set(held.values()) & other_ids))
        # besides its links, only the read end of the pipe that tells it the parent is gone
        assert len(fds) == len(mine_ids) + 1, sorted(fds)
        assert not {os.fstat(r).st_ino} & {os.stat(f"/proc/{child}/fd/{fd}").st_ino for fd in fds}
    finally:
        if child:
            os.kill(child, signal.SIGKILL)  # its exit detaches the programs it holds
            os.waitpid(child, 0)
        other.close()
        mine.close()
        os.close(r)
        os.close(w)
