"""web: nginx on 127.0.0.1 serving static files under wrk; requests/s and p99.

nginx runs with one worker (the machine has two cores; wrk takes the other) and no
open-file cache, so every request opens a file: a recorded event per request.

- ``web``: 200 different 1 KiB files in turn over 16 keep-alive connections, no access log.
- ``web-conn``: a new connection per request (``Connection: close``), as a new user tries
  it: 64 files of 1 to 64 KiB and an access log, so every request also accepts and
  connects a socket and writes a log line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

from bench.recorders import Recorder
from bench.workload import Metric, Workload

PORT = 0  # 0: a free port picked per workload (the host is shared; a fixed one can be taken)
N_FILES = 200

_NGINX_CONF = """\
user root;
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  {access_log}
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/tmp;
  proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp;
  scgi_temp_path {dir}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/www;
  }}
}}
"""

_WRK_SCRIPT = """\
local i = 0
request = function()
  i = (i + 1) % {n}
  return wrk.format("GET", "/f" .. i .. ".html")
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output: {out[-800:]}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses")
    return {"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)]}


class WebWorkload(Workload):
    name = "web"
    paired = True
    title = "web"
    metrics = (
        Metric("rps", "requests/s", "req/s", higher_is_better=True),
        Metric("p99_ms", "p99 latency", "ms"),
    )

    n_files = N_FILES
    # wrk's extra arguments, and the nginx access log (None: off)
    wrk_args: tuple[str, ...] = ()
    access_log = False

    def __init__(self, quick: bool, scratch) -> None:  # type: ignore[no-untyped-def]
        super().__init__(quick, scratch)
        self.duration = 5 if quick else 15
        self._nginx: subprocess.Popen[bytes] | None = None
        self.port = PORT or _free_port()

    def check(self) -> str | None:
        for tool in ("nginx", "wrk"):
            if not shutil.which(tool):
                return f"{tool} is not installed (scripts/bench-setup.sh)"
        return None

    def describe(self) -> str:
        return (
            f"nginx (1 worker) on 127.0.0.1, {N_FILES} files of 1 KiB, no access log, "
            f"`wrk -t1 -c16 -d{self.duration}s --latency` (keep-alive)"
        )

    def prepare(self) -> None:
        www = self.scratch / "www"
        www.mkdir(exist_ok=True)
        (self.scratch / "tmp").mkdir(exist_ok=True)
        for i in range(self.n_files):
            (www / f"f{i}.html").write_bytes(self.body(i))
        log = f"access_log {self.scratch}/access.log;" if self.access_log else "access_log off;"
        (self.scratch / "nginx.conf").write_text(
            _NGINX_CONF.format(dir=self.scratch, port=self.port, access_log=log)
        )
        (self.scratch / "rotate.lua").write_text(_WRK_SCRIPT.format(n=self.n_files))

    def body(self, i: int) -> bytes:
        return ("<html>" + "x" * 1000 + "</html>\n").encode()

    def before_run(self, rec: Recorder) -> None:
        argv = rec.wrap(["nginx", "-c", str(self.scratch / "nginx.conf")])
        self._nginx = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=(self.scratch / "nginx.out").open("wb")
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self._nginx.poll() is not None or time.monotonic() > deadline:
                    self.after_run(rec)
                    err = (self.scratch / "nginx.out").read_text(errors="replace")
                    raise RuntimeError(f"nginx did not start: {err[-800:]}")
                time.sleep(0.05)
        # warm up: page cache, nginx and (under strace) the traced workers
        self._wrk(2)

    def _wrk(self, seconds: int) -> str:
        p = subprocess.run(
            [
                "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", *self.wrk_args,
                "-s", str(self.scratch / "rotate.lua"), f"http://127.0.0.1:{self.port}/",
            ],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
        if p.returncode != 0:
            raise RuntimeError(f"wrk failed: {p.stderr[-800:]}")
        return p.stdout

    def measure(self, rec: Recorder) -> dict[str, float]:
        return parse_wrk(self._wrk(self.duration))

    def after_run(self, rec: Recorder) -> None:
        if self._nginx is None:
            return
        # stop nginx itself (by its pid file), not strace around it, which would detach
        pidfile = self.scratch / "nginx.pid"
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            self._nginx.terminate()
        try:
            self._nginx.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._nginx.kill()
            self._nginx.wait()
        self._nginx = None
        # nginx's worker may outlive a killed strace: wait until the port is free
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.1)
            except OSError:
                return
        raise RuntimeError(f"something still listens on 127.0.0.1:{self.port} after nginx stopped")


class WebConnWorkload(WebWorkload):
    """A new connection per request, files of 1-64 KiB, an access log (module docstring)."""

    name = "web-conn"
    title = "web, a new connection per request"
    n_files = 64
    wrk_args = ("-H", "Connection: close")
    access_log = True

    def describe(self) -> str:
        return (
            f"nginx (1 worker) on 127.0.0.1, {self.n_files} files of 1 to {self.n_files} KiB, an access log, "
            f"`wrk -t1 -c16 -d{self.duration}s --latency -H 'Connection: close'` (a new connection per request)"
        )

    def body(self, i: int) -> bytes:
        return b"x" * ((i % self.n_files + 1) << 10)

    def after_run(self, rec: Recorder) -> None:
        super().after_run(rec)
        (self.scratch / "access.log").unlink(missing_ok=True)  # ~100 bytes a request: keep runs alike


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.web web|web-conn SECONDS``: one unrecorded run of the workload (what
    ``python -m bench.agent_cost capture -- ...`` records to replay the agent on web input)."""
    import sys
    import tempfile
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    kind = WebConnWorkload if args and args[0] == "web-conn" else WebWorkload
    w = kind(True, Path(tempfile.mkdtemp(prefix="fx-web-")))
    w.prepare()
    w.before_run(Recorder())
    try:
        print(w._wrk(int(args[1]) if len(args) > 1 else 5))
    finally:
        w.after_run(Recorder())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
