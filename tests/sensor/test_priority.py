"""The recorder yields the CPU to the host's work while its rings have room, and takes it
back when one fills: nice values per thread, the session's autogroup, the stop record."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import FORENSIX, record, rows

pytestmark = pytest.mark.bpf

# Run by `forensix record -- python3 probe.py OUT`: after the recorder has settled, note the
# command's own nice and the nice of every thread of the recorder (its parent).
PROBE = """
import os, sys, time
time.sleep(2.5)
rec = os.getppid()
out = [f"self {os.getpriority(os.PRIO_PROCESS, 0)}"]
for tid in os.listdir(f"/proc/{rec}/task"):
    stat = open(f"/proc/{rec}/task/{tid}/stat").read()
    out.append(f"thread {stat.rsplit(')', 1)[1].split()[16]}")
out.append("group " + open(f"/proc/{rec}/autogroup").read().split()[-1])
open(sys.argv[1], "w").write("\\n".join(out))
"""


def _stop_message(store: Path) -> str:
    st = DuckDBStore(store, read_only=True)
    msg = rows(st, "SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'stop'")
    assert len(msg) == 1
    return str(msg[0]["message"])


def _threads_and_command(tmp_path: Path, *extra: str) -> tuple[list[str], str]:
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "probe.out"
    store = tmp_path / "s.duckdb"
    res = record(store, sys.executable, str(tmp_path / "probe.py"), str(out), extra=extra)
    assert res.returncode == 0, res.stderr
    return out.read_text().splitlines(), _stop_message(store)


def test_the_agent_drains_below_the_workload_and_the_command_runs_at_full_priority(tmp_path: Path) -> None:
    lines, stop = _threads_and_command(tmp_path)
    assert "self 0" in lines  # the recorded command keeps the recorder's own priority
    nices = sorted(int(x.split()[1]) for x in lines if x.startswith("thread "))
    # every thread (drainer, writer, rules, query server, libraries' pools) at 10, the
    # store's seal lower still, at 19
    assert nices.count(19) == 1, nices
    assert set(nices) == {10, 19}, nices
    assert len(nices) >= 4, nices
    # the command shares the recorder's session: the group is left alone
    mine = open("/proc/self/autogroup").read().split()[-1] if Path("/proc/self/autogroup").exists() else None
    assert mine is None or f"group {mine}" in lines
    assert "recorded at nice 10 while the rings had room" in stop


def test_nice_zero_keeps_every_thread_at_full_priority(tmp_path: Path) -> None:
    lines, stop = _threads_and_command(tmp_path, "--nice", "0")
    nices = sorted(int(x.split()[1]) for x in lines if x.startswith("thread "))
    assert set(nices) == {0, 19}, nices  # only the seal, which always yields
    assert "recorded at the recorder's own priority" in stop


def test_a_recorder_leading_its_session_lowers_its_autogroup(tmp_path: Path) -> None:
    if not Path("/proc/self/autogroup").exists() or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
        pytest.skip("this kernel schedules without autogroups: a thread's nice is all there is")
    store = tmp_path / "s.duckdb"
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--store", str(store), "--duration", "6"],
                         start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            seen = Path(f"/proc/{p.pid}/autogroup").read_text()
            if seen.split()[-1] == "10":
                break
            time.sleep(0.1)
        assert seen.split()[-1] == "10", seen
    finally:
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "recorded at nice 10" in _stop_message(store)
