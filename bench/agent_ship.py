"""The real agent's CPU per stored event: ``forensix agent --raw`` against ``--decode``.

    python -m bench.agent_cost ship CAPTURE [--reps 3] [--write]

A capture (``python -m bench.agent_cost capture``) is fed through the agent's own code,
not a model of it: the recorder class each mode runs (``RawRecorder`` of agent/raw.py, or
the decoding ``Recorder``), its drain-tick hook (``_handle_drains``) and map-flush rows,
through the recorder's own writer thread (``BatchWriter``, which joins what is queued when
it wakes) into the real ``ShippingSink`` (Arrow IPC, zstd, HMAC, hash chain, spool append
with fsync; the network thread is not started: sending is a socket write either way). The
ring walk of ringbuf.py runs over each captured drain as the drain would. The sink's
coalescing is off (``--batch-ms 0``: at one drain a second it joins nothing across ticks;
a raw tick is sealed at once anyway), and each tick starts once the writer has written the
last one, as the live agent's ticks, ~1 s apart, do. The capture's drains (the rings joined) are split back
into rings by record class before the clock starts. The artifact collector's hook runs
as ``forensix agent`` runs it (``--no-artifacts``: not at all), without reading files,
which costs the same in both modes: what counts is that the raw agent decodes the process
ring and the executable mappings to find the execs.

CPU is the process's (``time.process_time``), so the writer's thread and any thread the
sink starts count too; the drainer's stages are its thread's CPU, ``seal+spool`` is the
writer thread's (the sink's work and the writer's joining of a tick's batches).
Each mode runs in a fresh process, alternating, ``--reps`` times; medians are printed.

The raw mode's frames are then decoded as the log host does (server/rawdecode.py): its
decode CPU per event is printed apart (it is the log host's, not the agent's), and its
row counts must equal the decoding mode's (tests/transport/test_raw_agent_bpf.py proves
the rows equal on a live recording; this checks the capture's counts).
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["compare_ship", "ship_replay", "where"]


class _Ring:
    """Where a ring's drains have reached (RawRecorder writes each part's start position)."""

    def __init__(self) -> None:
        self.pos = 0


def _agent(raw: bool, sink: Any, abi: dict[str, Any], offset_ns: int) -> Any:
    """The recorder of ``forensix agent`` in either mode, wired as start() wires it, minus the
    sensor: its writer is the recorder's own ``BatchWriter`` thread in front of the sink."""
    from forensix.agent.raw import RawRecorder
    from forensix.model.host import local_host
    from forensix.sensor.decode import Decoder
    from forensix.sensor.recorder import Recorder
    from forensix.sensor.writer import BatchWriter

    rec = (RawRecorder if raw else Recorder)([])
    rec.abi = abi
    rec.decoder = Decoder(abi, local_host(), offset_ns)
    rec.clock = type("Clock", (), {"offset_ns": offset_ns})()
    rec.rings = [_Ring(), _Ring(), _Ring()]
    rec._writer = BatchWriter([sink], depth=8)
    rec._writer.start()
    return rec


def _written(rec: Any) -> None:
    """Wait (without CPU) until the writer has written everything put so far: the live agent's
    ticks are ~1 s apart, and its writer is idle again long before the next one."""
    import threading

    done = threading.Event()
    rec._writer.after_written(done.set)
    done.wait()


def _sink(tmp: Path) -> Any:
    from forensix.agent.shipping import ShippingConfig, ShippingSink
    from forensix.pki.authority import Authority

    pki = Authority(tmp / "pki")
    pki.init(["127.0.0.1"])
    b = pki.issue("bench", seal_interval_s=3600)
    cfg = ShippingConfig(host="bench", server=("127.0.0.1", 9), context=ssl.create_default_context(),
                         seal_key=b.seal, spool_dir=tmp / "spool", spool_max_bytes=8 << 30, coalesce_s=0)
    return ShippingSink(cfg, start=False)


def _spooled(sink: Any) -> list[bytes]:
    """The frames the sink spooled (nothing is acked: the spool keeps them all), read back for
    the log host's decode once the agent's part is timed. Kept in memory as they were sealed
    (until 2026-12-07's agentcpu), every frame's bytes were fresh pages a live agent, which
    frees a frame once spooled, mostly reuses: ~50-80 page faults a frame."""
    return [sink.spool.read(e) for e in sink.spool.entries]


class _NoFiles:
    """The artifact collector's hook, without the files: reading and hashing an executable
    costs the same in both modes (the exec happened either way), so neither counts it. What
    each mode pays to find the execs (the raw agent decodes the process ring for it) counts."""

    def annotate(self, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        return tables

    def preserve(self, seen: list[Any]) -> Any:  # the raw agent's hook (since 2026-12-07's seventh pass)
        from forensix.artifacts.collect import Kept

        return Kept({}, None, None)

    def blobs_to_ship(self) -> None:
        return None


def _collector_reading_nothing(tmp: Path) -> Any:
    """The agent's own artifact collector (``--collector``): its choice of what to keep, its
    caches, its artifacts rows and the hashes it hands on, all as ``forensix agent`` runs them,
    except that no file is opened or hashed (that costs the same in every tree): each file
    "kept" gets a hash made from its kind and path. The stub (``_NoFiles``) leaves out the
    collector's own reading of what the exec finder gives it, which is the part that differs
    between an events table read back into rows and rows given as they are."""
    import hashlib

    from forensix.artifacts import ArtifactStore, Collector
    from forensix.artifacts.store import Put
    from forensix.model.host import local_host

    class ReadingNothing(Collector):
        def _take(self, *a: Any) -> Any:
            # (w, ts) -> (Put, source) before the deferred reads (artifacts/defer.py); (i, w, ts, defer) -> _Slot since
            w = a[0] if len(a) == 2 else a[1]
            put, source = Put(hashlib.sha256(f"{w.kind}:{w.path}".encode()).hexdigest(), 0, False), f"/proc/{w.pid}/exe"
            if len(a) == 2:
                return put, source
            from forensix.artifacts.collect import _Slot

            return _Slot(a[0], w, a[2], put, source)

    return ReadingNothing(ArtifactStore(tmp / "artifacts"), local_host())


def _by_ring(abi: dict[str, Any], d: Any) -> list[tuple[int, Any]]:
    """A captured drain (the rings joined) split back into its rings, by each record's class
    (the ring a class goes to: sensor/recorder.py), as (ring index, drain) in drain order."""
    from forensix.sensor.abi import struct_dtype
    from forensix.sensor.ringbuf import Drained

    dt = struct_dtype(abi, "fx_event")
    fields: Any = dt.fields
    words = np.frombuffer(d.data, np.uint32)
    ok = d.lengths >= dt.itemsize
    cls = np.full(len(d.offsets), 2, np.int64)
    cls[ok] = words[d.offsets[ok] // 4 + fields["cls"][1] // 4] & ((1 << (8 * fields["cls"][0].itemsize)) - 1)
    ring = np.where(cls == 0, 0, np.where((cls == 2) | (cls == 4), 1, 2))
    out = []
    for r in (0, 1, 2):
        idx = np.nonzero(ring == r)[0]
        if not len(idx):
            continue
        spans = [(int(o) - 8, (int(n) + 15) & ~7) for o, n in zip(d.offsets[idx], d.lengths[idx], strict=True)]
        data = b"".join(d.data[o: o + n] for o, n in spans)
        offs = np.cumsum([0] + [n for _, n in spans[:-1]], dtype=np.int64) + 8
        out.append((r, Drained(data, offs, d.lengths[idx].copy())))
    return out


# the kernel's page offset of a ring's first data page (struct bpf_ringbuf: a page of its
# own fields, the consumer and producer pages, then the data)
_DATA_PAGE = 3
_PAGE_SHIFT = mmap.PAGESIZE.bit_length() - 1


def _laid_out(inputs: list[tuple[str, Any]]) -> tuple[int, int, int]:
    """The ring sizes of this host's sensor (process, network, main), and each record
    header's page offset rewritten as the kernel writes it at the position the record has
    in its ring in this replay (``RawRecorder`` drains each ring from position 0 on): the
    split of the capture by ring moved records, and a drain may read the offsets."""
    from forensix.sensor.loader import ring_sizes_mb

    main, net, proc = ring_sizes_mb()
    sizes = (proc << 20, net << 20, main << 20)
    pos = [0, 0, 0]
    for kind, x in inputs:
        if kind != "ring":
            continue
        for r, part in x:
            words = np.frombuffer(part.data, np.uint32).copy()
            at = pos[r] + part.offsets - 8  # each header's ring position
            words[(part.offsets - 8) // 4 + 1] = _DATA_PAGE + ((at & (sizes[r] - 1)) >> _PAGE_SHIFT)
            part.data = words.tobytes()
            pos[r] += len(part.data)
    return sizes


def ship_replay(path: Path, raw: bool, artifacts: bool = True, collector: bool = False) -> dict[str, Any]:
    """One replay of ``path`` through the real agent of one mode; CPU by stage and in all."""
    from bench.agent_cost import _walker, load_inputs, replay_table
    from forensix.agent.raw import raw_row
    from forensix.sensor.decoder_state import export_state
    from forensix.sensor.recorder import use_system_allocator

    use_system_allocator()  # as the recorder's start does
    # pyarrow imports numpy.ma on the first masked array (the first exec row found): ~30 ms
    # once in an agent's life, not a cost per event (and ~6% of this replay's total)
    import numpy.ma  # noqa: F401
    abi, offset_ns, inputs = load_inputs(path)
    # the agent drains each ring on its own (before the clock starts: the capture joined them)
    inputs = [(k, _by_ring(abi, x)) if k == "ring" else (k, x) for k, x in inputs]
    sizes = _laid_out(inputs)
    tmp = Path(tempfile.mkdtemp(prefix="fx-agent-ship-"))
    sink = _sink(tmp)
    cpu: dict[str, float] = {"walk": 0.0, "drain tick": 0.0, "map flush": 0.0, "seal+spool": 0.0}
    rec = _agent(raw, sink, abi, offset_ns)
    # forensix agent always preserves
    rec.artifacts = None if not artifacts else _collector_reading_nothing(tmp) if collector else _NoFiles()
    walk = _walker()
    seeded = False
    # a flush tick (its drain, then its maps: the capture's ring item and the map items after
    # it) inside the agent's one_batch(), as its flush_flows runs it, where the tree has one
    one_batch = getattr(rec, "one_batch", None)
    tick: Any = None
    t_all = time.process_time()
    for kind, x in inputs:
        if tick is not None and kind not in ("flows", "reopens"):
            t = time.thread_time()
            tick.__exit__(None, None, None)
            tick = None
            cpu["map flush"] += time.thread_time() - t
        if kind == "ring":
            _written(rec)  # the tick before is written: a live agent's ticks are ~1 s apart
            if raw and not seeded:  # the seed goes out after the snapshot, before the first drain
                seed = {"abi": abi, "host": dataclasses.asdict(rec.host), "state": export_state(rec.decoder)}
                rec._emit("raw", raw_row("seed", {}, json.dumps(seed).encode()))
                seeded = True
            if one_batch is not None:
                tick = one_batch()
                tick.__enter__()
        t = time.thread_time()
        if kind == "ring":
            for r, part in x:
                walk(part, ring=(rec.rings[r].pos, sizes[r]))
            cpu["walk"] += time.thread_time() - t
            t = time.thread_time()
            for r, part in x:
                rec.rings[r].pos += len(part.data)
            rec._handle_drains(x, True)
            rec._writer.after_written(lambda: None)  # poll_once: the space goes back once written
            cpu["drain tick"] += time.thread_time() - t
        elif kind.startswith("table:"):
            replay_table(rec, kind, x)
        else:
            (rec._emit_flows if kind == "flows" else rec._emit_reopens)(*x)
            cpu["map flush"] += time.thread_time() - t
    if tick is not None:
        t = time.thread_time()
        tick.__exit__(None, None, None)
        cpu["map flush"] += time.thread_time() - t
    rec._writer.finish()
    sink.flush()
    total = time.process_time() - t_all
    cpu["seal+spool"] = rec._writer.cpu_s
    frames = _spooled(sink)
    sink._closed.set()  # its shipper never started: nothing to deliver
    sink.spool.close(clean=True)
    out: dict[str, Any] = {"mode": "raw" if raw else "decode", "agent_cpu_s": round(total, 3),
                           "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
                           "frames": len(frames), "shipped_bytes": sum(len(f) for f in frames)}
    out["rows"] = _log_host(frames, raw, out)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _log_host(frames: list[bytes], raw: bool, out: dict[str, Any]) -> dict[str, int]:
    """Rows per table as the log host would store them; for raw frames, its decode timed."""
    from forensix.agent.frame import RAW_TABLE, decode_body, parse_frame
    from forensix.server.rawdecode import StreamDecoder

    rows: dict[str, int] = {}
    dec = StreamDecoder("bench", "bench")
    t_all = time.thread_time()
    for raw_frame in frames:
        fr = parse_frame(raw_frame)
        data = decode_body(fr)
        got = dec.feed(data, fr.seq).joined() if fr.table == RAW_TABLE else [(fr.table, data)]
        for table, t in got:
            rows[table] = rows.get(table, 0) + t.num_rows
    if raw:
        out["log_host_decode_cpu_s"] = round(dec.cpu_s, 3)
        out["log_host_ingest_side_cpu_s"] = round(time.thread_time() - t_all, 3)  # with frame parsing, unzstd
    return rows


def compare_ship(path: Path, reps: int, artifacts: bool = True,
                 against: Path | None = None, collector: bool = False) -> tuple[str, dict[str, Any]]:
    """Both modes in fresh processes, alternating; a markdown table and the medians.
    ``against``: the src/ of another tree: its raw agent against this tree's, instead of
    --decode against --raw (the same bench code drives both)."""
    here = Path(__file__).resolve().parent.parent
    mine = os.environ.get("PYTHONPATH", str(here / "src")).split(os.pathsep)[0]
    # (label, src tree, raw): the first is the "before" column
    modes = ([("before", str(against), True), ("after", mine, True)] if against is not None
             else [("decode", mine, False), ("raw", mine, True)])
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in modes}
    loads: list[float] = []
    for i in range(reps):
        for label, src, raw in (modes if i % 2 == 0 else modes[::-1]):
            cmd = [sys.executable, "-m", "bench.agent_cost", "ship-one", str(path)] + (["--raw"] if raw else [])
            cmd += ([] if artifacts else ["--no-artifacts"]) + (["--collector"] if collector else [])
            env = dict(os.environ, PYTHONPATH=src + os.pathsep + str(here))
            loads.append(os.getloadavg()[0])
            res = subprocess.run(cmd, env=env, cwd=here, check=True, capture_output=True, text=True).stdout
            runs[label].append(json.loads(res.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    (a, _, _), (b, _, _) = modes
    rows = runs[a][0]["rows"]
    n = rows.get("events", 0) + rows.get("flows", 0)
    same = all(r["rows"] == rows for rs in runs.values() for r in rs)

    def med(mode: str, key: str, stage: str | None = None) -> float:
        return float(statistics.median(r["cpu_s"][stage] if stage else r[key] for r in runs[mode]))

    what = (f"this tree's raw agent against {against}'s" if against is not None else "--decode against --raw")
    lines = [(f"capture {path.name}: {n:,} stored events; {what}; medians of {reps} replays each, alternating, "
              f"each in a fresh process; load average {min(loads):.1f}–{max(loads):.1f}; "
              f"{'with' if artifacts else 'without'} finding the execs for the artifact collector"
              f"{' (the real collector, reading no file)' if artifacts and collector else ''}"), "",
             f"| agent stage | {a} µs/event | {b} µs/event |", "|---|---:|---:|"]
    for stage in ("walk", "drain tick", "map flush", "seal+spool"):
        lines.append(f"| {stage} | {med(a, '', stage) / n * 1e6:.2f} | {med(b, '', stage) / n * 1e6:.2f} |")
    d, r = med(a, "agent_cpu_s"), med(b, "agent_cpu_s")
    lines.append(f"| **agent total** | **{d / n * 1e6:.2f}** | **{r / n * 1e6:.2f}** |")
    lines.append(f"| frames | {med(a, 'frames'):.0f} | {med(b, 'frames'):.0f} |")
    bd = statistics.median(x["shipped_bytes"] for x in runs[a]) / n
    br = statistics.median(x["shipped_bytes"] for x in runs[b]) / n
    lines.append(f"| bytes shipped / event | {bd:.1f} | {br:.1f} |")
    lh = med(b, "log_host_decode_cpu_s")
    lhi = med(b, "log_host_ingest_side_cpu_s")
    lines += ["", (f"log host, {b}'s raw frames: decode {lh / n * 1e6:.2f} µs/event ({lhi / n * 1e6:.2f} with frame "
              f"parsing and unzstd); rows per table {'equal in every run' if same else 'DIFFER'}: {rows}")]
    medians = {"events": n, f"{a}_us": d / n * 1e6, f"{b}_us": r / n * 1e6, "log_host_us": lh / n * 1e6,
               "load": [min(loads), max(loads)], "same_rows": same}
    return "\n".join(lines), medians


def run_one(path: Path, raw: bool, artifacts: bool = True, collector: bool = False) -> None:
    print(json.dumps(ship_replay(path, raw, artifacts, collector)))


# What ``where`` times: (module, attribute) of the raw agent's functions, on both threads;
# those a tree does not have are skipped. They nest (``collector_rows`` inside ``_preserve``).
_WHERE = [
    ("forensix.sensor.ringbuf", "walk"), ("forensix.sensor.ringbuf", "Drained.join"),
    ("forensix.agent.raw", "pick"), ("forensix.agent.raw", "collector_rows"),
    ("forensix.agent.raw", "RawRecorder._preserve"), ("forensix.agent.raw", "raw_row"),
    ("forensix.agent.raw", "RawRecorder._emit_map"), ("forensix.sensor.writer", "BatchWriter.put"),
    ("forensix.agent.sealer", "encode_compressed"), ("forensix.agent.frame", "RawEncoder.encode"), ("forensix.agent.sealer", "seal_frame"),
    ("forensix.agent.spool", "Spool.append"), ("forensix.agent.shipping", "ShippingSink.write"),
    ("forensix.artifacts.collect", "Collector.annotate"), ("forensix.artifacts.collect", "Collector.preserve"),
]


def where(path: Path, artifacts: bool = True, collector: bool = False) -> str:
    """One raw replay with the functions of ``_WHERE`` timed (thread CPU, only while the
    agent runs, not the log host's decode after it): a markdown table, µs per stored event."""
    import importlib
    from collections import defaultdict

    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    timing = [False]

    def timed(label: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                if timing[0]:
                    spent[label] += time.thread_time() - t
                    calls[label] += 1
        return run

    for mod_name, attr in _WHERE:
        obj: Any = importlib.import_module(mod_name)
        *owners, name = attr.split(".")
        for o in owners:
            obj = getattr(obj, o, None)
        fn = getattr(obj, name, None) if obj is not None else None
        if fn is None:
            continue
        wrapped = timed(attr, fn)
        setattr(obj, name, staticmethod(wrapped) if isinstance(vars(obj).get(name), staticmethod) else wrapped)
    me = sys.modules[__name__]
    agent, log_host = me._agent, me._log_host  # type: ignore[attr-defined]

    def starting(*a: Any, **k: Any) -> Any:
        timing[0] = True
        return agent(*a, **k)

    def ending(*a: Any, **k: Any) -> Any:
        timing[0] = False
        return log_host(*a, **k)

    me._agent, me._log_host = starting, ending  # type: ignore[attr-defined]
    out = ship_replay(path, True, artifacts, collector)
    n = out["rows"]["events"] + out["rows"]["flows"]
    lines = [(f"capture {path.name}: {n:,} stored events; agent total {out['agent_cpu_s'] / n * 1e6:.2f} µs/event "
              f"({', '.join(f'{k} {v / n * 1e6:.2f}' for k, v in out['cpu_s'].items())}); "
              f"load average {os.getloadavg()[0]:.1f}"), "",
             "| function | calls | µs/event |", "|---|---:|---:|"]
    for label, sec in sorted(spent.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {calls[label]} | {sec / n * 1e6:.3f} |")
    return "\n".join(lines)
