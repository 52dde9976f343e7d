"""The exec-time hold's look for new mount namespaces (artifacts/exechold.py): its periodic scan
looks only at processes the last scan did not find (a readlink each: every process every 5 s was
~1.5 ms a scan on a build, the hold's largest cost by time), every process when the sensor
recorded a mount, an unshare or a setns, and the raw agent (agent/raw.py) now says so too: it
never did, so a container's filesystems waited for the periodic scan."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from forensix.agent.raw import RawRecorder
from forensix.artifacts import ArtifactStore, Collector, exechold
from forensix.model.host import local_host
from forensix.testing.sinks import KeptSink

from .ns_recording import dropper_marked

pytestmark = pytest.mark.bpf


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("fanotify needs CAP_SYS_ADMIN")


def test_a_periodic_scan_looks_only_at_new_processes_and_a_recorded_unshare_at_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_root()
    monkeypatch.setattr(exechold, "NS_SCAN_S", 0.0)  # every poll scans
    hold = exechold.ExecHold.open()
    assert not isinstance(hold, str), hold
    looked: list[str] = []
    real = exechold._ns_of
    monkeypatch.setattr(exechold, "_ns_of", lambda pid: (looked.append(pid), real(pid))[1])
    child = subprocess.Popen(["sleep", "30"])
    try:
        hold.poll()  # the first since the opening's scan
        assert str(child.pid) in looked, "a process the last scan did not find was not looked at"
        assert "1" not in looked and str(os.getpid()) not in looked, \
            f"a periodic scan looked at {len(looked)} processes, the ones the last scan found among them"
        looked.clear()
        hold.scan_soon()  # the sensor recorded a mount, an unshare or a setns
        hold.poll()
        assert "1" in looked and str(child.pid) in looked, "a scan after a recorded unshare was not a full one"
    finally:
        child.kill()
        child.wait()
        hold.close()


def test_the_raw_agent_marks_a_container_like_namespace_a_tick_after_its_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As tests/artifacts/test_exec_hold_bpf.py's decoding recorder: the periodic scan made never."""
    _needs_root()
    monkeypatch.setattr(exechold, "NS_SCAN_S", 3600.0)
    monkeypatch.setattr(exechold, "NS_FULL_SCAN_S", 3600.0, raising=False)  # (not in trees before it)
    collector = Collector(ArtifactStore(tmp_path / "artifacts").open(), local_host(), ship=True)
    attached = threading.Event()
    rec = RawRecorder([KeptSink()], host=collector.host, artifacts=collector, on_ready=attached.set)
    with dropper_marked(rec, attached, collector, tmp_path, "the raw agent"):
        pass
