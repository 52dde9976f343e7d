"""The record/ps/events contract as a user meets it: errors, stopping, querying while recording."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest


from .conftest import FORENSIX, record

pytestmark = pytest.mark.bpf


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORENSIX, *args], capture_output=True, text=True, timeout=timeout)


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"my case notes, not a database\n" * 100)
    before = junk.read_bytes()
    res = record(junk, "true")
    assert res.returncode == 2
    assert "not a forensix store" in res.stderr and "Traceback" not in res.stderr
    assert junk.read_bytes() == before


def test_a_duckdb_database_of_something_else_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    res = _run("ps", "--store", str(other))
    assert res.returncode == 2 and "not a forensix store" in res.stderr
    res = record(other, "true")
    assert res.returncode == 2 and "not a forensix store" in res.stderr
    con = duckdb.connect(str(other), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["invoices"]


def test_not_root_is_explained(tmp_path: Path) -> None:
    # In a new user namespace without a mapping we are uid 65534, with no capabilities.
    res = subprocess.run(["unshare", "-U", *FORENSIX, "record", "--store", str(tmp_path / "s.duckdb"),
                          "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "needs root" in res.stderr and "Traceback" not in res.stderr


def test_a_kernel_without_a_kfunc_the_sensor_calls_is_named_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from forensix.cli.main import cli
    from forensix.sensor import loader

    assert loader._missing_kfuncs() == []  # this kernel has every kfunc the sensor calls
    monkeypatch.setitem(loader.KFUNCS, "bpf_fx_no_such_kfunc", "Linux 99.0")
    res = CliRunner().invoke(cli, ["record", "--store", str(tmp_path / "s.duckdb"), "--duration", "1"])
    assert res.exit_code == 2
    assert "bpf_fx_no_such_kfunc (Linux 99.0)" in res.stderr and os.uname().release in res.stderr
    assert "bookworm-backports" in res.stderr and not (tmp_path / "s.duckdb").exists()


_OOB_WRITE = ("{ __u32 z = 0; struct fx_scratch *q = bpf_map_lookup_elem(&scratch, &z);"
              " if (q) q->str[q->off + 30000] = 1; }\n")


def _sensor_with_a_bug(tmp_path: Path, anchor: str) -> dict[str, str]:
    """The real sensor with an out-of-bounds write injected before ``anchor``: env for it."""
    root = Path(__file__).parents[2]
    src = (root / "bpf" / "sensor.bpf.c").read_text()
    assert anchor in src
    bad = tmp_path / "sensor.bpf.c"
    bad.write_text(src.replace(anchor, _OOB_WRITE + anchor))
    out = tmp_path / "bpf"
    out.mkdir()
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{root / 'bpf'}",
                    "-I/usr/include/x86_64-linux-gnu", "-c", str(bad), "-o", str(out / "sensor.bpf.o")], check=True)
    (out / "abi.json").write_text((root / "src/forensix/sensor/_bpf/abi.json").read_text())
    return dict(os.environ, FORENSIX_BPF_DIR=str(out))


def test_verifier_rejection_names_the_program_and_kernel(tmp_path: Path) -> None:
    env = _sensor_with_a_bug(tmp_path, "\tif (c.nr != __NR_openat2 && !cfg.every_open && fx_reopen(t, f, flags))")
    res = subprocess.run([*FORENSIX, "record", "--store", str(tmp_path / "s.duckdb"), "--duration", "1"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2
    assert "rejected program fx_exit_open" in res.stderr and os.uname().release in res.stderr
    assert "Traceback" not in res.stderr


def test_refused_typed_lifecycle_falls_back_and_says_so(tmp_path: Path) -> None:
    env = _sensor_with_a_bug(tmp_path, "\tfx_exec_record(p, BPF_CORE_READ(bprm, file), BPF_CORE_READ(bprm, filename), old_pid);")
    store = tmp_path / "s.duckdb"
    res = subprocess.run([*FORENSIX, "record", "-q", "--no-rules", "--store", str(store), "--", "/bin/true", "fx-fallback"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    start = _run("events", "--store", str(store), "--action", "start", "--format", "json").stdout
    assert "lifecycle hooks: classic" in start and "refused" in start
    execs = _run("events", "--store", str(store), "--action", "exec", "--format", "json").stdout
    assert "fx-fallback" in execs


def _recorder(store: Path, stdout: int) -> tuple[subprocess.Popen[str], Path]:
    """`forensix record` on ``store``, and the file it writes once every program is attached."""
    ready = store.with_name(store.name + ".ready")
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--store", str(store), "--ready-file", str(ready)],
                         stdout=stdout, stderr=subprocess.PIPE, text=True)
    return p, ready


def _wait_recording(p: subprocess.Popen[str], ready: Path) -> None:
    """Until the recorder says it is attached, not a fixed sleep: on a loaded host starting
    Python and loading the sensor took longer than any sleep, and the marker went unrecorded."""
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert p.poll() is None, f"the recorder exited before recording: {p.communicate()[1]}"
        assert time.monotonic() < deadline, "the recorder did not attach within 120 s"
        time.sleep(0.1)
    assert ready.read_text() == f"{p.pid}\n"


def test_sigterm_stops_cleanly_and_keeps_everything(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    p, ready = _recorder(store, subprocess.PIPE)
    marker = f"fx-term-{uuid.uuid4().hex[:8]}"
    _wait_recording(p, ready)
    subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert not ready.exists()  # it says "recording now": gone once stopped
    res = _run("events", "--store", str(store), "--action", "exec", "--format", "json")
    execs = [json.loads(line) for line in res.stdout.splitlines()]
    assert any(marker in (e.get("process.args") or []) for e in execs)
    res = _run("events", "--store", str(store), "--action", "stop", "--format", "json")
    assert "reason=signal SIGTERM" in res.stdout
    # a recorder stopped by a signal is an alert (an intruder stops recorders too)
    res = _run("alerts", "--store", str(store), "--format", "json")
    assert "Recorder stopped" in res.stdout, res.stdout


def test_the_recording_now_line_comes_when_recording_has_started(tmp_path: Path) -> None:
    """A user who starts `forensix record` and runs commands once it says it records finds
    them recorded (without --ready-file: the line on stderr is the cue, even with -q)."""
    store = tmp_path / "s.duckdb"
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-artifacts", "--store", str(store)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = f"fx-now-{uuid.uuid4().hex[:8]}"
    try:
        assert p.stderr is not None
        line = p.stderr.readline()  # blocks until start-up is over: the first line it says
        assert line.startswith("recording since ") and "what runs from now on is recorded" in line, line
        subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL)
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    res = _run("events", "--store", str(store), "--action", "exec", "--format", "json")
    assert any(marker in (json.loads(x).get("process.args") or []) for x in res.stdout.splitlines())


def test_a_recorder_killed_with_sigkill_loses_nothing_it_stored(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    p, ready = _recorder(store, subprocess.DEVNULL)
    marker = tmp_path / f"fx-killed-{uuid.uuid4().hex[:8]}"
    try:
        _wait_recording(p, ready)
        marker.write_text("x")
        deadline = time.monotonic() + 60  # a loaded host: each query is a new Python process
        seen = 0
        while time.monotonic() < deadline and not seen:  # stored (in the journal), as a query shows
            res = _run("events", "--store", str(store), "--path", str(marker), "--format", "json")
            seen = len(res.stdout.splitlines())
            time.sleep(0.5)
        assert seen, "the marker's events were not stored while recording"
    finally:
        p.kill()  # SIGKILL: no drain, no seal, no stop record
        p.communicate(timeout=60)
    # the next recorder seals what the killed one left, says so in the record, and keeps every row
    # it adopts the pinned sensor, which recorded the whole host meanwhile (~150 k events at load 20: ~100 s)
    res = _run("record", "--store", str(store), "--duration", "1", timeout=300)
    assert res.returncode == 0 and "store recovery: events: sealed" in res.stderr, res.stderr
    res = _run("events", "--store", str(store), "--path", str(marker), "--format", "json")
    assert len(res.stdout.splitlines()) >= seen
    res = _run("events", "--store", str(store), "--action", "warning", "--format", "json")
    assert "store recovery: events: sealed" in res.stdout


def test_query_while_recording_sees_the_last_seconds(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    p, ready = _recorder(store, subprocess.DEVNULL)
    try:
        _wait_recording(p, ready)
        marker = tmp_path / f"fx-live-{uuid.uuid4().hex[:8]}"
        marker.write_text("x")
        found = False
        deadline = time.monotonic() + 60  # a loaded host: each query is a new Python process
        while time.monotonic() < deadline and not found:
            res = _run("events", "--store", str(store), "--path", str(marker), "--format", "json")
            assert res.returncode == 0, res.stderr  # no lock error while the recorder writes
            found = any(json.loads(line).get("event.action") == "open" for line in res.stdout.splitlines())
            if not found:
                time.sleep(0.5)
        assert found, "an event from the last seconds was not visible to a concurrent query"
        ps = _run("ps", "--store", str(store), "--format", "json")
        assert ps.returncode == 0 and str(p.pid) in ps.stdout
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    assert p.returncode == 0


def test_record_returns_the_commands_exit_code(tmp_path: Path) -> None:
    res = record(tmp_path / "s.duckdb", sys.executable, "-c", "raise SystemExit(7)")
    assert res.returncode == 7


def test_classic_lifecycle_hooks_record_the_same_story(tmp_path: Path) -> None:
    # what a kernel that refuses tp_btf gets: classic sched tracepoints and clone's return
    store = tmp_path / "s.duckdb"
    marker = f"fx-classic-{uuid.uuid4().hex[:6]}"
    res = record(store, "sh", "-c", f"/bin/echo {marker} > /dev/null; exit 4", extra=("--lifecycle", "classic"))
    assert res.returncode == 4, res.stderr
    start = _run("events", "--store", str(store), "--action", "start", "--format", "json")
    assert "lifecycle hooks: classic" in start.stdout
    ps = [json.loads(line) for line in _run("ps", "--store", str(store), "--all", "--format", "json").stdout.splitlines()]
    echo = [p for p in ps if p.get("process.args") == ["/bin/echo", marker]]
    assert echo and echo[0]["process.executable"] == os.path.realpath("/bin/echo")
    sh = [p for p in ps if p.get("process.entity_id") == echo[0]["process.parent.entity_id"]]
    assert sh and sh[0]["process.exit_code"] == 4 and sh[0]["process.executable"] == os.path.realpath("/bin/sh")
    forks = [json.loads(line) for line in _run("events", "--store", str(store), "--action", "fork",
                                               "--format", "json").stdout.splitlines()]
    assert any(f.get("target.pid") == echo[0]["process.pid"] for f in forks)


def test_a_cold_rule_cache_records_at_once_and_the_rules_catch_up(tmp_path: Path) -> None:
    """The first start after an install (no compiled rules kept) records while the rules
    compile; what ran meanwhile is still evaluated: the shadow read raises its alert."""
    store, cache = tmp_path / "s.duckdb", tmp_path / "rule-cache"
    env = dict(os.environ, FORENSIX_RULE_CACHE=str(cache))
    res = subprocess.run([*FORENSIX, "record", "-q", "--no-artifacts", "--store", str(store), "--",
                          "sh", "-c", "cat /etc/shadow >/dev/null"], capture_output=True, text=True, timeout=180,
                         env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert "compiling the rules (not cached yet): recording starts meanwhile" in res.stderr
    assert len(list(cache.glob("*.pickle"))) == 1  # kept for the next start
    alerts = _run("alerts", "--store", str(store), "--format", "json").stdout
    assert any(json.loads(x)["rule.title"].startswith("Shadow password") and json.loads(x)["process.command_line"]
               == "cat /etc/shadow" for x in alerts.splitlines()), alerts
