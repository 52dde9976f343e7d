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
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from forensix.artifacts import ArtifactStore, Collector
from forensix.artifacts.collect import DEFER_MIN_BYTES
from forensix.model.host import local_host
from forensix.sensor.recorder import Recorder
from forensix.store.embedded import open_reader
from forensix.testing.sinks import KeptSink

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
    sink = KeptSink()
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
    # through the process, or the exec-time hold of the very file it ran (artifacts/exechold.py)
    assert gone[0]["source"] in (f"/proc/{told['gone_pid']}/exe", "exec-time hold (fanotify)")
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


RULE = """title: Known bad binary by hash, read later
id: 3f6d2a4e-8c1b-4e0f-9a7d-2b5c8e1f0a63
status: test
logsource:
  product: linux
  category: process_creation
detection:
  selection:
    Hashes|contains: 'SHA256={sha}'
  condition: selection
level: high
"""


def test_a_live_hash_rule_alerts_on_a_binary_read_later(tmp_path: Path) -> None:
    """The live rules see the exec with its hash though the file was read after the drain
    (a big binary, run and deleted at once): the batch was held for it, not sent without it.
    It runs 5 s: one that exits before the recorder's first drain of it is not kept (the
    limit docs/replay.md states), and a loaded CI host can stretch a drain past 1.5 s."""
    if os.geteuid() != 0:
        pytest.fail("recording needs root (CI runs as root)")
    big = tmp_path / "big"
    data = Path("/bin/sleep").read_bytes() + os.urandom(32) + b"\0" * DEFER_MIN_BYTES
    big.write_bytes(data)
    big.chmod(0o755)
    sha = hashlib.sha256(data).hexdigest()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yml").write_text(RULE.format(sha=sha.upper()))
    store, jsonl = tmp_path / "rec.duckdb", tmp_path / "alerts.jsonl"
    # deleted once it runs (before, on a loaded host, the exec itself would fail)
    run = f"'{big}' 5 & while [ \"$(readlink /proc/$!/exe)\" != '{big}' ]; do sleep 0.01; done; rm '{big}'; wait"
    cmd = [sys.executable, "-m", "forensix", "record", "-q", "--no-system-logs", "--no-tty", "--store", str(store),
           "--rules", str(rules), "--alerts-jsonl", str(jsonl), "--", "sh", "-c", run]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    mine = [a for a in alerts if a["rule.id"] == "3f6d2a4e-8c1b-4e0f-9a7d-2b5c8e1f0a63"]
    rd = open_reader(str(store))
    try:
        said = rd.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'artifacts'",
                        {}).column("message").to_pylist()
        execs = rd.query("SELECT ts, process_hash_sha256 FROM events WHERE event_action = 'exec' AND "
                         "process_executable = $p", {"p": str(big)}).to_pylist()
    finally:
        rd.close()
    assert [r["process_hash_sha256"] for r in execs] == [sha], (execs, said)
    assert len(mine) == 1, (alerts, res.stderr)
    assert len(said) == 1 and re.search(r"; [1-9]\d* read later at nice 19", said[0]), said
