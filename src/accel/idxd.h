/*
 * Intel DSA descriptors and completion records for zero-page detection,
 * shared by the hardware backend (dsa_portal.c) and the software model of
 * the device (dsa_model.c): both consume exactly these bytes.
 *
 * One batch = the jobs of one packet, "is this page all zero?", each a
 * Compare Pattern (DSA_OPCODE_COMPVAL) descriptor with pattern 0:
 *
 *   bdesc (64 B, 64-aligned)  opcode BATCH, desc_list_addr -> desc[0],
 *                             desc_count n, completion_addr -> bcomp
 *   desc[0..n) (64 B each, 64-aligned)  opcode COMPVAL, src_addr page,
 *                             xfer_size len, comp_pattern 0, flags
 *                             RCR | CRAV (no BOF: a fault completes the
 *                             descriptor early), completion_addr -> comp[i]
 *   comp[0..n) (32 B each, 32-aligned), bcomp
 *
 * DSA rejects a batch of one descriptor, so with n == 1 the head that is
 * submitted is desc[0] itself (its record is comp[0]; bcomp is unused).
 *
 * Threads: prepare() and free() by the owner only, and never while the
 * device may still write the records (after a submission, until
 * batch_done() is true). The state functions may be called at any time;
 * they read the status bytes with acquire loads, because the device writes
 * the rest of a record before its status.
 */
#ifndef VMIG_IDXD_H
#define VMIG_IDXD_H

#include "../base/base.h"

#include "vmig_config.h"

#if VMIG_HAVE_IDXD_H
#include <linux/idxd.h>

/* What one job's completion record says. */
enum vmig_idxd_job_state {
    VMIG_IDXD_PENDING = 0, /* not written yet */
    VMIG_IDXD_ZERO,        /* every byte matched the pattern 0 */
    VMIG_IDXD_NONZERO,     /* a byte differed */
    VMIG_IDXD_PARTIAL,     /* a page fault stopped it after *bytes_done
                            * bytes, all of which were zero: the rest is
                            * for the CPU (or was never touched) */
    VMIG_IDXD_FAILED,      /* any other status (or the batch failed before
                            * running it): the CPU checks the whole page */
};

typedef struct vmig_idxd_batch {
    struct dsa_hw_desc *desc;           /* [cap], 64-byte aligned */
    struct dsa_completion_record *comp; /* [cap], 32-byte aligned */
    struct dsa_hw_desc *bdesc;          /* the batch descriptor */
    struct dsa_completion_record *bcomp;
    uint32_t cap; /* jobs the batch can hold */
    uint32_t n;   /* jobs prepared */
    uint32_t len; /* bytes per job */
    void *mem;    /* one allocation for all of the above */
} vmig_idxd_batch;

/* A batch for up to cap (>= 1, <= VMIG_IDXD_MAX_BATCH) jobs. */
#define VMIG_IDXD_MAX_BATCH 1024
int vmig_idxd_batch_create(uint32_t cap, vmig_idxd_batch **out, vmig_error *err);
void vmig_idxd_batch_free(vmig_idxd_batch *b); /* NULL: no-op */

/* Fill descriptors and clear completion records for bufs[0..n) of len
 * bytes each (1 <= n <= cap, len >= 1). */
void vmig_idxd_batch_prepare(vmig_idxd_batch *b, const void *const *bufs, uint32_t n, uint32_t len);

/* The descriptor to write to the portal: bdesc, or desc[0] when n == 1. */
const struct dsa_hw_desc *vmig_idxd_batch_head(const vmig_idxd_batch *b);

/* The head's completion record has been written: the device no longer
 * touches this batch's memory. */
bool vmig_idxd_batch_done(const vmig_idxd_batch *b);

/* The head's status (DSA_COMP_*, without DSA_COMP_STATUS_WRITE); 0 while
 * pending. */
uint8_t vmig_idxd_batch_status(const vmig_idxd_batch *b);

/* Job i (< n). *bytes_done is set for PARTIAL (a multiple of nothing in
 * particular; < len). After batch_done(), a record still unwritten means
 * the batch failed before running the job: FAILED, not PENDING. */
enum vmig_idxd_job_state vmig_idxd_job_state(const vmig_idxd_batch *b, uint32_t i,
                                             uint32_t *bytes_done);

#endif /* VMIG_HAVE_IDXD_H */
#endif /* VMIG_IDXD_H */
