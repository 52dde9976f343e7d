"""A flow edge as the recorder stores it (only in ``flows``, ``in_events`` false) is accepted
by the 2-shard cluster and answered by the fleet question from the summaries.

The summary view over flows once gave its ``action`` the type Nullable(String) (``if`` over
the Nullable ``write_bytes``); 18.16 refused every such insert ("Type mismatch for column
action"), so no recorded flow edge reached a ClickHouse store: a log host retried the frame
for ever. Generated fleets never showed it (their edges are in the events too)."""

from __future__ import annotations

import json
import time

import pyarrow as pa
from click.testing import CliRunner

from forensix.cli.main import cli
from forensix.store import schema
from forensix.store.clickhouse import ClickHouseStore


def test_a_recorded_flow_edge_is_stored_and_summarized(url: str) -> None:
    now = time.time_ns()
    edge = {"host_id": "h-1", "host_name": "edge01", "boot_id": "b-1", "entity_id": 77, "pid": 4242, "fd": 3,
            "file_inode": 99, "file_device": 2049, "file_type": "file", "file_path": "/srv/upload/x.bin",
            "first_ts": now - 10**9, "last_ts": now, "read_count": 0, "read_bytes": 0, "write_count": 2,
            "write_bytes": 5, "reason": "periodic", "tid": 4242, "process_name": "python3", "ts_boot": 1,
            "in_events": False, "user_id": 0, "file_generation": 7}
    with ClickHouseStore(url, write=True) as st:
        assert st.append("flows", pa.Table.from_pylist([edge], schema=schema.FLOWS)) == 1
        assert st.summarized()
    out = CliRunner().invoke(cli, ["fleet", "path", "/srv/upload/*", "--store", url, "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["host.name"], r["action"], r["file.path"], r["times"]) for r in rows] == [
        ("edge01", "write", "/srv/upload/x.bin", 1)], rows
