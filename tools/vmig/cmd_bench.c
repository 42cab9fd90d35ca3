/*
 * vmig bench: generate an image with the standard content mix, migrate it
 * from this process to a receiver process over loopback, verify, report.
 *
 *   parent (sender)                          child (receiver)
 *     open --netns-src/--netns-dst
 *     fork ─────────────────────────────────▶ enter --netns-dst
 *     enter --netns-src                        new file in /dev/shm, mapped
 *                                              listen on port 0, send URI ──┐
 *     generate the image (not timed)                                        │
 *     read URI ◀────────────────────────────────────────────────────────────┘
 *     vmig_migrate (timed, progress)  ◀────▶  vmig_incoming_run
 *     read the receiver's figures ◀──────────  "rc cpu verify_seconds msg"
 *
 * A network namespace belongs to a thread, and a new thread starts in its
 * creator's: both processes enter theirs right after the fork, while each is
 * still single-threaded, so that every thread they make later (the image
 * fill, the migration's channels) connects or listens there.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "live.h"
#include "mix.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void bench_help(FILE *f)
{
    fprintf(f, "Usage: vmig bench [OPTIONS]\n\n"
               "Generate a memory image with the standard content mix, migrate it from this\n"
               "process to a receiver process over loopback (or across an emulated link, see\n"
               "below), verify it, and print the figures:\n"
               "time, throughput, pages, and the CPU seconds of each process during the\n"
               "migration (image generation and destination preparation are not counted).\n\n"
               "The standard mix: 4 KiB pages in runs of 1..31 pages; each run's class drawn\n"
               "in proportion to what remains of each class: 50%% zero pages, 25%% English-like\n"
               "text (about 3x with zstd -1), 25%% random; deterministic from the seed.\n\n"
               "Options:\n"
               "      --size SIZE         image size, K/M/G suffixes (default 4G)\n"
               "      --mix Z/T/R         zero/text/random percentages (default 50/25/25)\n"
               "      --seed N            seed of the image (default 1)\n"
               "      --touch-zero        write the zero pages too (a guest that zeroed its\n"
               "                          memory); by default they are never touched\n"
               "      --cold              destination memory never touched before (default): a\n"
               "                          new file in --dest-dir, pages allocated as data lands\n"
               "      --prefault          populate the destination file before the migration\n"
               "      --dest-dir DIR      where the destination file is made (default /dev/shm)\n"
               "      --transport T       tcp (127.0.0.1, default) or unix\n\n"
               "Two hosts on one machine (e.g. made by bench/linkemu.sh):\n"
               "      --netns-dst NS      the receiver enters the network namespace NS before it\n"
               "                          listens: a name from 'ip netns' (/run/netns/NS), or a\n"
               "                          path (one with a '/', e.g. /proc/PID/ns/net)\n"
               "      --netns-src NS      the sender enters NS before it connects (the image and\n"
               "                          the destination file are in memory: only the\n"
               "                          network changes)\n"
               "      --host ADDR         the receiver listens on ADDR (an IPv4 or IPv6 address\n"
               "                          or a host name; default 127.0.0.1) and the sender\n"
               "                          connects there; needed when the two namespaces\n"
               "                          differ. tcp only\n"
               "  Entering a namespace needs CAP_SYS_ADMIN. Example, a 1 Gbit/s link:\n"
               "    bench/linkemu.sh up l1 1gbit 0.1ms\n"
               "    vmig bench --netns-src l1-src --netns-dst l1-dst --host 10.201.0.2\n"
               "    bench/linkemu.sh down l1\n\n"
               "Live mode (the source keeps changing while it migrates):\n"
               "      --live              writer threads dirty the source image during the\n"
               "                          migration, tracked by the built-in userfaultfd\n"
               "                          tracker (dirty-track wp unless set); at switchover\n"
               "                          they stop, and the destination's memory is compared\n"
               "                          byte for byte with the source's at that moment\n"
               "      --dirty-rate RATE   bytes/s the writers dirty, K/M/G suffixes (powers\n"
               "                          of 1024; default 100000000, i.e. 100 MB/s); 0 = as\n"
               "                          fast as they can\n"
               "      --hot-set SIZE      the writers write the first SIZE bytes of the image\n"
               "                          (default 512M, at most the image)\n"
               "      --writers N         writer threads, 1..64 (default 2)\n"
               "      --redirty PCT       share of writes that hit a recently written page\n"
               "                          again (default 0)\n"
               "  Throttling slows the writers the way a VMM slows vCPUs (a duty cycle).\n"
               "  The summary adds passes, downtime, throttle and the writers' own rate.\n\n");
    cli_print_common_help(f);
}

typedef struct bench_cfg {
    uint64_t size;
    struct vmig_mix_params mix;
    bool prefault;
    bool touch_zero;
    bool unix_sock;
    const char *dest_dir;
    const char *netns_src, *netns_dst; /* NULL: stay in this one */
    const char *host;                  /* the receiver's tcp address */
    cli_opts o;
    bool live;
    struct vmig_live_params lp;
} bench_cfg;

/* The device state of the bench's pretend VM: 64 KiB from the seed. */
#define BENCH_STATE_LEN 65536u

static uint64_t state_sum(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void state_fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 131 + seed * 7) >> 3);
}

/* Receiver: the state that arrived. */
typedef struct recv_state {
    size_t len;
    uint64_t sum;
    int loads;
} recv_state;

static int recv_load_state(void *o, const void *buf, size_t len)
{
    recv_state *r = o;
    r->len = len;
    r->sum = state_sum(buf, len);
    r->loads++;
    return 0;
}

/* Sender: the VM is the writer threads. */
static int vm_stop(void *o)
{
    vmig_live_pause(o);
    return 0;
}
static void vm_resume(void *o)
{
    vmig_live_resume(o);
}
static void vm_throttle(void *o, unsigned pct)
{
    vmig_live_throttle(o, pct);
}
static int vm_save_state(void *o, void **buf, size_t *len)
{
    (void)o;
    *buf = malloc(BENCH_STATE_LEN);
    if (!*buf)
        return VMIG_ENOMEM;
    state_fill(*buf, BENCH_STATE_LEN, 1);
    *len = BENCH_STATE_LEN;
    return 0;
}

static int write_line(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n + 1 < len) {
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = 0;
    return n ? 0 : -1;
}

/*
 * Open the network namespace `ns` (a name in /run/netns, or a path) for
 * setns(); -1 after printing why not.
 */
static int netns_open(const char *opt, const char *ns)
{
    char path[4096];
    if (strchr(ns, '/'))
        snprintf(path, sizeof(path), "%s", ns);
    else
        snprintf(path, sizeof(path), "/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fprintf(stderr, "vmig bench: %s '%s': cannot open %s: %s\n", opt, ns, path,
                strerror(errno));
    return fd;
}

/* The receiver process. Enters the namespace `netns` (if >= 0) first.
 * Reports on `out`; never returns. */
static void receiver(const bench_cfg *c, int netns, int out)
{
    char path[512], line[1024], sock[128], listen_uri[300];
    if (netns >= 0) {
        if (setns(netns, CLONE_NEWNET) < 0) {
            snprintf(line, sizeof(line), "ERR cannot enter the network namespace '%s': %s\n",
                     c->netns_dst, strerror(errno));
            write_line(out, line);
            _exit(1);
        }
        close(netns);
    }
    /* An IPv6 address goes in brackets (tcp:[::1]:0). */
    snprintf(listen_uri, sizeof(listen_uri),
             strchr(c->host, ':') && c->host[0] != '[' ? "tcp:[%s]:0" : "tcp:%s:0", c->host);
    snprintf(path, sizeof(path), "%s/vmig-bench-%d.img", c->dest_dir, (int)getpid());
    snprintf(sock, sizeof(sock), "unix:/tmp/vmig-bench-%d.sock", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)c->size) < 0) {
        snprintf(line, sizeof(line), "ERR cannot create %s: %s\n", path, strerror(errno));
        write_line(out, line);
        if (fd >= 0)
            unlink(path);
        _exit(1);
    }
    void *mem = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        snprintf(line, sizeof(line), "ERR mmap %s: %s\n", path, strerror(errno));
        write_line(out, line);
        unlink(path);
        _exit(1);
    }
    if (c->prefault && madvise(mem, c->size, MADV_POPULATE_WRITE) < 0) {
        snprintf(line, sizeof(line), "ERR prefault: %s\n", strerror(errno));
        write_line(out, line);
        unlink(path);
        _exit(1);
    }
    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = vmig_session_create(&s, VMIG_ROLE_DEST, &c->o.params, &err);
    recv_state rs = {0};
    vmig_vm_ops ops = {.load_state = recv_load_state};
    if (!rc)
        rc = vmig_ram_add(s, "ram", mem, c->size, 4096, VMIG_RAM_ZEROED, &err);
    if (!rc)
        rc = vmig_set_vm_ops(s, &ops, &rs);
    if (!rc)
        rc = vmig_incoming_listen(s, c->unix_sock ? sock : listen_uri, &err);
    if (rc) {
        snprintf(line, sizeof(line), "ERR %s\n", err.msg);
        write_line(out, line);
        vmig_session_free(s);
        unlink(path);
        _exit(1);
    }
    char uri[256];
    vmig_incoming_uri(s, uri, sizeof(uri));
    snprintf(line, sizeof(line), "URI %s\n", uri);
    write_line(out, line);
    double cpu0 = cli_process_cpu();
    rc = vmig_incoming_run(s, &err);
    double cpu = cli_process_cpu() - cpu0;
    vmig_stats st;
    vmig_stats_get(s, &st);
    snprintf(line, sizeof(line), "RESULT %d %.6f %.6f %.6f %zu %llu %s\n", rc, cpu,
             (double)st.verify_ns / 1e9, (double)st.cpu_ns / 1e9, rs.len,
             (unsigned long long)rs.sum, rc ? err.msg : "ok");
    write_line(out, line);
    vmig_session_free(s);
    munmap(mem, c->size);
    close(fd);
    unlink(path);
    _exit(rc ? 1 : 0);
}

/* Stop a receiver that will not finish by itself (it waits for a sender
 * that is not coming), and remove the file it can no longer remove: once it
 * is dead (it cannot make the file any more) and before it is reaped (its
 * pid, which names the file, cannot be another process's yet). */
static void receiver_kill(const bench_cfg *c, pid_t child)
{
    char path[512];
    siginfo_t si;
    kill(child, SIGKILL);
    while (waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    snprintf(path, sizeof(path), "%s/vmig-bench-%d.img", c->dest_dir, (int)child);
    unlink(path);
    waitpid(child, NULL, 0);
}

static int run_migrate(vmig_session *s, void *arg, vmig_error *err)
{
    return vmig_migrate(s, arg, err);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int cmd_bench(int argc, char **argv)
{
    bench_cfg c = {
        .size = 4ull << 30, .dest_dir = "/dev/shm", .host = "127.0.0.1", .o = {.progress = -1}};
    bool host_set = false;
    vmig_params_init(&c.o.params);
    vmig_mix_params_default(&c.mix);
    vmig_live_params_default(&c.lp);
    c.lp.rate = 100000000;
    c.lp.hot_len = 512ull << 20;
    for (int i = 1; i < argc; i++) {
        /* The bench's own options first: --prefault is also the name of a
         * migration parameter (--prefault none|ahead), which would take the
         * next argument as its value. */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_help(stdout);
            return 0;
        } else if (!strcmp(a, "--size") && v) {
            i++;
            if (vmig_parse_size(v, &c.size) || c.size == 0 || c.size % 4096) {
                fprintf(stderr, "vmig bench: --size '%s' must be a positive multiple of 4K\n", v);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--mix") && v) {
            i++;
            if (vmig_mix_params_parse_pct(&c.mix, v)) {
                fprintf(stderr,
                        "vmig bench: --mix '%s' must be Z/T/R percentages summing to "
                        "100\n",
                        v);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--seed") && v) {
            i++;
            char *end;
            c.mix.seed = strtoull(v, &end, 0);
            if (*end) {
                fprintf(stderr, "vmig bench: bad --seed '%s'\n", v);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--touch-zero")) {
            c.touch_zero = true;
        } else if (!strcmp(a, "--cold")) {
            c.prefault = false;
        } else if (!strcmp(a, "--prefault")) {
            c.prefault = true;
        } else if (!strcmp(a, "--live")) {
            c.live = true;
        } else if (!strcmp(a, "--dirty-rate") && v) {
            i++;
            if (vmig_parse_size(v, &c.lp.rate)) {
                fprintf(stderr, "vmig bench: --dirty-rate '%s' is not a rate (bytes/s)\n", v);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--hot-set") && v) {
            i++;
            if (vmig_parse_size(v, &c.lp.hot_len) || c.lp.hot_len == 0 || c.lp.hot_len % 4096) {
                fprintf(stderr, "vmig bench: --hot-set '%s' must be a positive multiple of 4K\n",
                        v);
                return CLI_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--writers") && v) {
            i++;
            char *end;
            unsigned long w = strtoul(v, &end, 10);
            if (*end || w < 1 || w > VMIG_LIVE_WRITERS_MAX) {
                fprintf(stderr, "vmig bench: --writers '%s' is not in 1..%u\n", v,
                        VMIG_LIVE_WRITERS_MAX);
                return CLI_EXIT_USAGE;
            }
            c.lp.writers = (unsigned)w;
        } else if (!strcmp(a, "--redirty") && v) {
            i++;
            char *end;
            unsigned long r = strtoul(v, &end, 10);
            if (*end || r > 100) {
                fprintf(stderr, "vmig bench: --redirty '%s' is not in 0..100\n", v);
                return CLI_EXIT_USAGE;
            }
            c.lp.redirty_pct = (unsigned)r;
        } else if (!strcmp(a, "--dest-dir") && v) {
            c.dest_dir = argv[++i];
        } else if (!strcmp(a, "--transport") && v) {
            i++;
            if (strcmp(v, "tcp") && strcmp(v, "unix")) {
                fprintf(stderr, "vmig bench: --transport is tcp or unix\n");
                return CLI_EXIT_USAGE;
            }
            c.unix_sock = !strcmp(v, "unix");
        } else if (!strcmp(a, "--netns-src") && v) {
            c.netns_src = argv[++i];
        } else if (!strcmp(a, "--netns-dst") && v) {
            c.netns_dst = argv[++i];
        } else if (!strcmp(a, "--host") && v) {
            i++;
            if (!*v || strlen(v) > 253) {
                fprintf(stderr, "vmig bench: --host '%s' is not an address\n", v);
                return CLI_EXIT_USAGE;
            }
            c.host = v;
            host_set = true;
        } else {
            int r = cli_common_opt(&c.o, argc, argv, &i);
            if (r < 0)
                return CLI_EXIT_USAGE;
            if (r == 0) {
                fprintf(stderr, "vmig bench: unknown option '%s' (see 'vmig bench --help')\n", a);
                return CLI_EXIT_USAGE;
            }
        }
    }
    char msg[200];
    if (vmig_mix_params_check(&c.mix, msg, sizeof(msg))) {
        fprintf(stderr, "vmig bench: %s\n", msg);
        return CLI_EXIT_USAGE;
    }
    if (host_set && c.unix_sock) {
        fprintf(stderr, "vmig bench: --host is for --transport tcp\n");
        return CLI_EXIT_USAGE;
    }
    if (!host_set && !c.unix_sock && (c.netns_src || c.netns_dst) &&
        (!c.netns_src || !c.netns_dst || strcmp(c.netns_src, c.netns_dst))) {
        fprintf(stderr, "vmig bench: the sender and the receiver are in different network "
                        "namespaces: --host must name the receiver's address\n");
        return CLI_EXIT_USAGE;
    }
    if (c.live) {
        c.lp.hot_len = c.lp.hot_len < c.size ? c.lp.hot_len : c.size;
        c.lp.seed = c.mix.seed;
        if (c.o.params.dirty_track == VMIG_DIRTY_AUTO)
            c.o.params.dirty_track = VMIG_DIRTY_WP;
        vmig_error perr = {0};
        if (c.o.params.dirty_track == VMIG_DIRTY_CALLBACK ||
            c.o.params.dirty_track == VMIG_DIRTY_NONE) {
            fprintf(stderr, "vmig bench: --live needs a built-in tracker (dirty-track wp, "
                            "wp-async or wp-sync)\n");
            return CLI_EXIT_USAGE;
        }
        if (vmig_dirty_track_probe(c.o.params.dirty_track, &perr)) {
            fprintf(stderr, "vmig bench: --live: %s\n", perr.msg);
            return CLI_EXIT_FAILED;
        }
    }

    /* Opened here, where a bad name is a plain error; entered after the fork. */
    int ns_src = -1, ns_dst = -1;
    if (c.netns_src && (ns_src = netns_open("--netns-src", c.netns_src)) < 0)
        return CLI_EXIT_FAILED;
    if (c.netns_dst && (ns_dst = netns_open("--netns-dst", c.netns_dst)) < 0) {
        if (ns_src >= 0)
            close(ns_src);
        return CLI_EXIT_FAILED;
    }

    int pfd[2];
    pid_t child = -1;
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        perror("vmig bench: pipe");
    } else {
        fflush(NULL);
        if ((child = fork()) < 0) {
            perror("vmig bench: fork");
            close(pfd[0]);
            close(pfd[1]);
        }
    }
    if (child < 0) {
        if (ns_src >= 0)
            close(ns_src);
        if (ns_dst >= 0)
            close(ns_dst);
        return CLI_EXIT_FAILED;
    }
    if (child == 0) {
        close(pfd[0]);
        if (ns_src >= 0)
            close(ns_src);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        receiver(&c, ns_dst, pfd[1]);
    }
    close(pfd[1]);
    if (ns_dst >= 0)
        close(ns_dst);
    /* Still the only thread of this process (see the top of the file). */
    if (ns_src >= 0) {
        int ns_rc = setns(ns_src, CLONE_NEWNET);
        int ns_errno = errno;
        close(ns_src);
        if (ns_rc < 0) {
            fprintf(stderr, "vmig bench: cannot enter the network namespace '%s': %s\n",
                    c.netns_src, strerror(ns_errno));
            receiver_kill(&c, child);
            return CLI_EXIT_FAILED;
        }
    }

    char a[32];
    bool talk = !c.o.quiet && !c.o.json;
    if (talk)
        fprintf(stderr, "vmig bench: generating a %s image (mix %u/%u/%u, seed %llu)...\n",
                cli_fmt_bytes(c.size, a, sizeof(a)), c.mix.pct[0], c.mix.pct[1], c.mix.pct[2],
                (unsigned long long)c.mix.seed);
    double g0 = now_s();
    uint8_t *img = mmap(NULL, c.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int rc = img == MAP_FAILED
                 ? -ENOMEM
                 : vmig_mix_fill(&c.mix, img, c.size, 0, c.touch_zero ? VMIG_MIX_WRITE_ZEROS : 0);
    if (rc) {
        fprintf(stderr, "vmig bench: cannot generate the image: %s\n", strerror(-rc));
        receiver_kill(&c, child);
        return CLI_EXIT_FAILED;
    }
    if (talk)
        fprintf(stderr, "vmig bench: generated in %.2f s; destination: %s file in %s\n",
                now_s() - g0, c.prefault ? "a prefaulted" : "a new (cold)", c.dest_dir);

    char line[1200], uri[256] = "";
    if (read_line(pfd[0], line, sizeof(line)) || strncmp(line, "URI ", 4)) {
        fprintf(stderr, "vmig bench: receiver failed to start: %s\n",
                !strncmp(line, "ERR ", 4) ? line + 4 : "no answer");
        receiver_kill(&c, child);
        return CLI_EXIT_FAILED;
    }
    snprintf(uri, sizeof(uri), "%.255s", line + 4);
    if (talk && (c.netns_src || c.netns_dst))
        fprintf(stderr, "vmig bench: sender in network namespace %s, receiver in %s at %s\n",
                c.netns_src ? c.netns_src : "(this one)", c.netns_dst ? c.netns_dst : "(this one)",
                uri);

    /* Live: the receiver's file, to compare with the source at switchover
     * (held open: the receiver unlinks it when it exits). */
    int dfd = -1;
    vmig_live *live = NULL;
    if (c.live) {
        char path[512];
        snprintf(path, sizeof(path), "%s/vmig-bench-%d.img", c.dest_dir, (int)child);
        dfd = open(path, O_RDONLY | O_CLOEXEC);
        rc = dfd < 0 ? -errno : vmig_live_create(&live, img, c.size, &c.lp, true);
        if (rc) {
            fprintf(stderr, "vmig bench: cannot set up the writers: %s\n", strerror(-rc));
            receiver_kill(&c, child);
            return CLI_EXIT_FAILED;
        }
        if (talk)
            fprintf(stderr,
                    "vmig bench: live: %u writers dirtying %.1f MB/s over %s (redirty %u%%), "
                    "tracker %s\n",
                    c.lp.writers, (double)c.lp.rate / 1e6,
                    cli_fmt_bytes(c.lp.hot_len, a, sizeof(a)), c.lp.redirty_pct,
                    vmig_dirty_track_name(c.o.params.dirty_track));
    }

    vmig_session *s = NULL;
    vmig_error err = {0};
    rc = vmig_session_create(&s, VMIG_ROLE_SOURCE, &c.o.params, &err);
    if (!rc)
        rc = vmig_ram_add(s, "ram", img, c.size, 4096, 0, &err);
    vmig_vm_ops ops = {
        .stop = vm_stop, .resume = vm_resume, .throttle = vm_throttle, .save_state = vm_save_state};
    if (!rc && live)
        rc = vmig_set_vm_ops(s, &ops, live);
    struct vmig_live_stats ls0 = {0}, ls1 = {0};
    if (live) {
        vmig_live_resume(live);
        vmig_live_stats(live, &ls0);
    }
    double cpu0 = cli_process_cpu();
    if (!rc)
        rc = cli_run(s, run_migrate, uri, &c.o, "bench", &err);
    double send_cpu = cli_process_cpu() - cpu0;
    vmig_stats st;
    vmig_stats_get(s, &st);
    int same = -1; /* live: the destination equals the source (1), differs (0) */
    uint64_t first_diff = 0;
    if (live) {
        vmig_live_pause(live);
        vmig_live_stats(live, &ls1);
        if (rc == 0) {
            void *dm = mmap(NULL, c.size, PROT_READ, MAP_SHARED, dfd, 0);
            if (dm != MAP_FAILED) {
                same = 1;
                for (uint64_t off = 0; off < c.size && same; off += 1 << 20)
                    if (memcmp(img + off, (uint8_t *)dm + off, 1 << 20)) {
                        same = 0;
                        first_diff = off;
                    }
                munmap(dm, c.size);
            }
        }
        close(dfd);
    }

    int child_rc = 0;
    double recv_cpu = 0, recv_verify = 0, recv_thread_cpu = 0;
    size_t state_len = 0;
    unsigned long long state_got = 0;
    char recv_msg[1024] = "no answer";
    /* A failed sender may never have connected: the receiver would wait for
     * it forever. Its figures are not reported then. */
    if (rc)
        receiver_kill(&c, child);
    if (!rc && read_line(pfd[0], line, sizeof(line)) == 0 && !strncmp(line, "RESULT ", 7)) {
        int off = 0;
        if (sscanf(line + 7, "%d %lf %lf %lf %zu %llu %n", &child_rc, &recv_cpu, &recv_verify,
                   &recv_thread_cpu, &state_len, &state_got, &off) >= 6)
            snprintf(recv_msg, sizeof(recv_msg), "%s", line + 7 + off);
    } else {
        child_rc = VMIG_ECONN;
    }
    int status;
    if (!rc)
        waitpid(child, &status, 0);
    close(pfd[0]);
    if (rc)
        fprintf(stderr, "vmig bench: migration failed: %s\n", err.msg);
    else if (child_rc)
        fprintf(stderr, "vmig bench: receiver reported: %s\n", recv_msg);
    if (!rc && child_rc)
        rc = child_rc;
    uint8_t *want_state = live ? malloc(BENCH_STATE_LEN) : NULL;
    bool state_ok = false;
    if (want_state) {
        state_fill(want_state, BENCH_STATE_LEN, 1);
        state_ok =
            state_len == BENCH_STATE_LEN && state_got == state_sum(want_state, BENCH_STATE_LEN);
        free(want_state);
    }
    if (live && rc == 0 && (same != 1 || !state_ok)) {
        if (same == 0)
            fprintf(stderr,
                    "vmig bench: the destination differs from the source at switchover, first in "
                    "the MiB at offset 0x%llx\n",
                    (unsigned long long)first_diff);
        else if (same < 0)
            fprintf(stderr, "vmig bench: cannot map the destination's file to compare it\n");
        else
            fprintf(stderr, "vmig bench: the device state did not arrive intact (%zu bytes)\n",
                    state_len);
        rc = VMIG_EVERIFY;
    }
    /* What the writers did during the migration. */
    double w_secs = (double)(ls1.run_ns - ls0.run_ns) / 1e9;
    double w_rate = w_secs > 0 ? (double)(ls1.bytes - ls0.bytes) / w_secs : 0;
    /* The reference for the total time: the bytes a stopped image needs
     * (its non-zero pages) at the link rate. */
    uint64_t counts[VMIG_MIX_NCLASSES];
    vmig_mix_counts(&c.mix, c.size / 4096, counts);
    double send_bytes = (double)(c.size / 4096 - counts[VMIG_MIX_ZERO]) * 4096.0;
    double ideal = c.o.params.max_bandwidth ? send_bytes / (double)c.o.params.max_bandwidth : 0;
    double secs = (double)st.elapsed_ns / 1e9;

    char extra[1024], live_json[512] = "";
    if (live)
        snprintf(live_json, sizeof(live_json),
                 ",\"live\":{\"writers\":%u,\"dirty_rate\":%llu,\"hot_set\":%llu,"
                 "\"redirty_pct\":%u,\"writer_bytes_per_second\":%.0f,\"writer_bytes\":%llu,"
                 "\"same_at_switchover\":%s,\"device_state_bytes\":%zu,"
                 "\"ideal_seconds\":%.6f,\"time_over_ideal\":%.4f}",
                 c.lp.writers, (unsigned long long)c.lp.rate, (unsigned long long)c.lp.hot_len,
                 c.lp.redirty_pct, w_rate, (unsigned long long)(ls1.bytes - ls0.bytes),
                 same == 1 ? "true" : "false", state_len, ideal, ideal > 0 ? secs / ideal : 0.0);
    snprintf(extra, sizeof(extra),
             "\"bench\":{\"image_bytes\":%llu,\"mix\":\"%u/%u/%u\",\"seed\":%llu,"
             "\"destination\":\"%s\",\"sender_cpu_seconds\":%.3f,\"receiver_cpu_seconds\":%.3f,"
             "\"cpu_seconds\":%.3f,\"receiver_verify_seconds\":%.3f,\"verified\":%s%s}",
             (unsigned long long)c.size, c.mix.pct[0], c.mix.pct[1], c.mix.pct[2],
             (unsigned long long)c.mix.seed, c.prefault ? "prefaulted" : "cold", send_cpu, recv_cpu,
             send_cpu + recv_cpu, recv_verify, rc == 0 && c.o.params.verify ? "true" : "false",
             live_json);
    cli_print_summary("sender", rc, &err, &st, send_cpu, &c.o, extra);
    if (!c.o.json && !c.o.quiet) {
        printf("  %-22s %.3f s in migration threads, %.3f s whole process\n", "CPU (receiver)",
               recv_thread_cpu, recv_cpu);
        printf("  %-22s %.3f s (sender + receiver processes)\n", "CPU (total)",
               send_cpu + recv_cpu);
        printf("  %-22s %s\n", "destination",
               c.prefault ? "prefaulted file" : "new file, never touched (cold)");
        if (live) {
            printf("  %-22s %.1f MB/s dirtied during the migration (target %.1f MB/s), %s\n",
                   "writers", w_rate / 1e6, (double)c.lp.rate / 1e6,
                   cli_fmt_bytes(ls1.bytes - ls0.bytes, a, sizeof(a)));
            if (ideal > 0)
                printf("  %-22s %.3f s = %.2fx the %.3f s a stopped image needs at the link rate\n",
                       "total vs ideal", secs, secs / ideal, ideal);
            printf("  %-22s %s\n", "at switchover",
                   same == 1 ? "destination memory == source memory, device state intact"
                   : rc == 0 ? "not compared"
                             : "migration failed: the writers run on");
        }
        fflush(stdout);
    }
    vmig_live_free(live);
    vmig_session_free(s);
    munmap(img, c.size);
    return cli_exit_code(rc);
}
