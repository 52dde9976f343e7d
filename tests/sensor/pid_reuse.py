"""Two processes, one pid, one file: the first writes, exits, and the second (given the
same pid through ns_last_pid) writes the same file before the agent's next flush, so the
kernel keeps the first one's edge apart (handed over through the ring when it meets the
new holder in the flows map, or kept in its own slot). Three times. Both write as root
(an edge is per process, program and uid: a holder of the pid with another uid or image
starts its own edge and hands nothing over); the second with another group.

The pids that were reused are written to argv[3], one a line: on a loaded host another
process sometimes takes the pid first, and that attempt's first writer has written alone."""
import os
import sys

path = sys.argv[1]


def writer(name: str, data: bytes, gid: int | None = None) -> None:
    with open("/proc/self/comm", "w") as c:
        c.write(name)
    for _ in range(2):  # read-only twice: the first open recorded, the second counted
        os.close(os.open(path, os.O_RDONLY))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    if gid is not None:  # written with another group: fields the old edge must not take
        os.setresgid(gid, gid, gid)
    os.write(fd, data)
    os.close(fd)
    os._exit(0)


done = 0
for attempt in range(60):
    first = os.fork()
    if first == 0:
        writer("fx-first", b"a")
    os.waitpid(first, 0)
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first - 1))
    second = os.fork()
    if second == 0:
        if os.getpid() != first:  # another process took the pid: try again
            os._exit(3)
        writer("fx-second", b"b", gid=65534)
    _, status = os.waitpid(second, 0)
    if second == first and os.waitstatus_to_exitcode(status) == 0:
        done += 1
        with open(sys.argv[3], "a") as reused:
            reused.write(f"{first}\n")
        if done == 3:  # a flush between the two writes (~1 in 200) leaves no hand-over: three chances
            break
else:
    sys.exit(f"the pid was reused {done} times in 60 tries, not 3")
