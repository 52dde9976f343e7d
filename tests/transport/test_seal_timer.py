"""The agent's seal timer (``ShippingSink._timer``) seals rows that waited ``coalesce_s`` to be
joined, and sleeps while none wait. It woke every ``coalesce_s / 2`` to look, busy or idle: ~10
wake-ups a second, ~0.7-1 ms of CPU a second in this VM, most of an idle raw agent's CPU (a raw
agent's drain ticks are sealed at once, so its rows rarely wait). Its sleeps are counted from
/proc (voluntary context switches), not timed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from forensix.agent.shipping import gap_batch
from forensix.pki.authority import Authority
from forensix.testing.shipping import host_info, shipping_sink


def _wakeups(native_id: int) -> int:
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_the_seal_timer_sleeps_while_nothing_waits_and_seals_what_does(pki: Authority, tmp_path: Path) -> None:
    others = set(threading.enumerate())  # other tests' sinks may have timers of their own still
    sink = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", 9), start=False, coalesce_s=0.2)
    try:
        timer = next(t for t in set(threading.enumerate()) - others if t.name == "fx-seal-timer")
        assert timer.native_id is not None
        time.sleep(0.3)  # its first sleep begun
        before = _wakeups(timer.native_id)
        time.sleep(2.0)
        woke = _wakeups(timer.native_id) - before
        assert woke <= 1, f"the seal timer woke {woke} times in 2 s with nothing to seal (every 0.1 s: ~20)"
        sink.write("gaps", gap_batch(host_info("alpha"), "alpha", 1, 2, 5, "test"))
        assert sink.spool.frames_spooled == 0  # a small table waits to be joined
        deadline = time.monotonic() + 10
        while sink.spool.frames_spooled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.spool.frames_spooled == 1, "the waiting rows were not sealed by the timer"
    finally:
        with sink._lock:  # as close() does, without the shipper this sink never started
            sink._closed.set()
            sink._timer_cv.notify()
        sink.spool.close(clean=True)
    timer.join(5)
    assert not timer.is_alive(), "the seal timer did not end with its sink"


def test_raw_ticks_sealed_at_once_do_not_wake_the_seal_timer(pki: Authority, tmp_path: Path) -> None:
    """A raw drain tick is sealed by the write itself: nothing is left waiting, so nothing is
    there for the timer. Each one woke it (twice: the notify, then its idle wait again), ~20
    wake-ups over a lua build's window, for nothing."""
    from forensix.agent.raw import raw_row

    others = set(threading.enumerate())
    sink = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", 9), start=False, coalesce_s=0.2)
    try:
        timer = next(t for t in set(threading.enumerate()) - others if t.name == "fx-seal-timer")
        assert timer.native_id is not None
        time.sleep(0.3)
        before = _wakeups(timer.native_id)
        for i in range(20):
            sink.write("raw", raw_row("ring", {"parts": [], "records": 0, "i": i}, b"\0" * 64))
            time.sleep(0.02)  # the timer would run meanwhile if woken
        woke = _wakeups(timer.native_id) - before
        assert sink.spool.frames_spooled == 20, "each raw tick is sealed by its write"
        assert woke <= 1, f"the seal timer woke {woke} times for 20 raw ticks that left nothing waiting"
    finally:
        with sink._lock:
            sink._closed.set()
            sink._timer_cv.notify()
        sink.spool.close(clean=True)
    timer.join(5)
