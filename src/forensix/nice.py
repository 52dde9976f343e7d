"""A thread's CPU priority (nice), for the children it starts.

On Linux nice is per thread, and a child process starts at the nice of the thread that
created it. The recorder's threads run niced while it may lag (sensor/priority.py); what
they start for someone else (the user's command, a store keeper that answers a query)
must not inherit that."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["SEAL_NICE", "nice_for_child"]

# nice of a store's sealing (a keeper process, a recording store's sealing thread): the
# workload first, the seal when a core is free; a separate process cannot hold up the drain
SEAL_NICE = 19


@contextlib.contextmanager
def nice_for_child(nice: int | None) -> Iterator[None]:
    """The calling thread at ``nice`` meanwhile (None: as it is), for a child it starts."""
    tid = threading.get_native_id()
    was = os.getpriority(os.PRIO_PROCESS, tid)
    if nice is None or nice == was:
        yield
        return
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # no CAP_SYS_NICE: the child starts as low as this thread runs
        pass
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, was)
        except OSError:
            pass
