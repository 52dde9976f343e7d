"""A stop request a signal handler can make.

``threading.Event.set()`` takes the event's lock. A handler for SIGTERM runs in the main
thread between two bytecodes, possibly inside that thread's own ``Event.wait()`` while it
holds the same lock (re-taking it after a timed wait): ``set()`` then waits for a lock its
own thread holds, for ever. A recorder sent SIGTERM while its loop ticked in
``Event.wait(0.05)`` stopped recording and never exited (CI, stop 31; reproduced in
tests/test_stopflag.py). This flag takes no lock: ``set()`` is an attribute store and a
byte written to a pipe, both safe in a handler, and ``wait()`` polls the pipe, which stays
readable once set, so every waiter on any thread wakes.
"""

from __future__ import annotations

import os
import select


class StopFlag:
    """``set``/``is_set``/``wait`` as ``threading.Event``'s, without a lock (no ``clear``:
    a stop is not taken back)."""

    def __init__(self) -> None:
        self._set = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        self._set = True
        if self._w < 0:
            return
        try:
            os.write(self._w, b"x")
        except OSError:  # a byte is there already (the pipe is never read)
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set or ``timeout`` s passed (None: until set); returns whether it is set."""
        if self._set or self._r < 0:
            return self._set
        waiter = select.poll()  # poll, not select: the descriptor may be >= 1024 in a busy recorder
        waiter.register(self._r, select.POLLIN)
        waiter.poll(None if timeout is None else max(timeout, 0.0) * 1000)
        return self._set

    def close(self) -> None:
        fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def __del__(self) -> None:  # one pipe a recorder; tests make hundreds in one process
        self.close()
