"""When the recorder flushes the flow maps (sensor/pacing.py): every ``flow_interval`` while
rows and records come fast, stretching to ``idle_flow_interval`` while the host is calm, and
back to ``flow_interval`` at once when a storm of records starts. No kernel needed: the
pacer is given the counts a recorder would give it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forensix.sensor.pacing import CALM_PER_S, FEW_PER_S, STRETCHED_INTERVAL, Pacer


@pytest.fixture
def pacer() -> Iterator[Pacer]:
    p = Pacer([], poll_interval=0.05, batch_interval=1.0, flow_interval=1.0, idle_flow_interval=4.0)
    p.last_flush = 0.0
    p.last_records = p.last_drain = -100.0  # the clock starts at 0 here: nothing came for long
    yield p
    p.close()


def test_a_calm_host_stretches_the_period_up_to_the_idle_bound(pacer: Pacer) -> None:
    now = 0.0
    periods = []
    for _ in range(5):  # a kept-alive web server: ~400 map rows and ~200 records per period
        now += pacer.flow_every
        pacer.drained(200, now)
        periods.append(pacer.flushed(400, now))
    assert periods == [2.0, 4.0, 4.0, 4.0, 4.0]


def test_rows_or_records_at_the_calm_rate_keep_the_flow_interval(pacer: Pacer) -> None:
    assert pacer.flushed(CALM_PER_S, 1.0) == 1.0  # map rows alone
    pacer.drained(CALM_PER_S, 1.5)
    assert pacer.flushed(0, 2.0) == 1.0  # ring records alone


def test_the_rate_is_over_the_period_that_passed(pacer: Pacer) -> None:
    pacer.flushed(0, 1.0)
    pacer.flushed(0, 3.0)
    assert pacer.flow_every == 4.0
    # 3,000 rows in a 4-s period is calm (750 a second); in a 1-s period it would not be
    assert pacer.flushed(3000, 7.0) == 4.0
    assert pacer.flushed(3 * CALM_PER_S * 4, 11.0) == 1.0


def test_a_storm_of_records_brings_the_flush_forward(pacer: Pacer) -> None:
    for t in (1.0, 3.0, 7.0):
        pacer.flushed(0, t)
    next_flow = 7.0 + pacer.flow_every
    assert next_flow == 11.0
    pacer.drained(CALM_PER_S // 2, 7.5)
    assert not pacer.flush_due(8.5, next_flow)  # calm so far
    pacer.drained(CALM_PER_S, 7.9)
    assert not pacer.flush_due(7.95, next_flow)  # a storm, but not a flow_interval since the last flush
    assert pacer.flush_due(8.0, next_flow)  # one flow_interval after the last flush, not at 11 s
    assert pacer.flushed(0, 8.0) == 1.0


def test_a_due_flush_is_due(pacer: Pacer) -> None:
    assert pacer.flush_due(5.0, 5.0)
    assert not pacer.flush_due(0.5, 5.0)


def test_waiting_for_the_writer_works_with_descriptors_past_1024() -> None:
    """A recorder with many files open gets descriptors >= 1024; the idle wait that listens
    only for the writer's wake-up (ring records held) must not refuse them (select() did:
    the loop raised and stopped draining)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), max(hard, 1100)))  # root (CI) may raise both
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1030)]
    try:
        p = Pacer([], poll_interval=0.05, batch_interval=1.0, flow_interval=1.0)
        try:
            assert p._wake_r >= 1024
            assert p.sleep_idle(0.01, rings=False) is False  # timed out, no ring
            p.wake()
            assert p.sleep_idle(1.0, rings=False) is False  # woken by the writer, not a ring
        finally:
            p.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def stretching() -> Iterator[Pacer]:
    p = Pacer([], poll_interval=0.05, batch_interval=1.0, flow_interval=1.0, idle_flow_interval=4.0,
              stretched_interval=STRETCHED_INTERVAL)
    p.last_flush = p.last_drain = p.last_records = 0.0
    yield p
    p.close()


def test_few_records_stretch_the_drain_and_keep_the_loop_busy_until_it(stretching: Pacer) -> None:
    """A build's few thousand records a second: one drain every STRETCHED_INTERVAL, and the
    loop keeps ticking meanwhile (an idle loop would drain what waits at once)."""
    p = stretching
    p.drained(3000, 1.0)
    assert p.drain_every == STRETCHED_INTERVAL
    assert not p.drain_due(1.0 + STRETCHED_INTERVAL - 0.01)
    assert p.drain_due(1.0 + STRETCHED_INTERVAL)
    assert p.busy(1.0 + STRETCHED_INTERVAL - 0.01)  # not idle between two stretched drains


def test_many_records_bring_the_batch_interval_back_at_the_next_drain(stretching: Pacer) -> None:
    p = stretching
    p.drained(100, 1.0)
    assert p.drain_every == STRETCHED_INTERVAL
    p.drained(int(FEW_PER_S * STRETCHED_INTERVAL), 1.0 + STRETCHED_INTERVAL)
    assert p.drain_every == 1.0
    # a ring drained early (a quarter full): the rate is over at least a batch interval
    p.drained(FEW_PER_S - 1, 2.6)
    assert p.drain_every == STRETCHED_INTERVAL


def test_the_flush_follows_the_stretched_drain_one_tick_for_both(stretching: Pacer) -> None:
    """Not calm (> CALM_PER_S) but few: the flush comes with the stretched drain, not a
    second tick every flow_interval; a calm host still backs off to the idle bound."""
    p = stretching
    p.drained(3000, 1.5)
    assert p.flushed(2000, 1.5) == STRETCHED_INTERVAL
    p.drained(3 * CALM_PER_S, 2.0)  # not calm since the flush: due one drain period after it
    assert not p.flush_due(2.9, 99.0)
    assert p.flush_due(1.5 + STRETCHED_INTERVAL, 99.0)
    now = 1.5
    periods = []
    for _ in range(3):  # the flush that takes the 3,072 records, then calm
        now += p.flow_every
        p.drained(10, now)
        periods.append(p.flushed(10, now))
    assert periods == [STRETCHED_INTERVAL, 3.0, 4.0]


def test_without_a_stretched_interval_the_drain_period_is_the_batch_interval(pacer: Pacer) -> None:
    pacer.drained(10, 5.0)
    assert pacer.drain_every == 1.0


def test_a_flush_comes_with_the_drain_nearest_its_time(stretching: Pacer) -> None:
    """A stretched flush period ending between two drains: the flush is taken with the drain
    nearer its time (one tick, not a drain and a flush apart), at most half a period early
    or late while the loop is busy, and on time when it is idle."""
    p = stretching
    p.drained(100, 3.0)
    assert p.flush_due(3.0, 3.7, draining=True)  # due within half a period: with this drain
    assert not p.flush_due(3.0, 4.0, draining=True)  # nearer the next drain (4.5)
    assert not p.flush_due(4.0, 4.0)  # busy: no tick of its own between the drains
    assert p.flush_due(4.5, 4.0, draining=True)
    assert p.flush_due(5.5, 4.0)  # a loop that stopped draining still flushes, a period late
    assert not p.busy(6.0)
    assert p.flush_due(6.0, 5.9)  # idle: the loop sleeps until the flush and takes it on time
