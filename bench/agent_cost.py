"""The agent's CPU per event, stage by stage, on a real recording replayed offline.

    python -m bench.agent_cost capture --out compile.npz [--cwd DIR] -- make -j2 -s   # root
    python -m bench.agent_cost replay compile.npz [--store S] [--no-rules] [--ship] [--repeat N] [--merge N]
    python -m bench.agent_cost compare compile.npz --base-src OLD/src [--reps 3] [--no-rules] [--ship]
    python -m bench.agent_cost ship compile.npz [--reps 3] [--write]   # the real agent: --raw vs --decode
    python -m bench.agent_cost ship compile.npz --against OLD/src [--write]   # raw agent: before vs after
    python -m bench.agent_cost ship-one compile.npz --where   # the raw agent's CPU function by function

``capture`` runs the real recorder (sensor, drains, flow-map flushes at the recorder's
cadence) while COMMAND runs, and keeps what the agent received from the kernel, in order:
the raw ring drains and the flow/re-open map contents. Nothing is decoded or stored.

``replay`` feeds that input through the agent's pipeline on one thread, as ``forensix
record`` wires it (decoder, store sink on a fresh DuckDB store, live rules with the curated
set and built-in detectors), and prints the CPU seconds of each stage (thread CPU time,
so other work on the host does not count) and µs per stored event. The workload's
slowdown on a busy host follows this CPU: on 2 cores, a 30 s ``make -j2`` at 3% slower
leaves ~1.8 CPU-s for BPF and agent together.

Stages: ``walk`` (the ring-header walk of ringbuf.py over the drained bytes), ``decode``,
``store`` (journal appends), ``seal`` (journal rows sorted, encoded and inserted into
DuckDB, single-threaded as the recorder's sealing thread runs it: with DuckDB's own
threads that CPU would not be on this thread and not counted), ``rules``, ``flows+reopens``
(the map flushes' own work), ``final flush``. A stored event is a row of the ``events``
view: an events row or a flow edge (stored once, in ``flows``), as the recorder counts.

``--ship``: an agent without a local store, as ``forensix agent`` runs: each batch goes
into a sealed frame for the log host (Arrow IPC, zstd, HMAC; stage ``ship``) instead of
the journal and DuckDB; with ``--no-rules`` the rules are left to the log host too.

``compare`` runs ``replay`` in fresh processes, alternating the source tree under test
with ``--base-src`` (e.g. ``git archive BASE src | tar -x -C OLD``), and prints both
side by side (medians of ``--reps`` replays each) with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from forensix.testing.sinks import NullSink


def capture(out: Path, command: list[str], cwd: Path | None) -> dict[str, Any]:
    from forensix.sensor.recorder import Recorder
    from forensix.sensor.ringbuf import Drained

    items: list[tuple[str, Any]] = []

    class Capturing(Recorder):
        def poll_once(self, wait: float = 0.0) -> int:
            drains = [r.drain(max_bytes=16 << 20) for r in self.rings]
            drains = [d for d in drains if len(d)]
            if drains:
                items.append(("ring", Drained.join(drains)))
            return sum(len(d) for d in drains)

        def _emit_flows(self, k: np.ndarray, v: np.ndarray) -> None:
            items.append(("flows", (k, v)))

        def _emit_reopens(self, k: np.ndarray, v: np.ndarray) -> None:
            items.append(("reopens", (k, v)))

        def _snapshot(self) -> None:
            super()._snapshot()
            # what the /proc snapshot taught the decoder besides the processes rows: the
            # paths of files open at start (flow edges on them are named by these)
            labels = self.decoder.labels
            items.append(("table:labels", pa.table({"key": pa.array(list(labels), pa.uint64()),
                                                    "path": pa.array(list(labels.values()), pa.string())})))
            # and the ids of the processes it found (their start is known to the tick only):
            # kernel records of those processes get the same ids as their snapshot rows
            ids = self.decoder.ids
            items.append(("table:snapshot_ids", pa.table({"pid": ids._pid, "tick": ids._tick, "eid": ids._eid})))

        def _emit(self, table: str, data: pa.Table, bulk: bool = False) -> None:
            # what the agent stores besides decoded drains: the /proc snapshot of the
            # processes running at start (the rules know their images from it: without
            # it a replay holds back all their events as of unknown processes), agent
            # events, gaps, the host row
            items.append((f"table:{table}", data))

    rec = Capturing([NullSink()])
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    t0 = time.monotonic()
    try:
        rc = rec.run(command=command)
    finally:
        os.chdir(old)
    wall = time.monotonic() - t0
    parts: dict[str, np.ndarray] = {
        "one_drain_per_flush": np.array([_one_drain_per_flush()], np.int8),
        "abi": np.frombuffer(json.dumps(rec.abi).encode(), np.uint8),
        "kinds": np.array([k for k, _ in items]),
        "offset_ns": np.array([rec.clock.offset_ns], np.int64),
    }
    records = 0
    for i, (kind, x) in enumerate(items):
        if kind == "ring":
            parts[f"i{i}_data"] = np.frombuffer(x.data, np.uint8)
            parts[f"i{i}_offsets"] = x.offsets
            parts[f"i{i}_lengths"] = x.lengths
            records += len(x)
        elif kind.startswith("table:"):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, x.schema) as w:
                w.write_table(x)
            parts[f"i{i}_ipc"] = np.frombuffer(sink.getvalue(), np.uint8)
        else:
            parts[f"i{i}_k"], parts[f"i{i}_v"] = x
    np.savez_compressed(out, **parts)
    return {"items": len(items), "ring_records": records, "command_rc": rc, "wall_s": round(wall, 1),
            "dropped_in_kernel": rec.stats.dropped}


# The recorder's drain of one ring takes at most this (sensor/recorder.py poll_once)
_DRAIN_BYTES = 16 << 20


def _one_drain_per_flush() -> bool:
    """Whether the tree's recorder drains once at a flow-map flush tick (after taking the
    maps) rather than once before the flush and again inside it."""
    import inspect

    from forensix.sensor.recorder import Recorder

    return "drain" in inspect.signature(Recorder.flush_flows).parameters


def _flush_drains_joined(inputs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A capture by a recorder that drained twice at a flush tick (the loop's drain, then
    the flush's, a few ms apart, right before the map contents) replayed as a recorder
    that drains once there sees it: those two drains as one batch. Earlier drains (woken
    by a record, or a full ring) stay as they were, and so do two drains of more than the
    recorder's drain bound together: its one drain would have stopped there, and the next
    tick taken the rest (a batch of 32 MB decoded ~30% slower per record than two of 16)."""
    from forensix.sensor.ringbuf import Drained

    out: list[tuple[str, Any]] = []
    for kind, x in inputs:
        if (kind == "flows" and len(out) >= 2 and out[-1][0] == "ring" and out[-2][0] == "ring"
                and len(out[-1][1].data) + len(out[-2][1].data) <= _DRAIN_BYTES):
            second = out.pop()[1]
            first = out.pop()[1]
            out.append(("ring", Drained.join([first, second])))
        out.append((kind, x))
    return out


def _merged(inputs: list[tuple[str, Any]], n: int) -> list[tuple[str, Any]]:
    """Every n ring drains joined into one, as a recorder draining n times less often
    would see them; the map flushes in between follow the joined drain."""
    from forensix.sensor.ringbuf import Drained

    out: list[tuple[str, Any]] = []
    rings: list[Any] = []
    maps: list[tuple[str, Any]] = []
    for kind, x in inputs:
        if kind == "ring":
            rings.append(x)
            if len(rings) == n:
                out.append(("ring", Drained.join(rings)))
                out.extend(maps)
                rings, maps = [], []
        elif kind.startswith("table:"):
            out.append((kind, x))  # the snapshot first, as it came
        else:
            maps.append((kind, x))
    if rings:
        out.append(("ring", Drained.join(rings)))
    out.extend(maps)
    return out


# --raw: the stage the log host would run (decode and map rows), not counted in the agent's total
_LOG_HOST = "decode on the log host"


class FrameSink:
    """What an agent that ships to a log host does with a batch instead of storing it
    (agent/shipping.py without its coalescing and fsync): Arrow IPC, zstd, HMAC-SHA256
    and the hash chain of agent/frame.py, appended to a spool-like file."""

    def __init__(self, path: Path) -> None:
        import secrets

        self.f = path.open("wb")
        self.key = secrets.token_bytes(32)
        self.prev = bytes(32)
        self.seq = 0
        self.raw_bytes = 0  # --raw: the kernel's bytes sealed, and the frames' bytes
        self.shipped_bytes = 0

    def write(self, table: str, data: pa.Table) -> None:
        from forensix.agent.frame import encode_batch, frame_hash, seal_frame

        if data.num_rows == 0:
            return
        raw = seal_frame(host="bench", stream=bytes(16), seq=self.seq, epoch=0, seal_ns=time.time_ns(), table=table,
                         ipc_bytes=encode_batch(data), rows=data.num_rows, prev=self.prev, key=self.key)
        self.f.write(raw)
        self.prev = frame_hash(raw)
        self.seq += 1
        self.shipped_bytes += len(raw)

    def write_raw(self, data: bytes) -> None:
        """A frame of the kernel's own bytes (a ring drain, headers kept; a map's entries):
        what an agent that leaves decoding to the log host would seal (zstd level 1)."""
        import hashlib
        import hmac

        import zstandard

        from forensix.agent.frame import HEADER, frame_hash

        body = zstandard.ZstdCompressor(level=1).compress(data)
        head = HEADER.pack(b"FXSB", 1, 1, 0, bytes(16), self.seq, 0, 0, time.time_ns(), 0, len(data), len(body),
                           5, 4, 0, self.prev)
        signed = b"".join((head, b"bench", b"ring", body))
        raw = signed + hmac.new(self.key, signed, hashlib.sha256).digest()
        self.f.write(raw)
        self.prev = frame_hash(raw)
        self.seq += 1
        self.raw_bytes += len(data)
        self.shipped_bytes += len(raw)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def load_inputs(path: Path) -> tuple[dict[str, Any], int, list[tuple[str, Any]]]:
    """A capture's abi.json, clock offset and inputs in order (ring drains, map flushes, tables)."""
    from forensix.sensor.ringbuf import Drained

    z = np.load(path)
    abi = json.loads(z["abi"].tobytes())
    kinds = [str(k) for k in z["kinds"]]
    inputs: list[tuple[str, Any]] = []
    for i, kind in enumerate(kinds):
        if kind == "ring":
            inputs.append((kind, Drained(z[f"i{i}_data"].tobytes(), z[f"i{i}_offsets"], z[f"i{i}_lengths"])))
        elif kind.startswith("table:"):
            inputs.append((kind, pa.ipc.open_stream(z[f"i{i}_ipc"].tobytes()).read_all()))
        else:
            inputs.append((kind, (z[f"i{i}_k"], z[f"i{i}_v"])))
    if _one_drain_per_flush() and not ("one_drain_per_flush" in z.files and z["one_drain_per_flush"][0]):
        inputs = _flush_drains_joined(inputs)  # as this tree's recorder would have drained it
    return abi, int(z["offset_ns"][0]), inputs


def replay_table(rec: Any, kind: str, x: pa.Table) -> None:
    """A captured ``table:*`` item into recorder ``rec``: the /proc snapshot's ids, labels and
    processes teach its decoder what the live recorder's learnt, and every table is emitted."""
    if kind == "table:snapshot_ids":
        ids = rec.decoder.ids
        ids._pid, ids._tick, ids._eid = (x.column(c).to_numpy() for c in ("pid", "tick", "eid"))
        return
    if kind == "table:labels":
        rec.decoder.labels.update(zip(x.column("key").to_pylist(), x.column("path").to_pylist(), strict=True))
        return
    if kind == "table:processes":  # the snapshot: the decoder learns them as the recorder's does
        for r in x.select(["entity_id", "pid", "parent_entity_id", "executable", "args",
                           "working_directory"]).to_pylist():
            rec.decoder.remember(r["entity_id"], r["pid"], r["parent_entity_id"], r["executable"],
                                 r["args"], r["working_directory"])
    rec._emit(kind.split(":", 1)[1], x)


def replay(path: Path, store: Path, rules: bool, merge: int = 1, ship: bool = False,
           raw: bool = False) -> dict[str, Any]:
    from forensix.agent.sink import StoreSink
    from forensix.cli.rules import live_engine_for_record
    from forensix.model.host import local_host
    from forensix.sensor.decode import Decoder
    from forensix.sensor.recorder import Recorder
    from forensix.store.embedded import open_writer, remove_store

    abi, offset_ns, inputs = load_inputs(path)
    if merge > 1:
        inputs = _merged(inputs, merge)

    remove_store(store)
    cpu: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    writer: Any = None
    store_sink: Any
    raw_sink = FrameSink(store.with_name(store.name + ".raw")) if raw else None
    if raw:  # decoded rows go nowhere: the log host would make them (counted apart, not the agent's)
        rules = False
        store_sink = NullSink()
        sinks: list[Any] = []
    elif ship:  # no local store: frames for a log host
        store_sink = FrameSink(store.with_name(store.name + ".frames"))
        sinks = [("ship", store_sink)]
    else:
        writer = open_writer(str(store))
        # the recorder seals on one DuckDB thread (seal_in_background): so does the replay, so
        # that the seal's CPU is on this thread and counted
        writer._con.execute("SET threads = 1")
        store_sink = StoreSink(writer)
        sinks = [("store", store_sink)]
    if rules:
        engine = live_engine_for_record(store_sink, str(store), echo=None)
        engine.max_delay = 0  # evaluate every batch at once, on this thread
        sinks.append(("rules", engine))

    in_sinks = [0.0]
    in_seal = [0.0]
    from forensix.store import journal as journal_mod

    plain_seal = journal_mod.JournaledTable.seal

    def timed_seal(self: Any, *a: Any, **k: Any) -> None:
        t = time.thread_time()
        try:
            plain_seal(self, *a, **k)
        finally:
            in_seal[0] += time.thread_time() - t

    journal_mod.JournaledTable.seal = timed_seal  # type: ignore[method-assign]

    class Direct:
        """The recorder's writer thread, inline: each sink's CPU counted apart."""

        def put(self, table: str, data: pa.Table, bulk: bool = False) -> None:
            rows[table] += data.num_rows
            for name, s in sinks:
                t = time.thread_time()
                sealed = in_seal[0]
                s.write(table, data)
                dt = time.thread_time() - t
                cpu[name] += dt - (in_seal[0] - sealed)
                cpu["seal"] += in_seal[0] - sealed
                in_sinks[0] += dt

    host = local_host()
    rec = Recorder([])
    rec.decoder = Decoder(abi, host, offset_ns)
    rec.clock = type("C", (), {"offset_ns": offset_ns})()
    rec._writer = Direct()  # type: ignore[assignment]
    walk = _walker()
    t_all = time.thread_time()
    for kind, x in inputs:
        t = time.thread_time()
        if kind == "ring":
            walk(x)
            cpu["walk"] += time.thread_time() - t
            if raw_sink is not None:
                t = time.thread_time()
                raw_sink.write_raw(x.data)
                cpu["ship raw"] += time.thread_time() - t
            t = time.thread_time()
            tables = rec.decoder.decode(x)
            cpu["decode" if raw_sink is None else _LOG_HOST] += time.thread_time() - t
            for table, data in tables.items():
                rec._emit(table, data, bulk=True)
        elif kind.startswith("table:"):
            replay_table(rec, kind, x)
        else:
            if raw_sink is not None:
                raw_sink.write_raw(x[0].tobytes() + x[1].tobytes())  # the map's entries as the kernel keeps them
                cpu["ship raw"] += time.thread_time() - t
                t = time.thread_time()
            before = in_sinks[0]
            (rec._emit_flows if kind == "flows" else rec._emit_reopens)(*x)
            # what the sinks spent inside the emit is theirs, not the flush's
            cpu["flows+reopens" if raw_sink is None else _LOG_HOST] += time.thread_time() - t - (in_sinks[0] - before)
    t = time.thread_time()
    sealed = in_seal[0]
    for _, s in sinks:
        s.flush()
    cpu["final flush"] += time.thread_time() - t - (in_seal[0] - sealed)
    cpu["seal"] += in_seal[0] - sealed
    total = time.thread_time() - t_all - cpu[_LOG_HOST]  # what the log host would spend is not the agent's
    if raw_sink is not None:
        raw_sink.close()
    for name, s in sinks:
        if name in ("rules", "ship"):
            s.close()
    if writer is not None:
        writer.close()
    journal_mod.JournaledTable.seal = plain_seal  # type: ignore[method-assign]
    n = rows["events"] + rows["flows"]  # rows of the events view (flow edges are stored once)
    out = {
        "stored_events": n, "events": rows["events"], "flows": rows["flows"], "processes": rows["processes"],
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "total_cpu_s": round(total, 3),
        "us_per_event": {k: round(v / n * 1e6, 2) for k, v in cpu.items()} if n else {},
        "total_us_per_event": round(total / n * 1e6, 2) if n else None,
    }
    if ship and raw_sink is None and n:
        out["shipped_bytes_per_event"] = round(store_sink.shipped_bytes / n, 1)
    if raw_sink is not None:
        out["raw_bytes_per_event"] = round(raw_sink.raw_bytes / n, 1) if n else None
        out["shipped_bytes_per_event"] = round(raw_sink.shipped_bytes / n, 1) if n else None
    return out


def _walk_python(data: bytes) -> int:
    """The ring-header walk of ringbuf.py before it walked a memoryview (bd57b0a..5952ed2),
    over a drained region: the reference for a ``--base-src`` tree that has no ``walk``."""
    import struct

    unpack = struct.Struct("<I").unpack_from
    pos, limit, n = 0, len(data), 0
    offs: list[int] = []
    lens: list[int] = []
    while pos < limit:
        word = unpack(data, pos)[0]
        if word & (1 << 31):
            break
        length = word & ~((1 << 31) | (1 << 30))
        if not word & (1 << 30):
            offs.append(pos + 8)
            lens.append(length)
            n += 1
        pos += (length + 15) & ~7
    np.asarray(offs, np.int64), np.asarray(lens, np.int64)
    return n


def _walker() -> Any:
    """The walk of the ring's records over a captured drain (its bytes keep the headers);
    called with ``ring`` (the drain's ring position and the ring's size, as a drain knows
    them) where the capture's headers hold the page offsets of that position."""
    import inspect

    from forensix.sensor import ringbuf

    walk = getattr(ringbuf, "walk", None)
    if walk is None:
        return lambda d, ring=None: _walk_python(d.data)
    if "ring" in inspect.signature(walk).parameters:
        return lambda d, ring=None: walk(d.data, len(d.data), ring=ring)
    return lambda d, ring=None: walk(d.data, len(d.data))


_STAGES = ("walk", "decode", "store", "seal", "ship", "rules", "flows+reopens", "final flush")


def compare(path: Path, base_src: Path, reps: int, rules: bool, ship: bool = False) -> str:
    """Replays of one capture by two source trees, alternating; a markdown table."""
    import statistics
    import subprocess

    here = Path(__file__).resolve().parent.parent
    new_src = Path(os.environ.get("PYTHONPATH", str(here / "src")).split(os.pathsep)[0])
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    loads = []
    tmp = Path(tempfile.mkdtemp(prefix="fx-agent-cost-"))
    stores = {label: tmp / f"{label}.duckdb" for label in runs}
    for i in range(reps):
        for label, src in (("before", base_src), ("after", new_src)) if i % 2 == 0 else (
                ("after", new_src), ("before", base_src)):
            env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{here}")
            cmd = [sys.executable, "-m", "bench.agent_cost", "replay", str(path), "--store", str(stores[label])]
            cmd += ([] if rules else ["--no-rules"]) + (["--ship"] if ship else [])
            out = subprocess.run(cmd, env=env, cwd=here, check=True, capture_output=True, text=True).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    try:
        same = "not compared (--ship: no store)" if ship else same_record(stores["before"], stores["after"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = runs["after"][0]["stored_events"]
    head = (f"capture {path.name}: {n:,} stored events ({runs['after'][0]['events']:,} events rows, "
            f"{runs['after'][0]['flows']:,} flow edges); medians of {reps} replays each, alternating; "
            f"load average {min(loads):.1f}–{max(loads):.1f}")
    lines = [head, "",
             "| stage | before µs/event | after µs/event | before CPU s | after CPU s |", "|---|---|---|---|---|"]
    def med(label: str, stage: str) -> float:
        return statistics.median(r["total_cpu_s"] if stage == "total" else r["cpu_s"].get(stage, 0.0)
                                 for r in runs[label])

    for stage in (*_STAGES, "total"):
        b, a = med("before", stage), med("after", stage)
        if stage in ("store", "seal", "ship") and not (a or b):
            continue
        lines.append(f"| {stage} | {b / n * 1e6:.2f} | {a / n * 1e6:.2f} | {b:.3f} | {a:.3f} |")
    lines += ["", f"stores of the last replays: {same}"]
    return "\n".join(lines)


# What differs between two replays of one capture whatever the code: ids and times the
# replay itself makes (an alert's id and detection time, the store's own agent rows).
_VOLATILE = {"alerts": ("alert_id", "detected_ts")}


def same_record(a: Path, b: Path) -> str:
    """Whether two replayed stores hold the same rows (as multisets), table by table."""
    import duckdb

    from forensix.store.embedded import open_reader

    diffs = []
    counts = []
    for table in ("events", "flows", "processes", "alerts"):
        got = []
        for p in (a, b):
            r = open_reader(str(p))
            try:
                t = r.query(f"SELECT * FROM {table}")
            finally:
                r.close()
            got.append(t.drop_columns([c for c in _VOLATILE.get(table, ()) if c in t.column_names]))
        ta, tb = got
        con = duckdb.connect()
        con.register("ta", ta)
        con.register("tb", tb)
        only_a = con.execute("SELECT count(*) FROM (SELECT * FROM ta EXCEPT ALL SELECT * FROM tb)").fetchone()
        only_b = con.execute("SELECT count(*) FROM (SELECT * FROM tb EXCEPT ALL SELECT * FROM ta)").fetchone()
        con.close()
        counts.append(f"{table} {ta.num_rows:,}")
        if (only_a and only_a[0]) or (only_b and only_b[0]) or ta.num_rows != tb.num_rows:
            diffs.append(f"{table}: {only_a[0] if only_a else '?'} rows only before, "
                         f"{only_b[0] if only_b else '?'} only after")
    return ("DIFFER: " + "; ".join(diffs)) if diffs else "identical (" + ", ".join(counts) + ")"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agent_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture", help="record the agent's input while COMMAND runs (root)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--cwd", type=Path, default=None)
    c.add_argument("command", nargs=argparse.REMAINDER)
    r = sub.add_parser("replay", help="the agent's CPU per stage on a capture")
    r.add_argument("capture", type=Path)
    r.add_argument("--store", type=Path, default=None, help="store to write (default: a temporary one)")
    r.add_argument("--no-rules", action="store_true", help="without the live rules")
    r.add_argument("--repeat", type=int, default=1, help="replays; the figures of each are printed")
    r.add_argument("--ship", action="store_true",
                   help="no local store: batches sealed into frames for a log host (agent/frame.py)")
    r.add_argument("--raw", action="store_true",
                   help="an agent that ships the kernel's records undecoded (walk, zstd, HMAC); the decode the "
                        "log host would run is shown apart and left out of the total")
    r.add_argument("--merge", type=int, default=1,
                   help="join every N ring drains into one batch (a recorder draining N times less often)")
    m = sub.add_parser("compare", help="replays by this tree and --base-src, alternating, side by side")
    m.add_argument("capture", type=Path)
    m.add_argument("--base-src", type=Path, required=True, help="the src/ directory of the tree to compare with")
    m.add_argument("--reps", type=int, default=3)
    m.add_argument("--no-rules", action="store_true")
    m.add_argument("--ship", action="store_true", help="replay with --ship (no local store)")
    s = sub.add_parser("ship", help="the real agent, --raw against --decode, alternating (bench/agent_ship.py)")
    s.add_argument("capture", type=Path)
    s.add_argument("--reps", type=int, default=3)
    s.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    s.add_argument("--no-artifacts", action="store_true", help="an agent without executable preservation")
    s.add_argument("--collector", action="store_true",
                   help="the agent's real artifact collector, reading no file, instead of a stub that keeps nothing")
    s.add_argument("--against", type=Path, default=None,
                   help="the src/ of another tree (git archive BASE src | tar -x -C OLD): its raw agent against "
                        "this tree's, alternating, instead of --decode against --raw")
    o = sub.add_parser("ship-one", help="one replay of `ship` in this process (what `ship` runs)")
    o.add_argument("capture", type=Path)
    o.add_argument("--raw", action="store_true")
    o.add_argument("--no-artifacts", action="store_true")
    o.add_argument("--collector", action="store_true")
    o.add_argument("--where", action="store_true",
                   help="the raw agent's functions timed one by one (µs per stored event), instead of the JSON")
    a = ap.parse_args(argv)
    if a.cmd in ("ship", "ship-one"):
        from bench.agent_ship import compare_ship, run_one

        if a.cmd == "ship-one":
            if a.where:
                from bench.agent_ship import where

                print(where(a.capture, not a.no_artifacts, a.collector))
                return 0
            run_one(a.capture, a.raw, not a.no_artifacts, a.collector)
            return 0
        text, _ = compare_ship(a.capture, a.reps, not a.no_artifacts, a.against, a.collector)
        print(text)
        if a.write:  # appended at the end: another section is never rewritten
            opts = (f" --against {a.against}" if a.against else "") + (" --no-artifacts" if a.no_artifacts else "")
            opts += " --collector" if a.collector else ""
            with (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").open("a") as f:
                f.write(f"\n`python -m bench.agent_cost ship {a.capture} --reps {a.reps}{opts}` "
                        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}):\n\n{text}\n")
        return 0
    if a.cmd == "compare":
        print(compare(a.capture, a.base_src, a.reps, not a.no_rules, a.ship))
        return 0
    if a.cmd == "capture":
        cmd = [x for x in a.command if x != "--"]
        if not cmd:
            ap.error("capture needs a COMMAND after --")
        print(json.dumps(capture(a.out, cmd, a.cwd)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="fx-agent-cost-"))
    try:
        for _ in range(a.repeat):
            print(json.dumps(replay(a.capture, a.store or tmp / "replay.duckdb", not a.no_rules, a.merge, a.ship,
                                    a.raw)))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
