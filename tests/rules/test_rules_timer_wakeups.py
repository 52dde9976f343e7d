"""The live engine's timer thread wakes for what it must do, not for every table written.

A recorder's drain tick hands the engine several tables one after the other (processes,
events, flows, agent events...), then ``tick_end``. The timer waits without a timeout while
nothing is pending, and with one (``max_delay / 2``) while rows wait: only the first table of
a tick has to wake it. It used to be woken for every table, and went back to sleep each time
(~10 times a second on a recorder that evaluated one tick every 1.5 s). Counted from the
thread's voluntary context switches in /proc (each sleep in the condition's wait is one), not
timed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa

from forensix.rules.engine import LiveEngine


def _sleeps(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def _timer(engine: LiveEngine) -> threading.Thread:
    t = engine._timer
    assert t is not None and t.native_id is not None, "the first write did not start the timer"
    return t


def test_the_tables_of_one_tick_wake_the_timer_once() -> None:
    engine = LiveEngine([], max_delay=30)  # evaluates at tick_end (or after 30 s): never by time here
    rows = pa.table({"x": [1]})
    engine.write("events", rows)  # starts the timer thread, which waits with a timeout from now on
    timer = _timer(engine)
    time.sleep(0.2)  # not a timing assertion: lets the new thread reach its wait
    before = _sleeps(timer.native_id)  # type: ignore[arg-type]
    for _ in range(20):  # one tick's tables, each written after the thread had time to sleep again
        engine.write("events", rows)
        time.sleep(0.02)
    during = _sleeps(timer.native_id) - before  # type: ignore[arg-type]
    engine.tick_end()
    engine.close()
    # before: one wake-up (and sleep) per table, ~20; now none (the timed wait's own re-checks
    # come every 15 s with max_delay 30)
    assert during <= 2, f"the timer thread slept {during} times while 20 tables of one tick came"


def test_rows_after_an_idle_spell_still_wake_the_timer() -> None:
    """Nothing pending: the timer waits without a timeout, and the first table must wake it
    to start its ``max_delay`` (rows with no tick_end after them: the system-log follower's
    lines, agent events); without that wake-up they would wait for the next tick forever."""
    evaluated = threading.Event()

    class _Probe(LiveEngine):
        def _drain(self, final: bool = False) -> None:
            if not final:
                evaluated.set()
            self._pending, self._pending_rows, self._tick_ended = [], 0, False  # a round (of no rules)

    engine = _Probe([], max_delay=0.2)
    rows = pa.table({"x": [1]})
    engine.write("events", rows)
    engine.tick_end()
    assert evaluated.wait(20), "a tick's rows were not evaluated"
    time.sleep(0.5)  # not a timing assertion: the timer is back in its untimed wait
    evaluated.clear()
    engine.write("events", rows)  # no tick_end: only max_delay, counted by the woken timer, evaluates it
    assert evaluated.wait(20), "rows written to an idle engine were never evaluated"
    engine.close()
