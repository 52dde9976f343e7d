"""A tool run, exited and deleted before the recorder's first drain is kept (issue 25).

The intruder's pattern: download a tool, run it, it exits, ``rm`` it, all within one drain
tick (up to ~1.5 s). At drain time neither ``/proc/PID/exe`` nor the path reaches it any
more: it was an ``artifact.missing``. The exec-time hold (artifacts/exechold.py) holds each
executed file from its exec on through fanotify, so the bytes the kernel ran are still
readable when the drain comes. Here the drain is held back until the workload is over (a
recorder whose drains wait for a gate), so every exec is read after its file is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from forensix.artifacts import ArtifactStore, Collector
from forensix.model.host import local_host
from forensix.sensor.recorder import Recorder
from forensix.testing.sinks import KeptSink

from .ns_recording import dropper_marked

pytestmark = pytest.mark.bpf

HOLD = "exec-time hold (fanotify)"  # the artifacts row's source for a copy read through the hold

# A copy of /bin/true (made unique) and a #! script: each run to its exit, then deleted.
WORKLOAD = r'''
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
work = Path(sys.argv[1])
tool, script = work / "tool", work / "drop.sh"
elf = Path(shutil.which("true")).read_bytes() + os.urandom(32)
tool.write_bytes(elf)
tool.chmod(0o755)
sh = b"#!/bin/sh\nexit 0\n# " + os.urandom(8).hex().encode() + b"\n"
script.write_bytes(sh)
script.chmod(0o755)
a = subprocess.Popen([str(tool)])
a.wait()
tool.unlink()
b = subprocess.Popen([str(script)])
b.wait()
script.unlink()
out = {"tool_sha": hashlib.sha256(elf).hexdigest(), "tool_pid": a.pid, "tool_rc": a.returncode,
       "script_sha": hashlib.sha256(sh).hexdigest(), "script_pid": b.pid, "script_rc": b.returncode}
(work / "out.json").write_text(json.dumps(out))
'''




class LateRecorder(Recorder):
    """A recorder whose drains wait until ``gate`` is set: every exec is drained after the fact."""

    gate = threading.Event()

    def poll_once(self, wait: float = 0.0) -> int:
        self.gate.wait(120)
        return super().poll_once(wait)


def _record_late(tmp_path: Path, collector: Collector) -> tuple[KeptSink, dict[str, object]]:
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    sink = KeptSink()
    rec = LateRecorder([sink], host=collector.host, artifacts=collector)
    rec.gate = threading.Event()
    got: list[int | None] = []
    th = threading.Thread(target=lambda: got.append(rec.run(command=[sys.executable, str(script), str(work)])))
    th.start()
    try:
        deadline = time.monotonic() + 60
        while not (work / "out.json").exists() and th.is_alive():
            assert time.monotonic() < deadline, "the workload did not end"
            time.sleep(0.05)
    finally:
        rec.gate.set()  # the first drain: every file the workload ran is deleted by now
        th.join(120)
    assert got == [0]
    told = json.loads((work / "out.json").read_text())
    assert told["tool_rc"] == 0 and told["script_rc"] == 0
    assert not (work / "tool").exists() and not (work / "drop.sh").exists()
    return sink, told


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")


def test_a_tool_run_and_deleted_before_the_drain_is_kept(tmp_path: Path) -> None:
    _needs_root()
    host = local_host()
    collector = Collector(ArtifactStore(tmp_path / "artifacts").open(), host)
    sink, told = _record_late(tmp_path, collector)
    work = str(tmp_path / "work")
    arts = [r for r in sink.rows("artifacts") if work in str(r["path"])]
    tool = [r for r in arts if r["process_pid"] == told["tool_pid"] and r["kind"] == "executable"]
    assert len(tool) == 1, (arts, [r["message"] for r in sink.rows("events") if r["event_action"] == "artifact.missing"])
    assert tool[0]["sha256"] == told["tool_sha"] and tool[0]["certain"] is True and tool[0]["stored"] is True, tool
    assert tool[0]["source"] == HOLD, tool
    assert hashlib.sha256(collector.store.read(told["tool_sha"])).hexdigest() == told["tool_sha"]
    # the hash on the exec event and the processes row
    execs = [r for r in sink.rows("events") if r["event_action"] == "exec" and r["process_pid"] == told["tool_pid"]]
    assert [r["process_hash_sha256"] for r in execs] == [told["tool_sha"]], execs
    procs = [r for r in sink.rows("processes") if r["pid"] == told["tool_pid"] and r["source"] == "exec"]
    assert procs and all(r["hash_sha256"] == told["tool_sha"] for r in procs), procs
    # the #! script, deleted after its interpreter exited: read through the hold too
    sh = [r for r in arts if r["process_pid"] == told["script_pid"] and r["kind"] == "script"]
    assert len(sh) == 1 and sh[0]["sha256"] == told["script_sha"] and sh[0]["source"] == HOLD, arts
    assert hashlib.sha256(collector.store.read(told["script_sha"])).hexdigest() == told["script_sha"]
    missing = [r for r in sink.rows("events") if r["event_action"] == "artifact.missing" and work in str(r["file_path"])]
    assert missing == []
    said = [r["message"] for r in sink.rows("events") if r["event_action"] in ("start", "artifacts")]
    assert any("executables held at exec (fanotify" in m for m in said), said
    assert any("exec-time hold: " in m and "queue overflows" in m for m in said), said


class BoundCollector(Collector):
    """A collector whose exec-time hold may hold no file at all: every exec-open is past its bound."""

    def start_hold(self) -> str:
        from forensix.artifacts.exechold import ExecHold

        got = ExecHold.open(max_files=0)
        assert not isinstance(got, str), got
        self.hold = got
        return got.describe()


def test_a_tool_the_hold_could_not_keep_is_missing_with_the_reason(tmp_path: Path) -> None:
    """Past the hold's bound the file is not held; the artifact.missing event says so, and
    the summary counts it."""
    _needs_root()
    collector = BoundCollector(ArtifactStore(tmp_path / "artifacts").open(), local_host())
    sink, told = _record_late(tmp_path, collector)
    missing = [r for r in sink.rows("events")
               if r["event_action"] == "artifact.missing" and r["process_pid"] == told["tool_pid"]]
    assert len(missing) == 1, sink.rows("artifacts")
    assert "not held at exec: 0 files were held already (the hold's bound)" in str(missing[0]["message"]), missing
    said = [r["message"] for r in sink.rows("events") if r["event_action"] == "artifacts"]
    assert len(said) == 1 and "0 execs read through it" in str(said[0]), said
    assert "0 not held at the bound" not in str(said[0]), said
    # and at the time, in the record: a warning (once: at most one a minute)
    warned = [r["message"] for r in sink.rows("events") if r["event_action"] == "warning"
              and "files not held at their exec" in str(r["message"])]
    assert len(warned) == 1 and "past the bound of 0 files held" in str(warned[0]), warned


def test_without_the_hold_the_start_record_says_executables_are_read_at_drain_time(tmp_path: Path) -> None:
    _needs_root()
    collector = Collector(ArtifactStore(tmp_path / "artifacts").open(), local_host(), exec_hold=False)
    sink, told = _record_late(tmp_path, collector)
    start = [r["message"] for r in sink.rows("events") if r["event_action"] == "start"]
    assert len(start) == 1 and "executables are read at drain time only" in str(start[0]), start
    missing = [r for r in sink.rows("events")
               if r["event_action"] == "artifact.missing" and r["process_pid"] == told["tool_pid"]]
    assert len(missing) == 1 and "drain time only" in str(missing[0]["message"]), missing


def test_a_container_like_namespace_is_marked_a_tick_after_its_mount_is_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tmpfs mounted in a mount namespace of its own (what a container runtime does): the
    recorded mount makes the hold look for new namespaces at the next tick, not at its
    periodic scan (made never here), so a tool run there and deleted is held."""
    _needs_root()
    from forensix.artifacts import exechold

    monkeypatch.setattr(exechold, "NS_SCAN_S", 3600.0)
    collector = Collector(ArtifactStore(tmp_path / "artifacts").open(), local_host())
    sink = KeptSink()
    attached = threading.Event()
    rec = Recorder([sink], host=collector.host, artifacts=collector, on_ready=attached.set)
    with dropper_marked(rec, attached, collector, tmp_path, "the recorder") as (child, out, told):
        (out / "go").write_text("")
        assert child.wait(60) == 0
        done = json.loads((out / "done").read_text())
    kept = [r for r in sink.rows("artifacts") if r["process_pid"] == done["pid"] and r["kind"] == "executable"]
    assert len(kept) == 1 and kept[0]["sha256"] == told["sha"] and kept[0]["source"] == HOLD, kept
