"""Capture real ring-buffer bytes for the decoder tests (run as root; output is committed).

    python3 tests/sensor/capture_sample.py tests/sensor/data/ringbuf-sample.npz
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from forensix.sensor.loader import Sensor, SensorConfig, load_abi
from forensix.sensor.ringbuf import RingBuffer


def main(out: str) -> None:
    s = Sensor(SensorConfig(ring_main_mb=4, ring_proc_mb=1))
    s.open_and_load()
    s.attach()
    rings = {n: RingBuffer(s.map_fd(n), s.ring_size(n)) for n in ("rb_proc", "rb_main")}
    subprocess.run(["/bin/sh", "-c", "echo fx-sample > /tmp/fx-sample.txt; cat /tmp/fx-sample.txt; rm /tmp/fx-sample.txt; exit 5"],
                   stdout=subprocess.DEVNULL)
    time.sleep(0.2)
    s.pause()
    parts = {}
    for name, r in rings.items():
        d = r.drain()
        parts[f"{name}_data"] = np.frombuffer(d.data, np.uint8)
        parts[f"{name}_offsets"] = d.offsets
        parts[f"{name}_lengths"] = d.lengths
    parts["abi"] = np.frombuffer(json.dumps(load_abi()).encode(), np.uint8)
    np.savez_compressed(out, **parts)
    s.close()


if __name__ == "__main__":
    main(sys.argv[1])
