"""The agent's spool on a full disk (agent/spool.py, agent/shipping.py): the recorder's
writer keeps and retries the refused batches (sensor/writer.py); once space is back every
batch reaches the log host once, the chain verifies, and the record says the cause and fix.
Needs root for a small tmpfs, as the recorder's tests do."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.agent.shipping import ShippingConfig, ShippingSink
from forensix.pki.authority import Authority
from forensix.pki.tls import client_context
from forensix.sensor.writer import BatchWriter
from forensix.server.verify import verify_evidence
from forensix.testing import disk
from forensix.testing.batches import events_batch

pytestmark = pytest.mark.bpf  # root: mount


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with disk.tiny_disk(tmp_path, "4m") as mnt:
        yield mnt


@pytest.mark.parametrize("coalesce_s", [0.0, 0.2])
def test_batches_refused_by_a_full_spool_disk_arrive_once_when_freed(
        pki: Authority, log_server: Any, tmp_path: Path, tiny_disk: Path, coalesce_s: float) -> None:
    b = pki.bundle("alpha")
    seal = tmp_path / "alpha.seal"
    shutil.copy(b.seal, seal)
    sink = ShippingSink(ShippingConfig(
        host="alpha", server=log_server.addr, context=client_context(b.ca, b.cert, b.key), seal_key=seal,
        spool_dir=tiny_disk / "spool", heartbeat_s=0.5, coalesce_s=coalesce_s, coalesce_rows=150))
    said: list[str] = []
    w = BatchWriter([sink], depth=64, on_warning=said.append, evidence_retry_s=60)
    w.coalesce_rows = 1  # one batch per write
    w.start()
    filler = tiny_disk / "filler"
    disk.fill(filler)
    for i in range(10):
        w.put("events", events_batch(100, start_seq=i * 100))
    deadline = time.monotonic() + 10
    while not w.evidence_stalls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.evidence_stalls, "the spool never refused a batch: the disk did not fill"
    time.sleep(0.3)
    filler.unlink()
    w.finish()
    deadline = time.monotonic() + 15
    while sink.spool.unacked() and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.close()
    log_server.srv.ingest.flush()
    n = log_server.store.query("SELECT count(*) n, count(DISTINCT seq) d FROM events "
                               "WHERE event_category <> 'agent'").to_pylist()[0]
    assert n == {"n": 1000, "d": 1000}
    assert sink.lost_rows_total == 0
    assert len(said) == 1 and "No space left on device" in said[0] and "free disk space in" in said[0], said
    time.sleep(0.5)  # a checkpoint
    v = verify_evidence(log_server.evidence)
    assert v.integrity_ok and v.complete, v.findings
