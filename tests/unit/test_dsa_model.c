/*
 * The software DSA queue (src/accel/dsa_model.c) driven through the batch
 * code of src/accel/idxd.c, as the accelerator backend drives it: zero and
 * non-zero pages, pages that are not resident (and must stay so), injected
 * faults, a full queue, a dead device, reordered completion, invalid batches,
 * latency, and freeing with work queued.
 */
#include "src/accel/dsa_model.h"

#include <sys/mman.h>

#include "../testutil.h"

#if VMIG_HAVE_IDXD_H

#define PAGE 4096u
#define NP   128u

static uint8_t *pages; /* NP resident pages */

static bool wait_done(const vmig_idxd_batch *b, uint64_t timeout_ms)
{
    uint64_t end = tu_now_ns() + timeout_ms * 1000000u;
    while (!vmig_idxd_batch_done(b)) {
        if (tu_now_ns() > end)
            return false;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static void run(vmig_dsa_model *m, const vmig_idxd_batch *b)
{
    REQUIRE(vmig_dsa_model_submit(m, vmig_idxd_batch_head(b)) == 0, "submit refused");
    REQUIRE(wait_done(b, 5000), "batch of %u not done after 5 s", b->n);
}

static vmig_dsa_model *model(vmig_dsa_model_params p)
{
    vmig_dsa_model *m;
    vmig_error e = {0};
    REQUIRE(vmig_dsa_model_create(&p, &m, &e) == 0, "model: %s", e.msg);
    return m;
}

/* Page i: zero, or one non-zero byte at its first, middle or last byte. */
static const uint32_t dirt_at[4] = {0, 0, PAGE / 2, PAGE - 1};

static void fill_mixed(uint32_t n, uint32_t salt)
{
    memset(pages, 0, (size_t)NP * PAGE);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kind = (i + salt) % 4;
        if (kind)
            pages[(size_t)i * PAGE + dirt_at[kind]] = (uint8_t)(1u << (i % 8));
    }
}

static void check_mixed(const vmig_idxd_batch *b, uint32_t salt, const char *what)
{
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t kind = (i + salt) % 4;
        enum vmig_idxd_job_state s = vmig_idxd_job_state(b, i, NULL);
        CHECK(s == (kind ? VMIG_IDXD_NONZERO : VMIG_IDXD_ZERO), "%s: n %u job %u state %d", what,
              b->n, i, s);
        /* Mismatch: the offset of the differing 8-byte word. */
        if (kind)
            CHECK(b->comp[i].bytes_completed == (dirt_at[kind] & ~7u),
                  "%s: job %u bytes_completed %u", what, i, b->comp[i].bytes_completed);
    }
    if (b->n >= 2) {
        CHECK(vmig_idxd_batch_status(b) == DSA_COMP_SUCCESS, "%s: batch status %u", what,
              vmig_idxd_batch_status(b));
        CHECK(b->bcomp->bytes_completed == b->n, "%s: descriptors completed %u", what,
              b->bcomp->bytes_completed);
    }
}

static void prepare_pages(vmig_idxd_batch *b, uint8_t *base, uint32_t n, uint32_t len)
{
    const void *bufs[NP];
    for (uint32_t i = 0; i < n; i++)
        bufs[i] = base + (size_t)i * PAGE;
    vmig_idxd_batch_prepare(b, bufs, n, len);
}

static void test_create(void)
{
    vmig_dsa_model *m = (vmig_dsa_model *)&m;
    vmig_error e = {0};
    CHECK(vmig_dsa_model_create(NULL, &m, &e) == VMIG_EINVAL && m == NULL && e.msg[0],
          "NULL params");
    vmig_error e2 = {0};
    vmig_dsa_model_params p = {.wq_size = 1u << 20};
    CHECK(vmig_dsa_model_create(&p, &m, &e2) == VMIG_EINVAL && strstr(e2.msg, "1048576"),
          "huge queue: '%s'", e2.msg);
    vmig_dsa_model_free(NULL);
    CHECK(vmig_dsa_model_submit(NULL, NULL) == VMIG_EINVAL, "NULL submit");
}

static void test_mixed(bool reorder)
{
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m = model((vmig_dsa_model_params){.reorder = reorder, .counters = &c});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(NP, &b, NULL) == 0, "batch");
    const char *what = reorder ? "reorder" : "in order";
    uint64_t jobs = 0, batches = 0, descs = 0;
    for (uint32_t salt = 0; salt < 4; salt++) {
        const uint32_t ns[] = {1, 2, NP};
        for (size_t t = 0; t < VMIG_ARRAY_SIZE(ns); t++) {
            fill_mixed(ns[t], salt);
            prepare_pages(b, pages, ns[t], PAGE);
            run(m, b);
            check_mixed(b, salt, what);
            jobs += ns[t];
            batches += ns[t] >= 2;
            descs++;
        }
    }
    vmig_dsa_model_free(m);
    CHECK(c.submits == descs && c.descriptors == descs && c.full == 0, "submits %lu desc %lu",
          (unsigned long)c.submits, (unsigned long)c.descriptors);
    CHECK(c.jobs == jobs && c.batches == batches && c.faults == 0 && c.errors == 0,
          "jobs %lu batches %lu faults %lu errors %lu", (unsigned long)c.jobs,
          (unsigned long)c.batches, (unsigned long)c.faults, (unsigned long)c.errors);

    /* Job numbers follow the execution order: with fault_every = n the
     * last job run faults, which is job 0 when the batch runs backwards. */
    m = model((vmig_dsa_model_params){.reorder = reorder, .fault_every = NP});
    memset(pages, 0, (size_t)NP * PAGE);
    prepare_pages(b, pages, NP, PAGE);
    run(m, b);
    uint32_t faulted = reorder ? 0 : NP - 1, done;
    for (uint32_t i = 0; i < NP; i++) {
        enum vmig_idxd_job_state s = vmig_idxd_job_state(b, i, &done);
        if (i == faulted)
            CHECK(s == VMIG_IDXD_PARTIAL && done == PAGE / 2, "%s: job %u state %d done %u", what,
                  i, s, done);
        else
            CHECK(s == VMIG_IDXD_ZERO, "%s: job %u state %d", what, i, s);
    }
    vmig_dsa_model_free(m);
    vmig_idxd_batch_free(b);
}

static bool is_resident(const void *p)
{
    unsigned char v = 0;
    return mincore((void *)p, PAGE, &v) == 0 && (v & 1);
}

static uint8_t *map_fresh(size_t npages)
{
    void *p = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED, "mmap");
    /* A huge page would make the neighbours of a touched page resident. */
    madvise(p, npages * PAGE, MADV_NOHUGEPAGE);
    return p;
}

static void test_residency(void)
{
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m = model((vmig_dsa_model_params){.counters = &c});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(8, &b, NULL) == 0, "batch");

    /* Never touched: each job stops at its first byte, nothing is read. */
    uint8_t *fresh = map_fresh(8);
    for (uint32_t n = 1; n <= 4; n += 3) {
        prepare_pages(b, fresh + (n == 1 ? 4 * PAGE : 0), n, PAGE);
        run(m, b);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t done = 1;
            enum vmig_idxd_job_state s = vmig_idxd_job_state(b, i, &done);
            CHECK(s == VMIG_IDXD_PARTIAL && done == 0, "fresh n %u job %u: state %d done %u", n, i,
                  s, done);
            CHECK(b->comp[i].status == DSA_COMP_PAGE_FAULT_NOBOF, "fresh job %u status %u", i,
                  b->comp[i].status);
            CHECK(b->comp[i].fault_addr == b->desc[i].src_addr, "fresh job %u fault_addr", i);
        }
        if (n >= 2)
            CHECK(vmig_idxd_batch_status(b) == DSA_COMP_BATCH_FAIL, "fresh batch status %u",
                  vmig_idxd_batch_status(b));
    }
    for (uint32_t i = 0; i < 8; i++)
        CHECK(!is_resident(fresh + (size_t)i * PAGE), "fresh page %u became resident", i);

    /* A job of two pages whose second one is not resident: half done. */
    fresh[0] = 0;
    REQUIRE(is_resident(fresh), "written page not resident");
    prepare_pages(b, fresh, 1, 2 * PAGE);
    run(m, b);
    uint32_t done = 0;
    CHECK(vmig_idxd_job_state(b, 0, &done) == VMIG_IDXD_PARTIAL && done == PAGE,
          "two pages: done %u", done);
    CHECK(b->comp[0].fault_addr == (uint64_t)(uintptr_t)(fresh + PAGE), "two pages: fault_addr");
    CHECK(!is_resident(fresh + PAGE), "second page became resident");
    /* ... unless the first one already differs. */
    fresh[PAGE - 1] = 0x40;
    prepare_pages(b, fresh, 1, 2 * PAGE);
    run(m, b);
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_NONZERO, "two pages, dirty first");
    CHECK(!is_resident(fresh + PAGE), "second page became resident");

    /* Touched, then given back: not resident again. */
    uint8_t *gone = fresh + 6 * PAGE;
    gone[10] = 1;
    REQUIRE(is_resident(gone), "written page not resident");
    REQUIRE(madvise(gone, PAGE, MADV_DONTNEED) == 0, "MADV_DONTNEED");
    REQUIRE(!is_resident(gone), "page resident after MADV_DONTNEED");
    prepare_pages(b, gone, 1, PAGE);
    run(m, b);
    done = 1;
    CHECK(vmig_idxd_job_state(b, 0, &done) == VMIG_IDXD_PARTIAL && done == 0,
          "DONTNEED page: done %u", done);
    CHECK(!is_resident(gone), "DONTNEED page became resident");
    vmig_dsa_model_free(m);
    CHECK(c.faults == 1 + 4 + 1 + 1 && c.errors == 0, "faults %lu errors %lu",
          (unsigned long)c.faults, (unsigned long)c.errors);

    /* ignore_residency reads what is there (and so faults it in). */
    m = model((vmig_dsa_model_params){.ignore_residency = true});
    prepare_pages(b, fresh + 7 * PAGE, 1, PAGE);
    run(m, b);
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO, "ignore_residency");
    vmig_dsa_model_free(m);
    munmap(fresh, 8 * PAGE);
    vmig_idxd_batch_free(b);
}

static void test_fault_every(void)
{
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m = model((vmig_dsa_model_params){.fault_every = 3, .counters = &c});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(9, &b, NULL) == 0, "batch");
    memset(pages, 0, 9 * PAGE);
    pages[2 * PAGE + 100] = 1;  /* job 3 differs before its fault */
    pages[5 * PAGE + 3000] = 1; /* job 6 differs only after it */
    prepare_pages(b, pages, 9, PAGE);
    run(m, b);
    for (uint32_t i = 0; i < 9; i++) {
        uint32_t done = 0;
        enum vmig_idxd_job_state s = vmig_idxd_job_state(b, i, &done);
        if (i == 2)
            CHECK(s == VMIG_IDXD_NONZERO, "job %u: state %d", i, s);
        else if (i % 3 == 2)
            CHECK(s == VMIG_IDXD_PARTIAL && done == PAGE / 2, "job %u: state %d done %u", i, s,
                  done);
        else
            CHECK(s == VMIG_IDXD_ZERO, "job %u: state %d", i, s);
    }
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_BATCH_FAIL, "status %u", vmig_idxd_batch_status(b));
    /* Counting goes on across submissions: job 12 is the third of these. */
    prepare_pages(b, pages + 6 * PAGE, 3, PAGE);
    run(m, b);
    uint32_t done = 0;
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO &&
              vmig_idxd_job_state(b, 1, NULL) == VMIG_IDXD_ZERO &&
              vmig_idxd_job_state(b, 2, &done) == VMIG_IDXD_PARTIAL && done == PAGE / 2,
          "jobs 10..12");
    vmig_dsa_model_free(m);
    CHECK(c.faults == 3, "faults %lu", (unsigned long)c.faults);
    vmig_idxd_batch_free(b);
}

static void test_full(void)
{
    vmig_idxd_batch *b[5];
    for (int i = 0; i < 5; i++) {
        REQUIRE(vmig_idxd_batch_create(1, &b[i], NULL) == 0, "batch");
        prepare_pages(b[i], pages + (size_t)i * PAGE, 1, PAGE);
    }
    memset(pages, 0, 5 * PAGE);

    /* Planned: every third submit is refused, whatever the occupancy. */
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m =
        model((vmig_dsa_model_params){.wq_size = 4, .full_every = 3, .counters = &c});
    for (int call = 1; call <= 9; call++) {
        vmig_idxd_batch_prepare(b[0], (const void *const[]){pages}, 1, PAGE);
        int rc = vmig_dsa_model_submit(m, vmig_idxd_batch_head(b[0]));
        CHECK(rc == (call % 3 == 0 ? VMIG_EAGAIN : 0), "call %d: rc %d", call, rc);
        if (rc == 0)
            CHECK(wait_done(b[0], 5000) && vmig_idxd_job_state(b[0], 0, NULL) == VMIG_IDXD_ZERO,
                  "call %d: job", call);
    }
    vmig_dsa_model_free(m);
    CHECK(c.submits == 6 && c.full == 3, "submits %lu full %lu", (unsigned long)c.submits,
          (unsigned long)c.full);

    /* Real: 4 slots, held until executed; the first takes 100 ms. */
    m = model((vmig_dsa_model_params){.wq_size = 4, .latency_ns = 100000000});
    for (int i = 0; i < 4; i++)
        CHECK(vmig_dsa_model_submit(m, vmig_idxd_batch_head(b[i])) == 0, "slot %d", i);
    CHECK(vmig_dsa_model_submit(m, vmig_idxd_batch_head(b[4])) == VMIG_EAGAIN, "fifth accepted");
    CHECK(!vmig_idxd_batch_done(b[4]), "refused descriptor ran");
    REQUIRE(wait_done(b[0], 5000), "first not done");
    /* The record is written just before the worker frees the slot: the
     * queue may still be full for a moment. */
    int rc = VMIG_EAGAIN;
    for (int t = 0; t < 1000 && rc == VMIG_EAGAIN; t++) {
        rc = vmig_dsa_model_submit(m, vmig_idxd_batch_head(b[4]));
        if (rc == VMIG_EAGAIN) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    REQUIRE(rc == 0 && wait_done(b[4], 5000), "fifth refused after the first completed");
    for (int i = 0; i < 5; i++)
        CHECK(vmig_idxd_batch_done(b[i]) && vmig_idxd_job_state(b[i], 0, NULL) == VMIG_IDXD_ZERO,
              "job %d", i);
    vmig_dsa_model_free(m);
    for (int i = 0; i < 5; i++)
        vmig_idxd_batch_free(b[i]);
}

static void test_error_after(void)
{
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m = model((vmig_dsa_model_params){.error_after = 5, .counters = &c});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(4, &b, NULL) == 0, "batch");
    memset(pages, 0, 4 * PAGE);

    prepare_pages(b, pages, 4, PAGE); /* jobs 1..4 */
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_SUCCESS, "healthy batch status %u",
          vmig_idxd_batch_status(b));
    for (uint32_t i = 0; i < 4; i++)
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_ZERO, "healthy job %u", i);

    prepare_pages(b, pages, 4, PAGE); /* job 5 runs, 6..8 do not */
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_BATCH_FAIL, "dying batch status %u",
          vmig_idxd_batch_status(b));
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO, "job 5");
    for (uint32_t i = 1; i < 4; i++) {
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_FAILED, "job %u", 5 + i);
        CHECK(b->comp[i].status == DSA_COMP_HW_ERR1, "job %u status %u", 5 + i, b->comp[i].status);
    }

    prepare_pages(b, pages, 4, PAGE); /* dead: the batch itself fails */
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_HW_ERR1, "dead batch status %u",
          vmig_idxd_batch_status(b));
    for (uint32_t i = 0; i < 4; i++)
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_FAILED, "dead batch job %u", i);

    prepare_pages(b, pages, 1, PAGE);
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_HW_ERR1 &&
              vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_FAILED,
          "dead single job");
    vmig_dsa_model_free(m);
    CHECK(c.errors == 3 + 1 + 1, "errors %lu", (unsigned long)c.errors);
    vmig_idxd_batch_free(b);
}

static void expect_refused(vmig_dsa_model *m, vmig_idxd_batch *b, uint8_t want, const char *what)
{
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == want, "%s: status %u, want %u", what,
          vmig_idxd_batch_status(b), want);
    CHECK(b->bcomp->bytes_completed == 0, "%s: descriptors completed %u", what,
          b->bcomp->bytes_completed);
    for (uint32_t i = 0; i < b->n; i++) {
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_FAILED, "%s: job %u", what, i);
        CHECK(b->comp[i].status == 0, "%s: job %u ran", what, i);
    }
}

static void test_bad(void)
{
    struct vmig_dsa_model_counters c = {0};
    vmig_dsa_model *m = model((vmig_dsa_model_params){.max_batch = 8, .counters = &c});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(16, &b, NULL) == 0, "batch");
    memset(pages, 0, 16 * PAGE);

    prepare_pages(b, pages, 2, PAGE);
    b->bdesc->desc_count = 1;
    expect_refused(m, b, DSA_COMP_DESC_CNT_ERANGE, "count 1");
    prepare_pages(b, pages, 2, PAGE);
    b->bdesc->desc_count = 0;
    expect_refused(m, b, DSA_COMP_DESC_CNT_ERANGE, "count 0");
    prepare_pages(b, pages, 9, PAGE);
    expect_refused(m, b, DSA_COMP_DESC_CNT_ERANGE, "count 9 > 8");
    prepare_pages(b, pages, 8, PAGE); /* == the maximum: fine */
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_SUCCESS, "count 8: status %u",
          vmig_idxd_batch_status(b));
    prepare_pages(b, pages, 3, PAGE);
    b->bdesc->desc_list_addr += 32;
    expect_refused(m, b, DSA_COMP_DESCLIST_ALIGN, "list + 32");
    prepare_pages(b, pages, 0, PAGE); /* prepare() outside its contract */
    expect_refused(m, b, DSA_COMP_DESC_CNT_ERANGE, "prepare n 0");

    /* Bad jobs in a batch: their own status, the batch fails, the rest run. */
    prepare_pages(b, pages, 4, PAGE);
    b->desc[0].opcode = 0x3f;
    b->desc[1].flags = IDXD_OP_FLAG_CRAV; /* no RCR: a record still comes */
    b->desc[2].flags = IDXD_OP_FLAG_RCR;  /* no CRAV: nowhere to write */
    run(m, b);
    CHECK(b->comp[0].status == DSA_COMP_BAD_OPCODE, "bad opcode: %u", b->comp[0].status);
    CHECK(b->comp[1].status == DSA_COMP_INVALID_FLAGS &&
              b->comp[1].invalid_flags == IDXD_OP_FLAG_RCR,
          "no RCR: %u %#x", b->comp[1].status, (unsigned)b->comp[1].invalid_flags);
    CHECK(b->comp[2].status == 0, "no CRAV: a record was written");
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_BATCH_FAIL && b->bcomp->bytes_completed == 4,
          "bad jobs: batch %u completed %u", vmig_idxd_batch_status(b), b->bcomp->bytes_completed);
    for (uint32_t i = 0; i < 3; i++)
        CHECK(vmig_idxd_job_state(b, i, NULL) == VMIG_IDXD_FAILED, "bad job %u", i);
    CHECK(vmig_idxd_job_state(b, 3, NULL) == VMIG_IDXD_ZERO, "good job after bad ones");

    /* A batch listed in a batch, a zero size, a bad single descriptor. */
    prepare_pages(b, pages, 3, PAGE);
    b->desc[0].opcode = DSA_OPCODE_BATCH;
    b->desc[1].xfer_size = 0;
    run(m, b);
    CHECK(b->comp[0].status == DSA_COMP_BAD_OPCODE, "nested batch: %u", b->comp[0].status);
    CHECK(b->comp[1].status == DSA_COMP_XFER_ERANGE, "size 0: %u", b->comp[1].status);
    CHECK(vmig_idxd_job_state(b, 2, NULL) == VMIG_IDXD_ZERO, "good job");
    prepare_pages(b, pages, 1, PAGE);
    b->desc[0].flags = IDXD_OP_FLAG_CRAV | IDXD_OP_FLAG_RCR | IDXD_OP_FLAG_FENCE;
    run(m, b); /* other flags are allowed */
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO, "fence flag");
    prepare_pages(b, pages, 1, PAGE);
    b->desc[0].flags = IDXD_OP_FLAG_CRAV;
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_INVALID_FLAGS, "single no RCR: %u",
          vmig_idxd_batch_status(b));

    /* The list itself not resident: BATCH_PAGE_FAULT, nothing run. */
    uint8_t *fresh = map_fresh(1);
    prepare_pages(b, pages, 2, PAGE);
    b->bdesc->desc_list_addr = (uint64_t)(uintptr_t)fresh;
    run(m, b);
    CHECK(vmig_idxd_batch_status(b) == DSA_COMP_BATCH_PAGE_FAULT &&
              b->bcomp->bytes_completed == 0 && b->bcomp->fault_addr == (uint64_t)(uintptr_t)fresh,
          "list fault: %u %u", vmig_idxd_batch_status(b), b->bcomp->bytes_completed);
    CHECK(!is_resident(fresh), "list page became resident");
    munmap(fresh, PAGE);

    vmig_dsa_model_free(m);
    /* count 1, 0, 9, align, n 0; opcode, flags, CRAV; nested, size; flags */
    CHECK(c.errors == 5 + 3 + 2 + 1, "errors %lu", (unsigned long)c.errors);
    vmig_idxd_batch_free(b);
}

static void test_latency(void)
{
    vmig_dsa_model *m = model((vmig_dsa_model_params){.latency_ns = 50000000});
    vmig_idxd_batch *b;
    REQUIRE(vmig_idxd_batch_create(2, &b, NULL) == 0, "batch");
    memset(pages, 0, 2 * PAGE);
    prepare_pages(b, pages, 2, PAGE);
    uint64_t t0 = tu_now_ns();
    REQUIRE(vmig_dsa_model_submit(m, vmig_idxd_batch_head(b)) == 0, "submit");
    CHECK(!vmig_idxd_batch_done(b), "done right after submit");
    CHECK(wait_done(b, 5000), "not done after 5 s");
    uint64_t took = tu_now_ns() - t0;
    CHECK(took >= 50000000, "done after %lu ns", (unsigned long)took);
    CHECK(vmig_idxd_job_state(b, 0, NULL) == VMIG_IDXD_ZERO &&
              vmig_idxd_job_state(b, 1, NULL) == VMIG_IDXD_ZERO,
          "jobs");
    vmig_dsa_model_free(m);
    vmig_idxd_batch_free(b);
}

static void test_free_queued(void)
{
    vmig_dsa_model *m = model((vmig_dsa_model_params){.wq_size = 8, .latency_ns = 10000000});
    vmig_idxd_batch *b[6];
    memset(pages, 0, 12 * PAGE);
    pages[PAGE * 11 + 7] = 1;
    for (uint32_t i = 0; i < 6; i++) {
        REQUIRE(vmig_idxd_batch_create(2, &b[i], NULL) == 0, "batch");
        prepare_pages(b[i], pages + (size_t)i * 2 * PAGE, 2, PAGE);
        REQUIRE(vmig_dsa_model_submit(m, vmig_idxd_batch_head(b[i])) == 0, "submit %u", i);
    }
    CHECK(!vmig_idxd_batch_done(b[5]), "all done before free");
    vmig_dsa_model_free(m);
    for (uint32_t i = 0; i < 6; i++) {
        CHECK(vmig_idxd_batch_done(b[i]), "batch %u not done by free", i);
        CHECK(vmig_idxd_job_state(b[i], 0, NULL) == VMIG_IDXD_ZERO, "batch %u job 0", i);
        CHECK(vmig_idxd_job_state(b[i], 1, NULL) == (i == 5 ? VMIG_IDXD_NONZERO : VMIG_IDXD_ZERO),
              "batch %u job 1", i);
        vmig_idxd_batch_free(b[i]);
    }
}

int main(void)
{
    pages = aligned_alloc(PAGE, (size_t)NP * PAGE);
    REQUIRE(pages, "pages");
    memset(pages, 0, (size_t)NP * PAGE);
    test_create();
    test_mixed(false);
    test_mixed(true);
    test_residency();
    test_fault_every();
    test_full();
    test_error_after();
    test_bad();
    test_latency();
    test_free_queued();
    free(pages);
    return tu_result("test_dsa_model");
}

#else

int main(void)
{
    SKIP("built without <linux/idxd.h>");
}

#endif
