"""Alerts leave the engine for the store, a print callback, JSON lines and a webhook;
`forensix hunt`, `forensix alerts` and `forensix rules test` read them back."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from click.testing import CliRunner
from rules_scenario import Scenario, feed

from forensix.agent.sink import StoreSink
from forensix.cli.main import cli
from forensix.rules import (
    CallbackOutput,
    JsonlOutput,
    SinkOutput,
    WebhookOutput,
    default_detectors,
    load_rules,
)
from forensix.rules.engine import LiveEngine
from forensix.store.embedded import open_reader, open_writer


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_outputs_store_jsonl_callback_and_webhook(tmp_path: Path, scenario: Scenario) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = tmp_path / "live.duckdb"
    printed: list[pa.Table] = []
    writer = open_writer(store)
    try:
        sink = StoreSink(writer)
        hook = WebhookOutput(f"http://127.0.0.1:{server.server_port}/alerts", store=str(store))
        outputs = [SinkOutput(sink), CallbackOutput(printed.append), JsonlOutput(tmp_path / "a.jsonl"), hook]
        engine = LiveEngine(load_rules().ok, detectors=default_detectors(), outputs=outputs)
        tables = scenario.builder.tables()
        for name in ("processes", "events"):  # as the recorder hands them: store first, then rules
            sink.write(name, tables[name])
            engine.write(name, tables[name])
        engine.close()
        sink.flush()
        stored = writer.query("SELECT * FROM alerts ORDER BY ts")
    finally:
        writer.close()
        server.shutdown()
    n = stored.num_rows
    assert n == engine.stats.alerts > 15
    assert sum(t.num_rows for t in printed) == n
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(lines) == n
    assert hook.sent == n and hook.failed == 0
    assert len(_Collector.received) == n
    shadow = [x for x in lines if x["rule.title"].startswith("Shadow password")]
    assert shadow and "attack.t1003.008" in shadow[0]["tags"]
    assert shadow[0]["report"].startswith("forensix report ")
    assert shadow[0]["process.pid"] in (1001, 1002)
    row = stored.to_pylist()[0]
    assert row["event_keys"] and row["entity_ids"] and row["rule_level"]


def test_webhook_failure_is_counted_not_raised(scenario: Scenario) -> None:
    hook = WebhookOutput("http://127.0.0.1:9/none", timeout=0.5)
    engine = LiveEngine(load_rules().ok, outputs=[hook])
    feed(engine, scenario.builder.tables())  # observe() raises, emit() is write()'s
    engine.write("events", scenario.builder.tables()["events"])
    engine.close()
    assert hook.failed > 0 and hook.sent == 0


def test_cli_hunt_save_then_alerts_then_rules_test(scenario_store: tuple[Scenario, str]) -> None:
    sc, store = scenario_store
    run = CliRunner()
    res = run.invoke(cli, ["hunt", "--store", store, "--format", "json"])
    assert res.exit_code == 0, res.output
    found = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(found) > 15
    with_process = [x for x in found if "process.pid" in x]
    assert all(x["report"].startswith(f"forensix report --store {store} ") for x in with_process)
    gaps = [x for x in found if "process.pid" not in x]
    assert gaps and all(x["report"].startswith(f"forensix timeline --store {store} --from ") for x in gaps)
    empty = run.invoke(cli, ["alerts", "--store", store, "--format", "json"])
    assert empty.exit_code == 0 and empty.stdout == ""
    saved = run.invoke(cli, ["hunt", "--store", store, "--save", "--from", str(sc.builder.t(20) // 10**9)])
    assert saved.exit_code == 0, saved.output
    listed = run.invoke(cli, ["alerts", "--store", store, "--level", "critical"])
    assert listed.exit_code == 0, listed.output
    assert "ld.so.preload" in listed.stdout and "forensix report" in listed.stdout
    assert "Shadow" not in listed.stdout  # high, not critical
    again = run.invoke(cli, ["hunt", "--store", store, "--save"])
    assert again.exit_code == 0
    rd = open_reader(store)
    try:
        ids = rd.query("SELECT alert_id FROM alerts").column("alert_id").to_pylist()
    finally:
        rd.close()
    assert len(ids) == len(set(ids)) == len(found)
    test = run.invoke(cli, ["rules", "test", "--store", store])
    assert test.exit_code == 0, test.output
    assert "False" not in test.stdout


def test_flush_delivers_webhook_alerts_before_the_recorder_stops(scenario: Scenario) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = WebhookOutput(f"http://127.0.0.1:{server.server_port}/")
        engine = LiveEngine(load_rules().ok, outputs=[hook], max_delay=30)
        tables = scenario.builder.tables()
        engine.write("processes", tables["processes"])
        engine.write("events", tables["events"])
        engine.flush()  # what Recorder.finish calls on every sink
        assert engine.stats.alerts > 15
        assert len(_Collector.received) == engine.stats.alerts
        engine.close()
    finally:
        server.shutdown()
