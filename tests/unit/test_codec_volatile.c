/*
 * Do the codecs survive pages that change while they compress them? A live
 * pass compresses guest RAM while the vCPUs write it (VMIG_ENC_VOLATILE).
 * The payload may then hold any mixture of old and new bytes, but it must
 * still be a valid packet: the destination decodes it to exactly n pages,
 * and the stream stays in step for the packets that follow (the page is
 * sent again later if it changed).
 *
 * For every built codec except none: one thread encodes packets of 64 pages
 * over and over while a second thread keeps rewriting random bytes, words
 * and runs of those pages (text-like and random content). Every packet must
 * decode (return 0) with one continuing decoder. zlib runs with
 * VMIG_ENC_VOLATILE (its backend copies each page first); zstd, lz4 and
 * deflate-page run both with the flag and without it, to show they do not
 * need a copy. zlib without the flag is measured too but only reported: its
 * backend relies on the copy.
 *
 * The concurrent writes are a deliberate data race on plain memory, which
 * is the situation under test. This program is in the 'unit' suite, which
 * the TSan build does not run (make tsan runs --suite e2e); the writer is
 * also excluded from TSan instrumentation so a TSan run of it would not
 * report its own premise.
 *
 * Each configuration runs for a time budget (VMIG_TEST_BUDGET_MS, default
 * 1000 ms; 400 ms under a sanitizer), not a fixed number of packets.
 */
#include "mix.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "src/codec/codec.h"

#include "../testutil.h"

#define NPAGES 64u
#define PS     4096u

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define NO_TSAN __attribute__((no_sanitize("thread")))
#else
#define NO_TSAN
#endif

typedef struct writer {
    uint8_t *region; /* NPAGES * PS, the "guest RAM" being encoded */
    atomic_bool stop;
    atomic_uint_fast64_t writes;
    uint64_t seed;
} writer;

/*
 * The racing writer: random bytes, 8-byte words, runs of one value and
 * whole text or random 4 KiB pages, through a volatile pointer so that every
 * store happens. Intentionally racy (see the top of the file).
 */
NO_TSAN static void *writer_main(void *arg)
{
    writer *w = arg;
    volatile uint8_t *r = w->region;
    uint64_t rng = w->seed;
    uint8_t page[PS];
    uint64_t count = 0;
    while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        uint64_t x = tu_rand(&rng);
        size_t off = (size_t)(x % ((uint64_t)NPAGES * PS));
        switch ((x >> 32) % 16) {
        case 0: { /* a run of one byte value */
            size_t len = (size_t)((x >> 40) % 512);
            for (size_t i = 0; i < len && off + i < (size_t)NPAGES * PS; i++)
                r[off + i] = (uint8_t)(x >> 56);
            break;
        }
        case 1: { /* a whole page of new text or random content */
            vmig_mix_page_fill(x, (x >> 36) & 1 ? VMIG_MIX_TEXT : VMIG_MIX_RANDOM, x >> 40, page);
            size_t base = off / PS * PS;
            for (size_t i = 0; i < PS; i++)
                r[base + i] = page[i];
            break;
        }
        case 2:
        case 3:
        case 4: { /* an 8-byte word */
            off &= ~(size_t)7;
            for (int i = 0; i < 8; i++)
                r[off + (size_t)i] = (uint8_t)(tu_rand(&rng) >> (8 * i));
            break;
        }
        default: /* a byte */
            r[off] = (uint8_t)(x >> 48);
            break;
        }
        count++;
    }
    atomic_store(&w->writes, count);
    return NULL;
}

typedef struct result {
    uint64_t packets, failed, writes;
    char first_err[VMIG_ERROR_MSG_MAX];
} result;

/*
 * Encode the region's pages in a loop for budget_ms while the writer runs;
 * decode every packet with one continuing decoder. After a failure (only
 * allowed when `informational`) both contexts are replaced, since the
 * stream is then out of step.
 */
static result run_one(const vmig_codec_ops *ops, unsigned flags, uint64_t budget_ms, uint64_t seed)
{
    result res = {0};
    uint8_t *region = malloc((size_t)NPAGES * PS);
    uint8_t *dst = malloc((size_t)NPAGES * PS);
    size_t cap = ops->bound(NPAGES, PS);
    uint8_t *out = malloc(cap);
    REQUIRE(region && dst && out, "malloc");
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    mp.pct[VMIG_MIX_ZERO] = 10;
    mp.pct[VMIG_MIX_TEXT] = 60;
    mp.pct[VMIG_MIX_RANDOM] = 30;
    mp.seed = seed;
    REQUIRE(vmig_mix_fill(&mp, region, (size_t)NPAGES * PS, 1, VMIG_MIX_WRITE_ZEROS) == 0, "fill");

    uint8_t *pages[NPAGES], *dpages[NPAGES];
    for (uint32_t i = 0; i < NPAGES; i++) {
        /* Pages in a shuffled order, as a packet of scattered dirty pages. */
        pages[i] = region + (size_t)((i * 37u) % NPAGES) * PS;
        dpages[i] = dst + (size_t)i * PS;
    }
    vmig_codec_cfg cfg = {.level = 1, .max_pages = NPAGES, .max_page_size = PS};
    void *enc = NULL, *dec = NULL;
    vmig_error e = {0};
    REQUIRE(ops->enc_create(&cfg, &enc, &e) == 0, "%s: enc_create: %s", ops->name, e.msg);
    REQUIRE(ops->dec_create(&cfg, &dec, &e) == 0, "%s: dec_create: %s", ops->name, e.msg);

    writer w = {.region = region, .seed = seed ^ 0x77};
    atomic_init(&w.stop, false);
    atomic_init(&w.writes, 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, writer_main, &w) == 0, "pthread_create");
    uint64_t end = tu_now_ns() + budget_ms * 1000000ull;
    while (tu_now_ns() < end) {
        size_t olen = 0;
        memset(&e, 0, sizeof(e));
        int rc = ops->encode(enc, pages, NPAGES, PS, flags, out, cap, &olen, &e);
        if (rc == 0) {
            memset(&e, 0, sizeof(e));
            rc = ops->decode(dec, out, olen, dpages, NPAGES, PS, &e);
        }
        res.packets++;
        if (rc) {
            if (!res.failed)
                snprintf(res.first_err, sizeof(res.first_err), "%s", e.msg);
            res.failed++;
            ops->enc_free(enc);
            ops->dec_free(dec);
            enc = dec = NULL;
            REQUIRE(ops->enc_create(&cfg, &enc, &e) == 0, "%s: enc_create", ops->name);
            REQUIRE(ops->dec_create(&cfg, &dec, &e) == 0, "%s: dec_create", ops->name);
        }
    }
    atomic_store(&w.stop, true);
    pthread_join(t, NULL);
    res.writes = atomic_load(&w.writes);
    ops->enc_free(enc);
    ops->dec_free(dec);
    free(region);
    free(dst);
    free(out);
    return res;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t budget = SANITIZED ? 400 : 1000;
    const char *b = getenv("VMIG_TEST_BUDGET_MS");
    if (b && atoi(b) > 0)
        budget = (uint64_t)atoi(b);
    printf("each configuration runs %llu ms: 64-page packets of 4 KiB pages while a writer "
           "thread rewrites them\n",
           (unsigned long long)budget);
    int ran = 0;
    for (uint32_t id = 0; id < VMIG_CODEC_COUNT; id++) {
        const vmig_codec_ops *ops = vmig_codec_get(id);
        if (id == VMIG_CODEC_NONE)
            continue;
        if (ops->missing) {
            printf("%-12s skipped: %s\n", ops->name, ops->missing);
            continue;
        }
        /* zlib: with the flag (required), without it (report only). Others:
         * both required. */
        for (int pass = 0; pass < 2; pass++) {
            unsigned flags = pass == 0 ? VMIG_ENC_VOLATILE : 0;
            bool informational = id == VMIG_CODEC_ZLIB && !flags;
            result r = run_one(ops, flags, budget, 0xc0dec + id * 2 + (uint64_t)pass);
            printf("%-12s %-26s %6llu packets, %6llu decoded fine, %llu failed (%llu concurrent "
                   "writes)%s\n",
                   ops->name, flags ? "with VMIG_ENC_VOLATILE:" : "without the flag:",
                   (unsigned long long)r.packets, (unsigned long long)(r.packets - r.failed),
                   (unsigned long long)r.failed, (unsigned long long)r.writes,
                   informational ? " [report only]" : "");
            if (r.failed)
                printf("%-12s   first failure: %s\n", ops->name, r.first_err);
            CHECK(r.packets > 0, "%s: no packet in %llu ms", ops->name, (unsigned long long)budget);
            if (!informational)
                CHECK(r.failed == 0, "%s (%s): %llu of %llu packets did not decode: %s", ops->name,
                      flags ? "volatile" : "no flag", (unsigned long long)r.failed,
                      (unsigned long long)r.packets, r.first_err);
            ran++;
        }
    }
    if (!ran)
        SKIP("no codec other than none is built");
    return tu_result("test_codec_volatile");
}
