"""The decoder checkpoint as Arrow IPC (server/checkpoint.py) holds the decoder's whole state:
loaded, it exports exactly what the checkpointed decoder exported (so a restart decodes the
next frames as the stopped log host would have); a checkpoint an older log host wrote (zstd
JSON) still loads. The restarts themselves: tests/transport/test_raw_frames.py."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zstandard

from forensix.sensor.decode import Decoder, _Proc
from forensix.sensor.decoder_state import export_state
from forensix.sensor.loader import load_abi
from forensix.server import checkpoint
from forensix.server.rawdecode import StreamDecoder
from forensix.testing.shipping import host_info


def _decoder() -> Decoder:
    """Every part of the state, with the awkward values: None, empty lists, 64-bit keys."""
    dec = Decoder(load_abi(), host_info("alpha"))
    for i in range(500):
        dec.cache.add(2**63 + i, _Proc(1000 + i, None if i % 7 == 0 else 2**63 + i - 1, i % 3,
                                       None if i % 5 == 0 else f"/usr/bin/p{i}",
                                       None if i % 11 == 0 else [] if i % 13 == 0 else [f"p{i}", "--x", "é\n"],
                                       None if i % 17 == 0 else "/home/u", i % 2 == 0))
    dec.ids._pid = np.array([1, 2, 3], np.uint64)
    dec.ids._tick = np.array([10, 20, 30], np.uint64)
    dec.ids._eid = np.array([2**64 - 1, 5, 6], np.uint64)
    dec.labels = {2**64 - 2: "/var/log/a", 7: None, 8: "/tmp/ü"}
    dec.label_history = {7: [(0, "/old"), (123, None)], 2**64 - 2: [(5, "/x")]}
    dec._history_limit = 12_345
    dec.tty_names = {34816: "pts/0", 1024: "tty1"}
    dec.offset_ns = -17
    return dec


def test_arrow_checkpoint_loads_the_same_state(tmp_path: Path) -> None:
    abi, info, dec = load_abi(), host_info("alpha"), _decoder()
    data = checkpoint.dump(1, 42, abi, info, dec)
    assert data.startswith(checkpoint.MAGIC)
    seq, abi2, info2, got = checkpoint.load(data, "alpha")
    assert (seq, abi2, info2) == (42, abi, info)
    assert export_state(got) == export_state(dec)
    # through the stream decoder and a file, as a log host writes and reads it
    sd = StreamDecoder("alpha", "s")
    sd.decoder, sd.abi, sd.info, sd.last_seq = dec, abi, info, 42
    sd.take_checkpoint()
    assert sd.write_checkpoint(tmp_path, 42)
    back = StreamDecoder("alpha", "s")
    assert back.restore(tmp_path) == 42
    assert back.decoder is not None and export_state(back.decoder) == export_state(dec)


def test_a_json_checkpoint_of_an_older_log_host_still_loads(tmp_path: Path) -> None:
    abi, info, dec = load_abi(), host_info("alpha"), _decoder()
    body = json.dumps({"format": 1, "seq": 9, "abi": abi, "host": asdict(info), "state": export_state(dec)}).encode()
    (tmp_path / f"decoder-{9:016d}.ckpt").write_bytes(zstandard.ZstdCompressor(level=1).compress(body))
    sd = StreamDecoder("alpha", "s")
    assert sd.restore(tmp_path) == 9
    assert sd.decoder is not None and export_state(sd.decoder) == export_state(dec)


def test_an_arrow_file_of_another_shape_is_passed_over(tmp_path: Path) -> None:
    """A readable Arrow file that is not a checkpoint (a part missing, a part of another
    type) is said and passed over, as a torn one is: the stream is decoded again."""
    import pyarrow as pa
    from pyarrow import ipc

    for table in (pa.table({"procs": [1, 2]}), pa.table({"x": ["y"]}).replace_schema_metadata({"seq": "3"})):
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        (tmp_path / f"decoder-{3:016d}.ckpt").write_bytes(sink.getvalue().to_pybytes())
        sd = StreamDecoder("alpha", "s")
        assert sd.restore(tmp_path) == -1 and sd.decoder is None
