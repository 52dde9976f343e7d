"""One thread moves data on a TCP connection and, right after each transfer, on a file with the
same call: write(2) on the socket then write(2) on a file, read(2) then read(2), writev(2) then
writev(2), and sendfile(2) from a file into the socket (a read of the file and a write of the
socket in one call). argv: out.json, the directory holding read.txt and sent.txt (made by the test,
so that this process's only edges on them are its reads), rounds. Writes {role: inode} to out.json."""

import json
import os
import socket
import sys

out, d, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen()
c = socket.create_connection(ls.getsockname())
s, _ = ls.accept()
cfd, sfd = c.fileno(), s.fileno()


def take(fd: int, n: int) -> None:
    got = 0
    while got < n:
        got += len(os.read(fd, n - got))


written = os.open(os.path.join(d, "written.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
vec = os.open(os.path.join(d, "vec.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
readf = os.open(os.path.join(d, "read.txt"), os.O_RDONLY)
sent = os.open(os.path.join(d, "sent.txt"), os.O_RDONLY)
for i in range(rounds):
    os.write(cfd, b"q" * 10)         # write(2) on the socket ...
    os.write(written, b"w" * 7)      # ... then on a file
    take(sfd, 10)                    # read(2) on the socket ...
    assert len(os.read(readf, 5)) == 5  # ... then on a file
    os.writev(cfd, [b"v" * 3])       # writev(2) on the socket ...
    os.writev(vec, [b"x" * 4])       # ... then on a file
    take(sfd, 3)
    os.sendfile(sfd, sent, i * 8, 8)  # the file read, the socket written, one call
    take(cfd, 8)
ino = {"written": os.fstat(written).st_ino, "vec": os.fstat(vec).st_ino, "read": os.fstat(readf).st_ino,
       "sent": os.fstat(sent).st_ino, "client": os.fstat(cfd).st_ino, "server": os.fstat(sfd).st_ino}
with open(out, "w") as fh:
    json.dump(ino, fh)
