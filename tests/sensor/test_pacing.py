"""When the recorder flushes the flow maps (sensor/pacing.py): every ``flow_interval`` while
rows and records come fast, stretching to ``idle_flow_interval`` while the host is calm, and
back to ``flow_interval`` at once when a storm of records starts. No kernel needed: the
pacer is given the counts a recorder would give it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forensix.sensor.pacing import CALM_PER_S, Pacer


@pytest.fixture
def pacer() -> Iterator[Pacer]:
    p = Pacer([], poll_interval=0.05, batch_interval=1.0, flow_interval=1.0, idle_flow_interval=4.0)
    p.last_flush = 0.0
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
