"""Data written then read through a file, a pipe, a TCP connection (plain calls, a sendfile
into the socket) and a unix socket pair; writes {role: inode} as JSON to argv[1]."""

import json
import os
import socket
import sys

out, d = sys.argv[1], os.path.dirname(sys.argv[1])
path = os.path.join(d, "data.txt")
with open(path, "wb") as f:
    f.write(b"a" * 1000)
    f.write(b"b" * 24)
with open(path, "rb") as f:
    assert len(f.read()) == 1024
r, w = os.pipe()
os.write(w, b"p" * 300)
assert len(os.read(r, 4096)) == 300
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen()
c = socket.create_connection(ls.getsockname())
s, _ = ls.accept()


def take(sock: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        got += len(sock.recv(n - got))


c.sendall(b"x" * 500)  # sendto
take(s, 500)  # recvfrom
s.send(b"y" * 200)
take(c, 200)
os.write(c.fileno(), b"z" * 100)  # write(2) on a socket
got = 0
while got < 100:
    got += len(os.read(s.fileno(), 100 - got))
with open(path, "rb") as f:  # a read edge on the file, a write edge on the socket
    os.sendfile(s.fileno(), f.fileno(), 0, 1024)
take(c, 1024)
u1, u2 = socket.socketpair()
u1.sendmsg([b"u" * 64])
take(u2, 64)
ino = {"file": os.stat(path).st_ino, "pipe": os.fstat(r).st_ino, "client": os.fstat(c.fileno()).st_ino,
       "server": os.fstat(s.fileno()).st_ino, "unix_a": os.fstat(u1.fileno()).st_ino,
       "unix_b": os.fstat(u2.fileno()).st_ino}
with open(out, "w") as fh:
    json.dump(ino, fh)
