"""A kept executable's bytes leave the agent while the host stays quiet (sensor/recorder.py
``_ship_quiet``), raw (agent/raw.py) or decoding (``forensix agent --decode``).

The agent ships the bytes of newly kept files (``artifact_blobs``) a bounded amount per drain
tick (4 MiB), after the tick's records. A tool bigger than that, run by an intruder who then
does nothing more, left its remaining bytes on the host until the next recorded event or the
agent's stop: the log host had its artifacts row and hash, not its content. The flow flush,
which runs every few seconds records or not, now ships what is left. Real sensor, recording
only a network namespace made for the test, so that nothing else wakes the agent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest

from forensix.agent.raw import RawRecorder
from forensix.artifacts import ArtifactStore, Collector
from forensix.model.host import local_host
from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder

pytestmark = pytest.mark.bpf

_SIZE = 6 << 20  # past the 4 MiB a tick ships (collect.SHIP_BYTES)


class TimedSink:
    """Keeps each batch with the time it arrived."""

    evidence = True

    def __init__(self) -> None:
        self.got: list[tuple[float, str, pa.Table]] = []

    def write(self, table: str, data: pa.Table) -> None:
        self.got.append((time.time(), table, data))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("cls", [RawRecorder, Recorder], ids=["raw", "decode"])
def test_a_big_tool_s_bytes_are_shipped_while_the_host_stays_quiet(tmp_path: Path, netns: str,
                                                                   cls: type[Recorder]) -> None:
    tool, stamp = tmp_path / "fx-big-tool", tmp_path / "quiet-until"
    data = Path(shutil.which("true") or "/bin/true").read_bytes()
    data += os.urandom(_SIZE - len(data))
    tool.write_bytes(data)
    tool.chmod(0o755)
    sha = hashlib.sha256(data).hexdigest()
    host = local_host()
    sink = TimedSink()
    rec = cls([sink], config=SensorConfig(netns=os.stat(f"/run/netns/{netns}").st_ino), host=host,
                      artifacts=Collector(ArtifactStore(tmp_path / "store").open(), host, ship=True))
    # the tool, then 10 s of nothing recorded (sleep makes no recorded syscall), then a stamp
    script = f"{tool}; sleep 10; date +%s.%N > {stamp}"
    assert rec.run(command=["ip", "netns", "exec", netns, "sh", "-c", script]) == 0
    quiet_until = float(stamp.read_text())
    blobs = [(t, r) for t, table, d in sink.got if table == "artifact_blobs" for r in d.to_pylist()
             if r["sha256"] == sha]
    assert sum(len(r["data"]) for _, r in blobs) == _SIZE  # all of it, at the end in any case
    shipped = sum(len(r["data"]) for t, r in blobs if t < quiet_until)
    assert shipped == _SIZE, f"{shipped} of {_SIZE} bytes shipped while the host was quiet"
