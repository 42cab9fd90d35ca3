/*
 * The software model of deflate-page's offload device (deflate_engine.h), so
 * that tests drive the codec's device path (batches, busy queues, failed
 * jobs) on machines without IAA.
 *
 * It behaves like one IAA work queue as the codec sees it:
 *   - at most `depth` jobs are queued; a submit beyond that returns BUSY;
 *   - the fault plan makes chosen submits return BUSY and chosen queued jobs
 *     fail at wait(), deterministically (counted from the instance's start);
 *   - a job runs when it is waited for, with the CPU deflate the codec uses
 *     (4 KiB window), so its output is the real format; a compress job whose
 *     output does not fit out_cap fails, as IAA's does;
 *   - every event is counted in the test's counters (relaxed atomics).
 * Like the device, it never touches a job's buffers between submit() and
 * wait() in a way the caller could see before wait() returns.
 */
#include <stdio.h>
#include <stdlib.h>

#include "deflate_engine.h"

typedef struct model {
    struct vmig_dp_model_params p;
    uint32_t depth;
    uint32_t queued_now;
    uint64_t nsubmit; /* submit() calls so far */
    uint64_t nqueued; /* jobs queued so far */
    vmig_dp_sw *sw;
    vmig_dp_job **slot_job; /* [depth]: the queued job, or NULL */
    bool *slot_fail;        /* [depth]: planned to fail at wait() */
} model;

static void count(const model *m, size_t field_off, uint64_t v)
{
    if (!m->p.counters)
        return;
    uint64_t *f = (uint64_t *)(void *)((char *)m->p.counters + field_off);
    __atomic_fetch_add(f, v, __ATOMIC_RELAXED);
}
#define COUNT(m, field) count((m), offsetof(struct vmig_dp_model_counters, field), 1)

static void note_in_flight(const model *m)
{
    if (!m->p.counters)
        return;
    uint64_t *f = &m->p.counters->max_in_flight;
    uint64_t cur = __atomic_load_n(f, __ATOMIC_RELAXED);
    while (cur < m->queued_now && !__atomic_compare_exchange_n(f, &cur, m->queued_now, true,
                                                               __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

static void model_close(void *eng)
{
    model *m = eng;
    if (!m)
        return;
    vmig_dp_sw_free(m->sw);
    free(m->slot_job);
    free(m->slot_fail);
    free(m);
}

static int model_open(const void *arg, uint32_t slots, void **eng, uint32_t *depth, char *why,
                      size_t whylen)
{
    const struct vmig_dp_model_params *p = arg;
    *eng = NULL;
    model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(why, whylen, "out of memory for the model");
        return VMIG_ENOMEM;
    }
    m->p = *p;
    COUNT(m, opens);
    if (p->open_fail) {
        snprintf(why, whylen, "%s", p->open_fail);
        model_close(m);
        return VMIG_ENOTSUP;
    }
    m->depth = p->depth ? VMIG_MIN(p->depth, VMIG_DP_MAX_DEPTH) : 1;
    m->slot_job = calloc(m->depth, sizeof(*m->slot_job));
    m->slot_fail = calloc(m->depth, sizeof(*m->slot_fail));
    vmig_error e = {0};
    if (!m->slot_job || !m->slot_fail ||
        vmig_dp_sw_create(VMIG_DP_SW_ENC | VMIG_DP_SW_DEC, &m->sw, &e)) {
        snprintf(why, whylen, "%s", e.msg[0] ? e.msg : "out of memory for the model");
        int rc = e.code ? e.code : VMIG_ENOMEM;
        model_close(m);
        return rc;
    }
    *depth = VMIG_MIN(m->depth, slots);
    *eng = m;
    return 0;
}

static int model_submit(void *eng, uint32_t slot, vmig_dp_job *job)
{
    model *m = eng;
    uint64_t s = m->nsubmit++;
    COUNT(m, submits);
    bool planned_busy = m->p.busy_period && s % m->p.busy_period < m->p.busy_burst;
    if (planned_busy || m->queued_now >= m->depth) {
        COUNT(m, busy);
        return VMIG_DP_BUSY;
    }
    if (slot >= m->depth || m->slot_job[slot])
        return VMIG_DP_FAILED; /* a codec bug; the codec then uses the CPU */
    uint64_t q = m->nqueued++;
    m->slot_job[slot] = job;
    m->slot_fail[slot] = m->p.fail_every && q % m->p.fail_every == m->p.fail_every - 1;
    m->queued_now++;
    COUNT(m, queued);
    note_in_flight(m);
    return VMIG_DP_OK;
}

static int model_wait(void *eng, uint32_t slot, vmig_dp_job *job)
{
    model *m = eng;
    if (slot >= m->depth || m->slot_job[slot] != job)
        return VMIG_DP_FAILED;
    m->slot_job[slot] = NULL;
    m->queued_now--;
    if (m->slot_fail[slot]) {
        COUNT(m, failed);
        return VMIG_DP_FAILED;
    }
    if (job->op == VMIG_DP_COMPRESS) {
        int r = vmig_dp_sw_compress(m->sw, job->in, job->in_len, job->out, job->out_cap, NULL);
        if (r <= 0) {
            if (r == 0)
                COUNT(m, overflow);
            COUNT(m, failed);
            return VMIG_DP_FAILED;
        }
        job->out_len = (uint32_t)r;
        job->in_used = job->in_len;
    } else {
        const char *why;
        if (vmig_dp_sw_decompress(m->sw, job->in, job->in_len, job->out, job->out_cap, &why)) {
            COUNT(m, failed);
            return VMIG_DP_FAILED;
        }
        job->out_len = job->out_cap;
        job->in_used = job->in_len;
    }
    COUNT(m, completed);
    return VMIG_DP_OK;
}

const vmig_dp_engine_ops vmig_dp_engine_model = {
    .name = "model",
    .open = model_open,
    .close = model_close,
    .submit = model_submit,
    .wait = model_wait,
};
