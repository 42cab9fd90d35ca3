/*
 * The software DSA work queue (dsa_model.h).
 *
 * Queue: a ring of wq_size descriptor copies under one mutex. A descriptor
 * keeps its slot until the worker has executed it, so a queue of size N
 * holds at most N submitted-but-unfinished descriptors, the one in progress
 * included (ENQCMD's "retry" depends on the same occupancy). latency_ns
 * is spent once per descriptor taken from the queue: a batch is one.
 *
 * Execution follows the DSA architecture specification where vmig can see
 * it:
 *   - Compare Pattern: the 8-byte pattern is repeated over the source,
 *     little-endian, from its first byte. Match: result 0, bytes_completed
 *     0. Mismatch: result 1, bytes_completed = offset of the first differing
 *     8-byte word (a multiple of 8), or of the first differing byte in a
 *     trailing part shorter than 8 bytes. This is what Intel's DML software
 *     path writes (intel/DML, sources/core/src/sw_dispatcher/avx512/
 *     compare_pattern.c). The device stops at the first mismatch, so a page
 *     fault record always has result 0 here.
 *   - Residency: before reading from a page, mincore() must say it is
 *     resident (unless ignore_residency, or the descriptor asks for
 *     block-on-fault, which a device honours by faulting the page in). The
 *     first one that is not, or that mincore() cannot see (unmapped), ends
 *     the job with DSA_COMP_PAGE_FAULT_NOBOF, fault_addr = the first address
 *     of the range on that page, bytes_completed = bytes compared before it.
 *   - Batch: its record says DSA_COMP_SUCCESS when every listed descriptor
 *     completed with Success, DSA_COMP_BATCH_FAIL when one or more did not
 *     (a page fault in a job included), and DSA_COMP_BATCH_PAGE_FAULT only
 *     when the descriptor list itself could not be read (not resident).
 *     bytes_completed is "Descriptors Completed": how many listed
 *     descriptors were processed, whatever their own status (desc_count
 *     unless the list faulted; 0 for a count or alignment error). Sources:
 *     Intel DML's status table (0x05 "one or more operations in the batch
 *     completed with Status not equal to Success", 0x06 "partial completion
 *     due to page fault") and the batch expectations of accel-config's
 *     dsa_test (BATCH_PAGE_FAULT only for a fault on the descriptor list).
 *   - A record is written only when the descriptor has CRAV and a non-zero,
 *     32-byte aligned completion_addr; without one, the failure is counted.
 *
 * Injected faults count jobs (every descriptor other than a batch, listed or
 * not) from 1 since creation: job k faults at half its length when
 * fault_every divides k; job k > error_after, and every batch that starts
 * after job error_after has run, completes with DSA_COMP_HW_ERR1 (its jobs
 * are then never run: their records stay unwritten).
 *
 * Counters: submits = accepted, full = refused; descriptors = taken from
 * the queue; batches and jobs as executed; faults = records (or would-be
 * records) saying PAGE_FAULT_NOBOF or BATCH_PAGE_FAULT; errors = descriptors
 * that failed for a reason of their own (opcode, flags, size, count, list
 * alignment, record address, HW_ERR1), not batches failed by their jobs.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dsa_model.h"

#if VMIG_HAVE_IDXD_H

#define MODEL_WQ_DEFAULT    128u
#define MODEL_WQ_MAX        65536u /* beyond any real queue; keeps the ring small */
#define MODEL_BATCH_DEFAULT 1024u

struct vmig_dsa_model {
    vmig_dsa_model_params p; /* defaults applied */
    size_t page;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dsa_hw_desc *ring; /* [p.wq_size] */
    uint32_t head, count;     /* under mu */
    uint64_t submit_calls;    /* under mu: full_every counts every call */
    bool stop;                /* under mu */

    pthread_t thread;
    clockid_t clock; /* the thread's CPU clock, when has_clock */
    bool has_clock;
    uint64_t jobs_run; /* worker only */
    /* Worker only: residency of the RES_PAGES pages from res_base, read by
     * one mincore() call and valid for one descriptor from the queue (the
     * device translates an address once per access as well; this only
     * spares a system call per page). */
    uintptr_t res_base;
    uint32_t res_n;
    unsigned char res_vec[64];
};
#define RES_PAGES 64u

#define COUNT(m, name)                                                                             \
    do {                                                                                           \
        if ((m)->p.counters)                                                                       \
            __atomic_fetch_add(&(m)->p.counters->name, 1, __ATOMIC_RELAXED);                       \
    } while (0)

static bool is_error(uint8_t st)
{
    return st != DSA_COMP_SUCCESS && st != DSA_COMP_PAGE_FAULT_NOBOF && st != DSA_COMP_BATCH_FAIL &&
           st != DSA_COMP_BATCH_PAGE_FAULT;
}

/* The descriptor's record, or NULL when the device has nowhere to write. */
static struct dsa_completion_record *record_of(const struct dsa_hw_desc *d)
{
    if (!(d->flags & IDXD_OP_FLAG_CRAV) || !d->completion_addr || (d->completion_addr & 31))
        return NULL;
    return (struct dsa_completion_record *)(uintptr_t)d->completion_addr;
}

/* Writes bytes 1..31 first, then the status byte with release, as the
 * device does; returns st so that callers can aggregate. */
static uint8_t complete(const vmig_dsa_model *m, const struct dsa_hw_desc *d, uint8_t st,
                        uint8_t result, uint32_t bytes, uint64_t fault_addr, uint32_t invalid_flags)
{
    if (st == DSA_COMP_PAGE_FAULT_NOBOF || st == DSA_COMP_BATCH_PAGE_FAULT)
        COUNT(m, faults);
    else if (is_error(st))
        COUNT(m, errors);
    struct dsa_completion_record *r = record_of(d);
    if (!r)
        return st;
    struct dsa_completion_record v;
    memset(&v, 0, sizeof(v));
    v.result = result;
    v.bytes_completed = bytes;
    v.fault_addr = fault_addr;
    v.invalid_flags = invalid_flags;
    memcpy((uint8_t *)r + 1, (const uint8_t *)&v + 1, sizeof(v) - 1);
    __atomic_store_n(&r->status, st, __ATOMIC_RELEASE);
    return st;
}

static bool resident(vmig_dsa_model *m, uintptr_t page_addr)
{
    if (page_addr >= m->res_base && page_addr < m->res_base + (uintptr_t)m->res_n * m->page)
        return m->res_vec[(page_addr - m->res_base) / m->page] & 1;
    /* A range that runs into unmapped memory fails as a whole: then this
     * page alone. */
    m->res_base = page_addr;
    m->res_n = RES_PAGES;
    if (mincore((void *)page_addr, RES_PAGES * m->page, m->res_vec) != 0) {
        m->res_n = 1;
        if (mincore((void *)page_addr, m->page, m->res_vec) != 0) {
            m->res_n = 0;
            return false;
        }
    }
    return m->res_vec[0] & 1;
}

/* vmig needs both a record and the record on success; the record's
 * invalid_flags names the ones missing. */
static uint32_t missing_flags(const struct dsa_hw_desc *d)
{
    const uint32_t need = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR;
    return need & ~(uint32_t)d->flags;
}

/* CRAV with an address the device cannot write to: no record at all. */
static bool bad_record_addr(const struct dsa_hw_desc *d)
{
    return (d->flags & IDXD_OP_FLAG_CRAV) && !record_of(d);
}

/*
 * The device's reads of the source buffers. A device reads memory by DMA,
 * while the guest may be writing it (the dirty log catches those pages
 * again); the CPU path reads it the same way. These reads are therefore
 * not ordered with the writers, on purpose, and ThreadSanitizer is told
 * not to instrument them (and only them: the queue and the completion
 * records are synchronised and checked).
 */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define DMA_READ __attribute__((noinline, no_sanitize("thread")))
#else
#define DMA_READ __attribute__((noinline))
#endif

DMA_READ static uint64_t dma_word(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
}

DMA_READ static uint8_t dma_byte(const uint8_t *p)
{
    return *p;
}

/* How many leading bytes of p[0..len) match, 64 at a time (a multiple of
 * 64: the first chunk that differs, or a tail shorter than 64, is left to
 * the word loop). */
DMA_READ static uint32_t dma_match64(const uint8_t *p, uint32_t len, uint64_t pat)
{
    uint32_t j = 0;
    for (; j + 64 <= len; j += 64) {
        uint64_t acc = 0;
        for (int k = 0; k < 8; k++) {
            uint64_t v;
            __builtin_memcpy(&v, p + j + 8 * k, 8);
            acc |= v ^ pat;
        }
        if (acc)
            break;
    }
    return j;
}

static uint8_t run_compval(vmig_dsa_model *m, const struct dsa_hw_desc *d, uint64_t job)
{
    const uint32_t len = d->xfer_size;
    if (len == 0)
        return complete(m, d, DSA_COMP_XFER_ERANGE, 0, 0, 0, 0);
    const bool inject = m->p.fault_every && job % m->p.fault_every == 0;
    const uint32_t end = inject ? len / 2 : len;
    const bool check = !m->p.ignore_residency && !(d->flags & IDXD_OP_FLAG_BOF);
    const uintptr_t src = (uintptr_t)d->src_addr;
    const uint64_t pat = d->comp_pattern;
    const uintptr_t page_mask = ~(uintptr_t)(m->page - 1);
    uintptr_t checked_to = src & page_mask; /* pages below are known resident */

    /* Words of 8, then single bytes, each read only after every page it
     * touches has been found resident; within a page known to be resident,
     * 64 bytes at a time while they match (the same answer, at the speed
     * the compiler's vector code gives: a device compares at memory speed,
     * and the model should not be much slower than the CPU path it races). */
    uint32_t j = 0;
    while (j < end) {
        uint32_t lim = end;
        if (check) {
            while (checked_to <= src + j) {
                if (!resident(m, checked_to))
                    return complete(m, d, DSA_COMP_PAGE_FAULT_NOBOF, 0, j, src + j, 0);
                checked_to += m->page;
            }
            lim = (uint32_t)VMIG_MIN((uintptr_t)end, checked_to - src);
        }
        if (j + 64 <= lim)
            j += dma_match64((const uint8_t *)(src + j), lim - j, pat);
        if (j >= end)
            break;
        uint32_t w = end - j >= 8 ? 8 : 1;
        if (check) {
            while (checked_to < src + j + w) {
                if (!resident(m, checked_to)) {
                    uintptr_t at = checked_to > src + j ? checked_to : src + j;
                    return complete(m, d, DSA_COMP_PAGE_FAULT_NOBOF, 0, j, at, 0);
                }
                checked_to += m->page;
            }
        }
        const uint8_t *p = (const uint8_t *)(src + j);
        if (w == 8) {
            if (dma_word(p) != pat)
                return complete(m, d, DSA_COMP_SUCCESS, 1, j, 0, 0);
        } else if (dma_byte(p) != (uint8_t)(pat >> (8 * (j % 8)))) {
            return complete(m, d, DSA_COMP_SUCCESS, 1, j, 0, 0);
        }
        j += w;
    }
    if (inject)
        return complete(m, d, DSA_COMP_PAGE_FAULT_NOBOF, 0, end, src + end, 0);
    return complete(m, d, DSA_COMP_SUCCESS, 0, 0, 0, 0);
}

static bool dead(const vmig_dsa_model *m, uint64_t jobs_before)
{
    return m->p.error_after && jobs_before >= m->p.error_after;
}

/* Any descriptor but a batch taken from the queue; a batch listed in a
 * batch lands here too and gets BAD_OPCODE, as on the device. */
static uint8_t run_job(vmig_dsa_model *m, const struct dsa_hw_desc *d)
{
    uint64_t job = ++m->jobs_run;
    COUNT(m, jobs);
    uint32_t missing = missing_flags(d);
    if (bad_record_addr(d))
        return complete(m, d, DSA_COMP_CRA_ALIGN, 0, 0, 0, 0);
    if (dead(m, job - 1))
        return complete(m, d, DSA_COMP_HW_ERR1, 0, 0, 0, 0);
    if (d->opcode != DSA_OPCODE_NOOP && d->opcode != DSA_OPCODE_COMPVAL)
        return complete(m, d, DSA_COMP_BAD_OPCODE, 0, 0, 0, 0);
    if (missing)
        return complete(m, d, DSA_COMP_INVALID_FLAGS, 0, 0, 0, missing);
    if (d->opcode == DSA_OPCODE_NOOP)
        return complete(m, d, DSA_COMP_SUCCESS, 0, 0, 0, 0);
    return run_compval(m, d, job);
}

static void run_batch(vmig_dsa_model *m, const struct dsa_hw_desc *b)
{
    COUNT(m, batches);
    uint32_t missing = missing_flags(b);
    if (bad_record_addr(b)) {
        complete(m, b, DSA_COMP_CRA_ALIGN, 0, 0, 0, 0);
        return;
    }
    if (dead(m, m->jobs_run)) {
        complete(m, b, DSA_COMP_HW_ERR1, 0, 0, 0, 0);
        return;
    }
    if (missing) {
        complete(m, b, DSA_COMP_INVALID_FLAGS, 0, 0, 0, missing);
        return;
    }
    const uint32_t n = b->desc_count;
    if (n < 2 || n > m->p.max_batch) {
        complete(m, b, DSA_COMP_DESC_CNT_ERANGE, 0, 0, 0, 0);
        return;
    }
    const uintptr_t list = (uintptr_t)b->desc_list_addr;
    if (list % sizeof(struct dsa_hw_desc)) {
        complete(m, b, DSA_COMP_DESCLIST_ALIGN, 0, 0, 0, 0);
        return;
    }
    bool failed = false;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = m->p.reorder ? n - 1 - k : k;
        uintptr_t at = list + (uintptr_t)i * sizeof(struct dsa_hw_desc);
        if (!m->p.ignore_residency && !resident(m, at & ~(uintptr_t)(m->page - 1))) {
            complete(m, b, DSA_COMP_BATCH_PAGE_FAULT, 0, k, at, 0);
            return;
        }
        struct dsa_hw_desc d;
        memcpy(&d, (const void *)at, sizeof(d));
        failed |= run_job(m, &d) != DSA_COMP_SUCCESS;
    }
    complete(m, b, failed ? DSA_COMP_BATCH_FAIL : DSA_COMP_SUCCESS, 0, n, 0, 0);
}

static void model_sleep(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void *model_main(void *arg)
{
    vmig_dsa_model *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (m->count == 0 && !m->stop)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->count == 0)
            break;
        struct dsa_hw_desc d = m->ring[m->head];
        pthread_mutex_unlock(&m->mu);

        COUNT(m, descriptors);
        m->res_n = 0;
        if (m->p.latency_ns)
            model_sleep(m->p.latency_ns);
        if (d.opcode == DSA_OPCODE_BATCH)
            run_batch(m, &d);
        else
            run_job(m, &d);

        pthread_mutex_lock(&m->mu);
        m->head = (m->head + 1) % m->p.wq_size;
        m->count--;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int vmig_dsa_model_create(const vmig_dsa_model_params *p, vmig_dsa_model **out, vmig_error *err)
{
    if (!out)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_model_create: no output pointer");
    *out = NULL;
    if (!p)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_dsa_model_create: no parameters");
    vmig_dsa_model_params q = *p;
    if (!q.wq_size)
        q.wq_size = MODEL_WQ_DEFAULT;
    if (!q.max_batch)
        q.max_batch = MODEL_BATCH_DEFAULT;
    if (q.wq_size > MODEL_WQ_MAX)
        return vmig_error_set(err, VMIG_EINVAL,
                              "DSA model queue size %u is out of range (1..%u descriptors)",
                              q.wq_size, MODEL_WQ_MAX);

    vmig_dsa_model *m = calloc(1, sizeof(*m));
    if (!m)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate the DSA model");
    m->p = q;
    long pg = sysconf(_SC_PAGESIZE);
    m->page = pg > 0 ? (size_t)pg : 4096;
    m->ring = aligned_alloc(64, (size_t)q.wq_size * sizeof(struct dsa_hw_desc));
    if (!m->ring) {
        free(m);
        return vmig_error_set(err, VMIG_ENOMEM,
                              "cannot allocate the DSA model's queue of %u descriptors", q.wq_size);
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (vmig_thread_start(&m->thread, "vmig-dsa-model", model_main, m)) {
        pthread_cond_destroy(&m->cv);
        pthread_mutex_destroy(&m->mu);
        free(m->ring);
        free(m);
        return vmig_error_set(err, VMIG_ENOMEM, "cannot start the DSA model's thread");
    }
    m->has_clock = pthread_getcpuclockid(m->thread, &m->clock) == 0;
    *out = m;
    return 0;
}

void vmig_dsa_model_free(vmig_dsa_model *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m->ring);
    free(m);
}

uint64_t vmig_dsa_model_cpu_ns(const vmig_dsa_model *m)
{
    struct timespec ts;
    if (!m->has_clock || clock_gettime(m->clock, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int vmig_dsa_model_submit(vmig_dsa_model *m, const struct dsa_hw_desc *d)
{
    if (!m || !d)
        return VMIG_EINVAL;
    pthread_mutex_lock(&m->mu);
    uint64_t call = ++m->submit_calls;
    if (m->stop || m->count == m->p.wq_size || (m->p.full_every && call % m->p.full_every == 0)) {
        pthread_mutex_unlock(&m->mu);
        COUNT(m, full);
        return VMIG_EAGAIN;
    }
    memcpy(&m->ring[(m->head + m->count) % m->p.wq_size], d, sizeof(*d));
    m->count++;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    COUNT(m, submits);
    return 0;
}

#endif /* VMIG_HAVE_IDXD_H */
