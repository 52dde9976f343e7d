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
 *   micro webreq N       N keep-alive web requests' syscalls in one thread, over one loopback TCP
 *                        connection: client write; server recvfrom, openat (200 files of
 *                        $MICRO_DIR in turn), fstat, writev, sendfile, close; client read
 *   micro webconn N      N web-conn requests' syscalls in one thread, a new loopback TCP connection
 *                        each (as wrk -H 'Connection: close' and nginx make them): client socket,
 *                        connect; server accept4, recvfrom, openat (200 files of $MICRO_DIR in
 *                        turn), fstat, writev, sendfile, write of an access-log line, close of the
 *                        file and the connection; client read to the end, close (MICRO_ACCEPT_LOOP=1:
 *                        a non-blocking listener, and one more accept4 a connection, failing EAGAIN)
 *   micro sockpair N     N one-byte send(2) + recv(2) rounds over a unix socket pair (the socket
 *                        layer's tracepoints, no hooked syscall)
 *   Every mode prints CPU ns per op too (a 4th field: the process's CPU time, which other
 *   work on a shared host moves far less than wall time); MICRO_ROUNDS=k repeats the loop
 *   k times and keeps the lowest round's CPU figure.
 *
 * MICRO_NO_WARMUP=1 skips the warm-up round, so that a storm test knows exactly how many
 * calls were made (the storm kinds of bench/storm.py and tests/sensor/test_storms.py).
 *
 * Prints one line: "<mode> <ops> <ns_per_op>" (storm: "storm <ops> <seconds>").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
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

/* A byte sent and received back over a unix socket pair, send(2)/recv(2): two transfers of the
 * socket layer (sock_sendmsg, sock_recvmsg) a round, hooked by no syscall tracepoint of the sensor's. */
static void loop_sockpair(long n) {
    int sv[2];
    char b = 'x';
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) { perror("socketpair"); exit(2); }
    for (long i = 0; i < n; i++) {
        if (send(sv[0], &b, 1, 0) != 1 || recv(sv[1], &b, 1, 0) != 1) { perror("sockpair"); exit(2); }
    }
    close(sv[0]);
    close(sv[1]);
}

/* One keep-alive request as nginx (1 KiB static file, sendfile on) and wrk make it, with
 * both ends in this thread: the same syscalls, the same socket layer, no scheduler. */
static int web_c = -1, web_s = -1;
static char web_paths[200][4200];

static void web_setup(void) {
    const char *dir = getenv("MICRO_DIR");
    char body[1024];
    memset(body, 'x', sizeof(body));
    for (int i = 0; i < 200; i++) {
        snprintf(web_paths[i], sizeof(web_paths[i]), "%s/f%d.html", dir ? dir : ".", i);
        int fd = open(web_paths[i], O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, body, sizeof(body)) != (ssize_t)sizeof(body)) { perror("webreq file"); exit(2); }
        close(fd);
    }
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al)) { perror("webreq listen"); exit(2); }
    web_c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(web_c, (struct sockaddr *)&a, sizeof(a))) { perror("webreq connect"); exit(2); }
    web_s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (web_s < 0) { perror("webreq accept"); exit(2); }
    close(l);
    int one = 1; /* as nginx on a kept-alive connection: no Nagle wait for the body */
    setsockopt(web_s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(web_c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void loop_webreq(long n) {
    static const char req[] = "GET /f1.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    static char hdr[] = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 1024\r\n\r\n";
    char buf[8192];
    struct stat st;
    if (web_c < 0) web_setup();
    for (long i = 0; i < n; i++) {
        if (write(web_c, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) { perror("write"); exit(2); }
        if (recvfrom(web_s, buf, sizeof(buf), 0, NULL, NULL) <= 0) { perror("recvfrom"); exit(2); }
        int fd = openat(AT_FDCWD, web_paths[i % 200], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) { perror("openat"); exit(2); }
        fstat(fd, &st);
        struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr) - 1};
        writev(web_s, &iov, 1);
        off_t off = 0;
        sendfile(web_s, fd, &off, (size_t)st.st_size);
        close(fd);
        size_t want = sizeof(hdr) - 1 + (size_t)st.st_size, got = 0;
        while (got < want) {
            ssize_t r = read(web_c, buf, sizeof(buf));
            if (r <= 0) { perror("read"); exit(2); }
            got += (size_t)r;
        }
    }
}

/* One web-conn request (module comment): the server's side first, then the client's reads, as
 * nginx answers and closes before wrk has read the answer. */
static int conn_l = -1, conn_log = -1, conn_eagain = 0;
static struct sockaddr_in conn_a;

static void conn_setup(void) {
    if (web_c < 0) web_setup(); /* the files */
    conn_l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    conn_a = (struct sockaddr_in){.sin_family = AF_INET};
    conn_a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(conn_a);
    int one = 1;
    setsockopt(conn_l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (conn_l < 0 || bind(conn_l, (struct sockaddr *)&conn_a, sizeof(conn_a)) || listen(conn_l, 64) ||
        getsockname(conn_l, (struct sockaddr *)&conn_a, &al)) { perror("webconn listen"); exit(2); }
    conn_eagain = getenv("MICRO_ACCEPT_LOOP") != NULL;
    if (conn_eagain) fcntl(conn_l, F_SETFL, O_NONBLOCK);
    char path[4200];
    snprintf(path, sizeof(path), "%s/access.log", getenv("MICRO_DIR") ? getenv("MICRO_DIR") : ".");
    conn_log = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
    if (conn_log < 0) { perror("webconn log"); exit(2); }
}

static void loop_webconn(long n) {
    static const char req[] = "GET /f1.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    static char hdr[] = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n";
    static const char line[] = "127.0.0.1 - - [08/Dec/2026:00:00:00 +0000] \"GET /f1.html HTTP/1.1\" 200 1024\n";
    char buf[8192];
    struct stat st;
    if (conn_l < 0) conn_setup();
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&conn_a, sizeof(conn_a))) { perror("webconn connect"); exit(2); }
        int s = accept4(conn_l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (s < 0) { perror("webconn accept"); exit(2); }
        /* MICRO_ACCEPT_LOOP=1: as a non-blocking server's accept loop (asyncio, Go, nginx with
         * multi_accept), one more accept4 that fails with EAGAIN per connection */
        if (conn_eagain && (accept4(conn_l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK) >= 0 || errno != EAGAIN)) {
            perror("webconn accept loop"); exit(2);
        }
        if (write(c, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) { perror("write"); exit(2); }
        if (recvfrom(s, buf, sizeof(buf), 0, NULL, NULL) <= 0) { perror("recvfrom"); exit(2); }
        int fd = openat(AT_FDCWD, web_paths[i % 200], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) { perror("openat"); exit(2); }
        fstat(fd, &st);
        struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr) - 1};
        writev(s, &iov, 1);
        off_t off = 0;
        sendfile(s, fd, &off, (size_t)st.st_size);
        if (write(conn_log, line, sizeof(line) - 1) < 0) { perror("log"); exit(2); }
        close(fd);
        close(s);
        ssize_t r;
        while ((r = read(c, buf, sizeof(buf))) > 0)
            ;
        if (r < 0) { perror("read"); exit(2); }
        close(c);
    }
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
    else if (strcmp(mode, "webreq") == 0) fn = loop_webreq;
    else if (strcmp(mode, "sockpair") == 0) fn = loop_sockpair;
    else if (strcmp(mode, "webconn") == 0) fn = loop_webconn;
    else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    if (!getenv("MICRO_NO_WARMUP")) fn(n / 100 + 1); /* warm up */
    /* MICRO_ROUNDS=k: k rounds of n, the CPU figure the lowest round's (what the loop costs
     * when other work on a shared host disturbs it least), the wall figure the mean */
    long rounds = getenv("MICRO_ROUNDS") ? atol(getenv("MICRO_ROUNDS")) : 1;
    double wall = 0, best = 0;
    for (long r = 0; r < (rounds > 0 ? rounds : 1); r++) {
        uint64_t t0 = now_ns(), c0 = cpu_ns();
        fn(n);
        uint64_t t1 = now_ns(), c1 = cpu_ns();
        double c = (double)(c1 - c0) / (double)n;
        wall += (double)(t1 - t0) / (double)n;
        if (r == 0 || c < best) best = c;
    }
    printf("%s %ld %.1f %.1f\n", mode, n, wall / (double)(rounds > 0 ? rounds : 1), best);
    return 0;
}
