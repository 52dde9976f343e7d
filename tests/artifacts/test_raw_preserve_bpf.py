"""The raw agent's preservation keeps exactly what the decoding agent's does, on the real kernel.

The raw agent does not decode: its collector is given the few fields it reads (``Seen``),
sliced from the kernel's records (agent/execs.py ``collector_rows``), and keeps files with
``Collector.preserve``. The decoding agent decodes every drain in full and the collector
reads the events table (``Collector.annotate``). One real sensor records the intruder
workload of tests/artifacts/intruder.py (a downloaded binary run and deleted at once, a
program run from a memfd, one binary run 1,000 times, a #! script, a FIFO given to bash as
its script, a library dropped in a temporary directory, a binary over the size limit), and
at every drain tick both paths run over the same records, each with a collector and an
artifact store of its own: the decoding path first (a decoder of its own, a copy after the
/proc snapshot; every file opened at the drain and read by the collector's low-priority
reader, as ``Recorder`` has big ones read), the raw agent's own right after (read inline). Their artifacts rows, ``artifact.missing``
events and exec hashes must be equal.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from forensix.agent.raw import RawRecorder
from forensix.artifacts import ArtifactStore, Collector
from forensix.model.host import local_host
from forensix.sensor.decode import Decoder
from forensix.sensor.ringbuf import Drained
from forensix.testing.sinks import NullSink

pytestmark = pytest.mark.bpf

INTRUDER = Path(__file__).parent / "intruder.py"
_MAX = 2 << 20  # the size limit: the workload's big binary is refused by it


class BothPaths(RawRecorder):
    """The raw agent, with the decoding agent's preservation beside it on the same ticks."""

    twin: Decoder
    twin_collector: Collector

    def _snapshot(self) -> None:
        super()._snapshot()
        self.twin = copy.deepcopy(self.decoder)
        self.got: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        self.hashes: dict[str, list[list[Any]]] = {"old": [], "new": []}

    def _resync_clock(self) -> None:
        super()._resync_clock()
        self.twin.offset_ns = self.clock.offset_ns

    def _handle_drains(self, named: list[tuple[int, Drained]], bulk: bool) -> None:
        tables = self.twin.decode(Drained.join([d for _, d in named]))
        if tables.get("events") is not None:
            n = tables["events"].num_rows
            # as Recorder does before storing a batch, every file read by the low-priority reader
            # (artifacts/defer.py): the deferred path keeps what the inline one keeps
            out = self.twin_collector.annotate_later(tables).tables()
            ev = out["events"]
            if "artifacts" in out:
                self.got["old"] += out["artifacts"].to_pylist()
            self.got["old"] += _missing(ev.slice(n))
            execs = ev.slice(0, n).select(["process_entity_id", "ts", "process_hash_sha256"]).to_pylist()
            self.hashes["old"] += [[r["process_entity_id"], r["ts"], r["process_hash_sha256"]] for r in execs
                                   if r["process_hash_sha256"] is not None]
        super()._handle_drains(named, bulk)

    def _preserve(self, d: Drained, idx: np.ndarray) -> tuple[list[list[Any]], dict[str, pa.Table]]:
        hashes, extra = super()._preserve(d, idx)
        self.hashes["new"] += hashes
        if "artifacts" in extra:
            self.got["new"] += extra["artifacts"].to_pylist()
        if "events" in extra:
            self.got["new"] += _missing(extra["events"])
        return hashes, extra


def _missing(ev: pa.Table) -> list[dict[str, Any]]:
    return [{"missing": r} for r in ev.select(["ts", "event_action", "process_entity_id", "process_pid",
                                               "file_path", "message"]).to_pylist()]


def _ours(r: dict[str, Any], work: str, memfd_pid: int) -> bool:
    """A row of the workload's (other engineers' processes are recorded too)."""
    return work in json.dumps(r) or r.get("missing", r).get("process_pid") == memfd_pid


def _key(r: dict[str, Any]) -> str:
    """A row as text with its source reduced to whether the file was read at all: the two paths
    read one after the other, and a process may exit in between, so the first may read it
    through /proc/PID/exe and the second by its path (CI saw this with a short-lived run of
    the loop's binary). What was kept (hash, size, stored, certain, reason) must be equal."""
    if r.get("source") is not None:
        r = {**r, "source": "read"}
    return json.dumps(r, sort_keys=True, default=str)


def test_raw_agent_preserves_what_the_decoding_agent_preserves(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out.json"
    work.mkdir()
    host = local_host()
    rec = BothPaths([NullSink()], host=host,
                    artifacts=Collector(ArtifactStore(tmp_path / "new", max_file_bytes=_MAX).open(), host))
    rec.twin_collector = Collector(ArtifactStore(tmp_path / "old", max_file_bytes=_MAX).open(), host,
                                   defer_min_bytes=0)
    old = os.umask(0o022)
    try:
        assert rec.run(command=[sys.executable, str(INTRUDER), str(work), str(out)]) == 0
    finally:
        os.umask(old)
        rec.twin_collector.close()
    told = json.loads(out.read_text())
    got = {k: sorted(_key(r) for r in rows if _ours(r, str(work), told["memfd_pid"])) for k, rows in rec.got.items()}
    assert got["new"] == got["old"]
    ours = {k: [h for h in hs if h[2] in {told[s] for s in told if s.endswith("_sha")}] for k, hs in rec.hashes.items()}
    assert sorted(map(str, ours["new"])) == sorted(map(str, ours["old"]))
    # not a vacuous match: every kind of artifact and each way of not keeping one is there
    rows = [json.loads(k) for k in got["new"]]
    kept = {(r["kind"], r["sha256"]) for r in rows if "missing" not in r}
    assert {("executable", told["dropped_sha"]), ("memfd", told["memfd_sha"]), ("executable", told["loop_sha"]),
            ("script", told["script_sha"]), ("library", told["lib_sha"])} <= kept, kept
    assert any(r.get("kind") == "script" and r["path"] == told["fifo"] and r["sha256"] is None for r in rows)
    assert any(r.get("sha256") is None and "limit" in (r.get("reason") or "") for r in rows), rows
    assert any("missing" in r for r in rows)
    assert sum(r.get("sha256") == told["loop_sha"] for r in rows) == 1000
    assert len(ours["new"]) >= 1000 + 2  # the loop's, the download's, the memfd's execs
