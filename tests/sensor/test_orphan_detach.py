"""An orphaned sensor that nobody adopts stops costing the host: once the heartbeat watch
has paused it, the dead recorder's orphan watch detaches its programs (the kernel frees
them), keeping its maps pinned. The next recorder on the store attaches new programs to
those maps, stores what the rings held, and writes the pause as a gap of unknown size
that says the programs had been detached; `forensix record --stop` still works on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import DuckDBStore
from forensix.testing.orphans import watch_pids

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf

TIMEOUT_S = 1.0


def _start(store: Path, ready: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-system-logs", "--no-artifacts",
                          "--store", str(store), "--orphan-timeout", str(TIMEOUT_S), "--ready-file", str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
        time.sleep(0.1)
    ready.unlink()
    return p


def _bpftool(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout
    got = json.loads(out or "[]")
    return got if isinstance(got, list) else [got]


def _attached(pin: Path) -> tuple[set[int], set[int]]:
    """Ids of the sensor's links and of the programs they attach, from its pins."""
    links = [_bpftool("link", "show", "pinned", str(p))[0] for p in sorted(pin.glob("link-*"))]
    return {int(str(lk["id"])) for lk in links}, {int(str(lk["prog_id"])) for lk in links}


def _kill_and_wait_for_detach(p: subprocess.Popen[str], pin: Path) -> float:
    links, progs = _attached(pin)
    assert len(links) > 50 and progs, "the recorder's sensor is not attached"
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed = time.monotonic()
    while any(pin.glob("link-*")):
        assert time.monotonic() - killed < TIMEOUT_S + 30, "the orphaned sensor's programs stay attached"
        time.sleep(0.1)
    took = time.monotonic() - killed
    # not only unpinned: the kernel has let go of the links and freed their programs
    deadline = time.monotonic() + 10
    while True:
        live_links = {int(str(lk["id"])) for lk in _bpftool("link", "list")} & links
        live_progs = {int(str(pg["id"])) for pg in _bpftool("prog", "list")} & progs
        if not live_links and not live_progs or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not live_links and not live_progs, (live_links, live_progs)
    assert (pin / "control").exists() and (pin / "rb_main").exists(), "the maps must stay pinned for an adopter"
    return took


def test_orphan_nobody_adopts_is_detached_and_the_next_agent_reattaches(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    pin = pin_dir_for(store)
    work = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    first = _start(store, ready)
    try:
        assert len(watch_pids(pin)) == 1, "the recorder runs no orphan watch"
        (work / "before-kill").touch()
        took = _kill_and_wait_for_detach(first, pin)
    finally:
        if first.poll() is None:
            first.kill()
    assert took < TIMEOUT_S + 20, f"detached {took:.1f} s after the kill"
    assert not watch_pids(pin), "the watch did not end after detaching"
    (work / "while-detached").touch()  # nobody records this: the gap must say so
    time.sleep(0.3)
    second = _start(store, ready)
    try:
        links, _ = _attached(pin)
        assert len(links) > 50, "the adopting recorder did not attach new programs"
        assert len(watch_pids(pin)) == 1
        (work / "after-adoption").touch()
        time.sleep(1.5)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert not pin.exists()
    assert not watch_pids(pin), "a clean stop leaves no watch behind"

    st = DuckDBStore(store, read_only=True)
    opened = {r["file_path"] for r in rows(st, "SELECT DISTINCT file_path FROM events WHERE event_action = 'open' "
                                               "AND file_path LIKE $p", p=f"{work}/%")}
    # before-kill: stored by the first recorder, or left in its ring and drained by the adopter
    assert opened == {f"{work}/before-kill", f"{work}/after-adoption"}
    resumed = rows(st, "SELECT min(ts) AS ts FROM events WHERE file_path = $p", p=f"{work}/after-adoption")[0]["ts"]
    gaps = rows(st, "SELECT event_class, count, count_unknown, ts_from, ts_to FROM gaps WHERE reason = 'agent-absent'")
    assert {g["event_class"] for g in gaps} == {"process", "file", "network", "flow"}
    for g in gaps:
        assert g["count_unknown"] and g["count"] == 0  # unknown, never 0
        assert g["ts_from"] < g["ts_to"] <= resumed
    why = rows(st, "SELECT message FROM events WHERE event_action = 'gap' AND message LIKE 'nothing recorded%'")
    assert len(why) == 1 and "the orphan watch detached its programs" in why[0]["message"], why
    start = rows(st, "SELECT message FROM events WHERE event_action = 'start' AND message LIKE '%attached anew%'")
    assert start, "the start record does not say the programs were attached anew"


def test_stop_works_on_a_detached_orphan(tmp_path: Path) -> None:
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    pin = pin_dir_for(store)
    first = _start(store, ready)
    try:
        _kill_and_wait_for_detach(first, pin)
    finally:
        if first.poll() is None:
            first.kill()
    res = subprocess.run([*FORENSIX, "record", "--stop", "--store", str(store)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "orphan watch had detached" in res.stderr, res.stderr
    assert not pin.exists()


def test_stop_ends_the_watch_of_a_sensor_still_recording(tmp_path: Path) -> None:
    """Killed, then stopped by hand within the timeout: the watch goes with the pins."""
    store, ready = tmp_path / "s.duckdb", tmp_path / "ready"
    pin = pin_dir_for(store)
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-system-logs", "--no-artifacts",
                          "--store", str(store), "--orphan-timeout", "600", "--ready-file", str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 10
    while not any(b"python" in Path(f"/proc/{w}/cmdline").read_bytes() for w in watch_pids(pin)):
        assert time.monotonic() < deadline, "the watch did not take over when its recorder died"
        time.sleep(0.1)
    res = subprocess.run([*FORENSIX, "record", "--stop", "--store", str(store)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert not pin.exists() and not watch_pids(pin)
