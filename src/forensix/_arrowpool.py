"""Arrow's C++ default memory pool: glibc's malloc in every forensix process.

pyarrow reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when it is imported, and otherwise
starts mimalloc. The recorder allocates its batches with glibc's malloc (mimalloc gave
freed batches back to the kernel between drains and faulted fresh pages in: ~15% of its
CPU, sensor/recorder.py ``use_system_allocator``), but that sets only pyarrow's own default:
Arrow's C++ code (IPC, compute kernels) still asked the C++ default, so mimalloc started
anyway and held ~4-5 MB of an idle recorder's resident memory (docs/benchmarks.md,
"footprint"). Chosen here, before pyarrow is imported, it is glibc's everywhere.

The variable is set for the import only: the commands a recording starts (``forensix
record -- CMD``) inherit the environment as the user gave it. A value the user set is kept.
"""

from __future__ import annotations

import os
import sys

__all__ = ["glibc_pool_for_arrow"]

_VAR = "ARROW_DEFAULT_MEMORY_POOL"


def glibc_pool_for_arrow() -> None:
    if _VAR in os.environ or "pyarrow" in sys.modules:
        return  # the user chose, or pyarrow chose already
    os.environ[_VAR] = "system"
    try:
        import pyarrow  # noqa: F401 - reads the variable now
    finally:
        del os.environ[_VAR]
