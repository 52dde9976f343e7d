"""An exec committed while the recorder drains comes in the same batch as what its image did.

The recorder drains the process ring first, then the network and main rings. A program
exec'd between those drains has its opens in the main ring's drain and its exec record
still in the process ring: handed on a tick later, the live rules evaluated the opens
without the image (an alert with no image or command line; an allow-list by image, such
as ``unix_chkpwd`` reading /etc/shadow, raising for the allowed tool; a rule on the image
missing). The exec happens here inside the main ring's drain itself (the ring object is
the recorder's own seam), so the race is made every time, not waited for.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf


class _Batches:
    """The batch number (in arrival order) of the first exec of ``image`` and of its open of ``path``."""

    def __init__(self, image: str, path: str) -> None:
        self.image, self.path = image, path
        self.batches = 0
        self.exec_at: int | None = None
        self.open_at: int | None = None
        self.open_image: str | None = None

    def write(self, table: str, data: pa.Table) -> None:
        self.batches += 1
        if table != "events" or data.num_rows == 0:
            return
        acts = data.column("event_action")
        if self.exec_at is None:
            execs = data.filter(pc.and_(pc.equal(acts, "exec"),
                                        pc.fill_null(pc.equal(data.column("process_executable"), self.image), False)))
            if execs.num_rows:
                self.exec_at = self.batches
        if self.open_at is None:
            opens = data.filter(pc.and_(pc.equal(acts, "open"),
                                        pc.fill_null(pc.equal(data.column("file_path"), self.path), False)))
            if opens.num_rows:
                self.open_at = self.batches

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_exec_between_the_drains_is_in_the_batch_of_its_opens(tmp_path: Path) -> None:
    tool = tmp_path / f"fx-tool-{uuid.uuid4().hex[:6]}"
    shutil.copy("/bin/cat", tool)  # a name of its own: its exec is told from every other cat's
    target = tmp_path / "read-me"
    target.write_text("evidence\n")
    sink = _Batches(str(tool), str(target))
    ready = threading.Event()
    rec = Recorder([sink], SensorConfig(), on_ready=ready.set)
    t = threading.Thread(target=rec.run, daemon=True)
    t.start()
    try:
        assert ready.wait(90), "the recorder did not start"
        main_ring = rec.rings[2]
        drain = main_ring.drain
        armed = threading.Event()
        armed.set()

        def racing_drain(*a: Any, **k: Any) -> Any:
            if armed.is_set():  # once: the process ring of this tick has just been drained
                armed.clear()
                subprocess.run([str(tool), str(target)], check=True, capture_output=True, timeout=30)
            return drain(*a, **k)

        main_ring.drain = racing_drain  # type: ignore[method-assign]
        deadline = threading.Event()
        for _ in range(100):  # the loop drains the main ring at its next tick
            if not armed.is_set():
                break
            deadline.wait(0.1)
        assert not armed.is_set(), "the recorder never drained its main ring"
        deadline.wait(2.5)  # the next tick or two, for a late exec to arrive
    finally:
        rec.stop()
        t.join(180)
    assert not t.is_alive()
    assert sink.open_at is not None, f"{tool}'s open of {target} was not recorded"
    assert sink.exec_at is not None, f"the exec of {tool} was not recorded"
    assert sink.exec_at <= sink.open_at, (
        f"the exec of {tool} reached the sinks in batch {sink.exec_at}, after its open of {target} "
        f"(batch {sink.open_at}): the rules saw the open without the image")
