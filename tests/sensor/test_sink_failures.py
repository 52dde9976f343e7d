"""One failing sink must not stop the recording (sensor/writer.py).

A non-evidence sink (metrics, live rules, alert outputs) that raises is disabled, said once
in the record as an agent warning naming it, and recording goes on. An evidence sink (the
store) that refuses batches (a full disk) has them kept and retried while the kernel ring
holds new records: once space is back nothing is lost or stored twice, and the log and the
record name the cause and the fix.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from forensix.agent.sink import StoreSink
from forensix.artifacts import Collector
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder
from forensix.store.embedded import open_reader
from forensix.store.journal import journal_dir
from forensix.store.keeper import RecorderStore
from forensix.testing import disk
from forensix.testing.sinks import BrokenCollector, BrokenSink

pytestmark = pytest.mark.bpf


@contextmanager
def _recording(store: Path, *extra: object, artifacts: Collector | None = None,
               ) -> Iterator[tuple[Recorder, RecorderStore]]:
    writer = RecorderStore(store)
    ready = threading.Event()
    rec = Recorder([StoreSink(writer), *extra], SensorConfig(), on_ready=ready.set,  # type: ignore[list-item]
                   artifacts=artifacts)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        yield rec, writer
    finally:
        rec.stop()
        t.join(120)
        writer.close()
    assert not t.is_alive()


def _make_files(d: Path, n: int) -> None:
    """Files created by a shell, not this process (the recorder does not record its own)."""
    subprocess.run(["sh", "-c", f"cd {d} && for i in $(seq 0 {n - 1}); do : > f$i; done"], check=True, timeout=60)


def _opens(store: Path, d: Path) -> dict[str, int]:
    r = open_reader(store)
    try:
        t = r.query("SELECT file_path, count(*) AS n FROM events WHERE event_action = 'open' "
                    "AND starts_with(file_path, $p) GROUP BY file_path", {"p": f"{d}/f"})
    finally:
        r.close()
    return dict(zip(t.column("file_path").to_pylist(), t.column("n").to_pylist()))


def _warnings(store: Path) -> list[str]:
    r = open_reader(store)
    try:
        t = r.query("SELECT message FROM events WHERE event_category = 'agent' AND event_action = 'warning' "
                    "AND process_pid = $pid", {"pid": os.getpid()})
    finally:
        r.close()
    return [str(m) for m in t.column("message").to_pylist()]


def test_a_failing_non_evidence_sink_is_disabled_and_recording_goes_on(tmp_path: Path) -> None:
    """A broken metrics-like sink and a broken artifact collector: each said once, by name."""
    files = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    store = tmp_path / "s.duckdb"
    broken = BrokenSink(ok_batches=1, name="broken-metrics")
    with _recording(store, broken, artifacts=BrokenCollector(tmp_path / "artifacts")) as (rec, _):
        assert broken.failed.wait(30), "the broken sink was never given a second batch"
        _make_files(files, 200)
        time.sleep(1.5)
    assert rec._writer.error is None
    assert broken.calls == 2, "a disabled sink must get no more batches"
    got = _opens(store, files)
    assert sorted(got) == sorted(f"{files}/f{i}" for i in range(200)), "files recorded after the failure are missing"
    assert set(got.values()) == {1}
    said = [m for m in _warnings(store) if "broken-metrics" in m]
    assert len(said) == 1, said
    assert "disabled" in said[0] and "(on purpose)" in said[0]
    said = [m for m in _warnings(store) if "artifacts" in m]
    assert len(said) == 1 and "disabled" in said[0] and "(on purpose)" in said[0], said
    assert rec.artifacts is None


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    # room, once the filler is gone, for what a loaded host records meanwhile: at 48 MB a CI run at
    # load ~6 filled it again with the backlog's journals and seals, and the stop retried for 300 s
    with disk.tiny_disk(tmp_path, "256m") as mnt:
        yield mnt


def test_the_store_on_a_full_disk_keeps_the_batches_and_loses_nothing_once_freed(
        tmp_path: Path, tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    files.mkdir()
    store = tiny_disk / "s.duckdb"
    filler = tiny_disk / "filler"
    caplog.set_level(logging.WARNING, logger="forensix.recorder")
    with _recording(store) as (rec, _):
        disk.fill(filler)
        _make_files(files, 300)
        deadline = time.monotonic() + 30
        while not rec._writer.evidence_stalls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rec._writer.evidence_stalls, "the store never refused a batch: the disk did not fill"
        time.sleep(0.5)  # a few retries on the full disk
        filler.unlink()
        time.sleep(2.0)
    assert rec._writer.error is None
    got = _opens(store, files)
    missing = sorted({f"{files}/f{i}" for i in range(300)} - set(got))
    assert not missing, f"{len(missing)} files lost, e.g. {missing[:3]}"
    assert set(got.values()) == {1}, "a retried batch was stored twice"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "No space left on device" in logged and f"free disk space in {journal_dir(store)}" in logged, logged
    said = [m for m in _warnings(store) if "refused batches" in m]
    assert len(said) == 1 and "No space left on device" in said[0] and "free disk space" in said[0], said
