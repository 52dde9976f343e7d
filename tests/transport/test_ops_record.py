"""`forensix record --metrics`: the real recorder's /metrics endpoint, scraped while it records."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forensix.testing.scrape import sample, scrape

FX = [sys.executable, "-c", "from forensix.cli.main import main; main()"]


@pytest.mark.bpf
def test_record_serves_events_per_second_and_losses(tmp_path: Path) -> None:
    log = tmp_path / "record.log"
    p = subprocess.Popen(FX + ["record", "-q", "--no-rules", "--store", str(tmp_path / "r.duckdb"),
                               "--metrics", "127.0.0.1:0"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 30
        m = None
        while time.monotonic() < end and p.poll() is None:
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
            if found:
                subprocess.run(["sh", "-c", f"for i in 1 2 3 4 5; do ls {tmp_path} > /dev/null; done"], check=True)
                m = scrape(found.group(1))
                if (sample(m, "forensix_rows_total", table="events") or 0) > 0:
                    break
            time.sleep(0.3)
        assert m is not None, log.read_text()
        assert (sample(m, "forensix_rows_total", table="events") or 0) > 0
        assert (sample(m, "forensix_rows_total", table="processes") or 0) > 0  # the start-up snapshot
        assert sample(m, "forensix_rows_total", table="gaps") is not None  # losses are exposed (zero or not)
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0, log.read_text()[-2000:]
