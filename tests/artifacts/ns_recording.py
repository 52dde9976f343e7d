"""A recorder (decoding or raw) running while ns_dropper.py mounts a tmpfs in a mount
namespace of its own (what a container runtime does): shared by the exec-hold tests."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forensix.artifacts import Collector

DROPPER = Path(__file__).with_name("ns_dropper.py")


@contextmanager
def dropper_marked(rec: Any, attached: threading.Event, collector: Collector, tmp_path: Path,
                   who: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, Any]]]:
    """Start ``rec`` (its ``on_ready`` sets ``attached``), run the dropper once every program
    is attached, and yield (the dropper, its out directory, what it told) once the hold marked
    the namespace's tmpfs; ``who`` names the recorder in the failure message. On leaving: the
    dropper is let go and waited for, ``rec`` stopped."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    th = threading.Thread(target=lambda: rec.run(duration=120))
    child: subprocess.Popen[bytes] | None = None
    th.start()
    try:
        deadline = time.monotonic() + 60
        # recording: the hold is made before the attach, and a mount made in between was not
        # recorded (on a loaded host the attach took long enough for the whole dropper)
        assert attached.wait(60) and collector.hold is not None
        child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable,
                                  str(DROPPER), str(mnt), str(out)])
        while not (out / "ready").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the dropper did not mount its tmpfs"
            time.sleep(0.02)
        told = json.loads((out / "ready").read_text())
        while told["dev"] not in (collector.hold.marked if collector.hold else {}):
            assert time.monotonic() < deadline, f"{who} did not mark the namespace's tmpfs after its mount"
            time.sleep(0.05)
        yield child, out, told
    finally:
        (out / "go").write_text("")
        if child is not None:
            child.wait(60)
        rec.stop()
        th.join(120)
