"""An agent adopts a sensor pinned with per-CPU slot caches (a forensix before the mmapped slots)
whose programs are gone (detached by the orphan watch, or by hand), and loses none of their edges.

The new programs cannot fill the old per-CPU arrays (another layout), so the agent loads them
with slots of their own, pins those in place of the old ones, and takes both banks of the old
slots at its first flush (sensor/loader.py ``legacy_slots``). The old layout is built here with
``make -C bpf percpu``. A shell appends to a file 150 times under the first agent, stopped (so no
flush of its own takes the edge) and then killed; the links' pins are removed (the programs detach);
a second agent of this tree adopts the pins. The file's edges must add up to 150 writes of 2
bytes (none with the old slots not taken)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import DuckDBStore

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf

BPF_SRC = Path(__file__).resolve().parents[2] / "bpf"


def _start(store: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    ready = store.with_name(f"ready-{uuid.uuid4().hex[:6]}")
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store), "--ready-file", str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.1)
    return p


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang builds the per-CPU layout")
def test_adopting_per_cpu_slots_loses_no_edge(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    old = tmp_path / "percpu"
    subprocess.run(["make", "-s", "-C", str(BPF_SRC), "percpu", f"PERCPU_OUT={old}"], check=True, timeout=300,
                   capture_output=True)
    store = tmp_path / "s.duckdb"
    target = tmp_path / f"t-{uuid.uuid4().hex[:6]}"
    first = _start(store, dict(os.environ, FORENSIX_BPF_DIR=str(old)))
    first.send_signal(signal.SIGSTOP)  # no flush of its own: the edge stays in the slots
    subprocess.run(["sh", "-c", f"for i in $(seq 150); do echo x >> {target}; done"], check=True, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    pin = pin_dir_for(store)
    for link in pin.glob("link-*"):  # the programs detach: the next agent loads its own
        link.unlink()
    second = _start(store, dict(os.environ))
    time.sleep(1.5)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    st = DuckDBStore(store, read_only=True)
    got = rows(st, "SELECT coalesce(sum(write_count), 0) AS wc, coalesce(sum(write_bytes), 0) AS wb FROM flows "
               "WHERE file_inode = $ino", ino=target.stat().st_ino)
    assert (got[0]["wc"], got[0]["wb"]) == (150, 300), got
    assert rows(st, "SELECT message FROM events WHERE event_action = 'start' AND message LIKE '%adopted%'")
