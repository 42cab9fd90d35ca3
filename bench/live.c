/*
 * The synthetic live workload (see live.h for what it does and why).
 *
 * Each writer runs batches of at most 64 writes between control points. At a
 * control point it looks at the pause/stop request (one relaxed load of a
 * line nobody writes while running), reads the clock, applies the duty cycle
 * and refills its token bucket:
 *
 *   period:  |<------ on: (100-pct) % ------>|<--- off: sleep --->|
 *            grid + k * 10 ms                                     grid + (k+1) * 10 ms
 *   tokens:  += on-phase time since the last control point * writes/ns
 *               (nothing while off or paused; at most 50 ms worth banked)
 *
 * When the bucket holds less than one write the writer sleeps (at most 1 ms,
 * never past the end of the on-phase) until it would hold a full batch; time
 * asleep in the on-phase counts as running, so the rate does not depend on
 * how precisely the kernel wakes us. Pause: a writer that sees the request
 * publishes its counters, increments `parked` under the mutex, signals the
 * controller and waits; vmig_live_pause() waits until `parked` equals the
 * number of writers. A writer still inside that wait stays counted, so a
 * pause right after a resume is immediate and still exact.
 *
 * Stamp tables: writer w owns hot pages w, w+W, w+2W, ... and keeps their
 * stamps in its own row, last[w * share + j] for hot page j*W + w, so the
 * writers never share a cache line of the table.
 */
#include "live.h"
#include "prng.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE      VMIG_LIVE_PAGE_SIZE
#define BATCH     64u         /* writes between control points */
#define STEP_NS   1000000ull  /* longest single sleep (1 ms) */
#define BURST_NS  50000000ull /* token bucket depth, in running time (50 ms) */
#define RING_MASK (VMIG_LIVE_RING - 1u)

_Static_assert(VMIG_LIVE_RING == 64, "write_one() picks a ring slot with the top 6 bits");

struct live_writer {
    vmig_live *l;
    unsigned id;
    pthread_t tid;
    uint64_t *last;  /* stamps of this writer's hot pages, `share` of them */
    uint64_t share;  /* hot pages owned: id, id + W, id + 2W, ... */
    uint64_t rng;    /* splitmix64 state */
    uint64_t count;  /* writes done (the low 48 bits of the last stamp) */
    unsigned ring_n; /* pages in the redirty ring (saturates at VMIG_LIVE_RING) */
    unsigned ring_pos;
    uint64_t ring[VMIG_LIVE_RING]; /* recent randomly drawn pages (indices into `last`) */
    /* Read by vmig_live_stats() on other threads: a line of its own. */
    alignas(64) atomic_uint_fast64_t writes;
};

struct vmig_live {
    uint8_t *mem;
    uint64_t len;
    uint64_t hot_first, hot_pages; /* hot set, in pages */
    unsigned nw;                   /* writers */
    unsigned redirty_pct;
    double wpns; /* writes per ns per writer; 0 = unlimited */
    double burst;
    uint64_t share_max; /* row length of `last` */
    uint64_t *last;     /* nw rows of share_max stamps */
    struct live_writer *w;
    unsigned started; /* writer threads created */

    /* Control, read by the writers at every control point. */
    alignas(64) atomic_bool pause_req;
    atomic_bool stop;
    atomic_uint throttle;
    atomic_bool paused; /* the public state: pause() returned, resume() not yet called */

    alignas(64) pthread_mutex_t mu;
    pthread_cond_t cv_writer; /* writers wait here while parked */
    pthread_cond_t cv_ctl;    /* vmig_live_pause() waits here for `parked` */
    unsigned parked;          /* writers inside the parked wait (mu) */
    uint64_t run_acc_ns;      /* running time of past runs (mu) */
    uint64_t run_since;       /* start of the current run, 0 while paused (mu) */
};

/* ------------------------------------------------------------- helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Uniform in [0, n) (Lemire's multiply-shift; the bias is below n / 2^64). */
static inline uint64_t below(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/* ------------------------------------------------------------- writers */

/*
 * The store into the image: what a vCPU does to guest memory. Under TSan it
 * is not instrumented, as guest writes in a real VMM are not: a migration
 * reads the image while the writers run by design (dirty tracking, not the
 * memory model, makes its copy right), and instrumenting the store would
 * report that in every live test. Everything else (the stamp table, the
 * counters, the handshake) stays instrumented, so a missing happens-before
 * between a writer and a check is still caught through `last`.
 */
#if defined(__SANITIZE_THREAD__)
#define GUEST_STORE_ATTR __attribute__((no_sanitize("thread"), noinline))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GUEST_STORE_ATTR __attribute__((no_sanitize("thread"), noinline))
#endif
#endif
#ifndef GUEST_STORE_ATTR
#define GUEST_STORE_ATTR
#endif

typedef uint64_t __attribute__((may_alias, aligned(1))) guest_u64; /* any alignment of mem */

static GUEST_STORE_ATTR void guest_store(uint8_t *p, uint64_t v)
{
    *(guest_u64 *)p = v; /* a plain store, never a call (memcpy is intercepted by TSan) */
}

/* One write: picks the page, stamps it, records the stamp. */
static inline void write_one(struct live_writer *w, uint8_t *hot, unsigned nw, unsigned redirty)
{
    uint64_t j, r = 0;
    /* low 32 bits of r decide redirtying (pct of 2^32), the top 6 pick the slot */
    if (redirty && w->ring_n == VMIG_LIVE_RING &&
        (((r = splitmix64(&w->rng)) & 0xFFFFFFFFu) * 100 >> 32) < redirty) {
        j = w->ring[r >> 58];
    } else {
        j = below(splitmix64(&w->rng), w->share);
        w->ring[w->ring_pos] = j;
        w->ring_pos = (w->ring_pos + 1) & RING_MASK;
        if (w->ring_n < VMIG_LIVE_RING)
            w->ring_n++;
    }
    uint64_t stamp = ((uint64_t)(w->id + 1) << 48) | ++w->count;
    guest_store(hot + (j * nw + w->id) * PAGE, stamp);
    w->last[j] = stamp;
}

/* Parks the writer while a pause is requested. Returns false on stop. */
static bool writer_park(struct live_writer *w)
{
    vmig_live *l = w->l;
    atomic_store_explicit(&w->writes, w->count, memory_order_relaxed);
    pthread_mutex_lock(&l->mu);
    l->parked++;
    pthread_cond_broadcast(&l->cv_ctl);
    while (atomic_load_explicit(&l->pause_req, memory_order_relaxed) &&
           !atomic_load_explicit(&l->stop, memory_order_relaxed))
        pthread_cond_wait(&l->cv_writer, &l->mu);
    l->parked--;
    bool go = !atomic_load_explicit(&l->stop, memory_order_relaxed);
    pthread_mutex_unlock(&l->mu);
    return go;
}

/* Running time of the duty cycle in [grid, t]: `on` ns of every whole
 * period, and of the current one what has passed of its on-phase. */
static inline uint64_t on_time(uint64_t t, uint64_t grid, uint64_t on)
{
    uint64_t d = t - grid, phase = d % VMIG_LIVE_PERIOD_NS;
    return d / VMIG_LIVE_PERIOD_NS * on + (phase < on ? phase : on);
}

static void *writer_main(void *arg)
{
    struct live_writer *w = arg;
    vmig_live *l = w->l;
    uint8_t *hot = l->mem + l->hot_first * PAGE;
    const unsigned nw = l->nw, redirty = l->redirty_pct;
    const double wpns = l->wpns, burst = l->burst;
    double tokens = 0;
    unsigned pct = 0;                   /* the duty cycle in force */
    uint64_t on = VMIG_LIVE_PERIOD_NS;  /* its on-phase, ns per period */
    uint64_t grid = now_ns(), done = 0; /* its origin; running time accrued since */

    for (;;) {
        /* control point: pause, stop */
        if (atomic_load_explicit(&l->pause_req, memory_order_relaxed) ||
            atomic_load_explicit(&l->stop, memory_order_relaxed)) {
            if (atomic_load_explicit(&l->stop, memory_order_relaxed) || !writer_park(w))
                break;
            grid = now_ns(); /* paused time accrues nothing */
            done = 0;
            continue;
        }
        uint64_t now = now_ns();

        /* Duty cycle: tokens accrue over the on-phases only. The grid keeps
         * its origin, so wake-up latency never stretches an off-phase, and a
         * writer that lost the CPU for whole periods is owed only their
         * on-phases. A new throttle restarts the grid at once. */
        unsigned want = atomic_load_explicit(&l->throttle, memory_order_relaxed);
        uint64_t t_on = on_time(now, grid, on);
        tokens += (double)(t_on - done) * wpns;
        if (tokens > burst)
            tokens = burst;
        done = t_on;
        if (want != pct) {
            pct = want;
            on = (uint64_t)(100 - pct) * (VMIG_LIVE_PERIOD_NS / 100);
            grid = now;
            done = 0;
        }
        uint64_t phase = (now - grid) % VMIG_LIVE_PERIOD_NS;
        if (phase >= on) {
            uint64_t t = now + (VMIG_LIVE_PERIOD_NS - phase); /* end of the off-phase */
            sleep_until(t < now + STEP_NS ? t : now + STEP_NS);
            continue;
        }

        /* token bucket */
        unsigned n = BATCH;
        if (wpns > 0) {
            if (tokens < 1.0) {
                /* sleep until a full batch has accrued: at most 1 ms, and
                 * not past the on-phase */
                uint64_t t = now + (uint64_t)(((double)BATCH - tokens) / wpns);
                if (t > now + STEP_NS)
                    t = now + STEP_NS;
                if (t > now + (on - phase))
                    t = now + (on - phase);
                sleep_until(t);
                continue;
            }
            if (tokens < (double)BATCH)
                n = (unsigned)tokens;
            tokens -= n;
        }

        for (unsigned i = 0; i < n; i++)
            write_one(w, hot, nw, redirty);
        atomic_store_explicit(&w->writes, w->count, memory_order_relaxed);
    }
    atomic_store_explicit(&w->writes, w->count, memory_order_relaxed);
    return NULL;
}

/* ---------------------------------------------------------------- API */

void vmig_live_params_default(struct vmig_live_params *p)
{
    *p = (struct vmig_live_params){.writers = 2, .seed = 1};
}

static int start_writer(struct live_writer *w)
{
    /* Block every signal in the writer (it inherits the creator's mask):
     * process signals belong to the application's threads. The synchronous
     * fault signals stay open: blocking them would not stop a real fault,
     * only turn a handled one into the death of the process. */
    sigset_t set, old;
    sigfillset(&set);
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGBUS);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    sigdelset(&set, SIGTRAP);
    pthread_sigmask(SIG_SETMASK, &set, &old);
    int rc = pthread_create(&w->tid, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        char name[16];
        snprintf(name, sizeof(name), "vmig-live%u", w->id);
        pthread_setname_np(w->tid, name); /* cosmetic (top, perf): failure is harmless */
    }
    return rc;
}

int vmig_live_create(vmig_live **out, uint8_t *mem, uint64_t len, const struct vmig_live_params *p,
                     bool start_paused)
{
    *out = NULL;
    struct vmig_live_params def;
    if (!p) {
        vmig_live_params_default(&def);
        p = &def;
    }
    if (!mem || len == 0 || len % PAGE || p->writers < 1 || p->writers > VMIG_LIVE_WRITERS_MAX ||
        p->redirty_pct > 100 || p->hot_off % PAGE || p->hot_len % PAGE || p->hot_off >= len)
        return -EINVAL;
    uint64_t hot_len = p->hot_len ? p->hot_len : len - p->hot_off;
    if (hot_len > len - p->hot_off || hot_len / PAGE < p->writers)
        return -EINVAL;

    /* The struct is over-aligned (its control and mutex lines), as are the
     * writers: aligned_alloc, sizes rounded to the alignment. */
    size_t lsz = (sizeof(vmig_live) + 63) & ~(size_t)63;
    vmig_live *l = aligned_alloc(64, lsz);
    if (!l)
        return -ENOMEM;
    memset(l, 0, lsz);
    l->mem = mem;
    l->len = len;
    l->hot_first = p->hot_off / PAGE;
    l->hot_pages = hot_len / PAGE;
    l->nw = p->writers;
    l->redirty_pct = p->redirty_pct;
    l->wpns = (double)p->rate / l->nw / PAGE / 1e9;
    l->burst = l->wpns * (double)BURST_NS;
    if (l->burst < (double)BATCH)
        l->burst = (double)BATCH;
    l->share_max = (l->hot_pages + l->nw - 1) / l->nw;
    /* The writers start parked and are let go together once all exist: a
     * busy writer would otherwise slow down the creation of the next ones. */
    atomic_init(&l->pause_req, true);
    atomic_init(&l->stop, false);
    atomic_init(&l->throttle, 0);
    atomic_init(&l->paused, true);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_writer, NULL);
    pthread_cond_init(&l->cv_ctl, NULL);

    size_t wsz = sizeof(struct live_writer) * l->nw; /* a multiple of 64 (alignas) */
    l->w = aligned_alloc(64, wsz);
    l->last = calloc((size_t)l->share_max * l->nw, sizeof(uint64_t));
    if (!l->w || !l->last) {
        vmig_live_free(l);
        return -ENOMEM;
    }
    memset(l->w, 0, wsz);
    for (unsigned i = 0; i < l->nw; i++) {
        struct live_writer *w = &l->w[i];
        w->l = l;
        w->id = i;
        w->last = l->last + (size_t)i * l->share_max;
        w->share = (l->hot_pages - i + l->nw - 1) / l->nw;
        w->rng = mix64(p->seed ^ mix64(0x4C495645ull + i)); /* "LIVE" + writer */
        atomic_init(&w->writes, 0);
    }
    for (unsigned i = 0; i < l->nw; i++) {
        int rc = start_writer(&l->w[i]);
        if (rc) {
            vmig_live_free(l);
            return -rc;
        }
        l->started++;
    }
    if (!start_paused)
        vmig_live_resume(l);
    *out = l;
    return 0;
}

void vmig_live_free(vmig_live *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    atomic_store_explicit(&l->stop, true, memory_order_relaxed);
    pthread_cond_broadcast(&l->cv_writer);
    pthread_mutex_unlock(&l->mu);
    for (unsigned i = 0; i < l->started; i++)
        pthread_join(l->w[i].tid, NULL);
    pthread_cond_destroy(&l->cv_ctl);
    pthread_cond_destroy(&l->cv_writer);
    pthread_mutex_destroy(&l->mu);
    free(l->last);
    free(l->w);
    free(l);
}

void vmig_live_throttle(vmig_live *l, unsigned pct)
{
    atomic_store_explicit(&l->throttle, pct > 99 ? 99 : pct, memory_order_relaxed);
}

void vmig_live_pause(vmig_live *l)
{
    pthread_mutex_lock(&l->mu);
    if (!atomic_load_explicit(&l->paused, memory_order_relaxed)) {
        atomic_store_explicit(&l->pause_req, true, memory_order_relaxed);
        while (l->parked < l->started)
            pthread_cond_wait(&l->cv_ctl, &l->mu);
        /* a concurrent pause() may have finished the job meanwhile */
        if (!atomic_load_explicit(&l->paused, memory_order_relaxed)) {
            l->run_acc_ns += now_ns() - l->run_since;
            l->run_since = 0;
            atomic_store_explicit(&l->paused, true, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&l->mu);
}

void vmig_live_resume(vmig_live *l)
{
    pthread_mutex_lock(&l->mu);
    if (atomic_load_explicit(&l->paused, memory_order_relaxed)) {
        atomic_store_explicit(&l->paused, false, memory_order_relaxed);
        atomic_store_explicit(&l->pause_req, false, memory_order_relaxed);
        l->run_since = now_ns();
        pthread_cond_broadcast(&l->cv_writer);
    }
    pthread_mutex_unlock(&l->mu);
}

void vmig_live_stats(vmig_live *l, struct vmig_live_stats *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&l->mu);
    st->run_ns = l->run_acc_ns + (l->run_since ? now_ns() - l->run_since : 0);
    st->paused = atomic_load_explicit(&l->paused, memory_order_relaxed);
    pthread_mutex_unlock(&l->mu);
    st->writers = l->nw;
    for (unsigned i = 0; i < l->nw; i++) {
        st->writer_writes[i] = atomic_load_explicit(&l->w[i].writes, memory_order_relaxed);
        st->writes += st->writer_writes[i];
    }
    st->bytes = st->writes * PAGE;
    st->throttle_pct = atomic_load_explicit(&l->throttle, memory_order_relaxed);
    st->mbps = st->run_ns ? (double)st->bytes / (double)st->run_ns * 1e3 : 0.0;
}

/* --------------------------------------------------------------- checks */

/* The last stamp of image page `page`, 0 if never written. */
static uint64_t stamp_of(const vmig_live *l, uint64_t page)
{
    if (page < l->hot_first || page - l->hot_first >= l->hot_pages)
        return 0;
    uint64_t i = page - l->hot_first;
    return l->last[(i % l->nw) * l->share_max + i / l->nw];
}

/* Describes a stamp value for a message: whose write it is, if it is one. */
static void describe_stamp(const vmig_live *l, uint64_t v, uint64_t expect, char *buf, size_t len)
{
    uint64_t who = v >> 48, n = v & 0xFFFFFFFFFFFFull;
    if (who >= 1 && who <= l->nw && n && (v >> 48) == (expect >> 48) &&
        n < (expect & 0xFFFFFFFFFFFFull))
        snprintf(buf, len, ", an older stamp of writer %llu (write %llu): a lost update",
                 (unsigned long long)(who - 1), (unsigned long long)n);
    else if (who >= 1 && who <= l->nw && n)
        snprintf(buf, len, ", a stamp of writer %llu (write %llu)", (unsigned long long)(who - 1),
                 (unsigned long long)n);
    else
        buf[0] = 0;
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t from)
{
    size_t i = from;
    while (i < PAGE && a[i] == b[i])
        i++;
    return i;
}

static int check_mem(const vmig_live *l, const uint8_t *orig, const uint8_t *mem, const char *what,
                     char *msg, size_t len)
{
    if (msg && len)
        msg[0] = 0;
    if (!atomic_load_explicit(&l->paused, memory_order_relaxed)) {
        if (msg && len)
            snprintf(msg, len, "the workload's writers are running: pause it before checking");
        return -EBUSY;
    }
    uint64_t npages = l->len / PAGE;
    for (uint64_t pg = 0; pg < npages; pg++) {
        const uint8_t *m = mem + pg * PAGE, *o = orig ? orig + pg * PAGE : NULL;
        uint64_t stamp = stamp_of(l, pg);
        if (stamp) {
            uint64_t v;
            memcpy(&v, m, sizeof(v));
            if (v != stamp) {
                if (msg && len) {
                    char d[96];
                    describe_stamp(l, v, stamp, d, sizeof(d));
                    snprintf(msg, len,
                             "%s page %llu (offset 0x%llx): first 8 bytes hold 0x%016llx%s; "
                             "expected the last stamp written, 0x%016llx (writer %llu, write %llu)",
                             what, (unsigned long long)pg, (unsigned long long)(pg * PAGE),
                             (unsigned long long)v, d, (unsigned long long)stamp,
                             (unsigned long long)((stamp >> 48) - 1),
                             (unsigned long long)(stamp & 0xFFFFFFFFFFFFull));
                }
                return -EIO;
            }
            if (o && memcmp(m + 8, o + 8, PAGE - 8) != 0) {
                size_t b = first_diff(m, o, 8);
                if (msg && len)
                    snprintf(msg, len,
                             "%s page %llu (offset 0x%llx, stamped 0x%016llx): byte %zu is 0x%02x, "
                             "expected 0x%02x as in the original",
                             what, (unsigned long long)pg, (unsigned long long)(pg * PAGE),
                             (unsigned long long)stamp, b, m[b], o[b]);
                return -EIO;
            }
        } else if (o && memcmp(m, o, PAGE) != 0) {
            size_t b = first_diff(m, o, 0);
            if (msg && len)
                snprintf(msg, len,
                         "%s page %llu (offset 0x%llx, never written): byte %zu is 0x%02x, "
                         "expected 0x%02x as in the original",
                         what, (unsigned long long)pg, (unsigned long long)(pg * PAGE), b, m[b],
                         o[b]);
            return -EIO;
        }
    }
    return 0;
}

int vmig_live_check(const vmig_live *l, const uint8_t *orig, char *msg, size_t len)
{
    return check_mem(l, orig, l->mem, "image", msg, len);
}

int vmig_live_check_copy(const vmig_live *l, const uint8_t *orig, const uint8_t *copy, char *msg,
                         size_t len)
{
    return check_mem(l, orig, copy, "copy", msg, len);
}
