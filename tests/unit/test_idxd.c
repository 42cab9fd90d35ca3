/*
 * DSA zero-page batches (src/accel/idxd.c) without a device or a thread:
 * the descriptors prepare() writes, field by field, and what the state
 * functions make of completion records written here by hand.
 */
#include "src/accel/idxd.h"

#include "../testutil.h"

#if VMIG_HAVE_IDXD_H

#define PAGE 4096u

static uint8_t pages[128][PAGE] __attribute__((aligned(4096)));

static void set_rec(struct dsa_completion_record *r, uint8_t status, uint8_t result, uint32_t bytes)
{
    r->result = result;
    r->bytes_completed = bytes;
    r->status = status;
}

static void test_create(void)
{
    vmig_error e = {0};
    vmig_idxd_batch *b = (vmig_idxd_batch *)&e; /* must be reset to NULL */
    CHECK(vmig_idxd_batch_create(0, &b, &e) == VMIG_EINVAL, "cap 0 accepted");
    CHECK(b == NULL, "out not cleared on error");
    CHECK(e.code == VMIG_EINVAL && strstr(e.msg, "capacity 0"), "sentence: '%s'", e.msg);

    vmig_error e2 = {0};
    CHECK(vmig_idxd_batch_create(VMIG_IDXD_MAX_BATCH + 1, &b, &e2) == VMIG_EINVAL,
          "cap beyond the maximum accepted");
    CHECK(e2.code == VMIG_EINVAL && strstr(e2.msg, "1025") && strstr(e2.msg, "1024"),
          "sentence: '%s'", e2.msg);
    CHECK(vmig_idxd_batch_create(0, &b, NULL) == VMIG_EINVAL, "NULL err");

    REQUIRE(vmig_idxd_batch_create(VMIG_IDXD_MAX_BATCH, &b, NULL) == 0, "cap == maximum");
    CHECK(b->cap == VMIG_IDXD_MAX_BATCH && b->n == 0, "cap %u n %u", b->cap, b->n);
    vmig_idxd_batch_free(b);
    REQUIRE(vmig_idxd_batch_create(1, &b, NULL) == 0, "cap 1");
    vmig_idxd_batch_free(b);
    vmig_idxd_batch_free(NULL);
}

static void check_layout(const vmig_idxd_batch *b)
{
    uintptr_t d = (uintptr_t)b->desc, c = (uintptr_t)b->comp;
    uintptr_t bd = (uintptr_t)b->bdesc, bc = (uintptr_t)b->bcomp;
    CHECK(d % 64 == 0 && bd % 64 == 0, "descriptors misaligned: %#lx %#lx", (unsigned long)d,
          (unsigned long)bd);
    CHECK(c % 32 == 0 && bc % 32 == 0, "records misaligned: %#lx %#lx", (unsigned long)c,
          (unsigned long)bc);
    /* Nothing overlaps: each array ends before the next object begins. */
    uintptr_t ranges[4][2] = {
        {d, d + 64u * b->cap}, {bd, bd + 64}, {c, c + 32u * b->cap}, {bc, bc + 32}};
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            CHECK(ranges[i][1] <= ranges[j][0] || ranges[j][1] <= ranges[i][0],
                  "objects %d and %d overlap", i, j);
}

/* Every byte of a job descriptor: the fields prepare() sets, zero elsewhere. */
static void check_job_desc(const vmig_idxd_batch *b, uint32_t i, const void *buf, uint32_t len)
{
    const struct dsa_hw_desc *d = &b->desc[i];
    CHECK(d->opcode == DSA_OPCODE_COMPVAL, "desc %u opcode %u", i, (unsigned)d->opcode);
    CHECK(d->flags == (IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV), "desc %u flags %#x", i,
          (unsigned)d->flags);
    CHECK(d->pasid == 0 && d->priv == 0 && d->rsvd == 0, "desc %u pasid/priv", i);
    CHECK(d->completion_addr == (uint64_t)(uintptr_t)&b->comp[i], "desc %u record", i);
    CHECK(d->src_addr == (uint64_t)(uintptr_t)buf, "desc %u source", i);
    CHECK(d->comp_pattern == 0, "desc %u pattern", i);
    CHECK(d->xfer_size == len, "desc %u size %u", i, d->xfer_size);
    CHECK(d->int_handle == 0 && d->rsvd1 == 0, "desc %u int_handle", i);
    for (size_t k = 0; k < sizeof(d->op_specific); k++)
        CHECK(d->op_specific[k] == 0, "desc %u byte %zu of op_specific", i, 40 + k);
    const uint8_t *r = (const uint8_t *)&b->comp[i];
    for (size_t k = 0; k < sizeof(b->comp[i]); k++)
        CHECK(r[k] == 0, "record %u byte %zu not cleared", i, k);
}

static void test_prepare(void)
{
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(128, &b, NULL) == 0, "create");
    check_layout(b);
    const void *bufs[128];
    for (int i = 0; i < 128; i++)
        bufs[i] = pages[127 - i];

    const uint32_t ns[] = {1, 2, 128, 2, 1};
    for (size_t t = 0; t < VMIG_ARRAY_SIZE(ns); t++) {
        uint32_t n = ns[t], len = t == 0 ? 1 : PAGE;
        /* Garbage from a previous use must not survive. */
        memset(b->mem, 0xa5, (size_t)(b->cap + 1) * 96);
        vmig_idxd_batch_prepare(b, bufs, n, len);
        CHECK(b->n == n && b->len == len, "n %u len %u", b->n, b->len);
        for (uint32_t i = 0; i < n; i++)
            check_job_desc(b, i, bufs[i], len);
        if (n == 1) {
            CHECK(vmig_idxd_batch_head(b) == &b->desc[0], "n 1: head is not desc[0]");
        } else {
            const struct dsa_hw_desc *h = vmig_idxd_batch_head(b);
            CHECK(h == b->bdesc, "n %u: head is not bdesc", n);
            CHECK(h->opcode == DSA_OPCODE_BATCH, "batch opcode %u", (unsigned)h->opcode);
            CHECK(h->flags == (IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_CRAV), "batch flags %#x",
                  (unsigned)h->flags);
            CHECK(h->pasid == 0 && h->priv == 0, "batch pasid/priv");
            CHECK(h->completion_addr == (uint64_t)(uintptr_t)b->bcomp, "batch record");
            CHECK(h->desc_list_addr == (uint64_t)(uintptr_t)b->desc, "batch list");
            CHECK(h->desc_count == n, "batch count %u", h->desc_count);
            CHECK(h->int_handle == 0, "batch int_handle");
            for (size_t k = 0; k < sizeof(h->op_specific); k++)
                CHECK(h->op_specific[k] == 0, "batch byte %zu", 40 + k);
            const uint8_t *r = (const uint8_t *)b->bcomp;
            for (size_t k = 0; k < 32; k++)
                CHECK(r[k] == 0, "batch record byte %zu not cleared", k);
        }
        CHECK(!vmig_idxd_batch_done(b) && vmig_idxd_batch_status(b) == 0, "n %u: done early", n);
        for (uint32_t i = 0; i < n; i++)
            CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_PENDING, "job %u not pending", i);
    }

    /* Outside the contract: no job, and a head the device would refuse. */
    vmig_idxd_batch_prepare(b, bufs, 0, PAGE);
    CHECK(b->n == 0 && vmig_idxd_batch_head(b) == b->bdesc && b->bdesc->desc_count == 0,
          "n 0: n %u count %u", b->n, b->bdesc->desc_count);
    vmig_idxd_batch_prepare(b, bufs, 129, PAGE);
    CHECK(b->n == 0 && b->bdesc->desc_count == 0, "n > cap: n %u", b->n);
    vmig_idxd_batch_prepare(b, bufs, 2, 0);
    CHECK(b->n == 0, "len 0: n %u", b->n);
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_FAILED, "job beyond n");
    vmig_idxd_batch_free(b);
}

/* One record at a time through the single-job path, where the job's record
 * is also the head's. */
static void test_states_single(void)
{
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(4, &b, NULL) == 0, "create");
    const void *bufs[1] = {pages[0]};
    struct {
        uint8_t status, result;
        uint32_t bytes;
        enum vmig_idxd_job_state want;
        uint32_t want_done;
    } cases[] = {
        {0, 0, 0, VMIG_IDXD_PENDING, 0},
        {DSA_COMP_SUCCESS, 0, 0, VMIG_IDXD_ZERO, 0},
        {DSA_COMP_SUCCESS, 0, 123, VMIG_IDXD_ZERO, 0},
        {DSA_COMP_SUCCESS, 1, 2048, VMIG_IDXD_NONZERO, 0},
        {DSA_COMP_SUCCESS, 0xff, 0, VMIG_IDXD_NONZERO, 0},
        {DSA_COMP_SUCCESS | DSA_COMP_STATUS_WRITE, 0, 0, VMIG_IDXD_ZERO, 0},
        {DSA_COMP_PAGE_FAULT_NOBOF, 0, 0, VMIG_IDXD_PARTIAL, 0},
        {DSA_COMP_PAGE_FAULT_NOBOF, 0, 1000, VMIG_IDXD_PARTIAL, 1000},
        {DSA_COMP_PAGE_FAULT_NOBOF, 0, PAGE - 1, VMIG_IDXD_PARTIAL, PAGE - 1},
        {DSA_COMP_PAGE_FAULT_NOBOF, 1, 1000, VMIG_IDXD_NONZERO, 0}, /* mismatch before it */
        {DSA_COMP_PAGE_FAULT_NOBOF, 0, PAGE, VMIG_IDXD_FAILED, 0},  /* nonsense */
        {DSA_COMP_PAGE_FAULT_NOBOF, 0, 0xffffffffu, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_PAGE_FAULT_NOBOF, 1, PAGE, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_SUCCESS_PRED, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_PAGE_FAULT_IR, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_BATCH_FAIL, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_BAD_OPCODE, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_INVALID_FLAGS, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_XFER_ERANGE, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_HW_ERR1, 0, 0, VMIG_IDXD_FAILED, 0},
        {DSA_COMP_TRANSLATION_FAIL, 0, 0, VMIG_IDXD_FAILED, 0},
        {0x7f, 0, 0, VMIG_IDXD_FAILED, 0},
    };
    for (size_t t = 0; t < VMIG_ARRAY_SIZE(cases); t++) {
        vmig_idxd_batch_prepare(b, bufs, 1, PAGE);
        set_rec(&b->comp[0], cases[t].status, cases[t].result, cases[t].bytes);
        uint32_t done = 0xdead;
        enum vmig_idxd_job_state s = vmig_idxd_job_state(b, 0, &done);
        CHECK(s == cases[t].want, "case %zu: state %d, want %d", t, s, cases[t].want);
        if (s == VMIG_IDXD_PARTIAL)
            CHECK(done == cases[t].want_done, "case %zu: bytes_done %u", t, done);
        CHECK(vmig_idxd_job_state(b, 0, NULL) == s, "case %zu: NULL bytes_done", t);
        CHECK(vmig_idxd_batch_done(b) == (cases[t].status != 0), "case %zu: done", t);
        CHECK(vmig_idxd_batch_status(b) == (cases[t].status & DSA_COMP_STATUS_MASK),
              "case %zu: status %u", t, vmig_idxd_batch_status(b));
        CHECK(vmig_idxd_job_state(b, 1, NULL) == VMIG_IDXD_FAILED, "case %zu: job 1 of 1", t);
    }
    vmig_idxd_batch_free(b);
}

static void test_states_batch(void)
{
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(8, &b, NULL) == 0, "create");
    const void *bufs[5] = {pages[0], pages[1], pages[2], pages[3], pages[4]};
    vmig_idxd_batch_prepare(b, bufs, 5, PAGE);

    set_rec(&b->comp[0], DSA_COMP_SUCCESS, 0, 0);
    set_rec(&b->comp[1], DSA_COMP_SUCCESS, 1, 8);
    set_rec(&b->comp[2], DSA_COMP_PAGE_FAULT_NOBOF, 0, 4000);
    /* comp[3] and comp[4]: not yet */
    uint32_t done;
    CHECK(!vmig_idxd_batch_done(b), "done before bcomp");
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO, "job 0");
    CHECK(vmig_idxd_job_state(b, 1, NULL) == VMIG_IDXD_NONZERO, "job 1");
    CHECK(vmig_idxd_job_state(b, 2, &done) == VMIG_IDXD_PARTIAL && done == 4000, "job 2");
    CHECK(vmig_idxd_job_state(b, 3, NULL) == VMIG_IDXD_PENDING, "job 3 before the batch end");
    /* The job records alone never make the batch done. */
    set_rec(&b->comp[3], DSA_COMP_SUCCESS, 0, 0);
    set_rec(&b->comp[4], DSA_COMP_SUCCESS, 0, 0);
    CHECK(!vmig_idxd_batch_done(b) && vmig_idxd_batch_status(b) == 0, "done without bcomp");
    set_rec(&b->comp[4], 0, 0, 0);

    set_rec(b->bcomp, DSA_COMP_BATCH_FAIL, 0, 5);
    CHECK(vmig_idxd_batch_done(b) && vmig_idxd_batch_status(b) == DSA_COMP_BATCH_FAIL,
          "batch status %u", vmig_idxd_batch_status(b));
    CHECK(vmig_idxd_job_state(b, 3, NULL) == VMIG_IDXD_ZERO, "job 3 after the batch end");
    CHECK(vmig_idxd_job_state(b, 4, NULL) == VMIG_IDXD_FAILED, "job 4: never written");
    CHECK(vmig_idxd_job_state(b, 2, &done) == VMIG_IDXD_PARTIAL && done == 4000, "job 2 again");
    CHECK(vmig_idxd_job_state(b, 5, NULL) == VMIG_IDXD_FAILED, "job 5 of 5");

    /* A batch refused as a whole: every job FAILED. */
    vmig_idxd_batch_prepare(b, bufs, 2, PAGE);
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_PENDING, "reprepared job 0");
    set_rec(b->bcomp, DSA_COMP_DESC_CNT_ERANGE, 0, 0);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_DESC_CNT_ERANGE, "refused batch status");
    for (uint32_t i = 0; i < 2; i++)
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_FAILED, "refused job %u", i);

    /* A successful batch: bcomp decides done, the job records the states. */
    vmig_idxd_batch_prepare(b, bufs, 2, PAGE);
    set_rec(&b->comp[0], DSA_COMP_SUCCESS, 0, 0);
    set_rec(&b->comp[1], DSA_COMP_PAGE_FAULT_NOBOF, 1, 16);
    set_rec(b->bcomp, DSA_COMP_SUCCESS | DSA_COMP_STATUS_WRITE, 0, 2);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_SUCCESS, "status without the write bit");
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO, "ok job 0");
    CHECK(vmig_idxd_job_state(b, 1, NULL) == VMIG_IDXD_NONZERO, "ok job 1");
    vmig_idxd_batch_free(b);
}

int main(void)
{
    test_create();
    test_prepare();
    test_states_single();
    test_states_batch();
    return tu_result("test_idxd");
}

#else

int main(void)
{
    SKIP("built without <linux/idxd.h>");
}

#endif
