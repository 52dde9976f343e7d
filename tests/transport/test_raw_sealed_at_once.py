"""A raw agent's drain tick is in the spool when the sink's write() returns.

The recorder gives a ring's space back to the kernel once the writer's write() returned
(sensor/recorder.py ``poll_once``). A tick the sink held back to join it with later batches
(``--batch-ms``, 200 ms by default) was then neither in the pinned ring nor in the spool: a
kill -9 meanwhile lost it. Raw rows are sealed at once; other small tables still wait.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pyarrow as pa
import zstandard

from forensix.agent.frame import RAW_FLAG, decode_body, parse_frame
from forensix.agent.raw import raw_row
from forensix.agent.shipping import ShippingConfig, ShippingSink, gap_batch
from forensix.pki.authority import Authority
from forensix.testing.shipping import host_info


def test_a_raw_tick_is_spooled_before_write_returns(pki: Authority, tmp_path: Path) -> None:
    seal = tmp_path / "alpha.seal"
    shutil.copy(pki.bundle("alpha").seal, seal)  # the sealer evolves its key file: a copy of the session's
    cfg = ShippingConfig(host="alpha", server=("127.0.0.1", 9), context=ssl.create_default_context(), seal_key=seal,
                         spool_dir=tmp_path / "spool", coalesce_s=30)  # a batch waits 30 s, or the raw row
    sink = ShippingSink(cfg, start=False)
    try:
        gap = gap_batch(host_info("alpha"), "alpha", 1, 2, 5, "test")
        sink.write("gaps", gap)
        assert sink.spool.frames_spooled == 0  # small tables still wait to be joined
        ring = bytes(range(256)) * 4096  # a drain's bytes (~1 MB)
        sink.write("raw", raw_row("ring", {"parts": [[0, 0, len(ring)]], "offset_ns": 0, "records": 1}, ring))
        assert sink.spool.frames_spooled == 2  # the raw row, and what waited before it, in order
        gaps_frame, raw_frame = (parse_frame(sink.spool.read(e)) for e in sink.spool.entries)
        assert gaps_frame.table == "gaps" and decode_body(gaps_frame).num_rows == 1
        assert raw_frame.table == "raw" and raw_frame.flags & RAW_FLAG
        # one zstd frame that declares its size (the header's): the log host checks it first
        assert zstandard.frame_content_size(raw_frame.body) == raw_frame.raw_len
        assert decode_body(raw_frame)["data"][0].as_py() == ring
    finally:
        sink._closed.set()
        sink.spool.close(clean=True)


def test_a_flush_tick_is_one_frame_and_its_ring_space_goes_back_after_it(pki: Authority, tmp_path: Path) -> None:
    """A raw agent's flush tick (its drain's row, then its maps' rows) is sealed as one frame;
    what the drain asks to run once written (the ring space given back to the kernel) runs
    only once that frame is in the spool, and the small tables of the tick keep their place."""
    import threading

    from forensix.agent.raw import RawRecorder
    from forensix.sensor.writer import BatchWriter
    from forensix.testing.shipping import shipping_sink

    sink = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", 9), start=False)
    rec = RawRecorder([])
    rec._writer = writer = BatchWriter([sink], depth=8)
    writer.start()
    released: list[int] = []
    ring = bytes(range(256)) * 64
    try:
        for tick in range(3):
            with rec.one_batch():
                rec._emit("raw", raw_row("ring", {"parts": [[2, 0, len(ring)]]}, ring))
                rec._emit("gaps", gap_batch(host_info("alpha"), "alpha", 1, 2, tick, "test"))
                rec._writer.after_written(lambda: released.append(sink.spool.frames_spooled))
                rec._emit("raw", raw_row("flows", {"n": 1}, b"f" * 64))
                rec._emit("raw", raw_row("reopens", {"n": 1}, b"o" * 32))
                assert sink.spool.frames_spooled == 2 * tick  # nothing reaches the writer before the tick ends
            done = threading.Event()
            writer.after_written(done.set)
            assert done.wait(10)
        writer.finish()
        frames = [parse_frame(sink.spool.read(e)) for e in sink.spool.entries]
        assert [f.table for f in frames] == ["raw", "gaps"] * 3
        assert [decode_body(f)["kind"].to_pylist() for f in frames if f.table == "raw"] == [
            ["ring", "flows", "reopens"]] * 3
        assert released == [2, 4, 6]  # each tick's space went back once its frames were spooled
    finally:
        sink._closed.set()
        sink.spool.close(clean=True)


def test_another_threads_rows_are_not_held_by_a_flush_tick(pki: Authority, tmp_path: Path) -> None:
    """The system-log follower and the writer's warnings emit from threads of their own: a
    tick that holds its own rows neither delays theirs nor can leave them in a batch that was
    already handed on (they would be lost)."""
    import threading

    from forensix.agent.raw import RawRecorder
    from forensix.sensor.writer import BatchWriter
    from forensix.testing.shipping import shipping_sink

    sink = shipping_sink(pki, "alpha", tmp_path, ("127.0.0.1", 9), start=False)
    rec = RawRecorder([])
    rec._writer = writer = BatchWriter([sink], depth=8)
    writer.start()
    try:
        with rec.one_batch():
            rec._emit("raw", raw_row("ring", {"parts": [[2, 0, 8]]}, bytes(8)))
            other = threading.Thread(target=rec._emit, args=("gaps", gap_batch(host_info("alpha"), "alpha", 1, 2, 3,
                                                                                "test")))
            other.start()
            other.join()
            done = threading.Event()
            writer.after_written(done.set)
            assert done.wait(10)
            assert [parse_frame(sink.spool.read(e)).table for e in sink.spool.entries] == ["gaps"]
        writer.finish()
        assert [parse_frame(sink.spool.read(e)).table for e in sink.spool.entries] == ["gaps", "raw"]
    finally:
        sink._closed.set()
        sink.spool.close(clean=True)


def test_a_decoded_tick_gives_its_ring_space_back_once_all_its_tables_are_spooled(pki: Authority,
                                                                                  tmp_path: Path) -> None:
    """A decoding agent's tick: its big table is sealed at once (past coalesce_rows), its small
    ones wait to be joined. The ring space went back only when the join ended (coalesce_s
    later): a kill -9 meanwhile left the big frame shipped and its records in the pinned ring,
    and the agent that adopted the ring shipped them again (tests/transport/
    test_raw_agent_upgrade_bpf.py, under load). The tick's end seals what waits."""
    import threading

    from forensix.sensor.writer import BatchWriter

    seal = tmp_path / "alpha.seal"
    shutil.copy(pki.bundle("alpha").seal, seal)
    cfg = ShippingConfig(host="alpha", server=("127.0.0.1", 9), context=ssl.create_default_context(), seal_key=seal,
                         spool_dir=tmp_path / "spool", coalesce_s=30, coalesce_rows=100)
    sink = ShippingSink(cfg, start=False)
    writer = BatchWriter([sink], depth=8)
    writer.start()
    released = threading.Event()
    spooled_then: list[int] = []
    try:
        big = pa.concat_tables([gap_batch(host_info("alpha"), "alpha", 1, 2, i, "test") for i in range(150)])
        writer.put("gaps", big)  # sealed at once: 150 rows > coalesce_rows
        writer.put("alerts", pa.table({"rule_name": ["a small table of the same tick"]}))  # waits to be joined
        writer.after_written(lambda: (spooled_then.append(sink.spool.frames_spooled), released.set()))
        assert released.wait(5), "the tick's ring space waited for coalesce_s (30 s)"
        assert spooled_then == [2]  # both tables were in the spool when the space went back
        writer.finish()
    finally:
        sink._closed.set()
        sink.spool.close(clean=True)
