"""What can lag runs niced, and nothing is lost for it: store keepers seal at nice 19
(store/keeper.py) while CPU hogs keep both cores busy at nice 0, and every record the kernel
attempted is stored or counted, every file of the workload is in the store; on an idle host a
file touched is in the store within seconds; the user's command runs at nice 0. The
recorder's own yielding (sensor/priority.py) is an experiment, off by default: its boost
logic is tested here. forensix's own helper processes are labelled as such in ps and tree.

Each test looks only at its own processes and files (other recorders share this host)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from forensix.sensor.priority import TRY_NICE, Yielding, thread_nice
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.store.remote import SocketReader

from .conftest import FORENSIX, record, rows

HOGS_AND_FILES = """
import os, subprocess, sys, time
from multiprocessing import Process
def hog(until):
    while time.time() < until:
        pass
until = time.time() + 6.0
hogs = [Process(target=hog, args=(until,)) for _ in range(os.cpu_count() or 2)]
[h.start() for h in hogs]
time.sleep(0.5)
d = sys.argv[1]
for i in range(int(sys.argv[2])):
    p = os.path.join(d, "f%d" % i)
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
    os.unlink(p)
for _ in range(50):
    subprocess.run(["/bin/true"])
[h.join() for h in hogs]
print(os.getpriority(os.PRIO_PROCESS, 0))
"""


def _attempted_stored_lost(st: DuckDBStore) -> list[tuple[str, int, int, int, int]]:
    """(class, cpu, attempted, stored, lost) from the final counters and the store."""
    msg = rows(st, "SELECT message FROM events WHERE event_action = 'counters'")
    assert len(msg) == 1
    counters = json.loads(msg[0]["message"])["attempted_lost"]
    stored = {(r["event_class"], r["cpu"]): r["n"] for r in rows(
        st, "SELECT event_class, cpu, count(*) n FROM events WHERE seq IS NOT NULL GROUP BY ALL "
            "UNION ALL SELECT 'tty', cpu, count(*) FROM tty WHERE seq IS NOT NULL GROUP BY ALL")}
    return [(cls, int(cpu), att, stored.get((cls, int(cpu)), 0), lost)
            for cls, per_cpu in counters.items() for cpu, (att, lost) in per_cpu.items()]


@pytest.mark.bpf
def test_nothing_lost_while_the_keeper_seals_niced_under_cpu_hogs(tmp_path: Path) -> None:
    """Both cores busy at nice 0 while the workload makes 30,000 files, and journals closed
    every second for a keeper sealing at nice 19: every count adds up, every file is kept."""
    os.chmod(tmp_path, 0o755)
    work = tmp_path / f"files-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    (tmp_path / "w.py").write_text(HOGS_AND_FILES)
    store = tmp_path / "s.duckdb"
    n = 30_000
    res = record(store, sys.executable, str(tmp_path / "w.py"), str(work), str(n),
                 extra=("--journal-seconds", "1", "--keeper-idle", "0.5"), timeout=240)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "0", "the user's command must not inherit the recorder's nice"
    st = DuckDBStore(store, read_only=True)
    for cls, cpu, attempted, stored, lost in _attempted_stored_lost(st):
        assert stored + lost == attempted, (cls, cpu, stored, lost, attempted)
        assert lost == 0, (cls, cpu, lost)
    created = rows(st, "SELECT count(DISTINCT file_path) n FROM events WHERE event_action = 'open' "
                       "AND starts_with(file_path, $d)", d=str(work) + "/")[0]["n"]
    unlinked = rows(st, "SELECT count(DISTINCT file_path) n FROM events WHERE event_action = 'unlink' "
                        "AND starts_with(file_path, $d)", d=str(work) + "/")[0]["n"]
    assert (created, unlinked) == (n, n)
    # journals closed every second went to a keeper sealing at nice 19 (one, or several started
    # as each idled out: which, depends on the host's timing)
    keepers = rows(st, "SELECT count(*) n FROM events WHERE event_category = 'agent' AND event_action = 'store-keeper'")
    assert keepers[0]["n"] >= 1


def test_the_backlog_brings_every_thread_back_to_nice_0_and_calm_lowers_it_again() -> None:
    """The real nice values of this process's threads (root may lower and raise them)."""
    if os.geteuid() != 0:
        pytest.fail("raising the priority again needs CAP_SYS_NICE (CI runs as root)")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    assert other.native_id is not None
    assert not Yielding().enabled, "off by default"
    y = Yielding(TRY_NICE)
    try:
        assert y.enabled
        y.start()
        assert thread_nice(threading.get_native_id()) == 19 and thread_nice(other.native_id) == 19
        y.update([0.01, 0.05])
        assert not y.boosted, "under 1/8: still yielding"
        y.update([0.2, 0.0])  # a ring a fifth full
        assert y.boosted and y.boosts == 1
        assert thread_nice(threading.get_native_id()) == 0 and thread_nice(other.native_id) == 0
        y.update([0.05])  # between the marks: stays at 0 (no flapping)
        assert y.boosted
        y.update([0.01])
        assert not y.boosted and thread_nice(other.native_id) == 19
    finally:
        y.stop()
        stop.set()
    assert thread_nice(threading.get_native_id()) == 0


@pytest.mark.bpf
def test_a_file_touched_on_an_idle_host_is_in_the_store_within_seconds(tmp_path: Path) -> None:
    """A query through the store's socket sees a file touched a moment ago (the keeper is up)."""
    os.chmod(tmp_path, 0o755)
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    proc = subprocess.Popen([*FORENSIX, "record", "-q", "--store", str(store), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        reader = SocketReader(store.with_name(store.name + ".sock"))
        reader.query("SELECT count(*) FROM events WHERE event_action = 'start'")  # a keeper runs: its start-up is not timed
        path = tmp_path / f"seen-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        path.write_text("x")
        took = None
        while time.monotonic() - t0 < 30:
            got = reader.query("SELECT count(*) AS n FROM events WHERE file_path = $p", {"p": str(path)})
            if got.column("n")[0].as_py():
                took = time.monotonic() - t0
                break
            time.sleep(0.2)
        assert took is not None and took < 10, f"not visible after {took} s"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)


@pytest.mark.bpf
def test_forensix_helpers_are_labelled_and_a_lookalike_is_not(tmp_path: Path) -> None:
    """The recorder, its store keepers and its orphan watch are labelled in ps and tree; a
    process of the workload that calls itself forensix-orphan-watch is not."""
    os.chmod(tmp_path, 0o755)
    store = tmp_path / "s.duckdb"
    with open_writer(store):  # an existing store: its recorder starts a keeper at once (a new one need not)
        pass
    res = record(store, "sh", "-c", "echo | sh -c 'read _; exec \"$@\"' forensix-orphan-watch /bin/sleep 0.2",
                 extra=("--keeper-idle", "1"))
    assert res.returncode == 0, res.stderr
    st = DuckDBStore(store, read_only=True)
    agent = {r["event_action"]: r["process_pid"] for r in rows(
        st, "SELECT event_action, process_pid FROM events WHERE event_category = 'agent' "
            "AND event_action IN ('start', 'store-keeper', 'orphan-watch')")}
    assert set(agent) == {"start", "store-keeper", "orphan-watch"}, agent
    named = {r["pid"] for r in rows(st, "SELECT DISTINCT pid FROM processes "
                                        "WHERE list_contains(args, 'forensix-orphan-watch')")}
    st.close()
    lookalikes = named - {agent["orphan-watch"]}
    assert agent["orphan-watch"] in named and lookalikes, named
    ps = [json.loads(line) for line in subprocess.run(
        [*FORENSIX, "ps", "--store", str(store), "--all", "--format", "json"], capture_output=True, text=True,
        check=True, timeout=60).stdout.splitlines()]
    role = {p["process.pid"]: p.get("forensix.role") for p in ps}
    assert role[agent["start"]] == "forensix recorder"
    assert role[agent["store-keeper"]] == "forensix store keeper"
    assert role[agent["orphan-watch"]] == "forensix orphan watch"
    assert all(role[pid] is None for pid in lookalikes), {pid: role[pid] for pid in lookalikes}
    tree = subprocess.run([*FORENSIX, "tree", "--store", str(store)], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    line = next(ln for ln in tree.splitlines() if f" {agent['orphan-watch']}  " in ln)
    assert line.endswith("[forensix orphan watch]"), line
