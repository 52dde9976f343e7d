"""The JSON API on a small generated store: what each view answers, and what it refuses.

Bad input (unknown ids, hostile query strings, huge ranges and pages, writes) gets a clear
4xx with a message and a hint, never a traceback and never an unbounded answer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from forensix.store.embedded import open_reader, open_writer
from forensix.store.schema import ALERTS
from forensix.testing.generator import generate
from forensix.web.app import VIEWS, create_app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-api") / "gen.duckdb"
    w = open_writer(path)
    res = generate(w, 30_000, seed=7)
    eid = w.query("SELECT process_entity_id AS e FROM events WHERE file_path = $p LIMIT 1",
                  {"p": res.target_file}).column("e")[0].as_py()
    w.append("alerts", pa.Table.from_pylist([{
        "host_id": "test-host", "host_name": "testhost", "boot_id": "boot-0001", "alert_id": "a1",
        "ts": 1_790_010_812_000_000_000, "rule_id": "fx_cron_drop", "rule_title": "File dropped in a cron directory",
        "rule_level": "high", "tags": ["attack.persistence"], "process_entity_id": eid, "process_pid": 31004,
        "entity_ids": [eid], "event_keys": [], "summary": "x.sh wrote /etc/cron.d/evil", "source": "hunt"}],
        schema=ALERTS))
    w.flush()
    w.close()
    return path


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: open_reader(store), str(store)), raise_server_exceptions=False) as c:
        yield c


def _ok(c: TestClient, url: str) -> Any:
    r = c.get(url)
    assert r.status_code == 200, (url, r.text[:500])
    return r.json()


def _refused(c: TestClient, url: str, status: int = 400) -> dict[str, Any]:
    r = c.get(url)
    assert r.status_code == status, (url, r.status_code, r.text[:500])
    body = r.json()
    assert body["error"] and "Traceback" not in r.text
    return dict(body)


def test_every_page_has_a_json_twin(client: TestClient) -> None:
    for v in VIEWS:
        if not v.page or "{" in v.path:
            continue
        page = client.get(v.path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], v.path
        assert client.get(v.path + ".json").status_code in (200, 400), v.path  # incident needs a target


def test_overview_and_alerts(client: TestClient) -> None:
    o = _ok(client, "/overview.json")
    assert o["events"] >= 30_000 and o["alerts"] == 1
    assert len(o["coverage"]["count"]) == 120 and sum(o["coverage"]["count"]) == o["events"]
    assert o["alerts_by_rule"][0]["rule_id"] == "fx_cron_drop"
    a = _ok(client, "/alerts.json?level=high&rule=fx_cron_drop")
    assert [x["alert_id"] for x in a["alerts"]] == ["a1"]
    assert _ok(client, "/alerts.json?level=low")["alerts"] == []
    assert _ok(client, "/alerts.json?to=2020-01-01T00:00:00Z")["total"] == 0


def test_incident_from_the_alert(client: TestClient) -> None:
    d = _ok(client, "/incident.json?alert=a1")
    labels = {n["label"] for n in d["graph"]["nodes"]}
    assert "/etc/cron.d/evil" in labels and "/tmp/x.sh" in labels
    assert any(lab.startswith("curl ") for lab in labels)
    assert {n["direction"] for n in d["graph"]["nodes"]} >= {"backward", "forward"}
    ids = {n["id"] for n in d["graph"]["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in d["graph"]["edges"])
    assert d["session"]["kind"] == "sshd" and d["session"]["source_ip"] == "203.0.113.66"
    assert any(p["file_path"] == "/etc/cron.d/evil" for p in d["persistence"])
    # compact by default; graph=full is every object, and the compact one says how many that is
    full = _ok(client, "/incident.json?alert=a1&part=graph&graph=full")["graph"]
    assert d["graph"]["compact"] and not full["compact"]
    assert d["graph"]["full"]["nodes"] == len(full["nodes"]) >= len(d["graph"]["nodes"])
    assert {n["label"] for n in full["nodes"]} >= labels - {n["label"] for n in d["graph"]["nodes"]
                                                            if n["kind"] == "group"}


def test_graph_expand_and_node_targets(client: TestClient) -> None:
    d = _ok(client, "/graph.json?target=/tmp/x.sh&direction=backward&depth=1")
    curl = [n for n in d["nodes"] if n["label"].startswith("curl ")]
    assert curl and curl[0]["target"] == curl[0]["entity_id"]
    again = _ok(client, f"/graph.json?target={curl[0]['target']}&direction=backward&depth=1")
    assert any(n["kind"] == "connection" for n in again["nodes"])


def test_pages_are_bounded(client: TestClient) -> None:
    t = _ok(client, "/timeline.json?limit=50")
    assert len(t["events"]) == 50 and t["next"]
    t2 = _ok(client, f"/timeline.json?limit=50&after={t['next']}")
    assert t2["events"][0] != t["events"][-1] and t2["histogram"] is None
    # paging through the cursor gives the same rows as one bigger page
    t100 = _ok(client, "/timeline.json?limit=100")
    assert t["events"] + t2["events"] == t100["events"]
    tr = _ok(client, "/tree.json?limit=10&offset=5")
    assert len(tr["processes"]) == 10 and tr["total"] > 100
    for url in ("/timeline.json?limit=1001", "/tree.json?limit=0", "/sessions.json?offset=100001",
                "/incident.json?target=/etc/cron.d/evil&depth=31", "/incident.json?target=/x&max_nodes=100000"):
        _refused(client, url)


@pytest.mark.parametrize("url,status", [
    ("/process/0000000000000001.json", 404),
    ("/process/not-an-id.json", 400),
    ("/session/0000000000000001.json", 404),
    ("/incident.json?alert=nope", 404),
    ("/incident.json", 400),
    ("/incident.json?target=/etc/never-recorded", 404),
    ("/incident.json?target=1.2.3.4:99999", 400),
    ("/file.json?path=relative/path", 400),
    ("/file.json?path=/etc/never-recorded", 404),
    ("/graph.json?target=/x&direction=sideways", 400),
    ("/incident.json?alert=a1&graph=hairball", 400),
    ("/timeline.json?entity=xyz", 400),
    ("/timeline.json?ip=999.1.1.1", 400),
    ("/timeline.json?from=yesterday-ish", 400),
    ("/timeline.json?from=2026-01-02T00:00Z&to=2026-01-01T00:00Z", 400),
    ("/timeline.json?after=1:2:3", 400),
    ("/timeline.json?category=process%27%20OR%201=1--", 400),
    ("/timeline.json?unknown=1", 400),
    ("/tree.json?at=" + "9" * 40, 400),
    ("/tree.json?limit=99999999999999999999999", 400),
    ("/search.json?q=x", 400),
    ("/search.json?q=%00%00", 400),
    ("/nothing-here", 404),
    ("/static/../../etc/passwd", 404),
    ("/static/vendor/evil.js", 404),
])
def test_bad_input_is_refused_clearly(client: TestClient, url: str, status: int) -> None:
    body = _refused(client, url, status)
    assert body["status"] == status


def test_hostile_strings_are_data_not_sql(client: TestClient) -> None:
    for q in ("'; DROP TABLE events; --", "/etc/'||(SELECT 1)||'", "\" OR 1=1", "%' OR '1'='1"):
        assert _ok(client, "/search.json?" + _qs(q=q))["q"] == q.strip()
        _ok(client, "/timeline.json?" + _qs(path=q, limit=5))
        _ok(client, "/alerts.json?" + _qs(rule=q, host=q))
    assert _ok(client, "/overview.json")["events"] >= 30_000  # nothing dropped


def test_huge_and_many_parameters(client: TestClient) -> None:
    _refused(client, "/timeline.json?path=" + "a" * 600)
    _refused(client, "/timeline.json?" + "&".join(f"action=a{i}" for i in range(33)))
    _refused(client, "/alerts.json?" + "&".join(f"rule=r{i}" for i in range(70)))
    _refused(client, "/timeline.json?path=" + "a" * 5000, 414)
    # the widest time range is an ordinary request: one page and a 120-bucket histogram
    t = _ok(client, "/timeline.json?from=0&to=4611686018427387903&limit=20")
    assert len(t["events"]) == 20 and len(t["histogram"]["count"]) == 120


def test_read_only(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = client.request(method, "/overview.json")
        assert r.status_code == 405 and "only reads" in r.json()["error"]


def test_search_finds_each_kind(client: TestClient) -> None:
    inc = _ok(client, "/incident.json?alert=a1")
    actor = inc["actor"]
    assert any(r["url"] == f"/process/{actor}" for r in _ok(client, f"/search.json?q={actor}")["results"])
    assert any(r["label"] == "/etc/cron.d/evil" for r in _ok(client, "/search.json?q=/etc/cron.d/")["results"])
    assert any("curl" in r["label"] for r in _ok(client, "/search.json?" + _qs(q="-o /tmp/x.sh"))["results"])
    assert any("203.0.113.66" in r["label"] for r in _ok(client, "/search.json?q=203.0.113.66")["results"])
    assert any(r["match"] == "pid" for r in _ok(client, "/search.json?q=31004")["results"])
    h = _ok(client, "/search.json?q=" + "ab" * 32)
    # stores record process.hash.sha256 now (forensix.artifacts): a hash nothing ran finds nothing
    assert h["kinds"][0] == "hash" and h["results"] == []


def test_token(store: Path) -> None:
    with TestClient(create_app(lambda: open_reader(store), str(store), token="s3cret"),
                    raise_server_exceptions=False) as c:
        assert c.get("/overview.json").status_code == 401
        assert c.get("/overview.json", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/overview.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.get("/overview?token=s3cret", follow_redirects=False)
        assert r.status_code == 303 and "token" not in r.headers["location"]
        assert c.get("/overview.json").status_code == 200  # the cookie the redirect set


def _qs(**kw: Any) -> str:
    from urllib.parse import urlencode

    return urlencode(kw)


# -- the command -------------------------------------------------------------------------
def _run_ui(store: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen([sys.executable, "-m", "forensix", "ui", "--store", str(store), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    url = p.stdout.readline().strip()
    return p, url


def test_cli_serves_loopback_and_refuses_clear_text_elsewhere(store: Path, tmp_path: Path) -> None:
    import httpx

    p, url = _run_ui(store, "--listen", "127.0.0.1:0")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/overview")
        assert httpx.get(url.replace("/overview", "/overview.json"), timeout=30).json()["events"] >= 30_000
    finally:
        p.terminate()
        p.wait(timeout=10)
    r = subprocess.run([sys.executable, "-m", "forensix", "ui", "--store", str(store), "--listen", "0.0.0.0:0"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "clear text" in r.stderr and "--tls-cert" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_live_stream_and_a_clean_stop_while_a_page_holds_it(store: Path) -> None:
    """/live/stream pushes the counts at once; Ctrl-C ends the server promptly even while a
    page's stream is open (uvicorn would wait for it), without a traceback."""
    import signal

    import httpx

    p, url = _run_ui(store, "--listen", "127.0.0.1:0")
    try:
        with httpx.stream("GET", url.replace("/overview", "/live/stream"), timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first = next(r.iter_lines())
            assert first.startswith("data: ") and json.loads(first[6:])["events"] >= 30_000
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)  # promptly (uvicorn raises the signal again when done: click's "Aborted!")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.stderr is not None
    assert "Traceback" not in p.stderr.read()


def test_cli_tls_with_token_and_with_client_certificates(store: Path, tmp_path: Path) -> None:
    """Beyond loopback: TLS and a made-up token; with the forensix PKI, its client certificates."""
    import ssl

    import httpx

    from forensix.pki.authority import Authority

    auth = Authority(tmp_path / "pki")
    auth.init()
    analyst = auth.issue("analyst")
    host = _outside_address()
    p, url = _run_ui(store, "--listen", f"{host}:0", "--tls-cert", str(auth.server_cert_path),
                     "--tls-key", str(auth.server_key_path))
    try:
        assert url.startswith(f"https://{host}:") and "?token=" in url
        ctx = ssl.create_default_context(cafile=str(auth.ca_cert_path))
        ctx.check_hostname = False  # the server certificate names the log host, not this address
        api = url.split("?")[0].replace("/overview", "/overview.json")
        assert httpx.get(api, verify=ctx, timeout=30).status_code == 401
        token = url.split("token=")[1]
        r = httpx.get(api, verify=ctx, timeout=30, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        p.terminate()
        p.wait(timeout=10)
    p, url = _run_ui(store, "--listen", "127.0.0.1:0", "--pki", str(auth.dir))
    try:
        assert "token" not in url
        api = url.replace("/overview", "/overview.json")
        ctx = ssl.create_default_context(cafile=str(auth.ca_cert_path))
        ctx.load_cert_chain(str(analyst.cert), str(analyst.key))
        assert httpx.get(api, verify=ctx, timeout=30).status_code == 200
        bare = ssl.create_default_context(cafile=str(auth.ca_cert_path))
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(api, verify=bare, timeout=30)
    finally:
        p.terminate()
        p.wait(timeout=10)


def _outside_address() -> str:
    """An address of this machine that is not loopback (to exercise the non-loopback rules)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            addr = str(s.getsockname()[0])
        except OSError:
            addr = ""
    if not addr or addr.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    return addr


def test_reads_a_store_while_its_writer_holds_it(tmp_path: Path) -> None:
    """The writer's query socket serves the UI; when the writer closes, the UI opens the file."""
    from forensix.store.embedded import socket_path
    from forensix.store.remote import QueryServer

    path = tmp_path / "held.duckdb"
    w = open_writer(path)
    generate(w, 5_000, seed=3)
    qs = QueryServer(w, socket_path(path)).start()
    with TestClient(create_app(lambda: open_reader(path), str(path)), raise_server_exceptions=False) as c:
        n = _ok(c, "/live.json")["events"]
        assert n >= 5_000
        qs.stop()
        w.close()
        time.sleep(0.1)
        assert _ok(c, "/live.json")["events"] == n
