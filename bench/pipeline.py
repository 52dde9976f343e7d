"""The recorder's own pipeline, stage by stage: ``python -m bench.pipeline`` (root).

1. capture: the real sensor records a burst of distinct write-opens into a large ring
   (no drops), and the raw ring bytes are kept;
2. drain + decode: the captured records are walked and decoded in recorder-sized
   batches, on one core (records/s);
3. sustained: ``forensix record`` runs while one process opens files as fast as it can
   for a few seconds; events stored per second and events lost tell the rate the whole
   pipeline (drain, decode, DuckDB, live rules) sustains on this machine with the
   producer on the other core.

Prints one JSON object and, with --write-docs, appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRODUCER = """
import os, sys, time
t = time.time()
n = 0
while time.time() - t < float(sys.argv[1]):
    for _ in range(500):
        os.close(os.open("/dev/null", os.O_WRONLY))  # a write open: one full record each
    n += 500
print(n)
"""


def capture(n_opens: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    from forensix.sensor.loader import Sensor, SensorConfig
    from forensix.sensor.ringbuf import RingBuffer

    s = Sensor(SensorConfig(ring_main_mb=512))
    s.open_and_load()
    s.attach()
    ring = RingBuffer(s.map_fd("rb_main"), s.ring_size("rb_main"))
    code = f"import os\nfor i in range({n_opens}): os.close(os.open('/dev/null', os.O_WRONLY))"
    subprocess.run([sys.executable, "-c", code], check=True)
    time.sleep(0.2)
    s.pause()
    d = ring.drain()
    s.close()
    return d.data, d.offsets, d.lengths


def decode_rate(data: bytes, offs: np.ndarray, lens: np.ndarray, batch: int) -> dict[str, float]:
    from forensix.model.host import local_host
    from forensix.sensor.decode import Decoder
    from forensix.sensor.loader import load_abi
    from forensix.sensor.ringbuf import Drained

    dec = Decoder(load_abi(), local_host())
    parts = [Drained(data, offs[i : i + batch], lens[i : i + batch]) for i in range(0, len(offs), batch)]
    t0 = time.process_time()
    rows = sum(dec.decode(p)["events"].num_rows for p in parts)
    cpu = time.process_time() - t0
    return {"records": float(len(offs)), "rows": float(rows), "decode_cpu_s": cpu, "decode_per_s": len(offs) / cpu}


def sustained(seconds: float, rules: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "s.duckdb"
        prod = Path(d) / "p.py"
        prod.write_text(PRODUCER)
        cmd = [sys.executable, "-m", "forensix", "record", "-q", "--store", str(store)]
        if not rules:
            cmd.append("--no-rules")
        cmd += ["--", sys.executable, str(prod), str(seconds)]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.monotonic() - t0
        from forensix.store.embedded import DuckDBStore

        st = DuckDBStore(store, read_only=True)
        opens = st.query("SELECT count(*) n FROM events WHERE event_action = 'open' AND file_path = '/dev/null'")
        lost = st.query("SELECT coalesce(sum(count), 0) n FROM gaps")
        n = int(opens.column(0)[0].as_py())
        st.close()
        return {"seconds": seconds, "wall_s": wall, "opens_stored": float(n), "stored_per_s": n / seconds,
                "lost": float(lost.column(0)[0].as_py())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--opens", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.pipeline needs root (it loads the sensor)")
    data, offs, lens = capture(a.opens)
    out: dict[str, object] = {"decode": decode_rate(data, offs, lens, a.batch)}
    out["sustained_no_rules"] = sustained(a.seconds, rules=False)
    out["sustained_with_rules"] = sustained(a.seconds, rules=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
