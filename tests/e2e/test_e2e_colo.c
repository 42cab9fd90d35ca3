/*
 * Continuous checkpoints (COLO) end to end, across processes.
 *
 * The VM is deterministic: its writer thread takes steps 1, 2, ...; step S
 * rewrites one page, page_of(S), with content that depends only on
 * (page, S) (one step in 16 writes a zero page), then stores S in the first
 * word of page 0. The stop hook parks the writer between two steps, so any
 * consistent image is replay(S): the initial image with steps 1..S applied.
 * A device holds S too (and a blob derived from it, several chunks long),
 * saved at each checkpoint.
 *
 * Failover: the primary (a child: this program run again) is killed at
 * random moments, in the secondary's flush and in its device load, or
 * stopped (silent: the heartbeat times out). The secondary (this process)
 * must take over with RAM == replay(S) and the device's S == S, where S is
 * the step the primary logged when it saved the device state of exactly
 * the checkpoint the secondary activated.
 * Secondary loss: the secondary (a child) is killed or stopped; the
 * primary reports it within the heartbeat timeout and its VM runs on,
 * intact. Cancel: the primary ends protection and the secondary does not
 * take over. A primary and a plain destination (and the reverse) refuse
 * each other.
 *
 * Roles of a child:
 *   test_e2e_colo primary URI SEED LOG    a primary; logs "K S" per device save
 *   test_e2e_colo secondary URI FD        a secondary; "ready" on FD; exit 0
 *                                         takeover, 3 VMIG_ECANCELED, 1 other
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "../testutil.h"
#include "../tu_migrate.h"

#define PG        4096u
#define NPAGES    4096u /* 16 MiB */
#define DEV_BLOB  10000u
#define DEV_LEN   (16u + DEV_BLOB)
#define DEV_MAGIC 0x44564d4445563031ull /* "DVMDEV01" */
#define RATE      20000u                /* writer steps per second (80 MB/s of page writes) */
#define HB_MS     400u
/* Silence is measured from the last frame heard, and a heartbeat goes out
 * every HB_MS / 4: a peer stopped right after one is given up HB_MS after
 * it, one stopped right before the next about 3/4 HB_MS after the stop. */
#define KILL_TRIALS 20

extern char **environ;

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint32_t page_of(uint64_t step)
{
    return 1 + (uint32_t)(mix(step) % (NPAGES - 1));
}

static bool zero_step(uint32_t p, uint64_t s)
{
    return s ? (mix(s) >> 60) == 0 : p % 3 == 0;
}

/* Page p's content after step s wrote it (s 0: the initial image). */
static void fill(uint8_t *page, uint32_t p, uint64_t s)
{
    if (zero_step(p, s)) {
        memset(page, 0, PG);
        return;
    }
    uint64_t base = mix((uint64_t)p << 40 ^ s), w[PG / 8];
    for (unsigned i = 0; i < PG / 8; i++)
        w[i] = base + i * 0x9E3779B97F4A7C15ull;
    memcpy(page, w, PG);
}

/*
 * The same, as the guest writes it: plain stores that TSan does not
 * instrument (a vCPU's writes are not, in a real VMM). The channels read
 * the image while the writer runs by design: dirty tracking, not the
 * memory model, makes the copy right. volatile: no memset/memcpy call,
 * which TSan intercepts.
 */
#if defined(__SANITIZE_THREAD__)
#define GUEST_STORE __attribute__((no_sanitize("thread"), noinline))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GUEST_STORE __attribute__((no_sanitize("thread"), noinline))
#endif
#endif
#ifndef GUEST_STORE
#define GUEST_STORE
#endif

static GUEST_STORE void guest_fill(uint8_t *page, uint32_t p, uint64_t s)
{
    volatile uint64_t *w = (volatile uint64_t *)(void *)page;
    bool zero = zero_step(p, s);
    uint64_t base = zero ? 0 : mix((uint64_t)p << 40 ^ s), step = zero ? 0 : 0x9E3779B97F4A7C15ull;
    for (unsigned i = 0; i < PG / 8; i++)
        w[i] = base + i * step;
}

static GUEST_STORE void guest_store(uint8_t *at, uint64_t v)
{
    *(volatile uint64_t *)(void *)at = v;
}

/* The image after steps 1..S. */
static void replay(uint8_t *out, uint64_t S)
{
    uint64_t *last = calloc(NPAGES, sizeof(uint64_t));
    REQUIRE(last, "calloc");
    for (uint64_t s = 1; s <= S; s++)
        last[page_of(s)] = s;
    for (uint32_t p = 1; p < NPAGES; p++)
        fill(out + (uint64_t)p * PG, p, last[p]);
    memset(out, 0, PG);
    memcpy(out, &S, 8);
    free(last);
}

static uint64_t page0_step(const uint8_t *mem)
{
    uint64_t s;
    memcpy(&s, mem, 8);
    return s;
}

/* Where mem differs from replay(S): the first page, or -1. */
static long first_bad_page(const uint8_t *mem, uint64_t S)
{
    uint8_t *want = malloc((size_t)NPAGES * PG);
    REQUIRE(want, "malloc");
    replay(want, S);
    long bad = -1;
    for (uint32_t p = 0; p < NPAGES && bad < 0; p++)
        if (memcmp(mem + (uint64_t)p * PG, want + (uint64_t)p * PG, PG))
            bad = p;
    free(want);
    return bad;
}

static void dev_blob(uint8_t *out, uint64_t S)
{
    for (unsigned i = 0; i < DEV_BLOB; i++)
        out[i] = (uint8_t)(mix(S * 131 + i / 8) >> (8 * (i % 8)));
}

/* ---- the deterministic VM ---- */

typedef struct dvm {
    uint8_t *mem;
    uint64_t dirty[NPAGES / 64]; /* atomic: the writer's dirty log */
    pthread_mutex_t run;         /* the writer holds it per batch; stop holds it until resume */
    pthread_t thread;
    bool started;
    int quit;      /* atomic */
    uint64_t step; /* atomic: the last step taken */
    int stops, resumes;
    /* device */
    int log_fd; /* primary: "K S" per save_final */
    unsigned saves;
    uint8_t dev_in[DEV_LEN]; /* secondary: the state being loaded */
    size_t dev_off;
    uint64_t dev_step; /* secondary: the S of the last load_done */
    unsigned dev_loads;
} dvm;

static void *writer_main(void *arg)
{
    dvm *vm = arg;
    uint64_t t0 = tu_now_ns(), s = vm->step;
    while (!__atomic_load_n(&vm->quit, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&vm->run);
        for (int k = 0; k < 64; k++) {
            s++;
            uint32_t p = page_of(s);
            guest_fill(vm->mem + (uint64_t)p * PG, p, s);
            __atomic_fetch_or(&vm->dirty[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
            guest_store(vm->mem, s);
            __atomic_fetch_or(&vm->dirty[0], 1ull, __ATOMIC_RELEASE);
            __atomic_store_n(&vm->step, s, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&vm->run);
        /* pace: step s is due at t0 + s / RATE (time paused is not made up) */
        uint64_t due = t0 + (s - 0) * 1000000000ull / RATE, now = tu_now_ns();
        if (due > now + 50000000ull)
            t0 = now - s * 1000000000ull / RATE + 50000000ull;
        else if (due > now)
            usleep((useconds_t)((due - now) / 1000));
        else if (now - due > 200000000ull)
            t0 = now - s * 1000000000ull / RATE; /* after a pause */
    }
    return NULL;
}

static void dvm_init(dvm *vm)
{
    memset(vm, 0, sizeof(*vm));
    vm->mem = tu_map((uint64_t)NPAGES * PG);
    replay(vm->mem, 0);
    pthread_mutex_init(&vm->run, NULL);
    vm->log_fd = -1;
}

static void dvm_start(dvm *vm)
{
    REQUIRE(pthread_create(&vm->thread, NULL, writer_main, vm) == 0, "writer thread");
    vm->started = true;
}

static void dvm_halt(dvm *vm)
{
    if (!vm->started)
        return;
    __atomic_store_n(&vm->quit, 1, __ATOMIC_RELEASE);
    pthread_join(vm->thread, NULL);
    vm->started = false;
}

static void dvm_free(dvm *vm)
{
    dvm_halt(vm);
    munmap(vm->mem, (uint64_t)NPAGES * PG);
    pthread_mutex_destroy(&vm->run);
}

static int h_dirty_sync(void *o, uint32_t block, const char *name, uint64_t *bitmap,
                        uint64_t npages)
{
    dvm *vm = o;
    (void)block, (void)name;
    for (uint64_t w = 0; w < (npages + 63) / 64; w++)
        bitmap[w] |= __atomic_exchange_n(&vm->dirty[w], 0, __ATOMIC_ACQ_REL);
    return 0;
}

static int h_stop(void *o)
{
    dvm *vm = o;
    pthread_mutex_lock(&vm->run);
    vm->stops++;
    return 0;
}

static void h_resume(void *o)
{
    dvm *vm = o;
    vm->resumes++;
    pthread_mutex_unlock(&vm->run);
}

static const vmig_vm_ops dvm_src_ops = {
    .dirty_sync = h_dirty_sync, .stop = h_stop, .resume = h_resume};

static int d_save_final(void *o, vmig_devstate_out *out)
{
    dvm *vm = o;
    uint64_t S = __atomic_load_n(&vm->step, __ATOMIC_ACQUIRE);
    uint8_t st[DEV_LEN];
    uint64_t magic = DEV_MAGIC;
    memcpy(st, &magic, 8);
    memcpy(st + 8, &S, 8);
    dev_blob(st + 16, S);
    if (vm->log_fd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof(line), "%u %llu\n", vm->saves, (unsigned long long)S);
        if (write(vm->log_fd, line, (size_t)n) != n)
            return VMIG_EIO;
    }
    vm->saves++;
    /* two writes of odd sizes: chunks do not follow write boundaries */
    int rc = vmig_devstate_write(out, st, 777);
    return rc ? rc : vmig_devstate_write(out, st + 777, DEV_LEN - 777);
}

static int d_load_chunk(void *o, const void *buf, size_t len)
{
    dvm *vm = o;
    if (len > DEV_LEN - vm->dev_off)
        return VMIG_EINVAL;
    memcpy(vm->dev_in + vm->dev_off, buf, len);
    vm->dev_off += len;
    return 0;
}

static int d_load_done(void *o)
{
    dvm *vm = o;
    uint64_t magic, S;
    uint8_t blob[DEV_BLOB];
    size_t got = vm->dev_off;
    vm->dev_off = 0; /* the next checkpoint's state starts again */
    if (got != DEV_LEN)
        return VMIG_EINVAL;
    memcpy(&magic, vm->dev_in, 8);
    memcpy(&S, vm->dev_in + 8, 8);
    dev_blob(blob, S);
    if (magic != DEV_MAGIC || memcmp(blob, vm->dev_in + 16, DEV_BLOB))
        return VMIG_EINVAL;
    vm->dev_step = S;
    vm->dev_loads++;
    return 0;
}

static const vmig_device_ops dvm_dev_ops = {
    .save_final = d_save_final, .load_chunk = d_load_chunk, .load_done = d_load_done};

static void params_for(vmig_params *p)
{
    vmig_params_init(p);
    p->channels = 2;
    p->dirty_track = VMIG_DIRTY_CALLBACK;
    p->checkpoint_period_ms = 100;
    p->heartbeat_timeout_ms = HB_MS;
    p->connect_timeout_ms = 3000;
    p->devstate_chunk = 4096;        /* the device's 10016 bytes: 3 chunks */
    p->max_bandwidth = 100ull << 20; /* a checkpoint's pages take most of its period */
    p->compression = VMIG_CODEC_NONE;
}

static vmig_session *primary_session(dvm *vm, uint32_t period_ms, vmig_error *e)
{
    vmig_params p;
    params_for(&p);
    p.checkpoint_period_ms = period_ms;
    vmig_session *s = NULL;
    if (vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, e) ||
        vmig_ram_add(s, "ram", vm->mem, (uint64_t)NPAGES * PG, PG, 0, e) ||
        vmig_set_vm_ops(s, &dvm_src_ops, vm) ||
        vmig_device_register(s, "dvm-dev", 0, &dvm_dev_ops, vm, e)) {
        vmig_session_free(s);
        return NULL;
    }
    return s;
}

static vmig_session *secondary_session(dvm *vm, const char *uri, vmig_error *e)
{
    vmig_params p;
    params_for(&p);
    vmig_session *s = NULL;
    if (vmig_session_create(&s, VMIG_ROLE_DEST, &p, e) ||
        vmig_ram_add(s, "ram", vm->mem, (uint64_t)NPAGES * PG, PG, 0, e) ||
        vmig_device_register(s, "dvm-dev", 0, &dvm_dev_ops, vm, e) ||
        vmig_incoming_listen(s, uri, e)) {
        vmig_session_free(s);
        return NULL;
    }
    return s;
}

/* ---- the roles of a child ---- */

static int child_primary(const char *uri, const char *log)
{
    static dvm vm;
    dvm_init(&vm);
    vm.log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
    vmig_error e = {0};
    vmig_session *s = primary_session(&vm, 100, &e);
    if (vm.log_fd < 0 || !s) {
        fprintf(stderr, "child primary: %s\n", e.msg);
        return 1;
    }
    dvm_start(&vm);
    int rc = vmig_colo_primary(s, uri, &e);
    fprintf(stderr, "child primary: protection ended: %s\n", e.msg);
    vmig_session_free(s);
    dvm_free(&vm);
    return rc == VMIG_ECANCELED ? 3 : 1;
}

static int child_secondary(const char *uri, int fd)
{
    static dvm vm;
    dvm_init(&vm);
    memset(vm.mem, 0, (uint64_t)NPAGES * PG);
    vmig_error e = {0};
    vmig_session *s = secondary_session(&vm, uri, &e);
    if (!s) {
        fprintf(stderr, "child secondary: %s\n", e.msg);
        return 1;
    }
    if (write(fd, "ready\n", 6) != 6)
        return 1;
    close(fd);
    int rc = vmig_colo_secondary(s, &e);
    if (rc)
        fprintf(stderr, "child secondary: %s (%s)\n", e.msg, vmig_strerror(rc));
    vmig_session_free(s);
    dvm_free(&vm);
    return rc == 0 ? 0 : rc == VMIG_ECANCELED ? 3 : 1;
}

/* ---- the parent ---- */

static char dir[] = "/tmp/vmig-colo-XXXXXX";

static pid_t spawn(char *const argv[])
{
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ);
    REQUIRE(rc == 0, "posix_spawn: %s", strerror(rc));
    return pid;
}

static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* The primary's log: steps[k] is the S its k-th device save held. */
static unsigned read_log(const char *path, uint64_t *steps, unsigned cap)
{
    FILE *f = fopen(path, "r");
    unsigned n = 0, k;
    unsigned long long S;
    while (f && n < cap && fscanf(f, "%u %llu", &k, &S) == 2) {
        CHECK(k == n, "log line %u says %u", n, k);
        steps[n++] = S;
    }
    if (f)
        fclose(f);
    return n;
}

enum kill_mode { K_DELAY, K_FLUSH, K_LOAD, K_SILENT, K_SILENT_EARLY, K_MID, K_MODES };
static const char *const mode_names[] = {"at a random moment",   "in the flush",
                                         "in the device load",   "silent (SIGSTOP)",
                                         "silent before ckpt 0", "in a transfer"};

typedef struct trial {
    dvm *vm;
    pid_t pid;
    enum kill_mode mode;
    uint64_t at_ckpt;       /* K_FLUSH, K_LOAD: which checkpoint's */
    uint64_t killed_ns;     /* when the signal went */
    int killed;             /* atomic */
    uint64_t committed;     /* the last CHECKPOINT event's number + 1 (0: none) */
    uint64_t committing;    /* the checkpoint whose commit started + 1 */
    uint64_t failover_ckpt; /* FAILOVER's number */
    int failovers;
    uint64_t step_at[4096]; /* page 0 at each CHECKPOINT event */
} trial;

static void hit(trial *t, int sig)
{
    if (__atomic_exchange_n(&t->killed, 1, __ATOMIC_ACQ_REL))
        return;
    t->killed_ns = tu_now_ns();
    kill(t->pid, sig);
}

static void sec_event(void *o, vmig_session *s, const vmig_event *ev)
{
    trial *t = o;
    (void)s;
    switch (ev->type) {
    case VMIG_EVENT_CKPT_FLUSH:
        t->committing = ev->checkpoint + 1;
        if (t->mode == K_FLUSH && ev->checkpoint == t->at_ckpt)
            hit(t, SIGKILL);
        break;
    case VMIG_EVENT_CKPT_LOAD:
        if (t->mode == K_LOAD && ev->checkpoint == t->at_ckpt)
            hit(t, SIGKILL);
        break;
    case VMIG_EVENT_CHECKPOINT: {
        uint64_t S = page0_step(t->vm->mem);
        CHECK(ev->checkpoint == t->committed, "CHECKPOINT %llu after %llu",
              (unsigned long long)ev->checkpoint, (unsigned long long)t->committed);
        CHECK(t->vm->dev_step == S, "checkpoint %llu: device at step %llu, RAM at %llu",
              (unsigned long long)ev->checkpoint, (unsigned long long)t->vm->dev_step,
              (unsigned long long)S);
        if (ev->checkpoint < 4096)
            t->step_at[ev->checkpoint] = S;
        /* atomic: the killer thread of K_MID waits for it */
        __atomic_store_n(&t->committed, ev->checkpoint + 1, __ATOMIC_RELEASE);
        break;
    }
    case VMIG_EVENT_FAILOVER:
        t->failovers++;
        t->failover_ckpt = ev->checkpoint;
        CHECK(ev->message && strstr(ev->message, "primary is gone"), "FAILOVER message: %s",
              ev->message ? ev->message : "(none)");
        break;
    default:
        break;
    }
}

typedef struct delayed {
    trial *t;
    uint64_t delay_us;
    int sig;
    vmig_session *after_data; /* count the delay from the first page received */
    vmig_session *mid;        /* K_MID: the signal goes 3 packets into checkpoint 2's transfer */
} delayed;

static void *delayed_main(void *arg)
{
    delayed *d = arg;
    for (vmig_stats st = {0}; d->after_data && !st.packets;) {
        usleep(1000);
        vmig_stats_get(d->after_data, &st);
    }
    uint64_t end = tu_now_ns() + d->delay_us * 1000;
    if (d->mid) {
        vmig_stats st = {0};
        while (__atomic_load_n(&d->t->committed, __ATOMIC_ACQUIRE) < 2 && tu_now_ns() < end)
            usleep(1000);
        vmig_stats_get(d->mid, &st);
        uint64_t p0 = st.packets;
        while (st.packets < p0 + 3 && tu_now_ns() < end) {
            usleep(500);
            vmig_stats_get(d->mid, &st);
        }
        hit(d->t, d->sig);
        return NULL;
    }
    while (tu_now_ns() < end && !__atomic_load_n(&d->t->killed, __ATOMIC_ACQUIRE))
        usleep(2000);
    hit(d->t, d->sig);
    return NULL;
}

static void test_failover(uint64_t *rng)
{
    static dvm vm;
    static trial t;
    unsigned takeovers = 0, discarded = 0, early = 0;
    uint64_t worst_ms = 0;
    for (int n = 0; n < KILL_TRIALS; n++) {
        char uri[128], log[128], seed[32];
        snprintf(uri, sizeof(uri), "unix:%s/sec-%d.sock", dir, n);
        snprintf(log, sizeof(log), "%s/primary-%d.log", dir, n);
        snprintf(seed, sizeof(seed), "%d", n);
        dvm_init(&vm);
        memset(vm.mem, 0, (uint64_t)NPAGES * PG);
        memset(&t, 0, sizeof(t));
        t.vm = &vm;
        t.mode = (enum kill_mode)(n % K_MODES);
        t.at_ckpt = 1 + tu_rand(rng) % 4;
        vmig_error e = {0};
        vmig_session *s = secondary_session(&vm, uri, &e);
        REQUIRE(s, "secondary: %s", e.msg);
        vmig_set_event_cb(s, sec_event, &t);
        char *argv[] = {"test_e2e_colo", "primary", uri, seed, log, NULL};
        t.pid = spawn(argv);
        /* checkpoint 0 takes ~0.2 s, then one per 100 ms: kill in 0.1..1.3 s */
        delayed d = {.t = &t, .delay_us = 100000 + tu_rand(rng) % 1200000, .sig = SIGKILL};
        if (t.mode == K_SILENT || t.mode == K_SILENT_EARLY)
            d.sig = SIGSTOP;
        if (t.mode == K_SILENT_EARLY) {
            d.delay_us = 20000; /* within the initial migration (16 MiB at 100 MiB/s) */
            d.after_data = s;   /* a secondary waits for a primary to connect for ever */
        } else if (t.mode != K_DELAY) {
            d.delay_us = 20000000; /* a backstop only */
        }
        if (t.mode == K_MID)
            d.mid = s;
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, delayed_main, &d) == 0, "thread");
        int rc = vmig_colo_secondary(s, &e);
        uint64_t t_ret = tu_now_ns();
        pthread_join(th, NULL);
        uint64_t took_ms = (t_ret - t.killed_ns) / 1000000;
        kill(t.pid, SIGKILL);
        reap(t.pid);
        vmig_stats st;
        vmig_stats_get(s, &st);
        uint64_t steps[4096];
        unsigned nlog = read_log(log, steps, 4096);
        uint64_t S = page0_step(vm.mem);
        if (rc == 0) {
            takeovers++;
            discarded += st.ckpt_discarded;
            if (t.mode != K_SILENT && t.mode != K_SILENT_EARLY && took_ms > worst_ms)
                worst_ms = took_ms;
            uint64_t K = t.failover_ckpt;
            CHECK(t.failovers == 1, "trial %d: %d FAILOVER events", n, t.failovers);
            /* the checkpoint activated: the last acknowledged, or the one
             * whose commit had started (its ACK could not go out) */
            CHECK(K + 1 == t.committed || K + 1 == t.committing,
                  "trial %d: activated checkpoint %llu, committed %llu, committing %llu", n,
                  (unsigned long long)K, (unsigned long long)t.committed,
                  (unsigned long long)t.committing);
            CHECK(K < nlog && steps[K] == S,
                  "trial %d: RAM at step %llu, the primary's checkpoint %llu was at %llu", n,
                  (unsigned long long)S, (unsigned long long)K,
                  (unsigned long long)(K < nlog ? steps[K] : 0));
            CHECK(vm.dev_step == S, "trial %d: device at step %llu, RAM at %llu", n,
                  (unsigned long long)vm.dev_step, (unsigned long long)S);
            long bad = first_bad_page(vm.mem, S);
            CHECK(bad < 0, "trial %d: page %ld differs from the image of step %llu", n, bad,
                  (unsigned long long)S);
            CHECK(st.checkpoints + 1 == t.committed || st.checkpoints + 1 == t.committing,
                  "trial %d: %llu checkpoints in the stats", n, (unsigned long long)st.checkpoints);
            CHECK(t.mode != K_MID || st.ckpt_discarded == 1,
                  "trial %d: killed 3 packets into a checkpoint, nothing was discarded", n);
            CHECK(t.mode != K_SILENT_EARLY,
                  "trial %d: took over from a primary stopped 20 ms into checkpoint 0", n);
            if (t.mode != K_SILENT)
                CHECK(took_ms < 2000, "trial %d: took over %llu ms after the kill", n,
                      (unsigned long long)took_ms);
            else
                CHECK(took_ms >= HB_MS * 3 / 4 - 50 && took_ms < HB_MS + 2000,
                      "trial %d: a silent primary taken over after %llu ms (heartbeat %u ms)", n,
                      (unsigned long long)took_ms, HB_MS);
        } else {
            if (t.mode == K_SILENT_EARLY || t.mode == K_SILENT)
                CHECK(took_ms >= HB_MS * 3 / 4 - 50 && took_ms < HB_MS + 2000,
                      "trial %d: a primary silent before checkpoint 0 given up after %llu ms", n,
                      (unsigned long long)took_ms);
            /* only a primary lost before checkpoint 0 was complete leaves nothing to run */
            early++;
            CHECK(t.committed == 0 && t.mode != K_FLUSH && t.mode != K_LOAD && t.mode != K_MID &&
                      strstr(e.msg, "nothing to take over"),
                  "trial %d (%s): no takeover after %llu checkpoints: %s", n, mode_names[t.mode],
                  (unsigned long long)t.committed, e.msg);
        }
        if (getenv("VMIG_TEST_VERBOSE") || rc)
            fprintf(stderr,
                    "trial %2d %-20s: %s after %llu checkpoints, step %llu, %llu ms after the "
                    "signal%s\n",
                    n, mode_names[t.mode], rc ? "no takeover" : "took over",
                    (unsigned long long)t.committed, (unsigned long long)S,
                    (unsigned long long)took_ms, st.ckpt_discarded ? ", partial discarded" : "");
        vmig_session_free(s);
        dvm_free(&vm);
    }
    printf("failover: %u of %d trials took over (%u lost the primary before checkpoint 0), %u "
           "discarded a partial checkpoint, slowest SIGKILL takeover %llu ms\n",
           takeovers, KILL_TRIALS, early, discarded, (unsigned long long)worst_ms);
    CHECK(takeovers >= KILL_TRIALS / 2, "only %u takeovers in %d trials", takeovers, KILL_TRIALS);
}

/* ---- the primary side ---- */

typedef struct prim {
    vmig_session *s;
    pid_t pid;
    int sig;     /* what to send the secondary */
    uint64_t at; /* at CHECKPOINT `at` */
    uint64_t sent_ns;
    uint64_t ckpts;       /* CHECKPOINT events */
    bool request, cancel; /* period 0: request the next; cancel at `at` */
} prim;

static void prim_event(void *o, vmig_session *s, const vmig_event *ev)
{
    prim *x = o;
    if (ev->type != VMIG_EVENT_CHECKPOINT)
        return;
    x->ckpts++;
    if (ev->checkpoint == x->at) {
        if (x->cancel) {
            vmig_cancel(s);
            return;
        }
        if (x->sig) {
            x->sent_ns = tu_now_ns();
            kill(x->pid, x->sig);
        }
    }
    if (x->request)
        CHECK(vmig_colo_checkpoint_request(s) == 0, "request after checkpoint %llu",
              (unsigned long long)ev->checkpoint);
}

static pid_t spawn_secondary(const char *uri)
{
    int pfd[2];
    REQUIRE(pipe(pfd) == 0, "pipe");
    char sfd[16];
    snprintf(sfd, sizeof(sfd), "%d", pfd[1]);
    char *argv[] = {"test_e2e_colo", "secondary", (char *)uri, sfd, NULL};
    pid_t pid = spawn(argv);
    close(pfd[1]);
    char buf[8] = {0};
    REQUIRE(read(pfd[0], buf, 6) == 6, "the secondary child did not start");
    close(pfd[0]);
    return pid;
}

/* The VM runs on after protection ended: its writer advances and its
 * memory is the image of its step. */
static void check_vm_runs_intact(dvm *vm, const char *what)
{
    uint64_t s0 = __atomic_load_n(&vm->step, __ATOMIC_ACQUIRE);
    usleep(100000);
    uint64_t s1 = __atomic_load_n(&vm->step, __ATOMIC_ACQUIRE);
    CHECK(s1 > s0, "%s: the VM does not run (step %llu)", what, (unsigned long long)s1);
    dvm_halt(vm);
    uint64_t S = page0_step(vm->mem);
    CHECK(S == vm->step, "%s: page 0 at %llu, writer at %llu", what, (unsigned long long)S,
          (unsigned long long)vm->step);
    long bad = first_bad_page(vm->mem, S);
    CHECK(bad < 0, "%s: page %ld is not the image of step %llu", what, bad, (unsigned long long)S);
    CHECK(vm->stops == vm->resumes, "%s: %d stops, %d resumes", what, vm->stops, vm->resumes);
}

static void test_secondary_lost(int sig)
{
    const char *what = sig == SIGKILL ? "secondary killed" : "secondary silent";
    static dvm vm;
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s/lost-%d.sock", dir, sig);
    dvm_init(&vm);
    vmig_error e = {0};
    vmig_session *s = primary_session(&vm, 100, &e);
    REQUIRE(s, "primary: %s", e.msg);
    CHECK(vmig_colo_checkpoint_request(s) == VMIG_ESTATE, "request before protection");
    prim x = {.s = s, .sig = sig, .at = 3};
    x.pid = spawn_secondary(uri);
    vmig_set_event_cb(s, prim_event, &x);
    dvm_start(&vm);
    int rc = vmig_colo_primary(s, uri, &e);
    uint64_t took_ms = (tu_now_ns() - x.sent_ns) / 1000000;
    kill(x.pid, SIGKILL);
    reap(x.pid);
    vmig_stats st;
    vmig_stats_get(s, &st);
    printf("%s after checkpoint 3: the primary noticed in %llu ms: %s\n", what,
           (unsigned long long)took_ms, e.msg);
    CHECK(rc != 0 && rc != VMIG_ECANCELED && x.sent_ns, "%s: rc %d (%s)", what, rc, e.msg);
    CHECK(strstr(e.msg, "secondary is lost") && strstr(e.msg, "unprotected"), "%s: %s", what,
          e.msg);
    CHECK(took_ms < HB_MS + 1500, "%s: noticed after %llu ms (heartbeat %u ms)", what,
          (unsigned long long)took_ms, HB_MS);
    if (sig == SIGSTOP)
        CHECK(took_ms >= HB_MS * 3 / 4 - 50 && rc == VMIG_ETIMEDOUT, "%s: rc %d after %llu ms",
              what, rc, (unsigned long long)took_ms);
    CHECK(st.checkpoints >= 3 && x.ckpts >= 4, "%s: %llu checkpoints, %llu events", what,
          (unsigned long long)st.checkpoints, (unsigned long long)x.ckpts);
    CHECK(st.state != VMIG_STATE_CHECKPOINTING, "%s: state %s", what, vmig_state_name(st.state));
    CHECK(vmig_colo_checkpoint_request(s) == VMIG_ESTATE, "%s: request after the end", what);
    check_vm_runs_intact(&vm, what);
    vmig_session_free(s);
    dvm_free(&vm);
}

static void test_cancel_on_request(void)
{
    static dvm vm;
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s/cancel.sock", dir);
    dvm_init(&vm);
    vmig_error e = {0};
    vmig_session *s = primary_session(&vm, 0, &e); /* checkpoints on request only */
    REQUIRE(s, "primary: %s", e.msg);
    prim x = {.s = s, .at = 5, .request = true, .cancel = true};
    x.pid = spawn_secondary(uri);
    vmig_set_event_cb(s, prim_event, &x);
    dvm_start(&vm);
    uint64_t t0 = tu_now_ns();
    int rc = vmig_colo_primary(s, uri, &e);
    uint64_t ms = (tu_now_ns() - t0) / 1000000;
    int st = reap(x.pid);
    vmig_stats sts;
    vmig_stats_get(s, &sts);
    printf("canceled after checkpoint 5 (%llu ms): %s; the secondary exited %d\n",
           (unsigned long long)ms, e.msg, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CHECK(rc == VMIG_ECANCELED, "cancel: rc %d (%s)", rc, e.msg);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3,
          "the secondary did not end with VMIG_ECANCELED (status 0x%x)", st);
    CHECK(sts.checkpoints == 5, "%llu checkpoints", (unsigned long long)sts.checkpoints);
    CHECK(sts.ckpt_pause_max_ns >= sts.ckpt_pause_ns &&
              sts.ckpt_pause_total_ns >= sts.ckpt_pause_max_ns && sts.ckpt_pause_ns > 0,
          "pause stats %llu %llu %llu", (unsigned long long)sts.ckpt_pause_ns,
          (unsigned long long)sts.ckpt_pause_max_ns, (unsigned long long)sts.ckpt_pause_total_ns);
    check_vm_runs_intact(&vm, "canceled");
    vmig_session_free(s);
    dvm_free(&vm);
}

/* A primary and a plain destination, a plain source and a secondary. */
static void *run_secondary(void *p)
{
    tu_side *x = p;
    x->rc = vmig_colo_secondary(x->s, &x->err);
    return NULL;
}

static void *run_primary(void *p)
{
    tu_side *x = p;
    x->rc = vmig_colo_primary(x->s, x->uri, &x->err);
    return NULL;
}

static void test_mismatch(bool colo_dest)
{
    static dvm src, dst;
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s/mismatch-%d.sock", dir, colo_dest);
    dvm_init(&src);
    dvm_init(&dst);
    vmig_error e = {0};
    tu_side S = {.s = primary_session(&src, 100, &e), .uri = uri};
    REQUIRE(S.s, "primary: %s", e.msg);
    tu_side D = {.s = secondary_session(&dst, uri, &e)};
    REQUIRE(D.s, "secondary: %s", e.msg);
    pthread_t ts, td;
    pthread_create(&td, NULL, colo_dest ? run_secondary : tu_run_dst, &D);
    pthread_create(&ts, NULL, colo_dest ? tu_run_src : run_primary, &S);
    pthread_join(ts, NULL);
    pthread_join(td, NULL);
    const char *what = colo_dest ? "plain source to a secondary" : "primary to a plain destination";
    printf("%s: source: %s | destination: %s\n", what, S.err.msg, D.err.msg);
    CHECK(S.rc != 0 && D.rc != 0, "%s: rc %d %d", what, S.rc, D.rc);
    CHECK(strstr(D.err.msg, colo_dest ? "vmig_colo_secondary" : "primary of continuous"),
          "%s: the destination says: %s", what, D.err.msg);
    if (!colo_dest)
        CHECK(strstr(S.err.msg, "no protection") && strstr(S.err.msg, "checkpoint 0"),
              "%s: the primary says: %s", what, S.err.msg);
    CHECK(src.stops == src.resumes, "%s: %d stops %d resumes", what, src.stops, src.resumes);
    vmig_session_free(S.s);
    vmig_session_free(D.s);
    dvm_free(&src);
    dvm_free(&dst);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "primary"))
        return child_primary(argv[2], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "secondary"))
        return child_secondary(argv[2], atoi(argv[3]));
    signal(SIGPIPE, SIG_IGN);
    REQUIRE(mkdtemp(dir), "mkdtemp");
    uint64_t rng = 0xC010C010ull ^ (uint64_t)time(NULL);
    if (getenv("VMIG_TEST_SEED"))
        rng = strtoull(getenv("VMIG_TEST_SEED"), NULL, 0);
    printf("seed 0x%llx (VMIG_TEST_SEED replays it)\n", (unsigned long long)rng);
    test_mismatch(true);
    test_mismatch(false);
    test_cancel_on_request();
    test_secondary_lost(SIGKILL);
    test_secondary_lost(SIGSTOP);
    test_failover(&rng);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tu_result("test_e2e_colo");
}
