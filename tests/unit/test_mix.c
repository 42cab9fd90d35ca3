/*
 * The standard content mix: parameters are validated; the plan tiles the
 * image with runs of 1..31 pages whose class totals are within one page of
 * the percentages; the bytes depend only on the seed (not on the thread
 * count, nor on the window a receiver regenerates); every page has the
 * content of its class (zero / printable text / random, never all zero).
 */
#include "mix.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "../testutil.h"

#define PG VMIG_MIX_PAGE_SIZE

/* A call that must return 0 (evaluated once: REQUIRE evaluates twice). */
#define MUST(call)                                                                                 \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        REQUIRE(rc_ == 0, "%s returned %d", #call, rc_);                                           \
    } while (0)

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static unsigned char *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED, "mmap %zu bytes", len);
    return p;
}

static void test_params(void)
{
    struct vmig_mix_params p;
    char msg[128];
    vmig_mix_params_default(&p);
    CHECK(p.seed == 1 && p.pct[VMIG_MIX_ZERO] == 50 && p.pct[VMIG_MIX_TEXT] == 25 &&
              p.pct[VMIG_MIX_RANDOM] == 25 && p.page_size == 4096,
          "defaults");
    CHECK(vmig_mix_params_check(&p, msg, sizeof(msg)) == NULL, "defaults are valid");

    struct vmig_mix_params bad = p;
    bad.pct[VMIG_MIX_TEXT] = 30; /* 105 */
    const char *e = vmig_mix_params_check(&bad, msg, sizeof(msg));
    CHECK(e == msg && strstr(msg, "105"), "sum 105 rejected with the sum named: %s", e ? e : "");
    CHECK(vmig_mix_params_check(&bad, NULL, 0) != NULL, "sum 105 rejected without a buffer");
    bad.pct[VMIG_MIX_TEXT] = 20; /* 95 */
    CHECK(vmig_mix_params_check(&bad, msg, sizeof(msg)) != NULL, "sum 95 rejected");
    bad = p;
    bad.pct[0] = 200, bad.pct[1] = 0, bad.pct[2] = (unsigned)-100; /* wraps to 100 */
    CHECK(vmig_mix_params_check(&bad, msg, sizeof(msg)) != NULL, "200+0+(-100) rejected");
    bad = p;
    bad.page_size = 8192;
    CHECK(vmig_mix_params_check(&bad, msg, sizeof(msg)) != NULL, "page size 8192 rejected");
    bad = p;
    bad.pct[0] = 100, bad.pct[1] = 0, bad.pct[2] = 0;
    CHECK(vmig_mix_params_check(&bad, msg, sizeof(msg)) == NULL, "100/0/0 is valid");

    struct vmig_mix_plan *plan = (struct vmig_mix_plan *)&p; /* must be overwritten */
    bad.pct[0] = 99;
    CHECK(vmig_mix_plan_create(&bad, 10, &plan) == -EINVAL && plan == NULL,
          "plan_create rejects a bad mix");
    unsigned char page[PG];
    CHECK(vmig_mix_fill(&p, page, 100, 1, 0) == -EINVAL, "fill rejects a length not in pages");

    struct vmig_mix_params q = p;
    CHECK(vmig_mix_params_parse_pct(&q, "60/30/10") == 0 && q.pct[0] == 60 && q.pct[1] == 30 &&
              q.pct[2] == 10,
          "parse 60/30/10");
    const char *bad_text[] = {"60/30/11", "60/30",     "60/30/10/0", "a/b/c",    "",
                              "60//40",   "60/30/10x", "1000/0/0",   "-50/75/75"};
    for (size_t i = 0; i < sizeof(bad_text) / sizeof(bad_text[0]); i++) {
        q = p;
        CHECK(vmig_mix_params_parse_pct(&q, bad_text[i]) == -EINVAL &&
                  memcmp(q.pct, p.pct, sizeof(q.pct)) == 0,
              "parse '%s' rejected, params unchanged", bad_text[i]);
    }
    CHECK(strcmp(vmig_mix_class_name(VMIG_MIX_TEXT), "text") == 0, "class name");
}

/* The plan tiles [0, npages), runs are 1..31, totals are the budgets. */
static void check_plan(const struct vmig_mix_params *p, uint64_t npages)
{
    struct vmig_mix_plan *plan;
    MUST(vmig_mix_plan_create(p, npages, &plan));
    CHECK(vmig_mix_plan_pages(plan) == npages, "plan size");
    size_t nruns;
    const struct vmig_mix_run *runs = vmig_mix_plan_runs(plan, &nruns);
    uint64_t next = 0, seen[VMIG_MIX_NCLASSES] = {0}, counts[VMIG_MIX_NCLASSES],
             budget[VMIG_MIX_NCLASSES];
    unsigned bad_len = 0, bad_cls = 0;
    for (size_t i = 0; i < nruns; i++) {
        if (runs[i].first_page != next)
            break;
        if (runs[i].npages < 1 || runs[i].npages > VMIG_MIX_RUN_MAX)
            bad_len++;
        if (runs[i].cls >= VMIG_MIX_NCLASSES) {
            bad_cls++;
            continue;
        }
        seen[runs[i].cls] += runs[i].npages;
        next += runs[i].npages;
    }
    CHECK(next == npages, "runs tile the image: end at page %llu of %llu", (unsigned long long)next,
          (unsigned long long)npages);
    CHECK(bad_len == 0 && bad_cls == 0, "%u runs outside 1..31 pages, %u bad classes", bad_len,
          bad_cls);
    vmig_mix_plan_counts(plan, counts);
    vmig_mix_counts(p, npages, budget);
    for (int c = 0; c < VMIG_MIX_NCLASSES; c++) {
        /* exact share = npages * pct / 100, compared in hundredths of a page */
        long double exact = (long double)npages * p->pct[c] / 100.0L;
        long double diff = (long double)seen[c] - exact;
        CHECK(diff <= 1.0L && diff >= -1.0L, "%s: %llu pages, exact share %.2Lf (%llu pages)",
              vmig_mix_class_name((enum vmig_mix_class)c), (unsigned long long)seen[c], exact,
              (unsigned long long)npages);
        CHECK(counts[c] == seen[c] && budget[c] == seen[c], "%s: counts agree",
              vmig_mix_class_name((enum vmig_mix_class)c));
    }
    /* plan_class agrees with the runs, on every page of small plans and at
     * the run boundaries of large ones */
    unsigned bad_class = 0;
    for (size_t i = 0; i < nruns; i++) {
        uint64_t a = runs[i].first_page, b = a + runs[i].npages - 1;
        if (vmig_mix_plan_class(plan, a) != (enum vmig_mix_class)runs[i].cls ||
            vmig_mix_plan_class(plan, b) != (enum vmig_mix_class)runs[i].cls)
            bad_class++;
    }
    CHECK(bad_class == 0, "plan_class wrong at %u runs", bad_class);
    vmig_mix_plan_free(plan);
}

static void test_plans(void)
{
    struct vmig_mix_params p;
    vmig_mix_params_default(&p);
    const uint64_t sizes[] = {0, 1, 2, 3, 7, 31, 32, 99, 100, 101, 1000, 4097, 262144, 1048576};
    const unsigned mixes[][3] = {{50, 25, 25}, {100, 0, 0}, {0, 100, 0}, {0, 0, 100},
                                 {33, 33, 34}, {1, 98, 1},  {0, 50, 50}, {70, 0, 30}};
    for (size_t m = 0; m < sizeof(mixes) / sizeof(mixes[0]); m++) {
        memcpy(p.pct, mixes[m], sizeof(p.pct));
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            p.seed = 1 + s + 100 * m;
            check_plan(&p, sizes[s]);
        }
    }

    /* Same seed: same plan; another seed: another plan. */
    vmig_mix_params_default(&p);
    struct vmig_mix_plan *a, *b, *c;
    MUST(vmig_mix_plan_create(&p, 50000, &a));
    MUST(vmig_mix_plan_create(&p, 50000, &b));
    p.seed = 2;
    MUST(vmig_mix_plan_create(&p, 50000, &c));
    size_t na, nb, nc;
    const struct vmig_mix_run *ra = vmig_mix_plan_runs(a, &na), *rb = vmig_mix_plan_runs(b, &nb),
                              *rc = vmig_mix_plan_runs(c, &nc);
    CHECK(na == nb && memcmp(ra, rb, na * sizeof(*ra)) == 0, "same seed, same plan");
    CHECK(na != nc || memcmp(ra, rc, na * sizeof(*ra)) != 0, "seed 2 plans differently");
    /* Every length 1..31 occurs, and the mean is near 16 (uniform draws;
     * capping only shortens a few runs at the end of a budget). */
    uint64_t hist[VMIG_MIX_RUN_MAX + 1] = {0}, sum = 0;
    for (size_t i = 0; i < na; i++) {
        hist[ra[i].npages]++;
        sum += ra[i].npages;
    }
    for (unsigned l = 1; l <= VMIG_MIX_RUN_MAX; l++)
        CHECK(hist[l] > 0, "run length %u never drawn", l);
    double mean = (double)sum / (double)na;
    CHECK(mean > 15.0 && mean < 17.0, "mean run length %.2f", mean);
    vmig_mix_plan_free(a);
    vmig_mix_plan_free(b);
    vmig_mix_plan_free(c);
    vmig_mix_plan_free(NULL);
}

static void test_content(void)
{
    struct vmig_mix_params p;
    vmig_mix_params_default(&p);
    const uint64_t npages = 20000; /* 80 MiB: many chunks of 256 pages */
    const size_t len = npages * PG;
    struct vmig_mix_plan *plan;
    MUST(vmig_mix_plan_create(&p, npages, &plan));

    /* Reference: one thread, zeros written over garbage. */
    unsigned char *ref = map(len), *buf = map(len);
    memset(ref, 0xA5, len);
    MUST(vmig_mix_plan_fill(plan, ref, 0, npages, 1, VMIG_MIX_WRITE_ZEROS));

    /* Other thread counts, onto a fresh (zero) mapping without writing zeros,
     * and through vmig_mix_fill: identical bytes. */
    const unsigned threads[] = {2, 3, 7, 0};
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
        memset(buf, 0, len);
        MUST(vmig_mix_plan_fill(plan, buf, 0, npages, threads[i], 0));
        CHECK(memcmp(ref, buf, len) == 0, "%u threads: same bytes as 1 thread", threads[i]);
    }
    memset(buf, 0x5A, len);
    MUST(vmig_mix_fill(&p, buf, len, 2, VMIG_MIX_WRITE_ZEROS));
    CHECK(memcmp(ref, buf, len) == 0, "vmig_mix_fill: same bytes");

    /* Windows (as a verifying receiver regenerates them): same bytes. */
    const uint64_t win[][2] = {{0, 1}, {5, 300}, {257, 1}, {1000, 4096}, {19999, 1}, {0, 0}};
    for (size_t i = 0; i < sizeof(win) / sizeof(win[0]); i++) {
        memset(buf, 0x77, (win[i][1] + 1) * PG);
        MUST(vmig_mix_plan_fill(plan, buf, win[i][0], win[i][1], 2, VMIG_MIX_WRITE_ZEROS));
        CHECK(memcmp(ref + win[i][0] * PG, buf, win[i][1] * PG) == 0 && buf[win[i][1] * PG] == 0x77,
              "window [%llu, +%llu): same bytes, nothing written beyond",
              (unsigned long long)win[i][0], (unsigned long long)win[i][1]);
    }
    CHECK(vmig_mix_plan_fill(plan, buf, npages, 1, 1, 0) == -EINVAL, "window beyond the plan");
    CHECK(vmig_mix_plan_fill(plan, buf, 1, npages, 1, 0) == -EINVAL, "window overlapping the end");
    CHECK(vmig_mix_plan_fill(plan, buf, 0, 1, 1, 0x80) == -EINVAL, "unknown flag");

    /* Per-page content by class. */
    unsigned bad_zero = 0, zero_text = 0, zero_random = 0, bad_text = 0, same_random = 0;
    uint64_t n[VMIG_MIX_NCLASSES] = {0};
    unsigned char one[PG];
    unsigned bad_single = 0;
    for (uint64_t i = 0; i < npages; i++) {
        const unsigned char *pg = ref + i * PG;
        enum vmig_mix_class c = vmig_mix_plan_class(plan, i);
        n[c]++;
        vmig_mix_page_fill(p.seed, c, i, one);
        if (memcmp(one, pg, PG) != 0)
            bad_single++;
        switch (c) {
        case VMIG_MIX_ZERO:
            bad_zero += !all_zero(pg, PG);
            break;
        case VMIG_MIX_TEXT:
            zero_text += all_zero(pg, PG);
            for (size_t k = 0; k < PG; k++) {
                if (!((pg[k] >= 0x20 && pg[k] < 0x7F) || pg[k] == '\n')) {
                    bad_text++;
                    break;
                }
            }
            break;
        case VMIG_MIX_RANDOM:
            zero_random += all_zero(pg, PG);
            if (i > 0 && memcmp(pg, pg - PG, 64) == 0)
                same_random++;
            break;
        }
    }
    CHECK(bad_single == 0, "%u pages differ from vmig_mix_page_fill", bad_single);
    CHECK(bad_zero == 0, "%u zero pages are not zero", bad_zero);
    CHECK(zero_text == 0 && zero_random == 0, "all-zero pages: %u text, %u random", zero_text,
          zero_random);
    CHECK(bad_text == 0, "%u text pages hold non-printable bytes", bad_text);
    CHECK(same_random == 0, "%u random pages repeat their predecessor", same_random);
    CHECK(n[0] == 10000 && n[1] == 5000 && n[2] == 5000, "classes %llu/%llu/%llu",
          (unsigned long long)n[0], (unsigned long long)n[1], (unsigned long long)n[2]);

    /* Text looks like words: mostly letters and spaces, "the" is common. */
    uint64_t i_text = 0;
    while (vmig_mix_plan_class(plan, i_text) != VMIG_MIX_TEXT)
        i_text++;
    const char *t = (const char *)ref + i_text * PG;
    size_t letters = 0, spaces = 0;
    for (size_t k = 0; k < PG; k++) {
        letters += (t[k] >= 'a' && t[k] <= 'z') || t[k] == 'I';
        spaces += t[k] == ' ';
    }
    CHECK(letters > PG * 6 / 10 && spaces > PG / 10, "text page %llu: %zu letters, %zu spaces",
          (unsigned long long)i_text, letters, spaces);
    CHECK(memmem(t, PG, "the ", 4) != NULL, "text page has 'the '");

    /* Another seed: other bytes. */
    p.seed = 2;
    MUST(vmig_mix_fill(&p, buf, len, 0, VMIG_MIX_WRITE_ZEROS));
    CHECK(memcmp(ref, buf, len) != 0, "seed 2 gives other bytes");

    vmig_mix_plan_free(plan);
    munmap(ref, len);
    munmap(buf, len);
}

/* Pages of the same index get the same bytes in any image with that seed:
 * the plan decides only which class each page has. */
static void test_page_independence(void)
{
    unsigned char a[PG], b[PG];
    vmig_mix_page_fill(7, VMIG_MIX_TEXT, 12345, a);
    vmig_mix_page_fill(7, VMIG_MIX_TEXT, 12345, b);
    CHECK(memcmp(a, b, PG) == 0, "text page reproducible");
    vmig_mix_page_fill(7, VMIG_MIX_TEXT, 12346, b);
    CHECK(memcmp(a, b, PG) != 0, "neighbouring text pages differ");
    vmig_mix_page_fill(7, VMIG_MIX_RANDOM, 12345, b);
    CHECK(memcmp(a, b, PG) != 0, "text and random pages of one index differ");
    memset(b, 0xFF, PG);
    vmig_mix_page_fill(7, VMIG_MIX_ZERO, 12345, b);
    CHECK(all_zero(b, PG), "zero page written as zeros");
    /* many seeds and indices: never all zero */
    unsigned zeros = 0;
    for (uint64_t s = 0; s < 64; s++) {
        for (uint64_t i = 0; i < 64; i++) {
            vmig_mix_page_fill(s, VMIG_MIX_TEXT, i * 977, a);
            vmig_mix_page_fill(s, VMIG_MIX_RANDOM, i * 977, b);
            zeros += all_zero(a, PG) + all_zero(b, PG);
        }
    }
    CHECK(zeros == 0, "%u all-zero text/random pages over 64 seeds", zeros);
}

int main(void)
{
    test_params();
    test_plans();
    test_content();
    test_page_independence();
    return tu_result("test_mix");
}
