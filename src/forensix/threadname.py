"""The kernel's name for the calling thread (what top -H, perf and /proc/PID/task/*/comm show).

Python 3.11 names its threads for Python only: every thread of `forensix record` was
"forensix" to the kernel, so an idle recorder's wake-ups and CPU could not be told apart
by thread (bench/idle.py reads them from /proc). Python 3.14 does this itself."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

__all__ = ["name_native_thread"]

_PR_SET_NAME = 15
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the names stay Python's
    _prctl = None


def name_native_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name (or ``name``), cut to the kernel's 15 bytes."""
    if _prctl is None:
        return
    text = (name or threading.current_thread().name).encode()[:15]
    _prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
