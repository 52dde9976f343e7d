/* Syscall micro-benchmarks for `python -m bench`: ns per operation, timed in C so that
 * interpreter overhead never enters the figure.
 *
 *   micro getppid N      N getppid() calls          (not in the recorded set)
 *   micro openclose N    N open()+close() pairs     (recorded: file open)
 *   micro forkexec N     N fork()+execve(/bin/true)+waitpid()  (recorded: fork, exec, exit)
 *   micro storm N SECS   N processes doing open(O_TRUNC)/close as fast as they can for SECS seconds;
 *                        prints the total number of pairs done
 *   micro createdelete N N files created (O_CREAT|O_EXCL) in $MICRO_DIR (default .), closed and unlinked
 *   micro connect N      N TCP connects to 127.0.0.1, ports 1, 2, ... (a port scan: most are closed)
 *   micro pipewrite N    N one-byte writes into a pipe that a child drains
 *
 * MICRO_NO_WARMUP=1 skips the warm-up round, so that a storm test knows exactly how many
 * calls were made (the storm kinds of bench/storm.py and tests/sensor/test_storms.py).
 *
 * Prints one line: "<mode> <ops> <ns_per_op>" (storm: "storm <ops> <seconds>").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *open_target(void) {
    const char *p = getenv("MICRO_OPEN_PATH");
    /* the same file each time: the first open of each second is a record, the repeats a
     * count in the kernel (an unprivileged storm of the same fact costs no ring space) */
    return p ? p : "/dev/null";
}

static void loop_getppid(long n) {
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
}

static void loop_openclose(long n) {
    const char *path = open_target();
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) { perror("open"); exit(2); }
        close(fd);
    }
}

static void loop_forkexec(long n) {
    char *const argv[] = {"true", NULL};
    char *const envp[] = {NULL};
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); exit(2); }
        if (pid == 0) { execve("/bin/true", argv, envp); _exit(127); }
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child failed\n"); exit(2);
        }
    }
}

static void loop_createdelete(long n) {
    const char *dir = getenv("MICRO_DIR");
    char path[4096];
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/fx%ld", dir ? dir : ".", i);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) { perror("create"); exit(2); }
        close(fd);
        if (unlink(path) < 0) { perror("unlink"); exit(2); }
    }
}

static void loop_connect(long n) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) { perror("socket"); exit(2); }
        a.sin_port = htons((uint16_t)(1 + i % 65535));
        connect(s, (struct sockaddr *)&a, sizeof(a)); /* refused, mostly: a port scan */
        close(s);
    }
}

static void loop_pipewrite(long n) {
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        char buf[65536];
        close(p[1]);
        while (read(p[0], buf, sizeof(buf)) > 0) {}
        _exit(0);
    }
    close(p[0]);
    for (long i = 0; i < n; i++)
        if (write(p[1], "x", 1) != 1) { perror("write"); exit(2); }
    close(p[1]);
    waitpid(pid, NULL, 0);
}

static int storm(long nproc, double secs) {
    volatile uint64_t *counts = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED) { perror("mmap"); return 2; }
    uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
    const char *path = open_target();
    for (long p = 0; p < nproc && p < 512; p++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) {
            uint64_t k = 0;
            while (1) {
                for (int j = 0; j < 256; j++) {
                    /* truncating: each open is a record (repeats of a plain one are a count),
                     * so the storm still outruns the ring and shows loss accounted exactly */
                    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
                    if (fd >= 0) close(fd);
                }
                k += 256;
                if (now_ns() >= end) break;
            }
            counts[p] = k;
            _exit(0);
        }
    }
    uint64_t total = 0;
    for (long p = 0; p < nproc && p < 512; p++) wait(NULL);
    for (long p = 0; p < nproc && p < 512; p++) total += counts[p];
    printf("storm %llu %.3f\n", (unsigned long long)total, secs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: micro getppid|openclose|forkexec|createdelete|connect|pipewrite N | storm NPROC SECS\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    if (strcmp(mode, "storm") == 0) return storm(n, argc > 3 ? atof(argv[3]) : 5.0);
    void (*fn)(long);
    if (strcmp(mode, "getppid") == 0) fn = loop_getppid;
    else if (strcmp(mode, "openclose") == 0) fn = loop_openclose;
    else if (strcmp(mode, "forkexec") == 0) fn = loop_forkexec;
    else if (strcmp(mode, "createdelete") == 0) fn = loop_createdelete;
    else if (strcmp(mode, "connect") == 0) fn = loop_connect;
    else if (strcmp(mode, "pipewrite") == 0) fn = loop_pipewrite;
    else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    if (!getenv("MICRO_NO_WARMUP")) fn(n / 100 + 1); /* warm up */
    uint64_t t0 = now_ns();
    fn(n);
    uint64_t t1 = now_ns();
    printf("%s %ld %.1f\n", mode, n, (double)(t1 - t0) / (double)n);
    return 0;
}
