#!/bin/bash
# Three clients of one listening unix socket (test_unix_clients_bpf): B connects first and is
# served by a handler the server forks for it; then A sends a.secret to the server itself,
# which writes it to a.out; then B asks again and writes its answer to b.out (its handler
# never saw A's bytes); then C asks the server itself (which did read A's) and writes c.out.
# A waits for the server's acknowledgement: a client gone before the accept leaves the
# accept without its peer's inode, and the two ends unjoined (docs/analysis.md, Limits).
# $1: work directory
W=$1
python3 - "$W" <<'PY' &
import os, socket, sys
w = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.bind(f"{w}/u.sock"); s.listen()
open(f"{w}/ready", "w").close()
b, _ = s.accept()
if os.fork() == 0:  # B's handler: answers what B asks, twice
    s.close()
    for _ in range(2):
        q = b.recv(100)
        b.sendall(b"answer to " + q)
    os._exit(0)
b.close()
a, _ = s.accept()
data = b""
while chunk := a.recv(4096):
    data += chunk
a.sendall(b"k")
open(f"{w}/a.out", "wb").write(data)
c, _ = s.accept()
q = c.recv(100)
c.sendall(b"server read " + str(len(data)).encode() + b" bytes before " + q)
c.close()
os.wait()
PY
until [ -e "$W/ready" ]; do sleep 0.01; done
python3 - "$W" <<'PY' &
import os, socket, sys, time
w = sys.argv[1]
c = socket.socket(socket.AF_UNIX); c.connect(f"{w}/u.sock")
c.sendall(b"b1"); c.recv(100)
open(f"{w}/b.connected", "w").close()
while not os.path.exists(f"{w}/a.sent"):
    time.sleep(0.01)
time.sleep(0.05)
c.sendall(b"b2")
open(f"{w}/b.out", "wb").write(c.recv(100))
PY
until [ -e "$W/b.connected" ]; do sleep 0.01; done
python3 -c '
import socket, sys
c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1] + "/u.sock")
c.sendall(open(sys.argv[1] + "/a.secret", "rb").read()); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
open(sys.argv[1] + "/a.sent", "w").close()
' "$W"
wait %2
python3 -c '
import socket, sys
c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1] + "/u.sock")
c.sendall(b"c1"); open(sys.argv[1] + "/c.out", "wb").write(c.recv(100))
' "$W"
wait
