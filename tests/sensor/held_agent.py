"""A recorder whose writer stores nothing (its one sink blocks), its sensor pinned at PIN, a
network ring of 8 MiB: the agent's hold keeps the network records the ring cannot.

    python held_agent.py PIN

Prints ``ready`` once recording; runs until killed (tests/sensor/test_conn_burst.py kills it).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from forensix.sensor.loader import SensorConfig
from forensix.sensor.recorder import Recorder


class _Blocked:
    def write(self, table: str, data: Any) -> None:
        threading.Event().wait()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> int:
    rec = Recorder([_Blocked()], SensorConfig(tty_rate=0, ring_net_mb=8, pin_dir=Path(sys.argv[1])),
                   queue_bytes=1 << 20, hold_bytes=64 << 20, on_ready=lambda: print("ready", flush=True))
    rec.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
