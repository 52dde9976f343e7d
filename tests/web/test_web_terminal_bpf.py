"""A recorded terminal in the UI, in a real chromium: the player and the commands typed.

A real bash on a real pty (tests/tty/drive_shell.py) types commands and answers a
`read -s` password prompt while the real sensor records; the UI then serves the store.
The session view and the process view must show a working asciinema player (fed by the
asciicast twin, under the page's real Content-Security-Policy: no bypass here), the
commands with their output, and the password nowhere: not in the page, not in its JSON,
not in the asciicast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forensix.store.embedded import DuckDBStore

from .conftest import UIServer, open_view, shot

pytestmark = pytest.mark.bpf

DRIVE = Path(__file__).resolve().parents[1] / "tty" / "drive_shell.py"


@pytest.fixture(scope="module")
def term(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("recording needs root (CI runs as root)")
    d = tmp_path_factory.mktemp("web-tty")
    store, out, marker = d / "s.duckdb", d / "pids.json", f"fxw{uuid.uuid4().hex[:8]}"
    r = subprocess.run([sys.executable, "-m", "forensix", "record", "-q", "--no-rules", "--no-artifacts",
                        "--store", str(store), "--", sys.executable, str(DRIVE), str(out), marker],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(out.read_text())
    st = DuckDBStore(store, read_only=True)
    ent = st.query("SELECT DISTINCT process_entity_id FROM tty WHERE process_pid = $p",
                   {"p": info["shell"]}).column(0).to_pylist()
    st.close()
    assert ent, "no terminal bytes recorded for the driven shell"
    ui = UIServer(store)
    try:
        yield {"ui": ui, "marker": marker, "password": info["password"], "entity": f"{ent[0]:016x}"}
    finally:
        ui.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def strict_page(browser: Any) -> Iterator[Any]:
    """A page under the app's own CSP (the player's WebAssembly must pass it); a CSP
    violation or a script error fails the test."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors


def _played(page: Any, want: str) -> None:
    """Play the recording and wait until the player's terminal shows ``want``."""
    page.wait_for_selector(".player .ap-player", timeout=30_000)
    page.locator(".player .ap-player").click()  # a click toggles play
    page.locator(".player .ap-term", has_text=want).wait_for(timeout=30_000)
    # drawn as the terminal showed it: the output line starts at column 0 (no staircase)
    lines = page.eval_on_selector_all(".player .ap-line", "ls => ls.map(l => l.textContent)")
    assert any(x.startswith(want) for x in lines), lines


def test_session_view_plays_the_terminal_and_lists_what_was_typed(term: dict[str, Any], strict_page: Any) -> None:
    ui, m, pw = term["ui"], term["marker"], term["password"]
    proc = json.loads(_get(f"{ui.url}/process/{term['entity']}.json")[1])
    assert proc["recording"] is True
    leader = proc["session"]
    open_view(strict_page, f"{ui.url}/session/{leader}", "session")
    strict_page.wait_for_selector(".transcript", timeout=30_000)
    text = strict_page.inner_text(".transcript")
    at = 0  # the commands typed, each followed by its output, in order; the password masked
    for s in (f"$ echo {m}-one", f"{m}-one", "$ echo $((6*7))-answer", "42-answer",
              "$ read -s -p 'Password: ' pw", "********", "$ echo typed ${#pw} characters",
              f"typed {len(pw)} characters", f"$ printf '%s\\n' {m}-last", f"{m}-last"):
        found = text.find(s, at)
        assert found >= 0, f"{s!r} missing, or out of order, in:\n{text}"
        at = found + len(s)
    _played(strict_page, f"{m}-last")
    shot(strict_page, "session-terminal")
    assert pw not in strict_page.content()

    # the JSON twins and the asciicast the player read: valid asciicast v2, no password
    status, cast = _get(f"{ui.url}/session/{leader}.cast")
    assert status == 200
    lines = [json.loads(x) for x in cast.splitlines()]
    assert lines[0]["version"] == 2 and lines[0]["width"] > 0
    assert all(isinstance(e, list) and len(e) == 3 and e[1] in "oim" for e in lines[1:])
    assert any(e[1] == "m" and "masked" in e[2] for e in lines[1:])
    assert any(e[1] == "o" and f"{m}-last" in e[2] for e in lines[1:])
    for url in (f"/session/{leader}.json", f"/session/{leader}.json?part=terminal",
                f"/process/{term['entity']}.json?part=terminal"):
        status, body = _get(ui.url + url)
        assert status == 200 and f"{m}-one" in body or "?part=" not in url, url
        assert pw not in body, url
    assert pw not in cast


def test_process_view_plays_its_terminal(term: dict[str, Any], strict_page: Any) -> None:
    open_view(strict_page, f"{term['ui'].url}/process/{term['entity']}", "process")
    strict_page.wait_for_selector(".transcript", timeout=30_000)
    assert f"{term['marker']}-last" in strict_page.inner_text(".transcript")
    _played(strict_page, f"{term['marker']}-last")
    shot(strict_page, "process-terminal")
    assert term["password"] not in strict_page.content()


def test_terminal_of_unknown_or_hostile_ids_is_refused(term: dict[str, Any]) -> None:
    url = term["ui"].url
    status, body = _get(url + "/session/ffffffffffffffff.cast")
    assert status == 404 and "hint" in json.loads(body)
    status, body = _get(url + "/process/..%2F..%2Fetc%2Fpasswd.cast")
    assert status in (400, 404) and json.loads(body)["error"]
    status, body = _get(url + "/process/0000000000000001.json?part=terminal")
    assert status == 404, body


def test_live_stream_and_its_polling_fallback(term: dict[str, Any], browser: Any) -> None:
    """The live stream answers at once with the store's counts (its cursor); a browser
    without EventSource asks /live.json instead."""
    url = term["ui"].url
    with urllib.request.urlopen(url + "/live/stream", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = r.readline().decode()
    assert first.startswith("data: ") and json.loads(first[6:])["events"] > 0
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.add_init_script("delete window.EventSource")
        open_view(pg, url + "/overview", "overview")
        pg.wait_for_selector("#live[data-via=poll]", timeout=10_000)
        pg.wait_for_selector("#live:has-text('latest event')", timeout=10_000)  # the poll's second answer
    finally:
        ctx.close()
