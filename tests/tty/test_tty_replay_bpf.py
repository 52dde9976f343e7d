"""Terminal capture on the real kernel and a real pty: record, replay as text and asciicast.

A real bash on a real pty (tests/tty/drive_shell.py) types commands and answers a
password prompt (`read -s`) while `forensix record` runs; a second shell floods its
terminal past the rate limit. The test then reads the store as an investigator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from forensix.store.embedded import DuckDBStore

pytestmark = pytest.mark.bpf

HERE = Path(__file__).parent
FORENSIX = [sys.executable, "-m", "forensix"]
RATE = 20_000  # bytes per terminal per second: the flood of 300,000 bytes is cut, typing is not


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the sensor tests need root (CI runs them as root)")
    d = tmp_path_factory.mktemp("tty")
    store, out = d / "s.duckdb", d / "pids.json"
    marker = f"fxmark{uuid.uuid4().hex[:8]}"
    old = os.umask(0o022)  # as a new user would have it: the store must still be root's only
    try:
        r = subprocess.run([*FORENSIX, "record", "-q", "--no-rules", "--no-artifacts", "--tty-rate", str(RATE),
                            "--store", str(store), "--", sys.executable, str(HERE / "drive_shell.py"), str(out),
                            marker], check=False, capture_output=True, text=True, timeout=120)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    info = json.loads(out.read_text())
    st = DuckDBStore(store, read_only=True)
    ent = {k: st.query("SELECT DISTINCT process_entity_id FROM tty WHERE process_pid = $p",
                       {"p": info[k]}).column(0).to_pylist() for k in ("shell", "flood")}
    st.close()
    assert ent["shell"] and ent["flood"], "no terminal bytes recorded for the driven shells"
    return {"store": store, "marker": marker, "entity": {k: f"{v[0]:016x}" for k, v in ent.items()}, **info}


def forensix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FORENSIX, *args], check=False, capture_output=True, text=True, timeout=60)


def test_text_replay_shows_commands_and_output_in_order(recorded: dict[str, Any]) -> None:
    m = recorded["marker"]
    r = forensix("replay", "--store", str(recorded["store"]), recorded["entity"]["shell"], "--format", "text")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    steps = [f"$ echo {m}-one", f"{m}-one", "$ echo $((6*7))-answer", "42-answer",
             "$ read -s -p 'Password: ' pw", "********", "$ echo typed ${#pw} characters",
             f"typed {len(recorded['password'])} characters", f"$ printf '%s\\n' {m}-last", f"{m}-last", "$ exit"]
    at = 0
    for s in steps:
        found = text.find(s, at)
        assert found >= 0, f"{s!r} missing, or out of order, in:\n{text}"
        at = found + len(s)


def test_play_writes_what_the_terminal_showed(recorded: dict[str, Any]) -> None:
    r = forensix("replay", "--store", str(recorded["store"]), recorded["entity"]["shell"], "--speed", "50",
                 "--idle-limit", "0.01")
    assert r.returncode == 0, r.stderr
    assert f"{recorded['marker']}-last" in r.stdout and "42-answer" in r.stdout
    assert recorded["password"] not in r.stdout


def test_password_is_never_stored(recorded: dict[str, Any]) -> None:
    pw = recorded["password"].encode()
    st = DuckDBStore(recorded["store"], read_only=True)
    try:
        masked = st.query("SELECT count(*) AS n, count(data) AS with_data, count(bytes) AS with_len FROM tty "
                          "WHERE masked AND process_pid = $p", {"p": recorded["shell"]}).to_pylist()[0]
        joined = b"".join(x or b"" for x in st.query(
            "SELECT data FROM tty WHERE process_pid = $p ORDER BY ts", {"p": recorded["shell"]}).column(0).to_pylist())
    finally:
        st.close()
    assert masked == {"n": 1, "with_data": 0, "with_len": 0}  # one masked read: no bytes, no length
    assert pw not in joined and pw[:6] not in joined
    # nor anywhere in the store's files, the journal included
    for f in [recorded["store"], *Path(str(recorded["store"]) + ".journal").rglob("*")]:
        if f.is_file():
            assert pw not in f.read_bytes(), f


def test_asciicast_is_valid_v2(recorded: dict[str, Any], tmp_path: Path) -> None:
    cast = tmp_path / "s.cast"
    r = forensix("replay", "--store", str(recorded["store"]), recorded["entity"]["shell"], "--format", "asciicast",
                 "--speed", "2", "--idle-limit", "0.5", "-o", str(cast))
    assert r.returncode == 0, r.stderr
    assert cast.stat().st_mode & 0o777 == 0o600
    lines = cast.read_text().splitlines()
    header = json.loads(lines[0])
    # asciicast v2 header: version, width and height required (integers), the rest typed
    assert header["version"] == 2 and isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int) and header["idle_time_limit"] == 0.5
    assert set(header) <= {"version", "width", "height", "timestamp", "duration", "idle_time_limit", "command",
                           "title", "env", "theme"}
    last = 0.0
    output = ""
    for line in lines[1:]:
        ev = json.loads(line)
        assert isinstance(ev, list) and len(ev) == 3, line
        t, code, data = ev
        assert isinstance(t, float | int) and t >= last, line
        assert code in ("o", "i", "m", "r") and isinstance(data, str), line
        # pauses were cut to the idle limit
        assert t - last <= 0.5 + 1e-6, line
        last = t
        if code == "o":
            output += data
    assert f"{recorded['marker']}-last" in output and "42-answer" in output
    assert recorded["password"] not in cast.read_text()
    assert any(json.loads(x)[1] == "m" and "masked" in json.loads(x)[2] for x in lines[1:])


def test_rate_limit_cuts_are_counted_and_marked(recorded: dict[str, Any]) -> None:
    st = DuckDBStore(recorded["store"], read_only=True)
    try:
        row = st.query("SELECT sum(cut_bytes) AS cut, sum(octet_length(data)) AS kept, any_value(tty) AS tty FROM tty "
                       "WHERE tty_device = (SELECT any_value(tty_device) FROM tty WHERE process_pid = $p)",
                       {"p": recorded["flood"]}).to_pylist()[0]
    finally:
        st.close()
    # 300,000 x's at RATE bytes a second: most is cut, and kept + cut covers all of it
    assert row["cut"] > 150_000, row
    assert row["kept"] + row["cut"] >= 300_000, row
    r = forensix("replay", "--store", str(recorded["store"]), recorded["entity"]["flood"], "--format", "text")
    assert r.returncode == 0, r.stderr
    assert "bytes not recorded: rate limit" in r.stdout


def test_sessions_mark_recordings_and_store_is_private(recorded: dict[str, Any]) -> None:
    r = forensix("sessions", "--store", str(recorded["store"]), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]  # JSON lines, ECS names
    ent = int(recorded["entity"]["shell"], 16)
    st = DuckDBStore(recorded["store"], read_only=True)
    try:
        from forensix.analysis.sessions import attribute

        leader = attribute(st).leader_of[ent]
    finally:
        st.close()
    assert [x["recording"] for x in rows if x["process.entry_leader.entity_id"] == f"{leader:016x}"] == [True]
    # recorded under umask 022: the store and its journal are still root's only
    store = recorded["store"]
    assert store.stat().st_mode & 0o777 == 0o600
    jd = Path(str(store) + ".journal")
    assert jd.stat().st_mode & 0o777 == 0o700
    for f in jd.rglob("*"):
        assert f.stat().st_mode & 0o077 == 0, f


def test_unknown_entity_is_a_clear_error(recorded: dict[str, Any]) -> None:
    r = forensix("replay", "--store", str(recorded["store"]), "00000000000000ff", "--format", "text")
    assert r.returncode == 2
    assert "forensix:" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
