"""What an idle `forensix record` carries (issue 25: idle ≤ 100 MB resident).

A real recorder (real BPF, live rules from a rule cache of its own) is started through the
same entry as `forensix record`, by a shim that, once the ready file exists, writes the
modules the process holds. Heavy modules an idle recorder does not need must stay out
(docs/benchmarks.md, "footprint")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

# The recorder's process entry (python -m forensix), with a thread that reports the process's
# modules once the recorder says it records, then lets it record on until stopped.
SHIM = r"""
import json, os, sys, threading, time
ready, report = sys.argv[1], sys.argv[2]

def watch():
    while not os.path.exists(ready):
        time.sleep(0.05)
    time.sleep(1.0)  # a few idle loop turns: what is imported after start counts too
    with open(report + ".tmp", "w") as f:
        json.dump({"modules": sorted(sys.modules)}, f)
    os.replace(report + ".tmp", report)

threading.Thread(target=watch, daemon=True).start()
from forensix.cli.main import main
sys.argv = ["forensix", *sys.argv[3:]]
main()
"""

# Loaded by the analyses, the UI, the fleet, imports or the rule compiler, or only at the
# final seal (DuckDB) or for a terminal (rich): never by an idle recorder writing to a log.
HEAVY = ("duckdb", "pandas", "rich", "sigma", "yaml", "jinja2", "pyparsing", "fastapi", "starlette", "uvicorn",
         "clickhouse_driver", "chdb", "yara_x", "cryptography", "prometheus_client", "forensix.analysis.graph",
         "forensix.web", "forensix.server", "forensix.render.html", "forensix.rules.compile")


def test_the_idle_recorder_imports_nothing_heavy(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    store, ready, report = tmp_path / "s.duckdb", tmp_path / "ready", tmp_path / "modules.json"
    env = {**os.environ, "FORENSIX_RULE_CACHE": str(tmp_path / "rules")}
    rec = subprocess.Popen([sys.executable, "-c", SHIM, str(ready), str(report), "record", "-q", "--no-system-logs",
                            "--store", str(store), "--ready-file", str(ready)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not report.exists():
            assert rec.poll() is None, rec.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the recorder did not start"
            time.sleep(0.1)
        got = json.loads(report.read_text())
    finally:
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=120)
    assert rec.returncode == 0, err[-2000:]
    held = sorted(m for m in got["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert held == []
    assert "forensix.sensor.recorder" in got["modules"] and "pyarrow" in got["modules"]


def test_a_loaded_sensor_keeps_no_debug_log() -> None:
    """libbpf's debug lines (every relocation and map, ~6,700 a load) are not kept: the last
    4,000 stayed in every recorder's heap (~0.6 MB). Its warnings still are: a refused
    program is named from them (tests/sensor/test_cli_record.py)."""
    from forensix.sensor import libbpf as lb
    from forensix.sensor.loader import Sensor, SensorConfig

    sensor = Sensor(SensorConfig())
    sensor.open_and_load()
    try:
        kept = lb.log_lines()
    finally:
        lb.lib.bpf_object__close(sensor._obj)
    assert len(kept) < 100, kept[:5]
