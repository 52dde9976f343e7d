"""Capture real ring-buffer bytes for the decoder tests (run as root; output is committed).

    python3 tests/sensor/capture_sample.py tests/sensor/data/ringbuf-sample.npz
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from forensix.sensor.abi import struct_dtype
from forensix.sensor.loader import Sensor, SensorConfig, load_abi
from forensix.sensor.ringbuf import RingBuffer


def main(out: str) -> None:
    s = Sensor(SensorConfig(ring_main_mb=64, ring_proc_mb=8))
    s.open_and_load()
    s.attach()
    rings = {n: RingBuffer(s.map_fd(n), s.ring_size(n)) for n in ("rb_proc", "rb_main")}
    subprocess.run(["/bin/sh", "-c", "echo fx-sample > /tmp/fx-sample.txt; cat /tmp/fx-sample.txt; rm /tmp/fx-sample.txt; exit 5"],
                   stdout=subprocess.DEVNULL)
    time.sleep(0.2)
    s.pause()
    parts = {}
    drained = {name: r.drain() for name, r in rings.items()}
    # Keep only the workload's records: the host may be busy with other work.
    dt = struct_dtype(load_abi(), "fx_event")
    pids = set()
    for name, d in drained.items():
        for off, ln in zip(d.offsets, d.lengths):
            ev = np.frombuffer(d.data[off : off + dt.itemsize], dt)[0]
            if name == "rb_proc" and bytes(ev["comm"]).startswith(b"sh"):
                pids.update({int(ev["pid"]), int(ev["tpid"])})
    for name, d in drained.items():
        recs = []
        for off, ln in zip(d.offsets, d.lengths):
            ev = np.frombuffer(d.data[off : off + dt.itemsize], dt)[0]
            if int(ev["pid"]) in pids or int(ev["tpid"]) in pids:
                recs.append(d.data[off : off + ln])
        data, offs = bytearray(), []
        for rec in recs:  # re-frame: 8-byte header, 8-byte alignment, as in the ring
            data += len(rec).to_bytes(4, "little") + bytes(4)
            offs.append(len(data))
            data += rec + bytes(-len(rec) % 8)
        parts[f"{name}_data"] = np.frombuffer(bytes(data), np.uint8)
        parts[f"{name}_offsets"] = np.asarray(offs, np.int64)
        parts[f"{name}_lengths"] = np.asarray([len(r) for r in recs], np.int64)
    parts["abi"] = np.frombuffer(json.dumps(load_abi()).encode(), np.uint8)
    np.savez_compressed(out, **parts)
    s.close()


if __name__ == "__main__":
    main(sys.argv[1])
