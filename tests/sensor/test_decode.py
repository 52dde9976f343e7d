"""The decoder on real recorded ring-buffer bytes, and on damaged ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa

from forensix.model.host import HostInfo
from forensix.sensor.decode import Decoder
from forensix.sensor.loader import bpf_dir, load_abi
from forensix.sensor.ringbuf import Drained
from forensix.store import schema

SAMPLE = Path(__file__).parent / "data" / "ringbuf-sample.npz"
HOST = HostInfo("host-id", "host", "boot-id", "6.18")


def _load() -> tuple[dict, dict[str, Drained]]:
    z = np.load(SAMPLE)
    abi = json.loads(z["abi"].tobytes())
    rings = {
        n: Drained(z[f"{n}_data"].tobytes(), z[f"{n}_offsets"], z[f"{n}_lengths"]) for n in ("rb_proc", "rb_main")
    }
    return abi, rings


def _decode(d: Drained) -> dict[str, pa.Table]:
    abi, _ = _load()
    return Decoder(abi, HOST, offset_ns=1_700_000_000 * 10**9).decode(d)


def test_sample_decodes_to_the_schema_with_the_expected_story() -> None:
    abi, rings = _load()
    dec = Decoder(abi, HOST, offset_ns=0)
    proc = dec.decode(rings["rb_proc"])
    main = dec.decode(rings["rb_main"])
    for out in (proc, main):
        assert out["events"].schema == schema.EVENTS
    ev = pa.concat_tables([proc["events"], main["events"]]).to_pylist()
    execs = [e for e in ev if e["event_action"] == "exec"]
    assert any(e["process_args"] and e["process_args"][0] == "/bin/sh" for e in execs)
    cat = [e for e in execs if e["process_executable"] == "/usr/bin/cat"]
    assert cat and cat[0]["process_args"] == ["cat", "/tmp/fx-sample.txt"]
    opened = [e for e in ev if e["event_action"] == "open" and e["file_path"] == "/tmp/fx-sample.txt"]
    assert opened and all(e["file_inode"] for e in opened)
    unl = [e for e in ev if e["event_action"] == "unlink" and e["file_path_raw"] == "/tmp/fx-sample.txt"]
    assert unl and unl[0]["file_path"] == "/tmp/fx-sample.txt" and unl[0]["file_path_resolution"] == "directory"
    exits = [e for e in ev if e["event_action"] == "exit" and e["process_exit_code"] == 5]
    assert len(exits) == 1
    assert not [e for e in ev if e["event_action"] == "decode-warning"]
    # the forked children and their images reach the processes table
    assert proc["processes"].num_rows >= 2


def _one_record(rings: dict[str, Drained]) -> tuple[bytes, int]:
    d = rings["rb_main"]
    off, ln = int(d.offsets[0]), int(d.lengths[0])
    return d.data[off : off + ln], ln


def test_truncated_record_becomes_a_warning_and_the_rest_decodes() -> None:
    _, rings = _load()
    d = rings["rb_main"]
    lengths = d.lengths.copy()
    lengths[0] = 100  # shorter than the fixed header
    out = _decode(Drained(d.data, d.offsets, lengths))
    ev = out["events"].to_pylist()
    warn = [e for e in ev if e["event_action"] == "decode-warning"]
    assert len(warn) == 1 and "shorter than" in warn[0]["message"]
    assert len(ev) == len(d.offsets)  # one warning + every other record


def test_strings_past_the_end_and_unknown_kind() -> None:
    abi, rings = _load()
    d = rings["rb_main"]
    data = bytearray(d.data)
    ev = {m["name"]: m for m in abi["structs"]["fx_event"]["members"]}
    o0, o1 = int(d.offsets[0]), int(d.offsets[1])
    data[o0 + ev["slen"]["offset"] : o0 + ev["slen"]["offset"] + 2] = (60000).to_bytes(2, "little")
    data[o1 + ev["kind"]["offset"] : o1 + ev["kind"]["offset"] + 4] = (99).to_bytes(4, "little")
    out = _decode(Drained(bytes(data), d.offsets, d.lengths))
    msgs = [e["message"] for e in out["events"].to_pylist() if e["event_action"] == "decode-warning"]
    assert any("past the end" in m for m in msgs)
    assert any("unknown event kind 99" in m for m in msgs)
    assert out["events"].num_rows == len(d.offsets)


def test_empty_drain_decodes_to_nothing() -> None:
    assert _decode(Drained(b"", np.empty(0, np.int64), np.empty(0, np.int64))) == {}


def test_abi_json_matches_the_built_object() -> None:
    # abi.json is generated from the object's BTF; regenerate it and compare.
    obj = bpf_dir() / "sensor.bpf.o"
    unistd = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
    gen = Path(__file__).parents[2] / "bpf" / "gen_abi.py"
    fresh = json.loads(subprocess.run(["python3", str(gen), str(obj), unistd], check=True,
                                      capture_output=True, text=True).stdout)
    assert fresh == load_abi()


def test_a_pointer_is_left_out_of_a0_a3_only_where_its_string_is_in_the_row_whole() -> None:
    # openat(dirfd, path, flags, mode): a1 points to the path, which the row keeps in file_path_raw
    abi, rings = _load()
    d = rings["rb_main"]
    out = _decode(d)["events"].to_pylist()
    opens = [(i, e) for i, e in enumerate(out) if e["syscall"] == "openat"]
    assert opens and all(e["file_path_raw"] is not None and e["a1"] is None for _, e in opens)
    # flags and mode stay: they are values, not pointers
    assert all(e["a2"] is not None and e["a3"] is not None and e["a0"] is not None for _, e in opens)
    # a truncated copy keeps the pointer (the row does not hold the whole string)
    i = opens[0][0]
    ev = {m["name"]: m for m in abi["structs"]["fx_event"]["members"]}
    data = bytearray(d.data)
    at = int(d.offsets[i]) + ev["flags"]["offset"]
    size = ev["flags"]["size"]
    flags = int.from_bytes(data[at : at + size], "little") | (1 << 1)  # FX_F_TRUNC0 << FX_S_RAW0
    data[at : at + size] = flags.to_bytes(size, "little")
    row = _decode(Drained(bytes(data), d.offsets, d.lengths))["events"].to_pylist()[i]
    assert row["syscall"] == "openat" and row["file_path_truncated"] and row["a1"] is not None
