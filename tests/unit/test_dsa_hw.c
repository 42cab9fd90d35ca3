/*
 * The DSA hardware path on a real work queue: the first usable queue
 * (vmig_dsa_wq_find), its portal, and Compare Pattern batches (idxd.h)
 * over 64 pages whose answers are known. Skips (77) on machines without a
 * usable queue, or when the queue cannot be opened here (CPU instruction,
 * permissions, a dedicated queue in use elsewhere).
 *
 * Pages, in one anonymous mapping:
 *   0..31   zero, written (resident), except
 *   21      never touched: no page behind it at all
 *   32..63  zero but for one byte, at offsets from 0 to 4095
 */
#include <sched.h>
#include <sys/mman.h>

#include "src/accel/dsa_portal.h"

#include "../testutil.h"

#if VMIG_HAVE_IDXD_H

#define PAGE       4096u
#define NPAGES     64u
#define UNTOUCHED  21u
#define TIMEOUT_NS 1000000000ull
#define MAX_TRIES  100000

static uint32_t nonzero_offset(uint32_t i)
{
    if (i == 32)
        return 0;
    if (i == NPAGES - 1)
        return PAGE - 1;
    return (i - 32) * 613 % PAGE;
}

/* A shared queue may refuse (ENQCMD's retry): try again, a bounded
 * number of times. A dedicated one never refuses. */
static void submit(vmig_dsa_portal *p, const vmig_idxd_batch *b)
{
    const struct dsa_hw_desc *head = vmig_idxd_batch_head(b);
    for (int tries = 0;; tries++) {
        int rc = vmig_dsa_portal_submit(p, head);
        if (rc == 0)
            return;
        REQUIRE(rc == VMIG_EAGAIN, "submit: %s", vmig_strerror(rc));
        REQUIRE(tries < MAX_TRIES, "the queue refused %d submissions in a row", tries);
        sched_yield();
    }
}

/* On a timeout the program exits without freeing the batch: the device
 * might still write its records (closing the queue drains it). */
static void wait_done(const vmig_idxd_batch *b, const char *what)
{
    uint64_t t0 = tu_now_ns();
    while (!vmig_idxd_batch_done(b)) {
        REQUIRE(tu_now_ns() - t0 < TIMEOUT_NS, "%s: no completion record after 1 s", what);
        sched_yield();
    }
}

/*
 * The untouched page may come back either way, and both are right for
 * vmig: without block-on-fault in the descriptor the device stops at the
 * missing translation (PARTIAL after 0 bytes, which the accel layer reads
 * as zero for untouched anonymous memory), unless the IOMMU already
 * resolves the address, to the shared zero page, and the device reads
 * zeros (ZERO).
 */
static bool check_batch(const vmig_idxd_batch *b, uint32_t first)
{
    bool faulted = false;
    for (uint32_t j = 0; j < b->n; j++) {
        uint32_t i = first + j, done = 0;
        enum vmig_idxd_job_state s = vmig_idxd_job_state(b, j, &done);
        if (i == UNTOUCHED) {
            CHECK(s == VMIG_IDXD_ZERO || s == VMIG_IDXD_PARTIAL, "untouched page: state %d", s);
            if (s == VMIG_IDXD_PARTIAL) {
                fprintf(stderr, "untouched page: PARTIAL after %u bytes\n", done);
                faulted = true;
            }
        } else if (i < 32) {
            CHECK(s == VMIG_IDXD_ZERO, "page %u (zero): state %d", i, s);
        } else {
            CHECK(s == VMIG_IDXD_NONZERO, "page %u (byte at %u): state %d", i, nonzero_offset(i),
                  s);
        }
    }
    return faulted;
}

static void test_batches(vmig_dsa_portal *p, uint8_t *mem)
{
    uint32_t chunk = VMIG_MIN(NPAGES, vmig_dsa_portal_max_batch(p));
    if (chunk < 2) {
        fprintf(stderr, "note: the queue takes no batches (max %u): single descriptors only\n",
                vmig_dsa_portal_max_batch(p));
        return;
    }
    const void *bufs[NPAGES];
    for (uint32_t i = 0; i < NPAGES; i++)
        bufs[i] = mem + (size_t)i * PAGE;
    vmig_idxd_batch *b;
    vmig_error e = {0};
    REQUIRE(vmig_idxd_batch_create(chunk, &b, &e) == 0, "batch: %s", e.msg);
    for (uint32_t first = 0; first < NPAGES; first += chunk) {
        uint32_t n = VMIG_MIN(chunk, NPAGES - first);
        if (n == 1) { /* a batch of one is refused: take the page before along */
            n = 2;
            first--;
        }
        vmig_idxd_batch_prepare(b, bufs + first, n, PAGE);
        submit(p, b);
        wait_done(b, "batch");
        uint8_t st = vmig_idxd_batch_status(b);
        bool faulted = check_batch(b, first);
        /* A job that did not succeed fails the batch as a whole. */
        CHECK(st == (faulted ? DSA_COMP_BATCH_FAIL : DSA_COMP_SUCCESS),
              "batch of pages %u..%u: status %#x", first, first + n - 1, st);
    }
    vmig_idxd_batch_free(b);
}

/* n == 1: the job's own descriptor is the head, no batch around it. */
static void test_single(vmig_dsa_portal *p, uint8_t *mem)
{
    vmig_idxd_batch *b;
    vmig_error e = {0};
    REQUIRE(vmig_idxd_batch_create(1, &b, &e) == 0, "batch: %s", e.msg);
    const uint32_t pages[] = {0, 40, NPAGES - 1};
    for (size_t t = 0; t < VMIG_ARRAY_SIZE(pages); t++) {
        const void *buf = mem + (size_t)pages[t] * PAGE;
        vmig_idxd_batch_prepare(b, &buf, 1, PAGE);
        CHECK(vmig_idxd_batch_head(b) == &b->desc[0], "n 1: head");
        submit(p, b);
        wait_done(b, "single descriptor");
        CHECK(vmig_idxd_batch_status(b) == DSA_COMP_SUCCESS, "page %u alone: status %#x", pages[t],
              vmig_idxd_batch_status(b));
        check_batch(b, pages[t]);
    }
    vmig_idxd_batch_free(b);
}

int main(void)
{
    vmig_dsa_wq_info wq;
    vmig_error e = {0};
    if (vmig_dsa_wq_find(NULL, NULL, &wq, &e) != 0)
        SKIP("no DSA work queue (%s)", e.msg);
    if (wq.max_xfer && wq.max_xfer < PAGE)
        SKIP("DSA work queue %s takes at most %llu bytes per descriptor, less than a page", wq.name,
             (unsigned long long)wq.max_xfer);
    vmig_dsa_portal *p;
    int rc = vmig_dsa_portal_open(&wq, &p, &e);
    if (rc == VMIG_ENOTSUP || rc == VMIG_ENOENT || rc == VMIG_EAGAIN)
        SKIP("DSA work queue %s cannot be used here (%s)", wq.name, e.msg);
    REQUIRE(rc == 0, "open %s: %s", wq.dev_path, e.msg);
    fprintf(stderr, "using %s (%s, size %u, max batch %u)\n", wq.dev_path,
            wq.dedicated ? "dedicated" : "shared", vmig_dsa_portal_size(p),
            vmig_dsa_portal_max_batch(p));

    uint8_t *mem = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED, "mmap");
    for (uint32_t i = 0; i < NPAGES; i++) {
        if (i == UNTOUCHED)
            continue;
        uint8_t *page = mem + (size_t)i * PAGE;
        memset(page, 0, PAGE);
        if (i >= 32)
            page[nonzero_offset(i)] = (uint8_t)(1 + i);
    }

    test_batches(p, mem);
    test_single(p, mem);

    munmap(mem, (size_t)NPAGES * PAGE);
    vmig_dsa_portal_free(p);
    return tu_result("test_dsa_hw");
}

#else

int main(void)
{
    SKIP("built without <linux/idxd.h>");
}

#endif
