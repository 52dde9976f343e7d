"""The rest of the forensic set, one action each (run under `forensix record` by the test)."""
import mmap
import os
import signal
import subprocess
import sys

d = sys.argv[1]
os.chdir(d)
open("f.txt", "w").write("data")
os.chmod("f.txt", 0o4755)                                  # chmod (setuid bit)
os.chown("f.txt", 65534, 65534)                           # chown
os.utime("f.txt", (946684800, 946684800))                 # utimes: back to 2000-01-01 (timestomping)
os.setxattr("f.txt", "user.fx", b"1")                     # setxattr
os.truncate("f.txt", 2)                                   # truncate
os.link("f.txt", "hard.txt")                              # link
os.symlink("f.txt", "soft.txt")                           # symlink
os.mkdir("newdir"); os.rmdir("newdir")                    # mkdir, rmdir
fd = os.open("f.txt", os.O_RDONLY)
m = mmap.mmap(fd, 2, prot=mmap.PROT_READ | mmap.PROT_EXEC)  # file mapped executable
m.close(); os.close(fd)
open("maps.bin", "wb").write(b"x" * 8192)                # one file mapped four ways
fd = os.open("maps.bin", os.O_RDWR)
for flags, prot in ((mmap.MAP_PRIVATE, mmap.PROT_READ),                       # read: recorded
                    (mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE),     # private copy: the file is
                    (mmap.MAP_PRIVATE, mmap.PROT_READ),                       #   only read, as before
                    (mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)):     # writes the file: recorded
    mmap.mmap(fd, 4096, flags=flags, prot=prot).close()
os.close(fd)
mfd = os.memfd_create("fx-memfd")                          # memfd_create
os.write(mfd, b"\x7fELF"); os.close(mfd)
child = subprocess.Popen(["/bin/sleep", "30"])
os.kill(child.pid, signal.SIGTERM); child.wait()           # kill, with target
subprocess.run(["strace", "-o", "/dev/null", "/bin/true"])  # ptrace
subprocess.run(["bpftool", "prog", "show"], stdout=subprocess.DEVNULL)  # bpf()
os.mkdir("mnt")
subprocess.run(["mount", "-t", "tmpfs", "fxtmp", d + "/mnt"], check=True)   # mount
subprocess.run(["umount", d + "/mnt"], check=True)                           # umount
subprocess.run(["unshare", "-n", "/bin/true"], check=True)                   # unshare
os.mkdir("jail")
subprocess.run(["chroot", d + "/jail", "/bin/true"], stderr=subprocess.DEVNULL)  # chroot (exec fails inside)
import socket

open("payload.bin", "wb").write(b"p" * 3000)
a, b = socket.socketpair()
with open("payload.bin", "rb") as src:
    os.sendfile(a.fileno(), src.fileno(), 0, 3000)        # data moved file -> socket in the kernel
b.recv(4096); a.close(); b.close()
open("many.txt", "w").write("m")
for _ in range(50):                                         # a web server's steady state
    with open("many.txt") as fh:
        fh.read()
open("as-nobody.txt", "w").close()
os.chmod("as-nobody.txt", 0o666)
pid = os.fork()
if pid == 0:                                                # data moved as another user
    os.setresuid(65534, 65534, 65534)
    with open("as-nobody.txt", "w") as fh:
        fh.write("written by nobody")
    os._exit(0)
os.waitpid(pid, 0)
open("reopened.txt", "w").write("r")
os.chmod("reopened.txt", 0o644)
pid = os.fork()
if pid == 0:                                                # the same process, three identities
    import ctypes                                           # open(2) with cat's flags: os.open adds O_CLOEXEC
    libc = ctypes.CDLL(None, use_errno=True)
    def read_once() -> None:                                # open, read its one byte, close
        fd = libc.open(b"reopened.txt", os.O_RDONLY)
        os.read(fd, 1)
        os.close(fd)
    read_once()                                             # as root: a full record...
    read_once()                                             # ...then a repeat, on the same edge
    os.setresuid(65534, 65534, 65534)
    read_once()                                             # as nobody: not a repeat of root's
    os.execv("/bin/cat", ["cat", "reopened.txt"])           # another program: its own open
os.waitpid(pid, 0)
