/*
 * bench_plain: the plain reference migration pair, the yardstick the vmig
 * benchmarks are measured against. It uses no vmig code at all: only the
 * standard content mix (mix.h) and libc.
 *
 * A sender holds an image of the standard mix in anonymous memory; a
 * receiver maps a new file in /dev/shm. One loopback TCP stream joins them:
 *
 *   receiver                                   sender
 *   create, map (and prefault) the file        generate the image  (not timed)
 *   accept  <------------------------------   connect 127.0.0.1:port
 *   'R' (ready) ---------------------------->  wait for 'R'
 *                                              t0, CPU mark: timed part begins
 *           <------------------------------   preamble: magic "VMIGPLN1", image
 *                                              size, seed, mix, t0 (CLOCK_MONOTONIC ns)
 *           <------------------------------   per run of non-zero pages:
 *   read() straight into the mapping           offset u64, length u64, bytes
 *           <------------------------------   end marker: offset 0, length 0
 *   t1, CPU mark: timed part ends              CPU mark
 *           <------------------------------   trailer: sender CPU ns
 *   verify against a regenerated image (timed separately)
 *
 * All integers are big-endian u64. Wall time is t1 - t0: from the sender's
 * first byte to the receiver having everything (CLOCK_MONOTONIC is one clock
 * for every process of the host, and the pair only ever talks over
 * 127.0.0.1). CPU time is the getrusage(RUSAGE_SELF) user+sys difference
 * across the timed part of each process, so image generation, prefault and
 * verification are excluded.
 *
 * Default mode forks both ends and prints the result; --recv and --send run
 * one end each (the receiver prints the result). In the forked mode each
 * child passes its figures to the parent through a pipe; the parent kills and
 * reaps the other child as soon as one fails, and children die with the
 * parent (PR_SET_PDEATHSIG), so nothing is left running on any error.
 */
#include "mix.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG            ((uint64_t)VMIG_MIX_PAGE_SIZE)
#define MAGIC         0x564D4947504C4E31ull /* "VMIGPLN1" */
#define PREAMBLE_SIZE 40
#define VERIFY_CHUNK  8192 /* pages regenerated per verification step (32 MiB) */

enum role { ROLE_BOTH, ROLE_SEND, ROLE_RECV };

struct opts {
    enum role role;
    uint64_t size;
    struct vmig_mix_params mix;
    bool prefault, verify, json;
    unsigned threads; /* for generation and verification; 0: all CPUs */
    unsigned port;
};

/* What each end measured; passed child -> parent through a pipe (the same
 * binary on both sides of a fork, so the struct is written as is). */
struct send_result {
    double cpu;         /* timed part, user+sys seconds */
    double gen_seconds; /* image generation (not timed) */
    uint64_t payload;   /* bytes of page data sent */
    uint64_t runs;      /* headers sent, end marker excluded */
};

struct recv_result {
    double seconds;          /* sender's first byte -> receiver has everything */
    double cpu;              /* timed part, user+sys seconds */
    double cpu_send;         /* from the sender's trailer */
    double prefault_seconds; /* 0 when cold */
    double verify_seconds;
    uint64_t payload;
    uint64_t runs;
    int verified; /* 1 equal, 0 different, -1 not checked */
};

static const char *const prog = "bench_plain";

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* User+sys CPU seconds of the whole process so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---------------------------------------------------------------- I/O */

/* Reads exactly n bytes. Returns 0, -1 on error (errno set), -2 on EOF. */
static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -2;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Writes all of iov[0..n) (consumed in place). Returns 0 or -1 (errno set). */
static int send_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t done = (size_t)w;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return send_iov(fd, &iov, 1);
}

static const char *read_error(int rc)
{
    return rc == -2 ? "connection closed early" : strerror(errno);
}

/* A listening TCP socket on 127.0.0.1:port (0: any free port, stored back). */
static int listen_loopback(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket: %s", strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
        fail("setsockopt SO_REUSEADDR: %s", strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        fail("listen on 127.0.0.1:%u: %s", *port, strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int connect_loopback(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int err = errno;
        if (err == EINTR) {
            /* The connection goes on in the background: wait for its outcome. */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof(err);
            int r;
            while ((r = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
                ;
            if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
        }
        if (err != 0) {
            fail("connect to 127.0.0.1:%u: %s", port, strerror(err));
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int accept_one(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != EINTR)
            return fail("accept: %s", strerror(errno));
    }
}

/* ------------------------------------------------------------- sender */

/* Plain C zero check: OR eight 8-byte words at a time, stop at the first
 * non-zero block (the compiler may vectorise it; no SIMD library). */
static bool page_is_zero(const unsigned char *page)
{
    const uint64_t *w = (const uint64_t *)(const void *)page;
    for (size_t i = 0; i < PG / 8; i += 8) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return false;
    }
    return true;
}

/* Sends one run's header and bytes (straight from the image). */
static int send_run(int fd, const unsigned char *image, uint64_t off, uint64_t len)
{
    unsigned char hdr[16];
    put_be64(hdr, off);
    put_be64(hdr + 8, len);
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof(hdr)},
                           {.iov_base = (void *)(image + off), .iov_len = (size_t)len}};
    return send_iov(fd, iov, len ? 2 : 1);
}

/* The sender end: generates the image, then connects to the receiver on
 * 127.0.0.1:o->port and sends it. */
static int run_sender(const struct opts *o, struct send_result *res)
{
    memset(res, 0, sizeof(*res));
    int rc = -1, fd = -1;
    unsigned char *image =
        mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (image == MAP_FAILED)
        return fail("sender: mmap %" PRIu64 " bytes: %s", o->size, strerror(errno));

    /* Not timed: generate the image, writing zero pages too, so that every
     * page is resident like a running guest's RAM. */
    uint64_t g0 = now_ns();
    int err = vmig_mix_fill(&o->mix, image, o->size, o->threads, VMIG_MIX_WRITE_ZEROS);
    if (err) {
        fail("sender: generating the image: %s", strerror(-err));
        goto out;
    }
    res->gen_seconds = (double)(now_ns() - g0) / 1e9;

    fd = connect_loopback(o->port);
    if (fd < 0)
        goto out;
    unsigned char ready;
    int r = read_full(fd, &ready, 1);
    if (r != 0 || ready != 'R') {
        fail("sender: waiting for the receiver: %s",
             r ? read_error(r) : "unexpected byte instead of 'R'");
        goto out;
    }

    /* Timed part. */
    double cpu0 = cpu_seconds();
    unsigned char pre[PREAMBLE_SIZE];
    put_be64(pre, MAGIC);
    put_be64(pre + 8, o->size);
    put_be64(pre + 16, o->mix.seed);
    put_be64(pre + 24, (uint64_t)o->mix.pct[0] << 16 | o->mix.pct[1] << 8 | o->mix.pct[2]);
    put_be64(pre + 32, now_ns());
    if (send_all(fd, pre, sizeof(pre)) != 0) {
        fail("sender: sending the preamble: %s", strerror(errno));
        goto out;
    }
    uint64_t npages = o->size / PG, start = 0;
    bool in_run = false;
    for (uint64_t i = 0; i <= npages; i++) {
        bool zero = i == npages || page_is_zero(image + i * PG);
        if (!zero && !in_run) {
            start = i;
            in_run = true;
        } else if (zero && in_run) {
            if (send_run(fd, image, start * PG, (i - start) * PG) != 0) {
                fail("sender: sending pages %" PRIu64 "..%" PRIu64 ": %s", start, i - 1,
                     strerror(errno));
                goto out;
            }
            res->payload += (i - start) * PG;
            res->runs++;
            in_run = false;
        }
    }
    if (send_run(fd, image, 0, 0) != 0) {
        fail("sender: sending the end marker: %s", strerror(errno));
        goto out;
    }
    res->cpu = cpu_seconds() - cpu0;

    unsigned char trailer[8];
    put_be64(trailer, (uint64_t)(res->cpu * 1e9));
    if (send_all(fd, trailer, sizeof(trailer)) != 0) {
        fail("sender: sending the trailer: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = fail("sender: close: %s", strerror(errno));
    munmap(image, o->size);
    return rc;
}

/* ----------------------------------------------------------- receiver */

/* Compares dst with the image regenerated window by window. Returns 1 equal,
 * 0 different (first differing page reported), -1 error. */
static int verify(const struct opts *o, const unsigned char *dst)
{
    uint64_t npages = o->size / PG;
    struct vmig_mix_plan *plan;
    int err = vmig_mix_plan_create(&o->mix, npages, &plan);
    if (err)
        return fail("receiver: planning the expected image: %s", strerror(-err));
    size_t chunk = npages < VERIFY_CHUNK ? (size_t)npages : VERIFY_CHUNK;
    unsigned char *exp = malloc(chunk ? chunk * PG : 1);
    if (!exp) {
        vmig_mix_plan_free(plan);
        return fail("receiver: no memory for the verification buffer");
    }
    int result = 1;
    for (uint64_t first = 0; first < npages && result == 1; first += chunk) {
        uint64_t n = npages - first < chunk ? npages - first : chunk;
        vmig_mix_plan_fill(plan, exp, first, n, o->threads, VMIG_MIX_WRITE_ZEROS);
        if (memcmp(exp, dst + first * PG, n * PG) == 0)
            continue;
        for (uint64_t i = 0; i < n; i++) {
            if (memcmp(exp + i * PG, dst + (first + i) * PG, PG) != 0) {
                fail("receiver: verification failed: page %" PRIu64 " (offset 0x%" PRIx64
                     ", a %s page) differs from the source",
                     first + i, (first + i) * PG,
                     vmig_mix_class_name(vmig_mix_plan_class(plan, first + i)));
                break;
            }
        }
        result = 0;
    }
    free(exp);
    vmig_mix_plan_free(plan);
    return result;
}

/* The receiver end, on an already listening socket (closed here). */
static int run_receiver(const struct opts *o, int lfd, struct recv_result *res)
{
    memset(res, 0, sizeof(*res));
    res->verified = -1;
    int rc = -1, fd = -1;
    unsigned char *dst = MAP_FAILED;

    /* The destination: a new /dev/shm file, unlinked as soon as it is open so
     * that nothing is left behind whatever happens to this process. */
    char path[] = "/dev/shm/bench-plain-XXXXXX";
    int mfd = mkostemp(path, O_CLOEXEC);
    if (mfd < 0) {
        fail("receiver: creating %s: %s", path, strerror(errno));
        goto out;
    }
    if (unlink(path) != 0) {
        fail("receiver: unlink %s: %s", path, strerror(errno));
        goto out;
    }
    if (ftruncate(mfd, (off_t)o->size) != 0) {
        fail("receiver: ftruncate %s to %" PRIu64 " bytes: %s", path, o->size, strerror(errno));
        goto out;
    }
    dst = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (dst == MAP_FAILED) {
        fail("receiver: mmap %s: %s", path, strerror(errno));
        goto out;
    }
    if (o->prefault) {
        /* Not timed: a write to every page allocates the whole file and maps
         * every page. */
        uint64_t p0 = now_ns();
        for (uint64_t off = 0; off < o->size; off += PG)
            *(volatile unsigned char *)(dst + off) = 0;
        res->prefault_seconds = (double)(now_ns() - p0) / 1e9;
    }

    fd = accept_one(lfd);
    if (fd < 0)
        goto out;
    if (send_all(fd, "R", 1) != 0) {
        fail("receiver: sending ready: %s", strerror(errno));
        goto out;
    }

    /* Timed part (the wait for the sender's first byte costs no CPU). */
    double cpu0 = cpu_seconds();
    unsigned char pre[PREAMBLE_SIZE];
    int r = read_full(fd, pre, sizeof(pre));
    if (r != 0) {
        fail("receiver: reading the preamble: %s", read_error(r));
        goto out;
    }
    uint64_t pct = (uint64_t)o->mix.pct[0] << 16 | o->mix.pct[1] << 8 | o->mix.pct[2];
    if (get_be64(pre) != MAGIC) {
        fail("receiver: the peer is not a bench_plain sender (bad magic 0x%016" PRIx64 ")",
             get_be64(pre));
        goto out;
    }
    if (get_be64(pre + 8) != o->size || get_be64(pre + 16) != o->mix.seed ||
        get_be64(pre + 24) != pct) {
        uint64_t sp = get_be64(pre + 24);
        fail("receiver: the sender's image is %" PRIu64 " bytes, seed %" PRIu64
             ", mix %u/%u/%u; this receiver expects %" PRIu64 " bytes, seed %" PRIu64
             ", mix %u/%u/%u (give both ends the same --size, --seed and --mix)",
             get_be64(pre + 8), get_be64(pre + 16), (unsigned)(sp >> 16 & 0xFF),
             (unsigned)(sp >> 8 & 0xFF), (unsigned)(sp & 0xFF), o->size, o->mix.seed, o->mix.pct[0],
             o->mix.pct[1], o->mix.pct[2]);
        goto out;
    }
    uint64_t t0 = get_be64(pre + 32);
    for (;;) {
        unsigned char hdr[16];
        r = read_full(fd, hdr, sizeof(hdr));
        if (r != 0) {
            fail("receiver: reading header %" PRIu64 ": %s", res->runs, read_error(r));
            goto out;
        }
        uint64_t off = get_be64(hdr), len = get_be64(hdr + 8);
        if (len == 0)
            break;
        if (off >= o->size || len > o->size - off) {
            fail("receiver: header %" PRIu64 ": offset 0x%" PRIx64 " length 0x%" PRIx64
                 " beyond the image (size 0x%" PRIx64 ")",
                 res->runs, off, len, o->size);
            goto out;
        }
        r = read_full(fd, dst + off, (size_t)len);
        if (r != 0) {
            fail("receiver: reading %" PRIu64 " bytes at offset 0x%" PRIx64 ": %s", len, off,
                 read_error(r));
            goto out;
        }
        res->payload += len;
        res->runs++;
    }
    uint64_t t1 = now_ns();
    res->cpu = cpu_seconds() - cpu0;
    res->seconds = (double)(t1 - t0) / 1e9;

    unsigned char trailer[8];
    r = read_full(fd, trailer, sizeof(trailer));
    if (r != 0) {
        fail("receiver: reading the trailer: %s", read_error(r));
        goto out;
    }
    res->cpu_send = (double)get_be64(trailer) / 1e9;

    if (o->verify) {
        uint64_t v0 = now_ns();
        res->verified = verify(o, dst);
        res->verify_seconds = (double)(now_ns() - v0) / 1e9;
        if (res->verified < 0)
            goto out;
    }
    rc = 0;
out:
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = fail("receiver: close: %s", strerror(errno));
    if (lfd >= 0)
        close(lfd);
    if (dst != MAP_FAILED)
        munmap(dst, o->size);
    if (mfd >= 0)
        close(mfd);
    return rc;
}

/* ------------------------------------------------------------- output */

static void print_result(const struct opts *o, const struct recv_result *r, double gen_seconds)
{
    if (o->json) {
        printf("{\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"cpu_send\":%.6f,\"cpu_recv\":%.6f,"
               "\"verified\":%s,\"payload_bytes\":%" PRIu64 ",\"runs\":%" PRIu64
               ",\"prefault\":%s,\"verify_seconds\":%.6f,\"prefault_seconds\":%.6f",
               o->size, r->seconds, r->cpu_send, r->cpu,
               r->verified < 0 ? "null"
               : r->verified   ? "true"
                               : "false",
               r->payload, r->runs, o->prefault ? "true" : "false", r->verify_seconds,
               r->prefault_seconds);
        if (gen_seconds >= 0)
            printf(",\"gen_seconds\":%.6f", gen_seconds);
        printf("}\n");
    } else {
        double gib = (double)o->size / (1u << 30);
        printf("bench_plain: %.2f GiB image (%.2f GiB of data in %" PRIu64 " runs), %s: "
               "%.3f s = %.2f GiB/s; cpu send %.3f s, recv %.3f s; ",
               gib, (double)r->payload / (1u << 30), r->runs, o->prefault ? "prefaulted" : "cold",
               r->seconds, r->seconds > 0 ? gib / r->seconds : 0.0, r->cpu_send, r->cpu);
        if (r->verified < 0)
            printf("not verified\n");
        else
            printf("%s in %.3f s\n", r->verified ? "verified" : "VERIFICATION FAILED",
                   r->verify_seconds);
    }
    fflush(stdout);
}

/* ------------------------------------------------------- process pair */

/* Exit codes of the children: 0 ok, 1 error, 3 verification mismatch. */
#define EXIT_MISMATCH 3

static void child_setup(pid_t parent)
{
    /* Die with the parent, whatever kills it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(1);
}

static void kill_reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static bool exited_ok(int st, int *code)
{
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == EXIT_MISMATCH);
}

static int run_pair(const struct opts *o)
{
    struct opts oc = *o;
    int lfd = listen_loopback(&oc.port);
    if (lfd < 0)
        return 1;
    int rp[2] = {-1, -1}, sp[2] = {-1, -1};
    if (pipe2(rp, O_CLOEXEC) != 0 || pipe2(sp, O_CLOEXEC) != 0) {
        fail("pipe: %s", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pids[2] = {-1, -1}; /* receiver, sender */

    pids[0] = fork();
    if (pids[0] < 0) {
        fail("fork: %s", strerror(errno));
        return 1;
    }
    if (pids[0] == 0) {
        child_setup(parent);
        close(rp[0]);
        close(sp[0]);
        close(sp[1]);
        struct recv_result res;
        if (run_receiver(&oc, lfd, &res) != 0)
            _exit(1);
        if (write(rp[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
            _exit(1);
        _exit(res.verified == 0 ? EXIT_MISMATCH : 0);
    }
    close(lfd);
    close(rp[1]);

    pids[1] = fork();
    if (pids[1] < 0) {
        fail("fork: %s", strerror(errno));
        kill_reap(pids[0]);
        return 1;
    }
    if (pids[1] == 0) {
        child_setup(parent);
        close(rp[0]);
        close(sp[0]);
        struct send_result res;
        if (run_sender(&oc, &res) != 0)
            _exit(1);
        if (write(sp[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
            _exit(1);
        _exit(0);
    }
    close(sp[1]);

    /* Reap both; the first failure kills the other. */
    bool ok = true;
    int codes[2] = {0, 0};
    for (int left = 2; left > 0;) {
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p < 0) {
            if (errno == EINTR)
                continue;
            fail("waitpid: %s", strerror(errno));
            kill_reap(pids[0]);
            kill_reap(pids[1]);
            return 1;
        }
        int i = p == pids[0] ? 0 : p == pids[1] ? 1 : -1;
        if (i < 0)
            continue;
        pids[i] = -1;
        left--;
        if (!exited_ok(st, &codes[i])) {
            ok = false;
            fail("the %s failed (%s %d)%s", i ? "sender" : "receiver",
                 WIFEXITED(st) ? "exit status" : "signal",
                 WIFEXITED(st) ? codes[i] : codes[i] - 128,
                 pids[!i] > 0 ? "; stopping the other end" : "");
            kill_reap(pids[!i]);
            if (pids[!i] > 0) {
                pids[!i] = -1;
                left--;
            }
        }
    }

    struct recv_result rr;
    struct send_result sr;
    int r1 = ok ? read_full(rp[0], &rr, sizeof(rr)) : -1;
    int r2 = ok ? read_full(sp[0], &sr, sizeof(sr)) : -1;
    close(rp[0]);
    close(sp[0]);
    if (!ok)
        return 1;
    if (r1 != 0 || r2 != 0) {
        fail("a child exited without reporting its result");
        return 1;
    }
    /* Each child's own measurement, from its pipe (the trailer copy the
     * receiver holds is the same figure rounded to nanoseconds). */
    rr.cpu_send = sr.cpu;
    print_result(o, &rr, sr.gen_seconds);
    return rr.verified == 0 ? 1 : 0;
}

/* -------------------------------------------------------------- main */

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return -1;
    }
    if (shift) {
        end++;
        if (*end == 'i' && end[1] == 'B')
            end += 2;
        else if (*end == 'B')
            end++;
    }
    if (*end != '\0' || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_plain [options]                 fork a receiver and a sender, print "
               "the result\n"
               "       bench_plain --recv [--port N] [opts]  receiver only (prints 'port N' when "
               "N is 0)\n"
               "       bench_plain --send --port N [opts]    sender only\n"
               "\n"
               "The plain reference migration: one loopback TCP stream, zero pages skipped,\n"
               "every run of non-zero pages sent as (offset, length, bytes) with sendmsg() from\n"
               "the image and read() straight into a MAP_SHARED file in /dev/shm. Uses no vmig\n"
               "code. Timed: the sender's first byte to the receiver having everything.\n"
               "\n"
               "options:\n"
               "  --size SIZE      image size, bytes or with K/M/G/T suffix (default 4G); a\n"
               "                   multiple of 4096\n"
               "  --seed N         mix seed (default 1)\n"
               "  --mix Z/T/R      zero/text/random page percentages (default 50/25/25)\n"
               "  --prefault       write every destination page before the timed part\n"
               "                   (default: cold, the file is never touched before)\n"
               "  --no-verify      do not compare the destination with the source\n"
               "  --threads N      threads for generating and verifying (default: all CPUs)\n"
               "  --json           print one JSON object: bytes, seconds, cpu_send, cpu_recv,\n"
               "                   verified (null if not checked), and details\n"
               "  --send, --recv   run one end only; both ends need the same --size/--seed/--mix\n"
               "  --port N         TCP port on 127.0.0.1 (required with --send)\n"
               "  -h, --help       this text\n");
}

int main(int argc, char **argv)
{
    struct opts o = {.role = ROLE_BOTH, .size = 4ull << 30, .verify = true};
    vmig_mix_params_default(&o.mix);
    bool have_port = false;
    enum {
        O_SIZE = 256,
        O_SEED,
        O_MIX,
        O_PREFAULT,
        O_NOVERIFY,
        O_THREADS,
        O_JSON,
        O_SEND,
        O_RECV,
        O_PORT
    };
    static const struct option longopts[] = {
        {"size", required_argument, NULL, O_SIZE},
        {"seed", required_argument, NULL, O_SEED},
        {"mix", required_argument, NULL, O_MIX},
        {"prefault", no_argument, NULL, O_PREFAULT},
        {"no-verify", no_argument, NULL, O_NOVERIFY},
        {"threads", required_argument, NULL, O_THREADS},
        {"json", no_argument, NULL, O_JSON},
        {"send", no_argument, NULL, O_SEND},
        {"recv", no_argument, NULL, O_RECV},
        {"port", required_argument, NULL, O_PORT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        char *end;
        unsigned long long v;
        switch (c) {
        case O_SIZE:
            if (parse_size(optarg, &o.size) != 0 || o.size == 0 || o.size % PG ||
                o.size > (uint64_t)SIZE_MAX || o.size > (uint64_t)INT64_MAX) {
                fail("--size '%s': need a positive multiple of 4096 (e.g. 4G, 512M)", optarg);
                return 2;
            }
            break;
        case O_SEED:
            errno = 0;
            v = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || *optarg == '-') {
                fail("--seed '%s': need an unsigned 64-bit number", optarg);
                return 2;
            }
            o.mix.seed = v;
            break;
        case O_MIX:
            if (vmig_mix_params_parse_pct(&o.mix, optarg) != 0) {
                fail("--mix '%s': need Z/T/R percentages summing to 100, e.g. 50/25/25", optarg);
                return 2;
            }
            break;
        case O_PREFAULT:
            o.prefault = true;
            break;
        case O_NOVERIFY:
            o.verify = false;
            break;
        case O_THREADS:
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || *optarg == '-' || v > 1024) {
                fail("--threads '%s': need 0..1024", optarg);
                return 2;
            }
            o.threads = (unsigned)v;
            break;
        case O_JSON:
            o.json = true;
            break;
        case O_SEND:
        case O_RECV:
            if (o.role != ROLE_BOTH) {
                fail("give at most one of --send and --recv");
                return 2;
            }
            o.role = c == O_SEND ? ROLE_SEND : ROLE_RECV;
            break;
        case O_PORT:
            errno = 0;
            v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || v > 65535) {
                fail("--port '%s': need 0..65535", optarg);
                return 2;
            }
            o.port = (unsigned)v;
            have_port = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fail("unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    char msg[160];
    if (vmig_mix_params_check(&o.mix, msg, sizeof(msg))) {
        fail("%s", msg);
        return 2;
    }
    if (o.role == ROLE_SEND && (!have_port || o.port == 0)) {
        fail("--send needs --port N, the receiver's port");
        return 2;
    }
    if (o.role == ROLE_BOTH && have_port) {
        fail("--port is for --send and --recv; the forked pair picks a free port");
        return 2;
    }

    switch (o.role) {
    case ROLE_SEND: {
        struct send_result sr;
        if (run_sender(&o, &sr) != 0)
            return 1;
        if (o.json)
            printf("{\"cpu_send\":%.6f,\"payload_bytes\":%" PRIu64 ",\"runs\":%" PRIu64
                   ",\"gen_seconds\":%.6f}\n",
                   sr.cpu, sr.payload, sr.runs, sr.gen_seconds);
        else
            printf("bench_plain sender: sent %" PRIu64 " bytes in %" PRIu64
                   " runs; cpu %.3f s (image generated in %.3f s)\n",
                   sr.payload, sr.runs, sr.cpu, sr.gen_seconds);
        return 0;
    }
    case ROLE_RECV: {
        bool ephemeral = o.port == 0;
        int lfd = listen_loopback(&o.port);
        if (lfd < 0)
            return 1;
        if (ephemeral) {
            printf("port %u\n", o.port);
            fflush(stdout);
        }
        struct recv_result rr;
        if (run_receiver(&o, lfd, &rr) != 0)
            return 1;
        print_result(&o, &rr, -1);
        return rr.verified == 0 ? 1 : 0;
    }
    case ROLE_BOTH:
        break;
    }
    return run_pair(&o);
}
