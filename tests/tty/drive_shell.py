"""Drive interactive bash shells on real ptys (Python's pty module), as a person would type.

Usage: drive_shell.py OUT_JSON MARKER
Shell 1 types commands, answers a `read -s` password prompt, and exits. Shell 2, on a
pty of its own, prints a flood of output so that the per-terminal rate limit cuts it.
Writes what the test needs to know (pids, the password) to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time

PASSWORD = "hunter2-Sekrit!"


def read_for(fd: int, seconds: float) -> bytes:
    end = time.monotonic() + seconds
    out = b""
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def wait_for(fd: int, want: bytes, seconds: float = 10.0) -> bytes:
    end = time.monotonic() + seconds
    out = b""
    while want not in out and time.monotonic() < end:
        out += read_for(fd, 0.05)
    return out


def shell() -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        env = {"PATH": "/usr/bin:/bin", "TERM": "xterm", "PS1": "fx$ ", "HOME": "/tmp"}
        os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"], env)
    wait_for(fd, b"fx$ ")
    return pid, fd


def type_line(fd: int, line: str, prompt: bytes = b"fx$ ") -> bytes:
    for ch in line:  # one key at a time, as typed: the shell echoes each
        os.write(fd, ch.encode())
        time.sleep(0.005)
    os.write(fd, b"\r")
    return wait_for(fd, prompt)


def main(out_json: str, marker: str) -> None:
    pid, fd = shell()
    type_line(fd, f"echo {marker}-one")
    type_line(fd, "echo $((6*7))-answer")
    os.write(fd, b"read -s -p 'Password: ' pw\r")
    wait_for(fd, b"Password: ")
    time.sleep(0.2)
    os.write(fd, PASSWORD.encode() + b"\r")
    wait_for(fd, b"fx$ ")
    type_line(fd, "echo typed ${#pw} characters")
    type_line(fd, f"printf '%s\\n' {marker}-last")
    os.write(fd, b"exit\r")
    read_for(fd, 0.3)
    os.waitpid(pid, 0)
    # a second terminal whose output floods past the rate limit
    pid2, fd2 = shell()
    os.write(fd2, b"head -c 300000 /dev/zero | tr '\\0' x; echo; echo flood-done\r")
    wait_for(fd2, b"flood-done\r\n", 20)
    os.write(fd2, b"exit\r")
    read_for(fd2, 0.3)
    os.waitpid(pid2, 0)
    with open(out_json, "w") as f:
        json.dump({"shell": pid, "flood": pid2, "password": PASSWORD}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
