"""The idle recorder holds no DuckDB: `forensix record` appends journals itself and a store
keeper process seals them and answers queries, started for work and gone when idle
(store/keeper.py). Killing the keeper loses nothing, and queries still see the last seconds.

Each test records the real kernel and looks only at its own files."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from forensix.errors import StoreBusyError
from forensix.sensor.loader import pin_dir_for
from forensix.store.embedded import DuckDBStore, open_writer
from forensix.store.remote import SocketReader

from .conftest import FORENSIX, rows

pytestmark = pytest.mark.bpf


def _keepers(pid: int) -> list[int]:
    """The recorder's store keeper processes (its children running forensix.store.keeper)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == pid and b"forensix.store.keeper" in cmd:
            out.append(int(d.name))
    return out


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _start(store: Path, *extra: str) -> subprocess.Popen[str]:
    ready = store.with_name(f"ready-{uuid.uuid4().hex[:6]}")
    p = subprocess.Popen([*FORENSIX, "record", "-q", "--no-rules", "--no-system-logs", "--store", str(store),
                          "--ready-file", str(ready), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: ready.exists() or p.poll() is not None, 60, "the recorder did not start")
    assert p.poll() is None, p.stderr.read() if p.stderr else ""
    return p


def _opened(q: SocketReader | DuckDBStore, files: Path) -> list[str]:
    got = q.query("SELECT file_path FROM events WHERE event_action = 'open' AND file_path LIKE $p",
                  {"p": f"{files}/f%"}).column(0).to_pylist()
    return [str(x) for x in got]


def _pause(store: Path) -> None:
    """Pause this recorder's sensor (a bit of its own in the pinned control word, as
    bench/idle.py does): the host's events stop reaching it, so no journal fills and its
    keeper is idle whatever other work runs on the machine."""
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd = lib.bpf_obj_get(str(pin_dir_for(store) / "control").encode())
    assert fd >= 0
    try:
        buf = (ctypes.c_char * 256)()
        key = ctypes.c_uint32(0)
        assert lib.bpf_map_lookup_elem(fd, ctypes.byref(key), buf) == 0
        buf[0] = bytes([buf[0][0] | 4])
        assert lib.bpf_map_update_elem(fd, ctypes.byref(key), buf, ctypes.c_uint64(0)) == 0
    finally:
        os.close(fd)


def test_the_idle_recorder_holds_no_duckdb_and_a_query_starts_the_keeper(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store = tmp_path / "s.duckdb"
    files = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    rec = _start(store, "--keeper-idle", "1")
    try:
        # a query sees a file opened a moment ago (in the open journal)
        (files / "f-first").touch()
        reader = SocketReader(store.with_name(store.name + ".sock"))
        _wait(lambda: f"{files}/f-first" in _opened(reader, files), 30, "a query did not see the last seconds")
        _pause(store)  # an idle host from here on
        # the keeper exits, and the recorder process never loaded DuckDB
        _wait(lambda: not _keepers(rec.pid), 150, "the store keeper did not exit when idle")
        assert "duckdb" not in Path(f"/proc/{rec.pid}/maps").read_text(), "the recorder process loaded DuckDB"
        # a query starts one again
        assert _opened(reader, files) == [f"{files}/f-first"]
        # the recorder appends without holding DuckDB's lock: another writer is still refused,
        # or it would seal rows still being written; so is a second recorder
        with pytest.raises(StoreBusyError):  # by the flock, or by DuckDB while a keeper runs
            open_writer(store)
        second = subprocess.run([*FORENSIX, "record", "-q", "--store", str(store), "--duration", "1"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode != 0
        assert "being recorded or written by another process" in second.stderr
    finally:
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=120)
    assert rec.returncode == 0, err
    st = DuckDBStore(store, read_only=True)
    assert _opened(st, files) == [f"{files}/f-first"]
    keepers = rows(st, "SELECT process_pid FROM events WHERE event_action = 'store-keeper'")
    assert len({r["process_pid"] for r in keepers}) >= 2  # for the first query, for the one after the idle exit


def test_killed_keeper_loses_nothing(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store = tmp_path / "s.duckdb"
    files = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    # journals closed every half second: a keeper seals all through the workload
    rec = _start(store, "--journal-seconds", "0.5", "--keeper-idle", "2")
    try:
        reader = SocketReader(store.with_name(store.name + ".sock"))
        # the workload: a file every 0.05 s while the keeper seals, killed on the way, until
        # two keepers were killed (a new store starts its first keeper only when a journal
        # closes, ~1-3 s in at load) and at least 100 files were written
        stop = tmp_path / "stop"
        work = subprocess.Popen(["sh", "-c", f"i=0; until [ -e {stop} ]; do : > {files}/f$i; i=$((i+1)); sleep 0.05; done"])
        killed = 0
        deadline = time.monotonic() + 90
        while (killed < 2 or len(list(files.iterdir())) < 100) and time.monotonic() < deadline:
            for pid in _keepers(rec.pid):
                os.kill(pid, signal.SIGKILL)
                killed += 1
            time.sleep(1.0)
        stop.touch()
        work.wait(timeout=60)
        assert killed >= 2, "no keeper was running while journals closed"
        written = {str(f) for f in files.iterdir()}
        time.sleep(1.5)
        got = _opened(reader, files)
        assert written <= set(got), "a query through the keeper missed rows"
    finally:
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=120)
    assert rec.returncode == 0, err
    assert not store.with_name(store.name + ".sock").exists()
    st = DuckDBStore(store, read_only=True)
    # every file once: nothing lost by the kills, nothing sealed twice
    assert sorted(_opened(st, files)) == sorted(written)
    left = list((tmp_path / "s.duckdb.journal").rglob("*.arrows"))
    assert not left, f"journals left unsealed after a clean stop: {left}"
