"""What the bench needs to know about a running `forensix record`: when it records, and
what it kept (events, gaps) once it stopped."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forensix.store.embedded import open_reader, socket_path


def wait_until_recording(proc: subprocess.Popen[bytes], store: Path, log: Path) -> None:
    """Return once the sensor is attached: the recorder writes its agent ``start`` event
    right after attaching, and serves the store over its socket from the beginning."""
    deadline = time.monotonic() + 90
    sock = socket_path(store)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"forensix record exited {proc.returncode}: "
                + log.read_text(errors="replace")[-800:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("forensix record did not start recording within 90 s")
        if sock.exists() and _started(store):
            return
        time.sleep(0.2)


def _started(store: Path) -> bool:
    try:
        reader = open_reader(store)
    except Exception:  # noqa: BLE001 - reported, never fatal
        return False
    try:
        n = reader.query(
            "SELECT count(*) AS n FROM events "
            "WHERE event_category = 'agent' AND event_action = 'start'"
        ).column("n")[0].as_py()
        return bool(n)
    except Exception:  # noqa: BLE001 - reported, never fatal
        return False
    finally:
        reader.close()


def store_counts(
    store: Path, inspect: Callable[[Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Events kept and records lost (sum of gap counts) in a stopped recorder's store."""
    reader = open_reader(store)
    try:
        events = reader.query("SELECT count(*) AS n FROM events").column("n")[0].as_py()
        # what was lost and why (ringbuf-full, reserve-failed, flowmap-full), per class
        gaps = reader.query("SELECT event_class, reason, sum(count) AS n, count(*) AS rows "
                            "FROM gaps GROUP BY ALL ORDER BY ALL").to_pylist()
        lost_by = {f"{r['event_class']}/{r['reason']}": int(r["n"]) for r in gaps}
        procs = reader.query("SELECT count(*) AS n FROM processes").column("n")[0].as_py()
        by_cat = {
            r["event_category"]: r["n"]
            for r in reader.query(
                "SELECT event_category, count(*) AS n FROM events GROUP BY ALL"
            ).to_pylist()
        }
        top = reader.query(
            "SELECT process_name AS name, event_action AS action, count(*) AS n FROM events "
            "GROUP BY ALL ORDER BY n DESC LIMIT 12"
        ).to_pylist()
        extra = inspect(reader) if inspect is not None else {}
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
    return {
        "events": int(events),
        "lost": sum(lost_by.values()),
        "detail": {"gap_rows": sum(int(r["rows"]) for r in gaps), "lost_by": lost_by, "process_rows": int(procs), "by_category": by_cat, "top": top,
                   **extra},
    }
