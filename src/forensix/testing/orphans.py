"""The orphan watches of a pinned sensor, found as a test or a bench sees them: by command line."""

from __future__ import annotations

from pathlib import Path

__all__ = ["watch_pids"]


def watch_pids(pin: Path) -> list[int]:
    """Pids of the orphan watches (sensor/orphan_watch.py) of the sensor pinned at ``pin``:
    the waiting shell and, once it woke, the Python watch it became."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if d.name.isdigit() and b"orphan_watch.py" in cmd and str(pin).encode() + b"\0" in cmd:
            out.append(int(d.name))
    return out
