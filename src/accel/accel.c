/*
 * The channel side of page-check offload (accel.h): batches in slots,
 * pipelined submission, the hybrid fallback, page faults, device failure.
 *
 * Slots. A channel has VMIG_ACCEL_SLOTS batches. A slot is
 *   free      neither submitted nor wanted;
 *   running   submitted (busy) and wanted: finish(tag) will read it;
 *   late      busy, no longer wanted: the CPU answered all of its pages
 *             before the device did; it is reclaimed (done() polled) by
 *             the next start() or by chan_free().
 * The device may write a busy batch's records at any moment, so a busy
 * batch is never prepared again nor freed.
 *
 * Hybrid finish. While done() is false the channel thread walks the batch
 * from its tail: a job the device has answered is taken as it is, one it
 * has not is checked on the CPU; then it polls again. The device works from
 * the head (or in any order); the two meet somewhere, and each page is
 * answered once: by the CPU for the jobs at and above the meeting point,
 * by the device's records below it (whatever it later writes above is
 * ignored). A device that has finished by the time finish() is called
 * costs one load per job.
 *
 * Page faults. The device does not block on faults (no BOF): a job that
 * reaches a page the IOMMU cannot translate stops with PARTIAL and the
 * bytes before it compared equal. In private anonymous memory a page that
 * is neither present nor swapped (/proc/self/pagemap bits 63 and 62) was
 * never touched, or was discarded, and reads as zero: such a page is zero
 * without reading it (which would also map it). Anywhere else (a swapped
 * page, a file or shared mapping whose page cache may hold data, no access
 * to pagemap) the rest of the page is checked on the CPU.
 *
 * Untouched pages need no device at all: before a packet of private
 * anonymous memory is submitted (or taken whole by the CPU), one pread()
 * of its span of pagemap entries finds the pages that are neither present
 * nor swapped; they are answered zero at once and left out of the batch.
 * Faults then remain for what the pre-check could not see (a span too
 * sparse for one read, pages discarded or swapped since).
 *
 * Device failure: a submission error, or an error status of the device's
 * own in a record, makes every channel stop using the device for the rest
 * of the session (one atomic flag); the sentence is kept for the caller to
 * report once. Jobs the device did answer stay valid.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "accel.h"

extern const vmig_accel_ops vmig_accel_cpu_ops;
extern const vmig_accel_ops vmig_accel_dsa_ops;
extern const vmig_accel_ops vmig_accel_dsa_model_ops;

const vmig_accel_ops *const vmig_accel_backends[] = {
    &vmig_accel_cpu_ops,
    &vmig_accel_dsa_ops,
    &vmig_accel_dsa_model_ops,
    NULL,
};

const vmig_accel_ops *vmig_accel_find(const char *name)
{
    for (size_t i = 0; name && vmig_accel_backends[i]; i++)
        if (!strcmp(vmig_accel_backends[i]->name, name))
            return vmig_accel_backends[i];
    return NULL;
}

struct vmig_accel {
    const vmig_accel_ops *ops;
    void *dev;
    vmig_accel_conf conf; /* path not kept */
    int pagemap_fd;       /* -1: faulted pages go to the CPU */
    size_t os_page;
    int failed;      /* atomic: the device is not used any more */
    int failure_set; /* atomic: failure[] is complete */
    char failure[256];
    vmig_accel_counters st; /* relaxed atomics */
};

typedef struct accel_slot {
    void *batch; /* made at first use */
    uint64_t tag;
    uint32_t n;    /* pages of the packet */
    uint32_t ndev; /* of those, given to the device: job j is page map[j] */
    uint32_t *map; /* [max_jobs] */
    uint8_t *pre;  /* [max_jobs]: 1 = untouched, answered zero before submission */
    bool busy;
    bool wanted;
} accel_slot;

/* Pagemap entries read at once for a packet: its pages' span may be up to
 * this many times its page count (sparse dirty pages), else no pre-check. */
#define PM_SPAN 4u

struct vmig_accel_chan {
    vmig_accel *a;
    uint32_t chan;
    accel_slot slot[VMIG_ACCEL_SLOTS];
    const void **dbufs; /* [max_jobs]: the pages given to the device */
    uint64_t *pm;       /* [PM_SPAN * max_jobs]: pagemap entries */
    uint8_t *pre;       /* [max_jobs]: precheck() of a packet the CPU takes whole */
    /* Pacing: one packet in `every` is started ahead (1: all of them).
     * Doubled while the device answers less than half of each batch before
     * the CPU gets there, lowered while it answers nearly all (see
     * pace()); `count` counts packets since the last one submitted. */
    uint32_t every, count;
};

/* The most packets in a row the CPU takes before the device gets one. */
#define PACE_MAX 16u

#define COUNT(a, name, v) __atomic_fetch_add(&(a)->st.name, (v), __ATOMIC_RELAXED)

static bool device_failed(const vmig_accel *a)
{
    return __atomic_load_n(&a->failed, __ATOMIC_ACQUIRE) != 0;
}

static void fail_device(vmig_accel *a, const char *fmt, ...) VMIG_PRINTF(2, 3);
static void fail_device(vmig_accel *a, const char *fmt, ...)
{
    int expect = 0;
    if (!__atomic_compare_exchange_n(&a->failed, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    char what[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    char dev[64];
    vmig_accel_describe(a, dev, sizeof(dev));
    snprintf(a->failure, sizeof(a->failure),
             "%s: %s; zero pages are checked on the CPU for the rest of the migration", dev, what);
    __atomic_store_n(&a->failure_set, 1, __ATOMIC_RELEASE);
}

int vmig_accel_open(const vmig_accel_ops *ops, const vmig_accel_conf *conf, vmig_accel **out,
                    vmig_error *err)
{
    if (!out || !ops || !conf || !conf->cpu || conf->len == 0 || conf->max_jobs == 0)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_accel_open: invalid arguments");
    *out = NULL;
    vmig_accel *a = calloc(1, sizeof(*a));
    if (!a)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the %s engine", ops->name);
    a->ops = ops;
    a->conf = *conf;
    a->conf.path = NULL;
    long pg = sysconf(_SC_PAGESIZE);
    a->os_page = pg > 0 ? (size_t)pg : 4096;
    a->pagemap_fd = ops->inline_only ? -1 : open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    int rc = ops->open(conf, &a->dev, err);
    if (rc) {
        if (a->pagemap_fd >= 0)
            close(a->pagemap_fd);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void vmig_accel_close(vmig_accel *a)
{
    if (!a)
        return;
    a->ops->close(a->dev);
    if (a->pagemap_fd >= 0)
        close(a->pagemap_fd);
    free(a);
}

bool vmig_accel_inline(const vmig_accel *a)
{
    return a->ops->inline_only;
}

void vmig_accel_describe(const vmig_accel *a, char *buf, size_t len)
{
    a->ops->describe(a->dev, buf, len);
}

_Static_assert(sizeof(vmig_accel_counters) % sizeof(uint64_t) == 0,
               "vmig_accel_counters is read as an array of u64 counters");

void vmig_accel_counters_get(const vmig_accel *a, vmig_accel_counters *out)
{
    const uint64_t *src = (const uint64_t *)&a->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

uint64_t vmig_accel_device_cpu_ns(const vmig_accel *a)
{
    return a->ops->device_cpu_ns ? a->ops->device_cpu_ns(a->dev) : 0;
}

const char *vmig_accel_failure(const vmig_accel *a)
{
    return __atomic_load_n(&a->failure_set, __ATOMIC_ACQUIRE) ? a->failure : NULL;
}

int vmig_accel_chan_create(vmig_accel *a, uint32_t chan, vmig_accel_chan **out, vmig_error *err)
{
    if (!a || !out)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_accel_chan_create: invalid arguments");
    vmig_accel_chan *c = calloc(1, sizeof(*c));
    if (!c)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate channel %u's %s engine", chan,
                              a->ops->name);
    c->a = a;
    c->chan = chan;
    c->every = 1;
    uint32_t cap = a->conf.max_jobs;
    bool ok = (c->dbufs = malloc(sizeof(void *) * cap)) != NULL &&
              (c->pm = malloc(sizeof(uint64_t) * PM_SPAN * cap)) != NULL &&
              (c->pre = malloc(cap)) != NULL;
    for (uint32_t i = 0; i < VMIG_ACCEL_SLOTS && ok; i++)
        ok = (c->slot[i].map = malloc(sizeof(uint32_t) * cap)) != NULL &&
             (c->slot[i].pre = malloc(cap)) != NULL;
    if (!ok) {
        vmig_accel_chan_free(c);
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate channel %u's %s engine", chan,
                              a->ops->name);
    }
    /* The first batch now, so that a backend that cannot make one says so
     * before the migration starts; the others on demand. */
    int rc = a->ops->batch_create(a->dev, chan, a->conf.max_jobs, &c->slot[0].batch, err);
    if (rc) {
        vmig_accel_chan_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls a busy slot; true when the device has let go of it. */
static bool slot_settle(vmig_accel_chan *c, accel_slot *s)
{
    vmig_accel *a = c->a;
    int dev_err = 0;
    if (!a->ops->done(a->dev, s->batch, &dev_err))
        return false;
    s->busy = false;
    if (dev_err)
        fail_device(a, "the device reported an error (completion status 0x%02x)", dev_err);
    return true;
}

void vmig_accel_chan_free(vmig_accel_chan *c)
{
    if (!c)
        return;
    vmig_accel *a = c->a;
    for (uint32_t i = 0; i < VMIG_ACCEL_SLOTS; i++) {
        accel_slot *s = &c->slot[i];
        for (int t = 0; s->busy && t < 1000; t++)
            if (!slot_settle(c, s))
                sleep_ms(1);
        if (s->busy)
            fail_device(a, "a batch was still not complete a second after the migration ended "
                           "(its memory is left allocated)");
        else if (s->batch)
            a->ops->batch_free(a->dev, s->batch);
        free(s->map);
        free(s->pre);
    }
    free(c->dbufs);
    free(c->pm);
    free(c->pre);
    free(c);
}

static accel_slot *slot_find(vmig_accel_chan *c, uint64_t tag)
{
    for (uint32_t i = 0; i < VMIG_ACCEL_SLOTS; i++)
        if (c->slot[i].wanted && c->slot[i].tag == tag)
            return &c->slot[i];
    return NULL;
}

/*
 * A free slot, or NULL when there is none or the device is behind: a late
 * batch of this channel is still running. Then the device's queue holds
 * work whose answers nobody waits for any more, and more batches would
 * only queue behind it and come late too: the channel checks its pages
 * itself until the device has caught up. This keeps the device's backlog
 * to what it answers in time.
 */
static accel_slot *slot_free_get(vmig_accel_chan *c)
{
    accel_slot *free_slot = NULL;
    for (uint32_t i = 0; i < VMIG_ACCEL_SLOTS; i++) {
        accel_slot *s = &c->slot[i];
        if (s->busy && !s->wanted && !slot_settle(c, s))
            return NULL;
        if (!s->busy && !s->wanted && !free_slot)
            free_slot = s;
    }
    return free_slot;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The pagemap entry of an OS page says neither present nor swapped. */
static bool pm_untouched(uint64_t ent)
{
    return (ent & (3ull << 62)) == 0;
}

/* The pagemap entries of OS pages first..first+k-1 into ent. */
static bool pm_read(vmig_accel *a, uintptr_t first, size_t k, uint64_t *ent)
{
    return pread(a->pagemap_fd, ent, k * 8, (off_t)(first * 8)) == (ssize_t)(k * 8);
}

/* Every PTE of [p, p + len) says neither present nor swapped (a fault's
 * remainder; up to 64 entries per read). */
static bool untouched(vmig_accel *a, const uint8_t *p, size_t len)
{
    if (a->pagemap_fd < 0 || len == 0)
        return false;
    uintptr_t first = (uintptr_t)p / a->os_page, last = ((uintptr_t)p + len - 1) / a->os_page;
    uint64_t ent[64];
    for (uintptr_t at = first; at <= last;) {
        size_t k = VMIG_MIN((size_t)(last - at + 1), VMIG_ARRAY_SIZE(ent));
        if (!pm_read(a, at, k, ent))
            return false;
        for (size_t i = 0; i < k; i++)
            if (!pm_untouched(ent[i]))
                return false;
        at += k;
    }
    return true;
}

/*
 * Before any device or CPU reads a packet of private anonymous memory:
 * pre[i] = 1 for the pages that were never touched, from one read of
 * /proc/self/pagemap over the packet's span. Only for pages of one OS page
 * and spans of at most PM_SPAN times the packet (else nothing is marked:
 * the device's fault, or the CPU's read, answers them). Returns how many.
 */
static uint32_t precheck(vmig_accel_chan *c, const void *const *bufs, uint32_t n, uint32_t len,
                         uint8_t *pre)
{
    vmig_accel *a = c->a;
    memset(pre, 0, n);
    if (a->pagemap_fd < 0 || len != a->os_page)
        return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t pg = (uintptr_t)bufs[i] / a->os_page;
        lo = VMIG_MIN(lo, pg);
        hi = VMIG_MAX(hi, pg);
    }
    size_t span = (size_t)(hi - lo + 1);
    if (span > (size_t)PM_SPAN * n || !pm_read(a, lo, span, c->pm))
        return 0;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        pre[i] = pm_untouched(c->pm[(uintptr_t)bufs[i] / a->os_page - lo]);
        k += pre[i];
    }
    return k;
}

/* Submits into a free slot the pages that are not known untouched; NULL
 * when the packet is the CPU's. A slot whose pages are all untouched has
 * nothing for the device: it is complete at once (busy stays false). */
static accel_slot *submit(vmig_accel_chan *c, uint64_t tag, const void *const *bufs, uint32_t n,
                          uint32_t len, bool untouched_zero, bool ahead)
{
    vmig_accel *a = c->a;
    if (device_failed(a) || n == 0 || n > a->conf.max_jobs || len != a->conf.len)
        return NULL;
    /* Paced: one packet in `every` is started ahead. A packet that was not
     * (no job behind it in the queue) is submitted when it is needed only
     * while the device keeps up: then it still answers the head of the
     * batch while the CPU works from the tail. */
    if (ahead ? ++c->count < c->every : c->every > 1)
        return NULL; /* the CPU's */
    accel_slot *s = slot_free_get(c);
    if (!s)
        return NULL;
    c->count = 0;
    if (!s->batch) {
        vmig_error e = {0};
        if (a->ops->batch_create(a->dev, c->chan, a->conf.max_jobs, &s->batch, &e))
            return NULL; /* out of memory: this packet on the CPU */
    }
    if (untouched_zero && !a->ops->inline_only)
        precheck(c, bufs, n, len, s->pre);
    else
        memset(s->pre, 0, n);
    uint32_t nd = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!s->pre[i]) {
            s->map[nd] = i;
            c->dbufs[nd++] = bufs[i];
        }
    for (uint32_t r = 0; nd;) {
        int rc = a->ops->submit(a->dev, s->batch, c->dbufs, nd, len);
        if (rc == 0)
            break;
        if (rc != VMIG_EAGAIN) {
            fail_device(a, "a submission failed (%s)", vmig_strerror(rc));
            return NULL;
        }
        COUNT(a, retries, 1);
        if (++r >= VMIG_ACCEL_MAX_RETRY)
            return NULL;
        cpu_relax();
    }
    if (nd && !a->ops->inline_only)
        COUNT(a, batches, 1);
    s->tag = tag;
    s->n = n;
    s->ndev = nd;
    s->busy = nd != 0;
    s->wanted = true;
    return s;
}

void vmig_accel_chan_start(vmig_accel_chan *c, uint64_t tag, const void *const *bufs, uint32_t n,
                           uint32_t len, bool untouched_zero)
{
    if (c->a->ops->inline_only || slot_find(c, tag))
        return;
    submit(c, tag, bufs, n, len, untouched_zero, true);
}

/* Turns the device's answer for a job into *zero. */
static void resolve(vmig_accel *a, enum vmig_accel_job st, uint32_t done_bytes, const uint8_t *buf,
                    uint32_t len, bool untouched_zero, uint8_t *zero)
{
    switch (st) {
    case VMIG_ACCEL_JOB_ZERO:
    case VMIG_ACCEL_JOB_NONZERO:
        *zero = st == VMIG_ACCEL_JOB_ZERO;
        if (a->ops->inline_only)
            COUNT(a, cpu_pages, 1); /* the cpu backend's answers */
        else
            COUNT(a, dev_pages, 1);
        return;
    case VMIG_ACCEL_JOB_PARTIAL:
        COUNT(a, faults, 1);
        if (untouched_zero && untouched(a, buf + done_bytes, len - done_bytes)) {
            COUNT(a, untouched, 1);
            *zero = 1;
            return;
        }
        *zero = a->conf.cpu(buf + done_bytes, len - done_bytes);
        COUNT(a, cpu_pages, 1);
        return;
    default:
        *zero = a->conf.cpu(buf, len);
        COUNT(a, cpu_pages, 1);
        return;
    }
}

/* The packet on the CPU alone, untouched pages (pre-checked) excepted. */
static void finish_on_cpu(vmig_accel_chan *c, const void *const *bufs, uint32_t n, uint32_t len,
                          bool untouched_zero, uint8_t *zero)
{
    vmig_accel *a = c->a;
    uint32_t k = 0;
    if (untouched_zero && !a->ops->inline_only)
        k = precheck(c, bufs, n, len, c->pre);
    else
        memset(c->pre, 0, n);
    for (uint32_t i = 0; i < n; i++)
        zero[i] = c->pre[i] ? 1 : a->conf.cpu(bufs[i], len);
    COUNT(a, untouched, k);
    COUNT(a, cpu_pages, n - k);
    COUNT(a, fallbacks, 1);
}

/*
 * After a batch: how much of it did the device answer before the CPU,
 * walking from the tail, met it? A device that is given more than it can
 * do in time works on pages the CPU then checks as well: on a device that
 * costs the host nothing (hardware) this is harmless, on one that shares
 * the host's cores (the model, or a device shared with other processes,
 * whose queue is long) it is waste. Below half, the channel hands it half
 * as many packets; above 7/8, twice as many.
 */
static void pace(vmig_accel_chan *c, uint32_t ndev, uint32_t by_cpu)
{
    if (!ndev)
        return;
    if (2 * by_cpu > ndev)
        c->every = VMIG_MIN(2 * c->every, PACE_MAX);
    else if (8 * by_cpu < ndev && c->every > 1)
        c->every /= 2;
}

void vmig_accel_chan_finish(vmig_accel_chan *c, uint64_t tag, const void *const *bufs, uint32_t n,
                            uint32_t len, bool untouched_zero, uint8_t *zero)
{
    vmig_accel *a = c->a;
    accel_slot *s = slot_find(c, tag);
    if (s && s->n != n) {
        /* Not the packet that was started under this tag: the device's
         * answers are for other pages. Let it finish unread. */
        s->wanted = false;
        s = NULL;
    }
    if (!s)
        s = submit(c, tag, bufs, n, len, untouched_zero, false);
    if (!s) {
        finish_on_cpu(c, bufs, n, len, untouched_zero, zero);
        return;
    }
    uint32_t pre = 0;
    for (uint32_t i = 0; i < n; i++)
        if (s->pre[i]) {
            zero[i] = 1;
            pre++;
        }
    COUNT(a, untouched, pre);
    /* Jobs [hi, ndev) are answered from the tail while the device works. */
    uint32_t hi = s->ndev, bd = 0;
    uint32_t by_cpu = 0;
    while (s->busy && !slot_settle(c, s)) {
        if (hi == 0) {
            s->wanted = false; /* late: reclaimed by a later start() */
            COUNT(a, late, 1);
            pace(c, s->ndev, by_cpu);
            return;
        }
        hi--;
        uint32_t i = s->map[hi];
        enum vmig_accel_job st = a->ops->job(s->batch, hi, &bd);
        if (st == VMIG_ACCEL_JOB_PENDING) {
            zero[i] = a->conf.cpu(bufs[i], len);
            COUNT(a, cpu_pages, 1);
            COUNT(a, tail_pages, 1);
            by_cpu++;
        } else {
            resolve(a, st, bd, bufs[i], len, untouched_zero, &zero[i]);
        }
    }
    s->wanted = false;
    pace(c, s->ndev, by_cpu);
    for (uint32_t j = 0; j < hi; j++) {
        enum vmig_accel_job st = a->ops->job(s->batch, j, &bd);
        resolve(a, st, bd, bufs[s->map[j]], len, untouched_zero, &zero[s->map[j]]);
    }
}
