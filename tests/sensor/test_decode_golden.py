"""The decoder's output on the captured sample, pinned: every row, column and value.

Speed work on the decoder must not change what it produces. The golden tables were
written by the decoder as it was before that work (``python -m
tests.sensor.test_decode_golden`` rewrites them: do that only when the output is meant
to change, and say so in the commit).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import ipc

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder
from forensix.sensor.ringbuf import Drained

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "ringbuf-sample.npz"
GOLDEN = DATA / "ringbuf-sample-decoded.npz"
HOST = HostInfo("host-id", "host", "boot-id", "6.18")
OFFSET_NS = 1_700_000_000 * 10**9


def _decode_sample(batch: int) -> tuple[dict[str, pa.Table], Decoder]:
    """Both rings through one decoder, process ring first (as the recorder does), in
    drains of ``batch`` records, so per-batch state (labels, process cache) is covered."""
    z = np.load(SAMPLE)
    dec = Decoder(json.loads(z["abi"].tobytes()), HOST, offset_ns=OFFSET_NS)
    parts: dict[str, list[pa.Table]] = {}
    for ring in ("rb_proc", "rb_main"):
        data, offs, lens = z[f"{ring}_data"].tobytes(), z[f"{ring}_offsets"], z[f"{ring}_lengths"]
        for i in range(0, len(offs), batch):
            for name, t in dec.decode(Drained(data, offs[i : i + batch], lens[i : i + batch])).items():
                parts.setdefault(f"{ring}.{name}", []).append(t)
    return {k: pa.concat_tables(v) for k, v in parts.items()}, dec


def _state(dec: Decoder) -> dict[str, Any]:
    return {
        "labels": sorted(dec.labels.items()),
        "procs": [(k, vars(p)) for k, p in dec.cache.procs.items()],
        "by_pid": sorted(dec.cache.by_pid.items()),
    }


def _ipc(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, t.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(t)
    return sink.getvalue()


def _golden() -> tuple[dict[str, pa.Table], dict[str, Any]]:
    z = np.load(GOLDEN)
    tables = {k: ipc.open_stream(z[k].tobytes()).read_all() for k in z.files if k != "state"}
    return tables, json.loads(z["state"].tobytes())


def _same(tables: dict[str, pa.Table], golden: dict[str, pa.Table]) -> None:
    assert sorted(tables) == sorted(golden)
    for name, t in tables.items():
        g = golden[name]
        # columns the schema gained after the golden was written (imported rows' event_module and
        # rule_name, store /13) are not the decoder's: null in its output, compared without them
        added = [c for c in t.column_names if c not in g.column_names]
        assert all(t[c].null_count == t.num_rows for c in added), (name, added)
        t = t.drop_columns(added)
        assert t.schema == g.schema, name
        assert t.num_rows == g.num_rows, name
        for col in t.column_names:
            assert t[col].equals(g[col]), f"{name}.{col} differs"


def test_decoder_output_matches_the_golden_tables() -> None:
    tables, dec = _decode_sample(batch=10_000)
    golden, state = _golden()
    _same(tables, golden)
    assert json.loads(json.dumps(_state(dec))) == state


def test_small_drains_decode_to_the_same_rows() -> None:
    # Batches of 7 records: ring order and per-batch state carried across calls.
    tables, _ = _decode_sample(batch=7)
    golden, _ = _golden()
    _same(tables, golden)


def test_both_rings_in_one_batch_decode_to_the_same_rows() -> None:
    # The recorder joins the process ring's drain and the main ring's into one batch.
    z = np.load(SAMPLE)
    dec = Decoder(json.loads(z["abi"].tobytes()), HOST, offset_ns=OFFSET_NS)
    rings = [Drained(z[f"{r}_data"].tobytes(), z[f"{r}_offsets"], z[f"{r}_lengths"]) for r in ("rb_proc", "rb_main")]
    out = dec.decode(Drained.join(rings))
    golden, state = _golden()
    assert list(out) == ["events", "processes"] + (["flows"] if "rb_main.flows" in golden else [])
    joined = {"rb_proc.events": out["events"].slice(0, len(rings[0])),
              "rb_main.events": out["events"].slice(len(rings[0])), "rb_proc.processes": out["processes"]}
    if "flows" in out:
        joined["rb_main.flows"] = out["flows"]
    _same(joined, golden)
    assert json.loads(json.dumps(_state(dec))) == state


def test_a_damaged_record_in_a_joined_batch_is_named_in_its_own_drain() -> None:
    z = np.load(SAMPLE)
    abi = json.loads(z["abi"].tobytes())
    rings = [Drained(z[f"{r}_data"].tobytes(), z[f"{r}_offsets"], z[f"{r}_lengths"]) for r in ("rb_proc", "rb_main")]
    main = rings[1]
    lengths = main.lengths.copy()
    lengths[3] = 100  # shorter than the fixed header
    rings[1] = Drained(main.data, main.offsets, lengths)
    apart = [Decoder(abi, HOST, offset_ns=OFFSET_NS).decode(r) for r in rings]
    joined = Decoder(abi, HOST, offset_ns=OFFSET_NS).decode(Drained.join(rings))
    msgs = [e["message"] for e in joined["events"].to_pylist() if e["event_action"] == "decode-warning"]
    assert msgs == [f"ring record #3 (offset {int(main.offsets[3])}): record of 100 bytes is shorter than the "
                    f"{Decoder(abi, HOST).EV}-byte header"]
    events = pa.concat_tables([a["events"] for a in apart])
    assert joined["events"].drop_columns(["ts"]).equals(events.drop_columns(["ts"]))  # warnings carry "now"


def main(out: Path) -> None:
    tables, dec = _decode_sample(batch=10_000)
    arrays = {k: np.frombuffer(_ipc(t), np.uint8) for k, t in tables.items()}
    arrays["state"] = np.frombuffer(json.dumps(_state(dec)).encode(), np.uint8)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
