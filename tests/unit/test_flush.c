/*
 * The parallel RAM-cache flush (src/colo/flush.c): for dirty patterns that
 * cluster in one region, that are spread, that fall on bitmap word edges,
 * random ones and none, on 1 to 5 threads and over several regions (one
 * of them with a page count that is not a multiple of 64), the RAM ends
 * equal to the cache on exactly the dirty pages and untouched elsewhere,
 * every dirty bit is cleared and no other bit changes, the counts add up,
 * and the threads share the pages evenly whatever the pattern.
 */
#include <stdlib.h>

#include "src/colo/flush.h"

#include "../testutil.h"

#define PS 4096u

typedef struct reg {
    uint8_t *ram, *cache, *want;
    uint64_t *dirty, npages;
} reg;

static void reg_init(reg *g, uint64_t npages)
{
    g->npages = npages;
    g->ram = malloc(npages * PS);
    g->cache = malloc(npages * PS);
    g->want = malloc(npages * PS);
    g->dirty = calloc((npages + 63) / 64 + 1, 8); /* a spare word after the end */
    REQUIRE(g->ram && g->cache && g->want && g->dirty, "malloc");
}

static void reg_free(reg *g)
{
    free(g->ram);
    free(g->cache);
    free(g->want);
    free(g->dirty);
}

static void set_bit(uint64_t *m, uint64_t i)
{
    m[i / 64] |= 1ull << (i % 64);
}

/* Fill RAM and cache with distinct contents and mark pages by `pattern`. */
static uint64_t fill(reg *g, int pattern, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull | 1, n = 0;
    for (uint64_t p = 0; p < g->npages; p++) {
        memset(g->ram + p * PS, (int)(p * 3 + 1), PS);
        memset(g->cache + p * PS, (int)(p * 7 + 2), PS);
        g->ram[p * PS + 17] = (uint8_t)seed;
    }
    memset(g->dirty, 0, ((g->npages + 63) / 64 + 1) * 8);
    for (uint64_t p = 0; p < g->npages; p++) {
        bool d = false;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        switch (pattern) {
        case 0: /* clustered: one dense stretch in the first fifth */
            d = p >= g->npages / 20 && p < g->npages / 5;
            break;
        case 1: /* spread: every third page */
            d = p % 3 == 0;
            break;
        case 2: /* word edges: the last and first page of each word, runs across words */
            d = p % 64 == 63 || p % 64 == 0 || (p % 128 >= 60 && p % 128 < 70);
            break;
        case 3: /* random, a quarter */
            d = (x & 3) == 0;
            break;
        case 4: /* all */
            d = true;
            break;
        default: /* none */
            break;
        }
        if (d) {
            set_bit(g->dirty, p);
            n++;
        }
    }
    for (uint64_t p = 0; p < g->npages; p++) {
        bool d = g->dirty[p / 64] >> (p % 64) & 1;
        memcpy(g->want + p * PS, d ? g->cache + p * PS : g->ram + p * PS, PS);
    }
    return n;
}

static const char *const names[] = {"clustered", "spread", "word edges", "random", "all", "none"};

int main(void)
{
    /* Three regions: 1000 pages (not a multiple of 64), 4096, 1. */
    reg g[3];
    reg_init(&g[0], 1000);
    reg_init(&g[1], 4096);
    reg_init(&g[2], 1);
    for (uint32_t threads = 1; threads <= 5; threads++) {
        vmig_flusher *f;
        vmig_error e = {0};
        REQUIRE(vmig_flusher_create(threads, &f, &e) == 0, "%s", e.msg);
        CHECK(vmig_flusher_threads(f) == threads, "threads");
        for (int iter = 0; iter < 12; iter++) {
            /* each pattern with both copies: non-temporal stores, memcpy */
            int pat = iter / 2;
            bool stream = vmig_flusher_set_stream(f, iter % 2 == 0);
            CHECK(!stream || iter % 2 == 0, "memcpy refused");
            uint64_t want = 0;
            for (int k = 0; k < 3; k++)
                want += fill(&g[k], k == 1 ? pat : (pat + k) % 6, (uint64_t)(pat * 10 + k + 1));
            /* Bits past the end of a region's last word are not pages: kept. */
            g[0].dirty[1000 / 64] |= 1ull << 63;
            g[0].dirty[(1000 + 63) / 64] = 0xFFFF;
            vmig_flush_region r[3];
            for (int k = 0; k < 3; k++)
                r[k] = (vmig_flush_region){.ram = g[k].ram,
                                           .cache = g[k].cache,
                                           .dirty = g[k].dirty,
                                           .npages = g[k].npages,
                                           .page_size = PS};
            vmig_flush_stats st;
            REQUIRE(vmig_flusher_run(f, r, 3, &st, &e) == 0, "%s", e.msg);
            CHECK(st.pages == want && st.threads == threads && st.stream == stream,
                  "%s, %u threads: %llu of %llu pages", names[pat], threads,
                  (unsigned long long)st.pages, (unsigned long long)want);
            for (int k = 0; k < 3; k++) {
                CHECK(!memcmp(g[k].ram, g[k].want, g[k].npages * PS),
                      "%s, %u threads: region %d differs", names[pat], threads, k);
                uint64_t left = 0;
                for (uint64_t i = 0; i < g[k].npages; i++)
                    left += g[k].dirty[i / 64] >> (i % 64) & 1;
                CHECK(left == 0, "%s, %u threads: %llu bits left in region %d", names[pat], threads,
                      (unsigned long long)left, k);
            }
            CHECK(g[0].dirty[1000 / 64] == 1ull << 63 && g[0].dirty[(1000 + 63) / 64] == 0xFFFF,
                  "bits past the end changed");
            /* Balanced by dirty pages, at 64-page granularity. */
            uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
            for (uint32_t t = 0; t < threads; t++) {
                lo = VMIG_MIN(lo, st.thread_pages[t]);
                hi = VMIG_MAX(hi, st.thread_pages[t]);
                sum += st.thread_pages[t];
            }
            CHECK(sum == st.pages && hi - lo <= 64 + 64, "%s, %u threads: shares %llu..%llu",
                  names[pat], threads, (unsigned long long)lo, (unsigned long long)hi);
            CHECK(st.runs <= st.pages && (st.pages == 0) == (st.runs == 0), "runs %llu",
                  (unsigned long long)st.runs);
            /* All dirty in regions 0 and 1 (region 2's one page is in none
             * of its "clustered" stretch): one copy per region. */
            if (pat == 4)
                CHECK(threads > 1 || st.runs == 2, "all dirty, one thread: %llu runs",
                      (unsigned long long)st.runs);
        }
        vmig_flusher_free(f);
    }
    /* Refusals; nothing at all to flush. */
    vmig_flusher *f;
    vmig_error e = {0};
    REQUIRE(vmig_flusher_create(0, &f, &e) == 0, "%s", e.msg);
    CHECK(vmig_flusher_threads(f) >= 1, "online CPUs");
    vmig_flush_region bad = {.ram = g[1].ram, .cache = g[1].cache, .npages = 4, .page_size = PS};
    CHECK(vmig_flusher_run(f, &bad, 1, NULL, &e) == VMIG_EINVAL, "no bitmap");
    bad.dirty = g[1].dirty;
    bad.page_size = 3000;
    CHECK(vmig_flusher_run(f, &bad, 1, NULL, &e) == VMIG_EINVAL, "page size");
    CHECK(vmig_flusher_run(f, NULL, 0, NULL, &e) == 0, "no region");
    vmig_flusher_free(f);
    CHECK(vmig_flusher_create(VMIG_FLUSH_MAX_THREADS + 1, &f, &e) == VMIG_EINVAL, "65 threads");
    vmig_flusher_free(NULL);
    for (int k = 0; k < 3; k++)
        reg_free(&g[k]);
    return tu_result("test_flush");
}
