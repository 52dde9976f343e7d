"""A connection per request, as fast as a few processes make them: the load of bench web-conn
(nginx and wrk with ``Connection: close``) on the recorder's network ring, with exact counts.

    python conn_burst.py N CLIENTS MARKER

The server (this process) listens on 127.0.0.1, prints ``port server_pid``, then accepts N
connections, reads each request and answers it; CLIENTS forked children make N connections
between them, each sending a request and reading the answer to its close. Every connection
is one accept and one connect record (~320 bytes each in the ring). Prints ``done SECONDS
CLIENT_PIDS...`` when the last answer is read. MARKER only names the run in the processes' arguments.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def _client(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while c.recv(4096):
                pass


def main() -> int:
    n, clients = int(sys.argv[1]), int(sys.argv[2])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    port = srv.getsockname()[1]
    print(port, os.getpid(), flush=True)
    t0 = time.monotonic()
    kids = []
    for i in range(clients):
        share = n // clients + (1 if i < n % clients else 0)
        pid = os.fork()
        if pid == 0:
            srv.close()
            _client(port, share)
            os._exit(0)
        kids.append(pid)
    for _ in range(n):
        s, _ = srv.accept()
        s.recv(4096)
        s.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
        s.close()
    ok = all(os.waitpid(pid, 0)[1] == 0 for pid in kids)
    print("done", round(time.monotonic() - t0, 3), *kids, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
