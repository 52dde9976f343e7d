"""Executables read later, at low priority, keep what inline reading kept, on the real kernel.

The recorder opens what an exec ran at drain time and hands the descriptor to the
collector's reader (artifacts/defer.py), which reads it when a core is free; the batch
that carries the exec's hash is held until then. Here the reader is held back until the
workload is over, so every read happens after the fact:
- a big binary, started and deleted at once, has exited by then and has no name left:
  the descriptor opened at the drain is all that reaches it, and its content is kept,
  certain, with its hash on the exec event and the processes row;
- a big binary run and then modified in place before the read is kept as read, marked
  uncertain, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.artifacts import ArtifactStore, Collector
from forensix.artifacts.collect import DEFER_MIN_BYTES
from forensix.model.host import local_host
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

WORKLOAD = r'''
import hashlib, json, os, shutil, subprocess, sys, time
from pathlib import Path
work, extra = Path(sys.argv[1]), int(sys.argv[2])
def copy(src, dst):
    data = Path(shutil.which(src)).read_bytes() + os.urandom(32) + b"\0" * extra
    dst.write_bytes(data)
    dst.chmod(0o755)
    return hashlib.sha256(data).hexdigest()
out = {"gone_sha": copy("sleep", work / "gone"), "changed_sha": copy("true", work / "changed")}
p = subprocess.Popen([str(work / "gone"), "3"])
os.unlink(work / "gone")  # run, and deleted at once
subprocess.run([str(work / "changed")], check=True)
out["gone_pid"] = p.pid
(work / "out.json").write_text(json.dumps(out))
deadline = time.monotonic() + 60
while not (work / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
with open(work / "changed", "r+b") as f:  # written in place after the exec (no process runs it now)
    f.seek(100)
    f.write(b"modified after its exec")
p.wait()
(work / "done").write_text("")
'''


class Kept:
    """The batches the recorder hands its sinks, by table."""

    evidence = True

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}

    def write(self, table: str, data: pa.Table) -> None:
        self.tables.setdefault(table, []).append(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def rows(self, table: str) -> list[dict[str, object]]:
        return [r for t in self.tables.get(table, []) for r in t.to_pylist()]


def _until(what: str, ok: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok() if callable(ok) else False:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_deferred_reads_keep_a_deleted_binary_and_flag_a_modified_one(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    host = local_host()
    collector = Collector(ArtifactStore(tmp_path / "artifacts").open(), host)
    reader = collector.reader()
    reader.gate.clear()  # nothing is read until the workload is over
    sink = Kept()
    rec = Recorder([sink], host=host, artifacts=collector)
    got: list[int | None] = []
    th = threading.Thread(target=lambda: got.append(rec.run(command=[sys.executable, str(script), str(work),
                                                                     str(DEFER_MIN_BYTES)])))
    th.start()
    try:
        _until("the workload's binaries", lambda: (work / "out.json").exists())
        changed = str(work / "changed")
        # the drain opened the modified binary and queued it for the reader: now change it
        _until("the exec to be drained", lambda: any(j.path == changed for j in reader.waiting()))
        (work / "go").write_text("")
        _until("the workload's end", lambda: (work / "done").exists() or not th.is_alive())
    finally:
        (work / "go").write_text("")
        reader.gate.set()
        th.join(120)
    assert got == [0]
    told = json.loads((work / "out.json").read_text())
    arts = [r for r in sink.rows("artifacts") if str(work) in str(r["path"])]
    gone = [r for r in arts if r["path"] == str(work / "gone") or r["process_pid"] == told["gone_pid"]]
    assert gone and gone[0]["sha256"] == told["gone_sha"], arts
    assert gone[0]["certain"] is True and gone[0]["stored"] is True
    assert gone[0]["source"] == f"/proc/{told['gone_pid']}/exe"
    kept = collector.store.read(told["gone_sha"])  # the bytes, checked against their name
    assert hashlib.sha256(kept).hexdigest() == told["gone_sha"]
    # the hash reached the exec event and the processes row (the batch was held for it)
    execs = [r for r in sink.rows("events") if r["event_action"] == "exec" and r["process_pid"] == told["gone_pid"]]
    assert [r["process_hash_sha256"] for r in execs] == [told["gone_sha"]]
    procs = [r for r in sink.rows("processes") if r["pid"] == told["gone_pid"] and r["source"] == "exec"]
    assert procs and all(r["hash_sha256"] == told["gone_sha"] for r in procs)
    mod = [r for r in arts if r["path"] == changed]
    assert len(mod) == 1, arts
    assert mod[0]["certain"] is False, mod
    assert mod[0]["sha256"] != told["changed_sha"]  # what was read: the modified bytes
    assert "changed" in mod[0]["reason"] and "after the exec" in mod[0]["reason"], mod
    assert reader.deferred >= 2
