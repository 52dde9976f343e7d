"""Reads, writes and re-opens whose counts a test knows exactly, made to cross the per-CPU
slot caches' edges (bpf/sensor.bpf.c, "The slot caches"): periods that straddle the agent's
bank flips, descriptors reused for another file, a file unlinked and made again under its
name, more files than slots (slots given up to the hash maps), and two threads on one file.

    python3 slot_case.py DIR MARKER     (MARKER only names this process in the record)
"""
import os
import sys
import threading
import time

d = sys.argv[1]
a, b, again = (os.path.join(d, n) for n in ("a.txt", "b.txt", "again.txt"))

# fd reuse: a's descriptor, closed, is b's next; b's writes are b's
fd = os.open(a, os.O_CREAT | os.O_WRONLY, 0o644)
for _ in range(3):
    os.write(fd, b"aa")
os.close(fd)
fd2 = os.open(b, os.O_CREAT | os.O_WRONLY, 0o644)
assert fd2 == fd, (fd, fd2)
for i in range(5):
    os.write(fd2, b"bbbbb")
    if i == 2:
        time.sleep(2.5)  # the agent flushes (and flips the slot bank) between b's writes
os.close(fd2)

# the same name, another file: unlinked and made again between two opens (a filesystem
# that reuses the inode number gives it another generation)
fd = os.open(again, os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"1")
os.write(fd, b"1")
os.close(fd)
first_inode = os.stat(again).st_ino
os.unlink(again)
fd = os.open(again, os.O_CREAT | os.O_WRONLY, 0o644)
for _ in range(4):
    os.write(fd, b"2")
os.close(fd)
with open(os.path.join(d, "inodes"), "w") as f:
    f.write(f"{first_inode} {os.stat(again).st_ino}\n")

# more files than slots: each written k % 4 + 1 times, in two passes around a flush
many = [os.path.join(d, f"m{k}") for k in range(1500)]
fds = [os.open(p, os.O_CREAT | os.O_WRONLY, 0o644) for p in many]
for rnd in range(4):
    for k, f in enumerate(fds):
        if rnd < k % 4 + 1:
            os.write(f, b"m")
    if rnd == 1:
        time.sleep(2.5)
for f in fds:
    os.close(f)

# re-opens: the same file opened read-only 300 times around a flush
for i in range(300):
    os.close(os.open(a, os.O_RDONLY))
    if i == 150:
        time.sleep(2.5)

# two threads writing one file at once (on both CPUs, when the host lets them)
fd = os.open(os.path.join(d, "threads.txt"), os.O_CREAT | os.O_WRONLY, 0o644)


def writer() -> None:
    for _ in range(2000):
        os.write(fd, b"t")


ts = [threading.Thread(target=writer) for _ in range(2)]
for t in ts:
    t.start()
for t in ts:
    t.join()
os.close(fd)
