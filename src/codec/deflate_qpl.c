/*
 * deflate-page's hardware engine: Intel IAA through Intel QPL's public job
 * API (deflate_engine.h). Built only with QPL (or by 'make qpl-check' against
 * tests/stub/qpl/qpl.h, syntax only).
 *
 * One qpl_job per engine slot, initialised on the hardware path at open():
 * that is also the availability test (as QEMU's multifd-qpl does it), so a
 * machine without a usable IAA work queue fails open() and the codec runs on
 * the CPU, saying why. Jobs are single pages:
 *   compress    qpl_op_compress, FIRST | LAST | OMIT_VERIFY | DYNAMIC_HUFFMAN,
 *               default level; IAA always uses a 4 KiB window. An output that
 *               does not fit available_out (page_size - 1) fails the job, and
 *               the codec sends that page raw.
 *   decompress  qpl_op_decompress, FIRST | LAST; IAA refuses windows above
 *               4 KiB (QPL_STS_BAD_DIST_ERR), and the codec then decodes on
 *               the CPU.
 * qpl_submit_job() returns QPL_STS_QUEUES_ARE_BUSY_ERR when the shared work
 * queue is full (other processes use it too): that is VMIG_DP_BUSY.
 *
 * in_used is QPL's total_in. Whether QPL stops at the final block's end or
 * consumes bytes after it is not documented; a device that counted trailing
 * bytes as consumed would let the hardware path accept a stream the CPU path
 * refuses for them (the page itself is exact either way).
 */
#include "deflate_engine.h"

#if VMIG_DP_QPL

#include <stdio.h>
#include <stdlib.h>

#include <qpl/qpl.h>

typedef struct qpl_engine {
    uint32_t slots;
    uint32_t inited; /* jobs qpl_init_job() succeeded on */
    size_t stride;   /* bytes per job, a multiple of 64 */
    uint8_t *mem;    /* slots * stride */
} qpl_engine;

static qpl_job *job_at(const qpl_engine *q, uint32_t slot)
{
    return (qpl_job *)(void *)(q->mem + (size_t)slot * q->stride);
}

static void qe_close(void *eng)
{
    qpl_engine *q = eng;
    if (!q)
        return;
    for (uint32_t i = 0; i < q->inited; i++)
        qpl_fini_job(job_at(q, i));
    free(q->mem);
    free(q);
}

static int qe_open(const void *arg, uint32_t slots, void **eng, uint32_t *depth, char *why,
                   size_t whylen)
{
    (void)arg;
    *eng = NULL;
    uint32_t size = 0;
    qpl_status st = qpl_get_job_size(qpl_path_hardware, &size);
    if (st != QPL_STS_OK || size == 0) {
        snprintf(why, whylen, "qpl_get_job_size(hardware) returned %d", (int)st);
        return VMIG_ENOTSUP;
    }
    qpl_engine *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(why, whylen, "out of memory");
        return VMIG_ENOMEM;
    }
    q->slots = slots;
    q->stride = ((size_t)size + 63) & ~(size_t)63;
    q->mem = aligned_alloc(64, q->stride * slots);
    if (!q->mem) {
        snprintf(why, whylen, "out of memory for %u QPL jobs", slots);
        qe_close(q);
        return VMIG_ENOMEM;
    }
    for (uint32_t i = 0; i < slots; i++) {
        st = qpl_init_job(qpl_path_hardware, job_at(q, i));
        if (st != QPL_STS_OK) {
            /* The first one failing is the usual "no device" case. */
            snprintf(why, whylen, "qpl_init_job(hardware) returned %d", (int)st);
            qe_close(q);
            return VMIG_ENOTSUP;
        }
        q->inited++;
    }
    *depth = slots;
    *eng = q;
    return 0;
}

static int qe_submit(void *eng, uint32_t slot, vmig_dp_job *job)
{
    qpl_engine *q = eng;
    if (slot >= q->slots)
        return VMIG_DP_FAILED;
    qpl_job *j = job_at(q, slot);
    j->next_in_ptr = (uint8_t *)job->in; /* QPL's field is not const; it only reads */
    j->available_in = job->in_len;
    j->next_out_ptr = job->out;
    j->available_out = job->out_cap;
    if (job->op == VMIG_DP_COMPRESS) {
        j->op = qpl_op_compress;
        j->level = qpl_default_level;
        j->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST | QPL_FLAG_OMIT_VERIFY | QPL_FLAG_DYNAMIC_HUFFMAN;
    } else {
        j->op = qpl_op_decompress;
        j->flags = QPL_FLAG_FIRST | QPL_FLAG_LAST;
    }
    qpl_status st = qpl_submit_job(j);
    if (st == QPL_STS_OK)
        return VMIG_DP_OK;
    return st == QPL_STS_QUEUES_ARE_BUSY_ERR ? VMIG_DP_BUSY : VMIG_DP_FAILED;
}

static int qe_wait(void *eng, uint32_t slot, vmig_dp_job *job)
{
    qpl_engine *q = eng;
    if (slot >= q->slots)
        return VMIG_DP_FAILED;
    qpl_job *j = job_at(q, slot);
    if (qpl_wait_job(j) != QPL_STS_OK)
        return VMIG_DP_FAILED;
    job->out_len = j->total_out;
    job->in_used = j->total_in;
    return VMIG_DP_OK;
}

const vmig_dp_engine_ops vmig_dp_engine_qpl = {
    .name = "qpl",
    .open = qe_open,
    .close = qe_close,
    .submit = qe_submit,
    .wait = qe_wait,
};

#endif /* VMIG_DP_QPL */
