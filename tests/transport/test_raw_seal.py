"""Raw frames as the agent seals them (agent/frame.py ``RawEncoder``): a drain tick's bytes
written as Arrow IPC into a buffer the sealer keeps from frame to frame, then one zstd frame
at ``RAW_LEVEL`` that declares its size. Frames of any size, in any order, reach a real log
host as exactly the bytes sealed (nothing of a larger frame sealed before them), chain and
verify, and a byte flipped in the kept evidence is found by ``forensix verify``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from forensix.agent.frame import RAW_FLAG, RAW_TABLE, decode_body
from forensix.agent.raw import raw_row
from forensix.pki.authority import Authority
from forensix.server.evidence import iter_segment
from forensix.server.verify import verify_evidence
from forensix.testing.shipping import shipping_sink


def _ring_like(rng: np.random.Generator, n: int) -> bytes:
    """Bytes like a drain's: mostly zeros, a third of them anything."""
    a = np.zeros(n, np.uint8)
    at = rng.integers(0, n, n // 3)
    a[at] = rng.integers(1, 256, len(at), dtype=np.uint8)
    return a.tobytes()


def _raw_frames(ev: Path) -> list[Any]:
    return [r for seg in sorted(ev.glob("alpha/*/seg-*.fxe")) for r in iter_segment(seg)
            if r.frame is not None and r.frame.flags & RAW_FLAG]


def test_raw_frames_of_any_size_arrive_as_sealed_and_a_flipped_byte_is_found(pki: Authority, log_server: Any,
                                                                              tmp_path: Path) -> None:
    rng = np.random.default_rng(25)
    # a big tick, a small one after it (the kept buffer holds the big one's bytes past its
    # end), one past what the sealer keeps between frames (8 MiB), then small and big again
    sizes = [3 << 20, 4096, 9 << 20, 64, 1 << 20]
    sent = [_ring_like(rng, n) for n in sizes]
    ship = shipping_sink(pki, "alpha", tmp_path, log_server.addr)
    try:
        for i, data in enumerate(sent):
            ship.write(RAW_TABLE, raw_row("ring", {"offset_ns": 0, "parts": [[2, 0, len(data)]], "records": i}, data))
        end = time.monotonic() + 30
        while ship.spool.unacked() and time.monotonic() < end:
            time.sleep(0.05)
        assert ship.spool.unacked() == 0 and not ship.spool.refused  # acknowledged: durable on the log host
    finally:
        ship.close()
    ev = log_server.evidence
    frames = _raw_frames(ev)
    assert [decode_body(r.frame)["data"][0].as_py() for r in frames] == sent  # each exactly its own bytes
    for r in frames:
        # the body says how large it decompresses (the log host checks that against the
        # header before it allocates anything); a streamed body said nothing
        assert zstandard.frame_content_size(r.frame.body) == r.frame.raw_len
    v = verify_evidence(ev, host="alpha")
    assert v.integrity_ok and v.complete, v.findings

    bad = tmp_path / "bad"
    shutil.copytree(ev, bad)
    hit = _raw_frames(bad)[2]  # the largest
    data = bytearray(hit.segment.read_bytes())
    data[hit.offset + len(hit.frame.raw) // 2] ^= 0x01  # inside its zstd body
    hit.segment.write_bytes(bytes(data))
    v = verify_evidence(bad, host="alpha")
    fails = {(f["check"], f["seq"]) for f in v.findings if f["status"] == "FAIL"}
    assert not v.integrity_ok
    assert ("mac", hit.frame.seq) in fails and ("chain", hit.frame.seq + 1) in fails, v.findings
