"""Record a command with the live rule engine plugged in, as `forensix record` will:
store sink first, then the engine (alerts to the store, stdout and JSON lines).

Usage: python rules_record_driver.py STORE ALERTS_JSONL [RULES_DIR...] -- COMMAND...
SIGHUP is ignored so that the attack script can signal this recorder without ending it.
"""

from __future__ import annotations

import signal
import sys

from forensix.agent.sink import StoreSink
from forensix.cli.rules import live_engine_for_record
from forensix.sensor.recorder import Recorder
from forensix.store.embedded import open_writer


def main() -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = sys.argv[1:]
    sep = args.index("--")
    store, jsonl, rule_paths, command = args[0], args[1], args[2:sep], args[sep + 1:]
    writer = open_writer(store)
    try:
        sink = StoreSink(writer)
        engine = live_engine_for_record(sink, store, rule_paths=rule_paths, alerts_jsonl=jsonl, echo=lambda s: print(s, flush=True))
        rc = Recorder([sink, engine]).run(command=command)
        engine.close()
    finally:
        writer.close()
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
