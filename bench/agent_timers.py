"""``forensix agent`` with its functions timed on their thread's CPU clock (bench.agent_live --timers).

    python -m bench.agent_timers OUT.json -- agent --server ... (the rest as for ``python -m forensix``)

Each function named in ``TIMED`` is wrapped: calls and inclusive thread CPU (``thread_time_ns``)
per thread name, so nested entries overlap (a flush's drain is in both). SIGUSR2 writes the
totals so far to OUT.json (the bench reads them at both ends of its window and subtracts).
A wrapper costs ~0.5 µs a call: only functions called per tick, per flush or per exec are
named, never per record.
"""

from __future__ import annotations

import functools
import importlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# (module, attribute path): methods as "Class.method"; a function imported by name elsewhere is
# wrapped where the caller looks it up too (``also``)
TIMED: list[tuple[str, str]] = [
    ("forensix.sensor.recorder", "Recorder.poll_once"),
    ("forensix.sensor.recorder", "Recorder.flush_flows"),
    ("forensix.sensor.recorder", "Recorder._take_inserted"),
    ("forensix.sensor.recorder", "Recorder._take_map"),
    ("forensix.sensor.recorder", "Recorder._busy_sleep"),
    ("forensix.sensor.recorder", "Recorder._released"),
    ("forensix.sensor.recorder", "Recorder._release_early"),
    ("forensix.sensor.recorder", "Recorder._ship_artifacts"),
    ("forensix.sensor.recorder", "Recorder._ship_quiet"),
    ("forensix.sensor.recorder", "Recorder.heartbeat"),
    ("forensix.sensor.recorder", "Recorder._resync_clock"),
    ("forensix.sensor.recorder", "Recorder._poll_accounts"),
    ("forensix.sensor.recorder", "Recorder._tick_written"),
    ("forensix.sensor.recorder", "Recorder._emit"),
    ("forensix.sensor.recorder", "merge_flows"),
    ("forensix.sensor.recorder", "merge_reopens"),
    ("forensix.sensor.recorder", "give_back_free_memory"),
    ("forensix.sensor.losses", "LossAccounting.account_losses"),
    ("forensix.sensor.slots", "SlotCaches.flip"),
    ("forensix.sensor.slots", "SlotCaches.take"),
    ("forensix.sensor.slots", "SlotCaches._take_spill"),
    ("forensix.sensor.slots", "_grace_period"),
    ("forensix.sensor.ringbuf", "RingBuffer.drain"),
    ("forensix.sensor.ringbuf", "Drained.join"),
    ("forensix.sensor.hold", "RingHold.fill"),
    ("forensix.sensor.hold", "RingHold.take"),
    ("forensix.sensor.pacing", "Pacer.sleep_busy"),
    ("forensix.sensor.pacing", "Pacer.sleep_idle"),
    ("forensix.sensor.writer", "BatchWriter.put"),
    ("forensix.sensor.writer", "BatchWriter.after_written"),
    ("forensix.sensor.writer", "BatchWriter._write_evidence"),
    ("forensix.sensor.writer", "BatchWriter._write"),
    ("forensix.agent.raw", "RawRecorder._handle_drains"),
    ("forensix.agent.raw", "RawRecorder._preserve"),
    ("forensix.agent.raw", "RawRecorder._emit_map"),
    ("forensix.agent.raw", "_TickBatch.hand_on"),
    ("forensix.agent.raw", "raw_row"),
    ("forensix.agent.raw", "pick"),
    ("forensix.agent.raw", "collector_rows"),
    ("forensix.agent.raw", "encode_batch"),
    ("forensix.artifacts.collect", "Collector.poll_hold"),
    ("forensix.artifacts.collect", "Collector.preserve"),
    ("forensix.artifacts.collect", "Collector._take"),
    ("forensix.artifacts.collect", "Collector._wanted"),
    ("forensix.artifacts.collect", "Collector._finish"),
    ("forensix.artifacts.collect", "Collector.blobs_to_ship"),
    ("forensix.artifacts.exechold", "ExecHold.poll"),
    ("forensix.artifacts.exechold", "ExecHold._add"),
    ("forensix.artifacts.exechold", "ExecHold._scan_namespaces"),
    ("forensix.artifacts.exechold", "ExecHold.take"),
    ("forensix.agent.shipping", "ShippingSink.write"),
    ("forensix.agent.shipping", "ShippingSink.when_durable"),
    ("forensix.agent.shipping", "ShippingSink._spool"),
    ("forensix.agent.sealer", "Sealer.seal"),
    ("forensix.agent.spool", "Spool.append"),
    ("forensix.agent.frame", "RawEncoder.encode"),
]

_totals: dict[tuple[str, str], list[int]] = {}  # (thread, function) -> [calls, ns]
_lock = threading.Lock()


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.thread_time_ns

    @functools.wraps(fn)
    def timed(*a: Any, **kw: Any) -> Any:
        t0 = clock()
        try:
            return fn(*a, **kw)
        finally:
            key = (threading.current_thread().name, name)
            dt = clock() - t0
            got = _totals.get(key)
            if got is None:
                with _lock:
                    got = _totals.setdefault(key, [0, 0])
            got[0] += 1
            got[1] += dt

    return timed


def install() -> list[str]:
    """Wrap what ``TIMED`` names (a name this tree lacks is skipped and reported)."""
    missing = []
    for mod_name, path in TIMED:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            missing.append(f"{mod_name}.{path}")
            continue
        owner: Any = mod
        parts = path.split(".")
        for p in parts[:-1]:
            owner = getattr(owner, p, None)
        fn = getattr(owner, parts[-1], None) if owner is not None else None
        if fn is None or getattr(fn, "__wrapped__", None) is not None:
            if fn is None:
                missing.append(f"{mod_name}.{path}")
            continue
        if isinstance(owner, type) and isinstance(owner.__dict__.get(parts[-1]), staticmethod):
            setattr(owner, parts[-1], staticmethod(_wrap(path, fn)))
        else:
            setattr(owner, parts[-1], _wrap(path, fn))
    return missing


def main() -> None:
    out = sys.argv[1]
    args = sys.argv[sys.argv.index("--") + 1:]
    missing = install()

    def dump(*_: Any) -> None:
        with _lock:
            rows = [[t, f, c, ns] for (t, f), (c, ns) in _totals.items()]
        with open(out, "w") as fh:
            json.dump({"missing": missing, "rows": rows}, fh)

    signal.signal(signal.SIGUSR2, dump)
    from forensix.cli.main import main as cli

    sys.argv = ["forensix", *args]
    cli()


if __name__ == "__main__":
    main()
