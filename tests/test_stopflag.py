"""The stop flag the recorder, the agent and the log host set from SIGTERM/SIGINT handlers.

CI (stop 31) hung in tests/sensor/test_cli_record.py::test_sigterm_stops_cleanly_and_keeps_everything:
the recorder took SIGTERM while its loop ticked in ``threading.Event.wait(0.05)``, and the
handler's ``Event.set()`` waited for the lock its own thread held. The script below sends a
signal at a random moment of a timed wait, again and again: with ``threading.Event`` (FLAG=event)
it hangs within a few hundred rounds on this machine kind; the StopFlag must never hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from forensix.stopflag import StopFlag

_SCRIPT = r"""
import random, signal, sys, threading, time
from forensix.stopflag import StopFlag

make = threading.Event if sys.argv[1] == "event" else StopFlag
cur = [make()]
signal.signal(signal.SIGALRM, lambda s, f: cur[0].set())
for i in range(int(sys.argv[2])):
    cur[0] = make()
    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0001, 0.002))
    while not cur[0].wait(0.00005):  # the handler comes while wait() times out and re-takes its lock
        pass
print("rounds", i + 1)
"""


def _rounds(kind: str, n: int, timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run([sys.executable, "-c", _SCRIPT, kind, str(n)], capture_output=True, text=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_a_signal_handler_setting_the_flag_never_deadlocks_the_waiting_thread() -> None:
    res = _rounds("flag", 2000, timeout=120)
    assert res is not None, "the handler's set() deadlocked the thread it interrupted"
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["rounds", "2000"]


def test_the_hazard_is_real_for_threading_event() -> None:
    """The test above would catch the bug: the same rounds with threading.Event hang (if a
    future Python makes Event signal-safe, this fails and the flag can go)."""
    assert _rounds("flag", 1500, timeout=60) is not None  # 1,500 rounds take ~2 s when nothing hangs
    assert _rounds("event", 1500, timeout=10) is None


def test_every_waiter_wakes_and_a_timeout_returns_false() -> None:
    flag = StopFlag()
    t0 = time.monotonic()
    assert flag.wait(0.05) is False and time.monotonic() - t0 >= 0.04
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(flag.wait(30))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    flag.set()
    flag.set()  # a second stop request is harmless
    for t in threads:
        t.join(5)
    assert woke == [True, True, True]
    assert flag.is_set() and flag.wait(0) is True
    fds = len(os.listdir("/proc/self/fd"))
    flag.close()
    flag.set()  # a handler after close: no write to a descriptor number reused since
    assert len(os.listdir("/proc/self/fd")) == fds - 2
