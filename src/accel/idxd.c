/*
 * DSA zero-page batches (idxd.h): one allocation per batch, laid out so that
 * every descriptor is 64-byte and every record 32-byte aligned as the device
 * requires:
 *
 *   mem + 0                desc[0] .. desc[cap-1]   64 B each
 *   mem + 64 * cap         bdesc                    64 B
 *   mem + 64 * (cap + 1)   comp[0] .. comp[cap-1]   32 B each
 *   mem + 96 * cap + 64    bcomp                    32 B
 *
 * (rounded up to a multiple of 64 bytes for aligned_alloc).
 */
#include <stdlib.h>

#include "idxd.h"

#if VMIG_HAVE_IDXD_H

_Static_assert(sizeof(struct dsa_hw_desc) == 64, "DSA descriptors are 64 bytes");
_Static_assert(sizeof(struct dsa_completion_record) == 32, "DSA records are 32 bytes");

#define DESC_ALIGN 64u

int vmig_idxd_batch_create(uint32_t cap, vmig_idxd_batch **out, vmig_error *err)
{
    if (!out)
        return vmig_error_set(err, VMIG_EINVAL, "vmig_idxd_batch_create: no output pointer");
    *out = NULL;
    if (cap < 1 || cap > VMIG_IDXD_MAX_BATCH)
        return vmig_error_set(err, VMIG_EINVAL,
                              "DSA batch capacity %u is out of range (1..%u jobs)", cap,
                              VMIG_IDXD_MAX_BATCH);
    vmig_idxd_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return vmig_error_set(err, VMIG_ENOMEM, "cannot allocate a DSA batch of %u jobs", cap);
    size_t descs = ((size_t)cap + 1) * sizeof(struct dsa_hw_desc);
    size_t recs = ((size_t)cap + 1) * sizeof(struct dsa_completion_record);
    size_t size = (descs + recs + DESC_ALIGN - 1) / DESC_ALIGN * DESC_ALIGN;
    b->mem = aligned_alloc(DESC_ALIGN, size);
    if (!b->mem) {
        free(b);
        return vmig_error_set(err, VMIG_ENOMEM,
                              "cannot allocate %zu bytes of DSA descriptors for %u jobs", size,
                              cap);
    }
    memset(b->mem, 0, size);
    uint8_t *p = b->mem;
    b->desc = (struct dsa_hw_desc *)p;
    b->bdesc = b->desc + cap;
    b->comp = (struct dsa_completion_record *)(p + descs);
    b->bcomp = b->comp + cap;
    b->cap = cap;
    *out = b;
    return 0;
}

void vmig_idxd_batch_free(vmig_idxd_batch *b)
{
    if (!b)
        return;
    free(b->mem);
    free(b);
}

static void fill_compval(struct dsa_hw_desc *d, const void *buf, uint32_t len,
                         struct dsa_completion_record *rec)
{
    memset(d, 0, sizeof(*d));
    d->opcode = DSA_OPCODE_COMPVAL;
    d->flags = IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV;
    d->completion_addr = (uint64_t)(uintptr_t)rec;
    d->src_addr = (uint64_t)(uintptr_t)buf;
    d->comp_pattern = 0;
    d->xfer_size = len;
}

/*
 * Arguments outside the contract leave n = 0 and a batch descriptor with a
 * count of 0: if it is submitted anyway, the device refuses it with
 * DSA_COMP_DESC_CNT_ERANGE instead of reading stale descriptors.
 */
void vmig_idxd_batch_prepare(vmig_idxd_batch *b, const void *const *bufs, uint32_t n, uint32_t len)
{
    bool ok = bufs && n >= 1 && n <= b->cap && len >= 1;
    b->n = ok ? n : 0;
    b->len = ok ? len : 0;
    memset(b->bcomp, 0, sizeof(*b->bcomp));
    memset(b->bdesc, 0, sizeof(*b->bdesc));
    if (!ok || n >= 2) {
        b->bdesc->opcode = DSA_OPCODE_BATCH;
        b->bdesc->flags = IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV;
        b->bdesc->completion_addr = (uint64_t)(uintptr_t)b->bcomp;
        b->bdesc->desc_list_addr = (uint64_t)(uintptr_t)b->desc;
        b->bdesc->desc_count = b->n;
    }
    for (uint32_t i = 0; i < b->n; i++) {
        memset(&b->comp[i], 0, sizeof(b->comp[i]));
        fill_compval(&b->desc[i], bufs[i], len, &b->comp[i]);
    }
}

const struct dsa_hw_desc *vmig_idxd_batch_head(const vmig_idxd_batch *b)
{
    return b->n == 1 ? &b->desc[0] : b->bdesc;
}

static const struct dsa_completion_record *head_record(const vmig_idxd_batch *b)
{
    return b->n == 1 ? &b->comp[0] : b->bcomp;
}

static uint8_t load_status(const struct dsa_completion_record *r)
{
    return __atomic_load_n(&r->status, __ATOMIC_ACQUIRE);
}

bool vmig_idxd_batch_done(const vmig_idxd_batch *b)
{
    return load_status(head_record(b)) != 0;
}

uint8_t vmig_idxd_batch_status(const vmig_idxd_batch *b)
{
    return load_status(head_record(b)) & DSA_COMP_STATUS_MASK;
}

/*
 * A page fault record whose bytes_completed reaches len contradicts itself
 * (the fault stopped the job before its end), so none of it is trusted:
 * FAILED, whatever its result says. Only ZERO could lose data if wrong, and
 * it is given only for a successful match.
 */
enum vmig_idxd_job_state vmig_idxd_job_state(const vmig_idxd_batch *b, uint32_t i,
                                             uint32_t *bytes_done)
{
    if (bytes_done)
        *bytes_done = 0;
    if (i >= b->n)
        return VMIG_IDXD_FAILED;
    const struct dsa_completion_record *r = &b->comp[i];
    uint8_t st = load_status(r) & DSA_COMP_STATUS_MASK;
    if (st == DSA_COMP_NONE) {
        if (!vmig_idxd_batch_done(b))
            return VMIG_IDXD_PENDING;
        /* The job's record may have landed between the two loads; the head
         * is written after every job's record, so this second look is
         * final. */
        st = load_status(r) & DSA_COMP_STATUS_MASK;
        if (st == DSA_COMP_NONE)
            return VMIG_IDXD_FAILED;
    }
    switch (st) {
    case DSA_COMP_SUCCESS:
        return r->result == 0 ? VMIG_IDXD_ZERO : VMIG_IDXD_NONZERO;
    case DSA_COMP_PAGE_FAULT_NOBOF: {
        uint32_t done = r->bytes_completed;
        if (done >= b->len)
            return VMIG_IDXD_FAILED;
        if (r->result != 0)
            return VMIG_IDXD_NONZERO;
        if (bytes_done)
            *bytes_done = done;
        return VMIG_IDXD_PARTIAL;
    }
    default:
        return VMIG_IDXD_FAILED;
    }
}

#endif /* VMIG_HAVE_IDXD_H */
