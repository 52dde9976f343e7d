#!/bin/bash
# A client sends a secret to a server, which writes it to a file; a reader copies that file.
# A second client connects only after the file is written (not an ancestor of it).
# $1: work directory, $2: port, $3: a marker (for the store's process subtree)
W=$1; PORT=$2
python3 - "$W" "$PORT" <<'PY' &
import socket, sys, os, time
w, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port)); ls.listen()
open(f"{w}/ready", "w").close()
def take(c):
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    c.close()
    return data
c, _ = ls.accept()
data = take(c)
time.sleep(0.3)  # the write comes well after the first connection's data
with open(f"{w}/received.txt", "wb") as f:
    f.write(data)
open(f"{w}/written", "w").close()
c, _ = ls.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.sendall(b"go")  # the late client sends only after this accept: the same order in every run
for _ in range(80):  # a conversation long enough to be counted by the connection's counters
    assert c.recv(1) == b"q"
    c.sendall(b"a")
late = take(c)
with open(f"{w}/late.txt", "wb") as f:
    f.write(late)
PY
until [ -e "$W/ready" ]; do sleep 0.01; done
cat "$W/secret" > "/dev/tcp/127.0.0.1/$PORT"
until [ -e "$W/written" ]; do sleep 0.01; done
sleep 0.3
python3 -c '
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
assert c.recv(2) == b"go"
for _ in range(80):
    c.sendall(b"q")
    assert c.recv(1) == b"a"
c.sendall(open(sys.argv[1], "rb").read(100))
' "$W/other" "$PORT"
wait
sleep 0.3
cat "$W/received.txt" > "$W/copy.txt"
