#!/bin/bash
# One object of each kind between a writer and a reader of files (test_socket_nodes_bpf):
# a TCP client sends secret to a server that writes tcp.txt; a unix-socket client sends
# secret2 to the same server, which writes unix.txt; a pipe carries secret3 to pipe.txt; a
# forked child sends secret4 to its parent over a socketpair, which writes pair.txt.
# $1: work directory, $2: the TCP port
W=$1; PORT=$2
python3 - "$W" "$PORT" <<'PY' &
import socket, sys, os
w, port = sys.argv[1], int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", port)); ls.listen()
us = socket.socket(socket.AF_UNIX); us.bind(f"{w}/u.sock"); us.listen()
open(f"{w}/ready", "w").close()
def take(c):
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    c.close()
    return data
for s, out in ((ls, "tcp.txt"), (us, "unix.txt")):
    c, _ = s.accept()
    data = take(c)
    with open(f"{w}/{out}", "wb") as f:
        f.write(data)
PY
until [ -e "$W/ready" ]; do sleep 0.01; done
cat "$W/secret" > "/dev/tcp/127.0.0.1/$PORT"
python3 -c '
import socket, sys
c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[2] + "/u.sock")
c.sendall(open(sys.argv[1], "rb").read()); c.close()
' "$W/secret2" "$W"
wait
cat "$W/secret3" | tr a-z A-Z > "$W/pipe.txt"
python3 -c '
import os, socket, sys
a, b = socket.socketpair()
if os.fork() == 0:
    a.close(); b.sendall(open(sys.argv[1], "rb").read()); b.close(); os._exit(0)
b.close()
data = b""
while chunk := a.recv(4096):
    data += chunk
os.wait()
open(sys.argv[2], "wb").write(data)
' "$W/secret4" "$W/pair.txt"
