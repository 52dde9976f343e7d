"""The raw agent's exec finder (agent/execs.py) against the full decoder, on a real recording.

The raw agent does not decode: for executable preservation it picks the execs and the
executable mappings out of each drain tick by a few fields read with numpy, and gives the
artifact collector only the columns it reads. Those rows must be what the full decoder (the
log host's, and the decoding agent's) makes of the same records: one real sensor records a
workload that execs a copied binary and dlopens a copied library from a temporary
directory, and every drain tick is read both ways.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.agent.execs import collector_rows, pick
from forensix.agent.raw import RawRecorder
from forensix.artifacts.collect import Seen, seen_rows
from forensix.sensor.decode import Decoder
from forensix.sensor.ringbuf import Drained
from forensix.testing.sinks import NullSink

_PROT_EXEC = 4




class FinderTwin(RawRecorder):
    """The raw agent, which also decodes every tick in full with a decoder of its own (a copy
    after the /proc snapshot) and keeps both readings."""

    twin: Decoder

    def _snapshot(self) -> None:
        super()._snapshot()
        self.twin = copy.deepcopy(self.decoder)
        self.ticks: list[tuple[pa.Table, list[Seen]]] = []

    def _resync_clock(self) -> None:
        super()._resync_clock()
        self.twin.offset_ns = self.clock.offset_ns

    def _handle_drains(self, named: list[tuple[int, Drained]], bulk: bool) -> None:
        joined = Drained.join([d for _, d in named])
        full = self.twin.decode(joined).get("events")
        idx = pick(self.decoder, joined, np.empty(0, np.uint64))  # nothing judged ordinary: every mapping
        self.ticks.append((full if full is not None else pa.table({}),
                           collector_rows(self.decoder, joined, idx)))
        super()._handle_drains(named, bulk)


def _wanted(ev: pa.Table) -> pa.Table:
    """The decoder's rows the finder must give: execs, and mappings made executable."""
    if not ev.num_rows:
        return ev
    is_exec = pc.and_(pc.equal(ev["event_action"], "exec"), pc.is_null(ev["syscall"]))
    is_map = pc.and_(pc.equal(ev["event_action"], "mmap"),
                     pc.not_equal(pc.bit_wise_and(pc.fill_null(ev["mem_prot"], 0), _PROT_EXEC), 0))
    return ev.filter(pc.fill_null(pc.or_(is_exec, is_map), False))


def _rows(seen: list[Seen]) -> list[str]:
    """Every field the collector reads (``Seen``), compared as text, in a fixed order."""
    return sorted(repr(s) for s in seen)


@pytest.mark.bpf
def test_the_exec_finder_reads_what_the_decoder_decodes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    exe = work / "fx-finder-true"
    shutil.copy("/usr/bin/true", exe)
    lib = work / "libfxfinder.so"
    shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1", lib)
    load = f"import ctypes; ctypes.CDLL({str(lib)!r})"
    rec = FinderTwin([NullSink()], artifacts=None)
    assert rec.run(command=["sh", "-c", '"$1" a "b c" && "$2" -c "$3" && cd "$4" && ./fx-finder-true', "sh",
                            str(exe), sys.executable, load, str(work)]) == 0
    found: list[Seen] = []
    for full, got in rec.ticks:
        want = seen_rows(_wanted(full))
        assert len(got) == len(want)
        assert _rows(got) == _rows(want)
        found += got
    # not a vacuous match: our exec with its arguments, the run by a relative path, our library's mapping
    runs = [r for r in found if r.exec and r.executable == str(exe)]
    assert any(r.args == [str(exe), "a", "b c"] for r in runs), runs
    assert any(r.args == ["./fx-finder-true"] and r.cwd == str(work) for r in runs), runs
    assert all(r.inode and r.device is not None and r.pid and r.entity and r.ts for r in runs), runs
    maps = [r for r in found if not r.exec and r.path == str(lib)]
    assert maps and all(r.prot and r.prot & _PROT_EXEC and r.ret and not r.failed for r in maps), maps
