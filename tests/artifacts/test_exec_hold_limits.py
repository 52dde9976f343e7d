"""The exec-time hold's limits on the real kernel: a full fanotify queue is counted and named,
claims lapse and their descriptors are closed, and a filesystem mounted after the start is
marked (artifacts/exechold.py). No sensor: the hold alone, as root."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from forensix.artifacts.exechold import ExecHold

pytestmark = pytest.mark.bpf  # needs root (CAP_SYS_ADMIN for fanotify), as the sensor tests do

QUEUE_SYSCTL = Path("/proc/sys/fs/fanotify/max_queued_events")


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the exec-time hold needs root (CI runs these tests as root)")


def _tool(path: Path) -> str:
    data = Path(shutil.which("true") or "/bin/true").read_bytes() + os.urandom(16)
    path.write_bytes(data)
    path.chmod(0o755)
    return hashlib.sha256(data).hexdigest()


def _run_and_delete(path: Path) -> int:
    p = subprocess.Popen([str(path)])
    p.wait()
    path.unlink()
    assert p.returncode == 0
    return p.pid


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def small_queue(root: None) -> Iterator[ExecHold]:
    """A hold whose kernel queue takes 4 events (the limit is read when the group is made:
    put back at once)."""
    old = QUEUE_SYSCTL.read_text()
    try:
        QUEUE_SYSCTL.write_text("4")
        hold = ExecHold.open()
    finally:
        QUEUE_SYSCTL.write_text(old)
    assert not isinstance(hold, str), hold
    try:
        yield hold
    finally:
        hold.close()


def test_a_full_queue_is_counted_and_named_in_the_reason(small_queue: ExecHold, tmp_path: Path) -> None:
    hold = small_queue
    pids = []
    for i in range(4):  # two events each: the tool and its ELF interpreter
        _tool(tmp_path / f"t{i}")
        pids.append(_run_and_delete(tmp_path / f"t{i}"))
    hold.poll()
    assert hold.overflows == 1  # the kernel queues one overflow event, however many it dropped
    assert hold.events <= 4
    lost = [p for p in pids if hold.take(p, None, None) is None]
    assert lost
    assert "the fanotify queue overflowed (1 overflows since the start)" in hold.why_not(lost[-1])
    assert "1 queue overflows" in hold.summary()


def test_claims_lapse_and_their_descriptors_are_closed(root: None, tmp_path: Path) -> None:
    before = _open_fds()
    hold = ExecHold.open(timeout_s=3600.0)
    assert not isinstance(hold, str), hold
    try:
        sha = _tool(tmp_path / "tool")
        ino = (tmp_path / "tool").stat().st_ino
        pid = _run_and_delete(tmp_path / "tool")
        hold.poll()
        assert hold.held >= 1
        fd = hold.take(pid, ino)  # the very file, deleted: its bytes
        assert fd is not None
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == sha
        finally:
            os.close(fd)
        hold.poll()  # the claim taken ends at the next poll
        assert hold.take(pid, ino) is None
        hold.timeout_s = 0.0  # every other claim (the ELF interpreter's) lapses now
        hold.poll()
        assert hold.expired >= 1
        assert not hold._files  # nothing held: every descriptor closed
    finally:
        hold.close()
    assert _open_fds() == before


def test_a_filesystem_mounted_after_the_start_is_marked(root: None, tmp_path: Path) -> None:
    hold = ExecHold.open()
    assert not isinstance(hold, str), hold
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "execkeep-test", str(mnt)], check=True)
    try:
        dev = mnt.stat().st_dev
        assert dev not in hold.marked
        hold.poll()  # the mount table changed: the new filesystem is marked
        assert hold.marked.get(dev, "").startswith(f"tmpfs at {mnt}"), hold.marked
        sha = _tool(mnt / "tool")
        ino = (mnt / "tool").stat().st_ino
        pid = _run_and_delete(mnt / "tool")
        hold.poll()
        fd = hold.take(pid, ino)
        assert fd is not None
        with os.fdopen(fd, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
    finally:
        hold.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


DROPPER = Path(__file__).with_name("ns_dropper.py")  # mounts a tmpfs in its own mount namespace, runs a tool there


def test_a_filesystem_mounted_in_another_mount_namespace_is_marked(root: None, tmp_path: Path) -> None:
    """A tmpfs mounted in a private mount namespace (a container's way) is not in our mount
    table: it is found by the scan of the namespaces and marked through /proc/PID/root."""
    import json
    import time

    hold = ExecHold.open()
    assert not isinstance(hold, str), hold
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable,
                              str(DROPPER), str(mnt), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not (out / "ready").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child did not mount its tmpfs"
            time.sleep(0.02)
        told = json.loads((out / "ready").read_text())
        assert told["dev"] != mnt.stat().st_dev  # not in our mount table
        hold._next_scan = 0.0  # the periodic scan, now
        hold.poll()
        assert told["dev"] in hold.marked, hold.marked
        (out / "go").write_text("")
        assert child.wait(60) == 0
        done = json.loads((out / "done").read_text())
        assert done["rc"] == 0
        hold.poll()
        fd = hold.take(done["pid"], told["ino"])
        assert fd is not None
        with os.fdopen(fd, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == told["sha"]
    finally:
        (out / "go").write_text("")
        child.wait(60)
        hold.close()


def test_without_cap_sys_admin_executables_are_read_at_drain_time_and_it_says_why(root: None,
                                                                                 tmp_path: Path) -> None:
    """A recorder without CAP_SYS_ADMIN (a container's) has no hold; what its start record
    says of it (``Collector.start_hold``), from a Python without the capability."""
    code = ("import sys; from pathlib import Path; from forensix.artifacts import ArtifactStore, Collector; "
            "from forensix.model.host import local_host; "
            "c = Collector(ArtifactStore(Path(sys.argv[1])).open(), local_host()); print(c.start_hold()); "
            "print(c.hold is None)")
    res = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c", code,
                          str(tmp_path / "arts")], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    said, none = res.stdout.splitlines()
    assert said == ("executables are read at drain time only (no exec-time hold: fanotify_init failed: "
                    "needs CAP_SYS_ADMIN)"), said
    assert none == "True"


def test_a_tmpfs_mounted_again_on_a_reused_device_number_is_marked_again(root: None, tmp_path: Path) -> None:
    """A filesystem's device number is reused once it is unmounted: the next tmpfs must not be
    taken for one marked already."""
    hold = ExecHold.open()
    assert not isinstance(hold, str), hold
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        devs = []
        for _ in range(2):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "execkeep-test", str(mnt)], check=True)
            devs.append(mnt.stat().st_dev)
            hold.poll()
            _tool(mnt / "tool")
            ino = (mnt / "tool").stat().st_ino
            pid = _run_and_delete(mnt / "tool")
            hold.poll()
            fd = hold.take(pid, ino)
            assert fd is not None, (devs, hold.marked)
            os.close(fd)
            hold.timeout_s = 0.0  # nothing held on it any more (a held file keeps a filesystem busy)
            hold.poll()
            hold.timeout_s = 3600.0
            subprocess.run(["umount", str(mnt)], check=True)
        if devs[0] != devs[1]:
            pytest.skip(f"the kernel gave the second tmpfs another device number ({devs}): nothing to check")
    finally:
        hold.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_one_pid_running_the_same_file_twice_gets_it_for_each_exec(root: None, tmp_path: Path) -> None:
    """``sh -c 'exec sh -c "exec TOOL"'``: one pid execs sh twice, then the tool (the kernel
    merges the two queued events of sh). Each exec finds its file held until the next poll;
    then the claims are gone, and a closed descriptor is never reopened (its number may name
    another file by then)."""
    hold = ExecHold.open()
    assert not isinstance(hold, str), hold
    try:
        sha = _tool(tmp_path / "tool")
        tool_ino = (tmp_path / "tool").stat().st_ino
        sh = shutil.which("sh") or "/bin/sh"
        sh_ino = Path(sh).stat().st_ino
        p = subprocess.Popen([sh, "-c", f"exec {sh} -c 'exec {tmp_path / 'tool'}'"])
        p.wait()
        (tmp_path / "tool").unlink()
        hold.poll()
        got = [hold.take(p.pid, sh_ino), hold.take(p.pid, sh_ino)]
        assert all(fd is not None for fd in got), got
        for fd in got:
            os.close(fd)  # type: ignore[arg-type]
        fd = hold.take(p.pid, tool_ino)
        assert fd is not None
        with os.fdopen(fd, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
        hold.poll()  # the claims taken end
        assert hold.take(p.pid, sh_ino) is None and hold.take(p.pid, tool_ino) is None
        assert p.pid not in hold._by_pid or all(p.pid in f.pids for f in hold._by_pid[p.pid])
    finally:
        hold.close()


def test_the_store_reads_a_held_file_whole_whatever_the_offset_of_its_holding(root: None, tmp_path: Path) -> None:
    """``take`` gives a duplicate of the held descriptor (one open file, one offset shared by
    every execution of the file taken): the store must read it from its start with ``pread``,
    even after another reader moved the offset to the end."""
    from forensix.artifacts.store import ArtifactStore

    hold = ExecHold.open()
    assert not isinstance(hold, str), hold
    try:
        sha = _tool(tmp_path / "tool")
        ino = (tmp_path / "tool").stat().st_ino
        first = subprocess.Popen([str(tmp_path / "tool")])
        second = subprocess.Popen([str(tmp_path / "tool")])
        first.wait()
        second.wait()
        (tmp_path / "tool").unlink()
        hold.poll()
        a, b = hold.take(first.pid, ino), hold.take(second.pid, ino)
        assert a is not None and b is not None
        try:
            os.lseek(a, 0, os.SEEK_END)  # a reader that used read() would leave the offset here
            put = ArtifactStore(tmp_path / "store").open().put_fd(b)
            assert put.sha256 == sha
        finally:
            os.close(a)
            os.close(b)
    finally:
        hold.close()
