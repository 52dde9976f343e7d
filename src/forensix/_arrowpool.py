"""pyarrow's memory pool (mimalloc) without its first arena committed up front.

pyarrow 26 allocates with a mimalloc of its own, which commits its first arena eagerly:
~4 MB resident in every forensix process from the first Arrow buffer on, used or not (an
idle recorder's 100 MB held 4-5 MB of it; docs/benchmarks.md, "footprint"). Committed
as it is used instead (``MIMALLOC_ARENA_EAGER_COMMIT=0``), the recorder's CPU per event
under load did not change (bench.idle --modes load: writer 2.4-4.5 -> 2.7-2.8 µs/event).
glibc's malloc as Arrow's C++ default was tried: 4-5 MB less idle as well, but the
recorder's writer thread spent 7-10 µs/event instead of 2.4-4.5.

mimalloc reads its options when pyarrow loads it: the variable is set for that import
only, so the commands a recording starts (``forensix record -- CMD``) inherit the
environment as the user gave it. A value the user set is kept.
"""

from __future__ import annotations

import os
import sys

__all__ = ["lazy_arrow_arena"]

_VAR = "MIMALLOC_ARENA_EAGER_COMMIT"


def lazy_arrow_arena() -> None:
    if _VAR in os.environ or "pyarrow" in sys.modules:
        return  # the user chose, or pyarrow is loaded already
    os.environ[_VAR] = "0"
    try:
        import pyarrow  # noqa: F401 - mimalloc reads the variable now
    finally:
        del os.environ[_VAR]
