/*
 * bench_colo: continuous checkpoints (issue 8) with the library directly,
 * against a reference measured in the same run.
 *
 *   The VM: a --size image (2 GiB, the standard content mix, written whole
 *   first so its memory is warm) and the writer threads of bench/live.h
 *   dirtying --rate pages/s of 4 KiB (12800: 50 MiB/s) at random over a
 *   --hot-set (1 GiB), tracked by the built-in userfaultfd tracker
 *   (dirty-track wp), plus a device whose state (--device-state bytes, the
 *   vCPUs) goes with every checkpoint.
 *   The secondary: a child process (this program again, --role secondary)
 *   with its own warm copy of RAM, on a unix socket in a mkdtemp directory.
 *   The primary (this process) takes a checkpoint every --period ms until
 *   --checkpoints are acknowledged after checkpoint 0 (the initial copy, left
 *   out of the figures), then ends the protection with vmig_cancel().
 *
 * Per checkpoint, from the CHECKPOINT events of both sides:
 *   pause    primary: the VM paused: dirty-log sync, pages and device state
 *            onto the channels, until the resume
 *   ack      primary: from the resume to the secondary's acknowledgement
 *   commit   secondary: from the checkpoint's last byte to its commit (RAM
 *            cache flushed into RAM, device state loaded)
 *   flush    secondary: of that, the flush (stats ckpt_flush_ns)
 * Mean, median, 99th percentile (nearest rank) and maximum.
 *
 * The reference: the downtime (stop to the destination's commit) of a plain
 * live migration of the same image with the same writers, channels and
 * parameters to a child running vmig_incoming_run() with a warm copy of RAM,
 * median of --ref-runs; each checkpoint's pause is a small switchover, so
 * the figures are given as ratios to it.
 *
 * Exit: 0 done, 1 a failure, 2 bad usage, 77 something needed is missing
 * (the userfaultfd tracker, memory).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "live.h"
#include "mix.h"

#define PAGE       4096u
#define MAX_EXTRA  32 /* -o NAME=VALUE */
#define MAX_REF    15
#define EXIT_SKIP  77
#define EXIT_USAGE 2

extern char **environ;

typedef struct opts {
    uint64_t size, hot_len, dev_len;
    uint64_t rate_pages; /* pages/s of 4 KiB */
    unsigned writers, redirty, period_ms, channels, flush_threads, heartbeat_ms, ref_runs;
    uint64_t checkpoints;
    const char *compression, *dirty_track;
    const char *extra[MAX_EXTRA];
    unsigned nextra;
    /* child roles */
    const char *role, *uri, *out;
    int ready_fd;
} opts;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_colo [options]\n"
            "  --size SIZE          the VM's RAM (default 2G)\n"
            "  --rate PAGES         pages of 4 KiB the writers dirty per second (default 12800:\n"
            "                       50 MiB/s)\n"
            "  --hot-set SIZE       where they write, at random (default 1G)\n"
            "  --writers N          writer threads (default 2)\n"
            "  --redirty PCT        share of writes that go to a recently written page (0)\n"
            "  --device-state SIZE  device state saved at every checkpoint (default 64K)\n"
            "  --period MS          checkpoint period (default 200)\n"
            "  --checkpoints N      acknowledged checkpoints after checkpoint 0 (default 250;\n"
            "                       the figure wants at least 200)\n"
            "  --channels N         data channels (default 4)\n"
            "  --compression NAME   none|zlib|zstd|deflate-page|lz4|auto (default none)\n"
            "  --flush-threads N    secondary's flush threads, 0 = CPUs (default 0)\n"
            "  --dirty-track NAME   wp|wp-async|wp-sync (default wp)\n"
            "  --heartbeat MS       heartbeat-timeout of both sides (default 2000)\n"
            "  --ref-runs N         plain migrations for the reference, median (default 3)\n"
            "  -o NAME=VALUE        any other vmig parameter, for every session (repeatable)\n"
            "  --help               this text\n"
            "Exit: 0 done, 1 failure, 2 bad usage, 77 something needed is missing.\n");
}

static int parse_opts(int argc, char **argv, opts *o)
{
    *o = (opts){.size = 2ull << 30,
                .hot_len = 1ull << 30,
                .dev_len = 64u << 10,
                .rate_pages = 12800,
                .writers = 2,
                .period_ms = 200,
                .channels = 4,
                .heartbeat_ms = 2000,
                .ref_runs = 3,
                .checkpoints = 250,
                .compression = "none",
                .dirty_track = "wp",
                .ready_fd = -1};
    enum {
        O_SIZE = 256,
        O_RATE,
        O_HOT,
        O_WRITERS,
        O_REDIRTY,
        O_DEV,
        O_PERIOD,
        O_CKPTS,
        O_CHANNELS,
        O_COMP,
        O_FLUSH,
        O_TRACK,
        O_HB,
        O_REF,
        O_ROLE,
        O_URI,
        O_OUT,
        O_READY,
        O_HELP
    };
    static const struct option lo[] = {{"size", required_argument, NULL, O_SIZE},
                                       {"rate", required_argument, NULL, O_RATE},
                                       {"hot-set", required_argument, NULL, O_HOT},
                                       {"writers", required_argument, NULL, O_WRITERS},
                                       {"redirty", required_argument, NULL, O_REDIRTY},
                                       {"device-state", required_argument, NULL, O_DEV},
                                       {"period", required_argument, NULL, O_PERIOD},
                                       {"checkpoints", required_argument, NULL, O_CKPTS},
                                       {"channels", required_argument, NULL, O_CHANNELS},
                                       {"compression", required_argument, NULL, O_COMP},
                                       {"flush-threads", required_argument, NULL, O_FLUSH},
                                       {"dirty-track", required_argument, NULL, O_TRACK},
                                       {"heartbeat", required_argument, NULL, O_HB},
                                       {"ref-runs", required_argument, NULL, O_REF},
                                       {"role", required_argument, NULL, O_ROLE},
                                       {"uri", required_argument, NULL, O_URI},
                                       {"out", required_argument, NULL, O_OUT},
                                       {"ready-fd", required_argument, NULL, O_READY},
                                       {"help", no_argument, NULL, O_HELP},
                                       {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", lo, NULL)) != -1) {
        const char *v = optarg;
        char *end = NULL;
        unsigned long long n = v ? strtoull(v, &end, 10) : 0;
        bool num_ok = v && *v && end && !*end;
        bool bad = false;
        switch (c) {
        case O_SIZE:
            bad = vmig_parse_size(v, &o->size) != 0;
            break;
        case O_HOT:
            bad = vmig_parse_size(v, &o->hot_len) != 0;
            break;
        case O_DEV:
            bad = vmig_parse_size(v, &o->dev_len) != 0;
            break;
        case O_RATE:
            bad = !num_ok || !n;
            o->rate_pages = n;
            break;
        case O_WRITERS:
            bad = !num_ok || !n || n > VMIG_LIVE_WRITERS_MAX;
            o->writers = (unsigned)n;
            break;
        case O_REDIRTY:
            bad = !num_ok || n > 100;
            o->redirty = (unsigned)n;
            break;
        case O_PERIOD:
            bad = !num_ok || n < 100 || n > 3600000;
            o->period_ms = (unsigned)n;
            break;
        case O_CKPTS:
            bad = !num_ok || !n || n > 10000000;
            o->checkpoints = n;
            break;
        case O_CHANNELS:
            bad = !num_ok || !n || n > VMIG_MAX_CHANNELS;
            o->channels = (unsigned)n;
            break;
        case O_COMP:
            o->compression = v;
            break;
        case O_FLUSH:
            bad = !num_ok || n > 64;
            o->flush_threads = (unsigned)n;
            break;
        case O_TRACK:
            o->dirty_track = v;
            bad = strcmp(v, "wp") && strcmp(v, "wp-async") && strcmp(v, "wp-sync");
            break;
        case O_HB:
            bad = !num_ok || n < 100 || n > 600000;
            o->heartbeat_ms = (unsigned)n;
            break;
        case O_REF:
            bad = !num_ok || !n || n > MAX_REF;
            o->ref_runs = (unsigned)n;
            break;
        case 'o':
            bad = o->nextra == MAX_EXTRA || !strchr(v, '=');
            if (!bad)
                o->extra[o->nextra++] = v;
            break;
        case O_ROLE:
            o->role = v;
            break;
        case O_URI:
            o->uri = v;
            break;
        case O_OUT:
            o->out = v;
            break;
        case O_READY:
            o->ready_fd = atoi(v);
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "bench_colo: bad value '%s' for --%s\n", v ? v : "",
                    c == 'o' ? "o" : lo[c - O_SIZE].name);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_colo: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->size || o->size % PAGE || !o->hot_len || o->hot_len % PAGE || !o->dev_len ||
        o->dev_len > (256ull << 20)) {
        fprintf(stderr, "bench_colo: --size and --hot-set must be non-zero multiples of 4096, "
                        "--device-state 1..256M\n");
        return -1;
    }
    if (o->hot_len > o->size)
        o->hot_len = o->size;
    return 0;
}

/* The sessions' parameters; the same function on both sides. */
static int make_params(const opts *o, bool colo, vmig_params *p, vmig_error *e)
{
    vmig_params_init(p);
    p->channels = o->channels;
    p->heartbeat_timeout_ms = o->heartbeat_ms;
    p->flush_threads = o->flush_threads;
    p->checkpoint_period_ms = colo ? o->period_ms : p->checkpoint_period_ms;
    int rc = vmig_params_set(p, "compression", o->compression, e);
    if (!rc)
        rc = vmig_params_set(p, "dirty-track", o->dirty_track, e);
    for (unsigned i = 0; i < o->nextra && !rc; i++) {
        char name[64];
        const char *eq = strchr(o->extra[i], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - o->extra[i]), o->extra[i]);
        rc = vmig_params_set(p, name, eq + 1, e);
    }
    return rc;
}

/* ---- the device: a blob of dev_len bytes saved at every switchover ---- */

typedef struct device {
    uint8_t *state; /* source */
    uint64_t len;
    uint64_t saves;
    uint64_t got; /* destination: bytes of the current load */
    uint64_t loads;
} device;

static int dev_save_final(void *o, vmig_devstate_out *out)
{
    device *d = o;
    d->saves++;
    memcpy(d->state, &d->saves, sizeof(d->saves)); /* the state changes every time */
    return vmig_devstate_write(out, d->state, d->len);
}

static int dev_load_chunk(void *o, const void *buf, size_t len)
{
    device *d = o;
    (void)buf;
    d->got += len;
    return d->got > d->len ? VMIG_EINVAL : 0;
}

static int dev_load_done(void *o)
{
    device *d = o;
    uint64_t got = d->got;
    d->got = 0; /* the next checkpoint loads it again */
    d->loads++;
    return got == d->len ? 0 : VMIG_EINVAL;
}

static const vmig_device_ops dev_ops = {
    .save_final = dev_save_final, .load_chunk = dev_load_chunk, .load_done = dev_load_done};

/* ---- the VM's hooks: the writers are the vCPUs ---- */

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

static const vmig_vm_ops vm_ops = {.stop = vm_stop, .resume = vm_resume, .throttle = vm_throttle};

/* ------------------------------------------------------------------ */
/* children: the secondary and the reference's destination            */

typedef struct sec_rec {
    uint64_t id, commit_ns, flush_ns, bytes;
} sec_rec;

typedef struct sec_ctx {
    sec_rec *r;
    size_t n, cap;
    bool oom;
} sec_ctx;

static void sec_event(void *o, vmig_session *s, const vmig_event *ev)
{
    sec_ctx *x = o;
    if (ev->type != VMIG_EVENT_CHECKPOINT)
        return;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 1024;
        sec_rec *r = realloc(x->r, cap * sizeof(*r));
        if (!r) {
            x->oom = true;
            return;
        }
        x->r = r;
        x->cap = cap;
    }
    vmig_stats st;
    vmig_stats_get(s, &st); /* the flush of the checkpoint just committed */
    x->r[x->n++] = (sec_rec){ev->checkpoint, ev->commit_ns, st.ckpt_flush_ns, ev->ckpt_bytes};
}

/*
 * --role secondary|dest: map and warm RAM, listen on --uri, say "ready" on
 * --ready-fd, then vmig_colo_secondary() or vmig_incoming_run(). Writes to
 * --out: "rc RC FLUSH_THREADS CHECKPOINTS DISCARDED", "msg TEXT", then one
 * "ID COMMIT_NS FLUSH_NS BYTES" line per committed checkpoint.
 */
static int child_main(const opts *o)
{
    bool colo = !strcmp(o->role, "secondary");
    if (!colo && strcmp(o->role, "dest"))
        return 1;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    uint8_t *mem = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "bench_colo %s: cannot map %llu bytes\n", o->role,
                (unsigned long long)o->size);
        return 1;
    }
    memset(mem, 0, o->size); /* warm: a standby's RAM is populated */
    device dev = {.len = o->dev_len};
    sec_ctx x = {0};
    vmig_params p;
    vmig_error e = {0};
    vmig_session *s = NULL;
    int rc = make_params(o, colo, &p, &e);
    if (!rc)
        rc = vmig_session_create(&s, VMIG_ROLE_DEST, &p, &e);
    if (!rc)
        rc = vmig_ram_add(s, "ram", mem, o->size, PAGE, 0, &e);
    if (!rc)
        rc = vmig_device_register(s, "vcpus", 0, &dev_ops, &dev, &e);
    if (!rc && colo)
        rc = vmig_set_event_cb(s, sec_event, &x);
    if (!rc)
        rc = vmig_incoming_listen(s, o->uri, &e);
    if (rc) {
        fprintf(stderr, "bench_colo %s: %s\n", o->role, e.msg);
        vmig_session_free(s);
        return 1;
    }
    if (write(o->ready_fd, "ready\n", 6) != 6)
        return 1;
    close(o->ready_fd);
    rc = colo ? vmig_colo_secondary(s, &e) : vmig_incoming_run(s, &e);
    vmig_stats st;
    vmig_stats_get(s, &st);
    FILE *f = fopen(o->out, "w");
    if (f) {
        fprintf(f, "rc %d %u %llu %u\nmsg %s\n", rc, st.flush_threads,
                (unsigned long long)st.checkpoints, st.ckpt_discarded,
                rc ? e.msg : (x.oom ? "out of memory for the records" : "ok"));
        for (size_t i = 0; i < x.n; i++)
            fprintf(f, "%llu %llu %llu %llu\n", (unsigned long long)x.r[i].id,
                    (unsigned long long)x.r[i].commit_ns, (unsigned long long)x.r[i].flush_ns,
                    (unsigned long long)x.r[i].bytes);
        if (fclose(f))
            f = NULL;
    }
    vmig_session_free(s);
    free(x.r);
    munmap(mem, o->size);
    int want = colo ? VMIG_ECANCELED : 0;
    return f && rc == want && !x.oom ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* the parent                                                          */

typedef struct child {
    pid_t pid;
    char sock[256], out[256], uri[300];
} child;

/* Spawn this program as `role` with the user's options; wait for "ready". */
static int spawn_child(const char *dir, const char *role, int k, int argc, char **argv, child *c)
{
    snprintf(c->sock, sizeof(c->sock), "%s/%s-%d.sock", dir, role, k);
    snprintf(c->out, sizeof(c->out), "%s/%s-%d.out", dir, role, k);
    snprintf(c->uri, sizeof(c->uri), "unix:%s", c->sock);
    c->pid = -1;
    int pfd[2];
    if (pipe(pfd) < 0) {
        perror("bench_colo: pipe");
        return -1;
    }
    char fd[16];
    snprintf(fd, sizeof(fd), "%d", pfd[1]);
    char **av = calloc((size_t)argc + 10, sizeof(char *));
    if (!av)
        return -1;
    int n = 0;
    av[n++] = argv[0];
    av[n++] = "--role";
    av[n++] = (char *)role;
    av[n++] = "--uri";
    av[n++] = c->uri;
    av[n++] = "--out";
    av[n++] = c->out;
    av[n++] = "--ready-fd";
    av[n++] = fd;
    for (int i = 1; i < argc; i++)
        av[n++] = argv[i];
    av[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    int rc = posix_spawn(&c->pid, "/proc/self/exe", &fa, NULL, av, environ);
    posix_spawn_file_actions_destroy(&fa);
    free(av);
    close(pfd[1]);
    if (rc) {
        fprintf(stderr, "bench_colo: posix_spawn: %s\n", strerror(rc));
        close(pfd[0]);
        c->pid = -1;
        return -1;
    }
    char buf[8] = {0};
    ssize_t got;
    while ((got = read(pfd[0], buf, 6)) < 0 && errno == EINTR)
        ;
    close(pfd[0]);
    if (got != 6 || memcmp(buf, "ready\n", 6)) {
        fprintf(stderr, "bench_colo: the %s child did not start\n", role);
        return -1;
    }
    return 0;
}

/* Wait for the child at most timeout_ms, then kill it. Returns its exit
 * status (0..255), or -1 if it had to be killed or died of a signal. */
static int reap_child(child *c, unsigned timeout_ms, bool *hung)
{
    if (c->pid <= 0)
        return -1;
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int st = 0;
    *hung = false;
    for (;;) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ns() >= end) {
            *hung = true;
            kill(c->pid, SIGKILL);
            while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        sleep_ms(10);
    }
    c->pid = -1;
    unlink(c->sock);
    return WIFEXITED(st) && !*hung ? WEXITSTATUS(st) : -1;
}

/* The child's --out file: its verdict and per-checkpoint records. */
typedef struct child_out {
    int rc;
    unsigned flush_threads, discarded;
    unsigned long long checkpoints;
    char msg[700];
    sec_rec *r;
    size_t n;
} child_out;

static int read_child_out(const char *path, child_out *co)
{
    memset(co, 0, sizeof(*co));
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[700];
    int ok = fgets(line, sizeof(line), f) &&
             sscanf(line, "rc %d %u %llu %u", &co->rc, &co->flush_threads, &co->checkpoints,
                    &co->discarded) == 4;
    if (ok && fgets(line, sizeof(line), f) && !strncmp(line, "msg ", 4)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(co->msg, sizeof(co->msg), "%s", line + 4);
    }
    size_t cap = 0;
    unsigned long long a, b, c2, d;
    while (ok && fscanf(f, "%llu %llu %llu %llu", &a, &b, &c2, &d) == 4) {
        if (co->n == cap) {
            cap = cap ? 2 * cap : 1024;
            sec_rec *r = realloc(co->r, cap * sizeof(*r));
            if (!r) {
                ok = 0;
                break;
            }
            co->r = r;
        }
        co->r[co->n++] = (sec_rec){a, b, c2, d};
    }
    fclose(f);
    unlink(path);
    return ok ? 0 : -1;
}

typedef struct summary {
    size_t n;
    double mean;
    uint64_t median, p99, max;
} summary;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v. The 99th percentile is the nearest rank: the ceil(0.99 n)-th. */
static summary summarize(uint64_t *v, size_t n)
{
    summary s = {.n = n};
    if (!n)
        return s;
    qsort(v, n, sizeof(*v), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    s.mean = sum / (double)n;
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    size_t rank = (99 * n + 99) / 100; /* ceil(0.99 n), 1..n */
    s.p99 = v[rank - 1];
    s.max = v[n - 1];
    return s;
}

static void print_summary(const char *label, const summary *s)
{
    printf("  %-26s mean %8.3f ms  median %8.3f ms  p99 %8.3f ms  max %8.3f ms  (%zu)\n", label,
           s->mean / 1e6, ms(s->median), ms(s->p99), ms(s->max), s->n);
}

typedef struct env {
    const opts *o;
    const char *dir;
    int argc;
    char **argv;
    uint8_t *img;
    vmig_live *live;
    device dev;
} env;

/* A source session over the image, the writers and the device. */
static vmig_session *source_session(env *E, bool colo, vmig_error *e)
{
    vmig_params p;
    vmig_session *s = NULL;
    if (make_params(E->o, colo, &p, e) || vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, e) ||
        vmig_ram_add(s, "ram", E->img, E->o->size, PAGE, 0, e) ||
        vmig_set_vm_ops(s, &vm_ops, E->live) ||
        vmig_device_register(s, "vcpus", 0, &dev_ops, &E->dev, e)) {
        vmig_session_free(s);
        return NULL;
    }
    return s;
}

/* One plain live migration; *downtime its downtime. */
static int reference_run(env *E, int k, uint64_t *downtime)
{
    child c;
    vmig_error e = {0};
    if (spawn_child(E->dir, "dest", k, E->argc, E->argv, &c)) {
        bool h;
        reap_child(&c, 0, &h);
        return -1;
    }
    vmig_session *s = source_session(E, false, &e);
    if (!s) {
        fprintf(stderr, "bench_colo: reference %d: %s\n", k, e.msg);
        bool h;
        reap_child(&c, 0, &h);
        return -1;
    }
    vmig_live_throttle(E->live, 0);
    vmig_live_resume(E->live);
    sleep_ms(500); /* the VM runs before the migration starts */
    struct vmig_live_stats l0, l1;
    vmig_live_stats(E->live, &l0);
    int rc = vmig_migrate(s, c.uri, &e);
    vmig_live_pause(E->live); /* stopped by the migration on success */
    vmig_live_stats(E->live, &l1);
    vmig_stats st;
    vmig_stats_get(s, &st);
    vmig_session_free(s);
    bool hung;
    int status = reap_child(&c, rc ? 0 : 10000, &hung);
    child_out co;
    int rd = read_child_out(c.out, &co);
    free(co.r);
    if (rc || status != 0 || rd || co.rc) {
        fprintf(stderr, "bench_colo: reference %d failed: source: %s; destination: %s%s\n", k,
                rc ? e.msg : "ok", rd ? "no report" : co.msg, hung ? " (hung: killed)" : "");
        return -1;
    }
    double secs = (double)st.elapsed_ns / 1e9;
    double wsecs = (double)(l1.run_ns - l0.run_ns) / 1e9;
    printf("  run %d: downtime %.3f ms, %u passes, %.3f s, %.0f MB/s on the wire, throttle max "
           "%u %%, tracker %s, writers %.1f MB/s\n",
           k, ms(st.downtime_ns), st.pass, secs, st.mbps, st.throttle_max_pct,
           vmig_dirty_track_name(st.dirty_track),
           wsecs > 0 ? (double)(l1.bytes - l0.bytes) / wsecs / 1e6 : 0.0);
    fflush(stdout);
    *downtime = st.downtime_ns;
    return 0;
}

/* The primary's view of the checkpoints. */
typedef struct prim {
    vmig_live *live;
    uint64_t target;
    uint64_t *pause, *ack, *bytes; /* [1..target] */
    uint64_t seen;                 /* CHECKPOINT events after checkpoint 0 */
    uint64_t ck0_pause, ck0_ack, t0, t1;
    uint64_t sync0_ns, sync1_ns; /* stats sync_ns at checkpoint 0 and at the last one */
    struct vmig_live_stats l0, l1;
    bool have0, done, order_bad;
    uint64_t next;
} prim;

static void prim_event(void *o, vmig_session *s, const vmig_event *ev)
{
    prim *x = o;
    if (ev->type != VMIG_EVENT_CHECKPOINT)
        return;
    if (ev->checkpoint != x->next)
        x->order_bad = true;
    x->next = ev->checkpoint + 1;
    uint64_t k = ev->checkpoint;
    if (k == 0) {
        x->ck0_pause = ev->pause_ns;
        x->ck0_ack = ev->commit_ns;
        x->t0 = now_ns();
        vmig_live_stats(x->live, &x->l0);
        vmig_stats st;
        vmig_stats_get(s, &st);
        x->sync0_ns = st.sync_ns;
        x->have0 = true;
        return;
    }
    if (k > x->target || x->done)
        return;
    x->pause[k] = ev->pause_ns;
    x->ack[k] = ev->commit_ns;
    x->bytes[k] = ev->ckpt_bytes;
    x->seen++;
    if (k == x->target) {
        x->t1 = now_ns();
        vmig_live_stats(x->live, &x->l1);
        vmig_stats st;
        vmig_stats_get(s, &st);
        x->sync1_ns = st.sync_ns;
        x->done = true;
        vmig_cancel(s);
    }
}

static bool mem_available(uint64_t need)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return true;
    char line[256];
    unsigned long long kb = 0;
    bool found = false;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
            found = true;
            break;
        }
    fclose(f);
    return !found || kb * 1024ull >= need;
}

static void remove_dir(const char *dir)
{
    if (dir && rmdir(dir) < 0 && errno != ENOENT)
        fprintf(stderr, "bench_colo: cannot remove %s: %s\n", dir, strerror(errno));
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o))
        return EXIT_USAGE;
    if (o.role)
        return child_main(&o);
    signal(SIGPIPE, SIG_IGN);

    vmig_error e = {0};
    if (vmig_dirty_track_probe(!strcmp(o.dirty_track, "wp-async")  ? VMIG_DIRTY_WP_ASYNC
                               : !strcmp(o.dirty_track, "wp-sync") ? VMIG_DIRTY_WP_SYNC
                                                                   : VMIG_DIRTY_WP,
                               &e)) {
        printf("bench_colo: skipped: dirty-track %s is not usable here: %s\n", o.dirty_track,
               e.msg);
        return EXIT_SKIP;
    }
    {
        vmig_params p;
        if (make_params(&o, true, &p, &e)) {
            fprintf(stderr, "bench_colo: %s\n", e.msg);
            return EXIT_USAGE;
        }
        if (p.compression != VMIG_COMPRESSION_AUTO && vmig_codec_available(p.compression, &e)) {
            printf("bench_colo: skipped: %s\n", e.msg);
            return EXIT_SKIP;
        }
    }
    /* primary + secondary (or destination) + the secondary's cache where
     * checkpoints write (at most the hot set) + slack */
    uint64_t need = 2 * o.size + o.hot_len + (512ull << 20);
    if (!mem_available(need)) {
        printf("bench_colo: skipped: needs about %llu MiB of available memory\n",
               (unsigned long long)(need >> 20));
        return EXIT_SKIP;
    }
    if (o.checkpoints < 200)
        printf("bench_colo: note: %llu checkpoints; the issue's figure wants at least 200\n",
               (unsigned long long)o.checkpoints);

    char dir[] = "/tmp/vmig-bench-colo-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_colo: mkdtemp");
        return 1;
    }
    int ret = 1;
    env E = {.o = &o, .dir = dir, .argc = argc, .argv = argv, .dev = {.len = o.dev_len}};
    prim x = {0};
    child sec = {.pid = -1};
    uint64_t *v = NULL;
    child_out co = {0};

    E.img = mmap(NULL, o.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    E.dev.state = calloc(1, o.dev_len);
    if (E.img == MAP_FAILED || !E.dev.state) {
        printf("bench_colo: skipped: cannot map %llu MiB\n", (unsigned long long)(o.size >> 20));
        E.img = NULL;
        ret = EXIT_SKIP;
        goto out;
    }
    memset(E.dev.state, 0x5a, o.dev_len);
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    uint64_t g0 = now_ns();
    int rc = vmig_mix_fill(&mp, E.img, o.size, 0, VMIG_MIX_WRITE_ZEROS);
    if (rc) {
        fprintf(stderr, "bench_colo: cannot fill the image: %s\n", strerror(-rc));
        goto out;
    }
    uint64_t fill_ns = now_ns() - g0;
    struct vmig_live_params lp;
    vmig_live_params_default(&lp);
    lp.writers = o.writers;
    lp.rate = o.rate_pages * PAGE;
    lp.hot_off = (o.size - o.hot_len) / 2 / PAGE * PAGE; /* the middle of the image */
    lp.hot_len = o.hot_len;
    lp.redirty_pct = o.redirty;
    if ((rc = vmig_live_create(&E.live, E.img, o.size, &lp, true))) {
        fprintf(stderr, "bench_colo: cannot start the writers: %s\n", strerror(-rc));
        goto out;
    }
    {
        vmig_params p;
        make_params(&o, true, &p, &e);
        printf("bench_colo: %llu MiB image (standard mix, written in %.2f s), %u writers "
               "dirtying %llu pages/s (%.1f MB/s) at random over a %llu MiB hot set (redirty %u "
               "%%), device state %llu KiB\n",
               (unsigned long long)(o.size >> 20), (double)fill_ns / 1e9, o.writers,
               (unsigned long long)o.rate_pages, (double)lp.rate / 1e6,
               (unsigned long long)(o.hot_len >> 20), o.redirty,
               (unsigned long long)(o.dev_len >> 10));
        printf("bench_colo: %u channels over a unix socket, compression %s, dirty-track %s, "
               "checkpoint every %u ms, %llu checkpoints, heartbeat-timeout %u ms\n",
               p.channels, vmig_codec_name(p.compression), o.dirty_track, o.period_ms,
               (unsigned long long)o.checkpoints, o.heartbeat_ms);
    }

    /* The reference: plain live migrations of the same VM. */
    printf("reference: plain live migration to a warm destination, same image, writers and "
           "channels\n");
    fflush(stdout);
    uint64_t ref[MAX_REF];
    for (unsigned k = 0; k < o.ref_runs; k++)
        if (reference_run(&E, (int)k + 1, &ref[k]))
            goto out;
    summary rs = summarize(ref, o.ref_runs);
    double ref_ns = (double)rs.median;
    printf("  %-26s %.3f ms (median of %u; min %.3f ms, max %.3f ms)\n", "reference downtime",
           ref_ns / 1e6, o.ref_runs, ms(ref[0]), ms(rs.max));
    if (ref_ns <= 0) {
        fprintf(stderr, "bench_colo: the reference downtime is 0\n");
        goto out;
    }

    /* The protected run. */
    printf("protection: the secondary in a child process, warm RAM\n");
    fflush(stdout);
    x.live = E.live;
    x.target = o.checkpoints;
    x.pause = calloc(o.checkpoints + 1, sizeof(uint64_t));
    x.ack = calloc(o.checkpoints + 1, sizeof(uint64_t));
    x.bytes = calloc(o.checkpoints + 1, sizeof(uint64_t));
    v = calloc(o.checkpoints + 1, sizeof(uint64_t));
    if (!x.pause || !x.ack || !x.bytes || !v) {
        fprintf(stderr, "bench_colo: out of memory\n");
        goto out;
    }
    if (spawn_child(dir, "secondary", 0, argc, argv, &sec))
        goto out;
    vmig_session *s = source_session(&E, true, &e);
    if (!s) {
        fprintf(stderr, "bench_colo: primary: %s\n", e.msg);
        goto out;
    }
    vmig_set_event_cb(s, prim_event, &x);
    vmig_live_throttle(E.live, 0);
    vmig_live_resume(E.live);
    sleep_ms(500);
    uint64_t c0 = now_ns();
    rc = vmig_colo_primary(s, sec.uri, &e);
    uint64_t c1 = now_ns();
    vmig_stats pst;
    vmig_stats_get(s, &pst);
    struct vmig_live_stats lend;
    vmig_live_stats(E.live, &lend);
    bool running = !lend.paused; /* the VM runs on after the protection ended */
    vmig_live_pause(E.live);
    vmig_session_free(s);
    bool hung;
    int status = reap_child(&sec, rc == VMIG_ECANCELED ? o.heartbeat_ms + 10000 : 0, &hung);
    int rd = read_child_out(sec.out, &co);
    bool fail = false;
    if (rc != VMIG_ECANCELED || !x.done) {
        fprintf(stderr,
                "bench_colo: the protection ended after %llu of %llu checkpoints: %s (%s)\n",
                (unsigned long long)x.seen, (unsigned long long)o.checkpoints, e.msg,
                vmig_strerror(rc));
        fail = true;
    }
    if (status != 0 || rd || co.rc != VMIG_ECANCELED) {
        fprintf(stderr,
                "bench_colo: the secondary did not end with VMIG_ECANCELED: exit %d%s, rc %d: "
                "%s\n",
                status, hung ? " (hung: killed)" : "", co.rc, rd ? "no report" : co.msg);
        fail = true;
    }
    if (x.order_bad)
        fprintf(stderr, "bench_colo: the primary's CHECKPOINT events were not numbered 0, 1, 2, "
                        "...\n");
    if (!running)
        fprintf(stderr, "bench_colo: the VM was left paused after the protection ended\n");
    if (fail || x.order_bad || !running)
        goto out;

    /* ---- the figures ---- */
    uint64_t n = x.seen, prot_ns = x.t1 - x.t0;
    printf("  %-26s %llu acknowledged after checkpoint 0 (%.1f s of protection, %.1f s in "
           "vmig_colo_primary)\n",
           "checkpoints", (unsigned long long)n, (double)prot_ns / 1e9, (double)(c1 - c0) / 1e9);
    printf("  %-26s pause %.3f ms, ack %.3f ms (the initial live migration; not in the figures)\n",
           "checkpoint 0", ms(x.ck0_pause), ms(x.ck0_ack));
    double wbytes = (double)(x.l1.bytes - x.l0.bytes);
    double wrun = (double)(x.l1.run_ns - x.l0.run_ns);
    printf("  %-26s %.1f MB/s over the protection (%.1f MB/s while not paused), %.0f pages/s\n",
           "writers' dirty rate", wbytes / ((double)prot_ns / 1e9) / 1e6,
           wrun > 0 ? wbytes / (wrun / 1e9) / 1e6 : 0.0, wbytes / PAGE / ((double)prot_ns / 1e9));
    double bsum = 0;
    uint64_t bmax = 0;
    for (uint64_t k = 1; k <= n; k++) {
        bsum += (double)x.bytes[k];
        bmax = x.bytes[k] > bmax ? x.bytes[k] : bmax;
    }
    printf("  %-26s mean %.2f MB (%.0f pages; %.1f MB/s at one per %u ms), max %.2f MB\n",
           "dirty bytes per checkpoint", bsum / (double)n / 1e6, bsum / (double)n / PAGE,
           bsum / (double)n / 1e6 * 1000.0 / o.period_ms, o.period_ms, (double)bmax / 1e6);
    memcpy(v, x.pause + 1, n * sizeof(uint64_t));
    summary sp = summarize(v, n);
    print_summary("primary pause", &sp);
    printf("  %-26s mean %8.3f ms (stats sync_ns over the checkpoints)\n",
           "  of it, dirty-log sync", (double)(x.sync1_ns - x.sync0_ns) / (double)n / 1e6);
    memcpy(v, x.ack + 1, n * sizeof(uint64_t));
    summary sa = summarize(v, n);
    print_summary("ack latency (primary)", &sa);
    size_t m = 0;
    for (size_t i = 0; i < co.n; i++)
        if (co.r[i].id >= 1 && co.r[i].id <= n)
            v[m++] = co.r[i].commit_ns;
    summary sc = summarize(v, m);
    print_summary("secondary commit", &sc);
    m = 0;
    for (size_t i = 0; i < co.n; i++)
        if (co.r[i].id >= 1 && co.r[i].id <= n)
            v[m++] = co.r[i].flush_ns;
    summary sf = summarize(v, m);
    print_summary("secondary flush", &sf);
    printf("  %-26s %u (secondary)\n", "flush threads", co.flush_threads);
    printf("  %-26s primary: %llu checkpoints, pause max %.3f ms, total %.3f s, tracker %s; "
           "secondary: %llu checkpoints%s\n",
           "library stats", (unsigned long long)pst.checkpoints, ms(pst.ckpt_pause_max_ns),
           (double)pst.ckpt_pause_total_ns / 1e9, vmig_dirty_track_name(pst.dirty_track),
           co.checkpoints, co.discarded ? ", a partial checkpoint discarded" : "");
    if (m != n)
        printf("  note: the secondary recorded %zu of the %llu checkpoints\n", m,
               (unsigned long long)n);
    if (pst.checkpoints != n)
        printf("  note: the primary's stats count %llu checkpoints, its events %llu\n",
               (unsigned long long)pst.checkpoints, (unsigned long long)n);

    printf("figure (ratios to the reference downtime, %.3f ms, measured in this run)\n",
           ref_ns / 1e6);
    printf("  %-34s %.3f\n", "primary pause mean / reference", sp.mean / ref_ns);
    printf("  %-34s %.3f\n", "primary pause p99 / reference", (double)sp.p99 / ref_ns);
    printf("  %-34s %.3f\n", "secondary commit mean / reference", sc.mean / ref_ns);
    printf("  %-34s %.3f\n", "secondary commit p99 / reference", (double)sc.p99 / ref_ns);
    ret = 0;

out:
    fflush(stdout);
    if (sec.pid > 0) {
        bool h;
        reap_child(&sec, 0, &h);
    }
    if (sec.out[0])
        unlink(sec.out);
    vmig_live_free(E.live);
    if (E.img)
        munmap(E.img, o.size);
    free(E.dev.state);
    free(x.pause);
    free(x.ack);
    free(x.bytes);
    free(v);
    free(co.r);
    remove_dir(dir);
    return ret;
}
