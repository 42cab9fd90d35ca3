/*
 * Zero-page detection: every implementation the CPU runs (the others are
 * skipped, by name) against the definition, on
 *   - all-zero buffers of many lengths and every start offset 0..63,
 *   - every length 0..600 and 4096, 8192 with exactly one byte set
 *     (0x01 and 0x80), at every position,
 *   - buffers that end exactly at a PROT_NONE guard page, so that any
 *     over-read crashes the test,
 *   - a 2 MiB buffer whose only non-zero byte is the last one,
 *   - random sparse buffers, cross-checked against the scalar path;
 * and the dispatch: vmig_zero_best() is the first runnable entry and
 * vmig_is_zero() agrees with it.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "src/ram/zero.h"

#include "../testutil.h"

/* A buffer of `len` bytes whose end touches a PROT_NONE page, and its mapping. */
typedef struct guarded {
    uint8_t *map;
    size_t maplen;
    size_t cap; /* usable bytes before the guard page */
} guarded;

static void guarded_make(guarded *g, size_t cap)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (cap + pg - 1) / pg * pg;
    g->maplen = body + pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(g->map != MAP_FAILED, "mmap %zu bytes", g->maplen);
    REQUIRE(mprotect(g->map + body, pg, PROT_NONE) == 0, "mprotect guard page");
    g->cap = body;
}

/* `len` bytes ending exactly at the guard page. */
static uint8_t *guarded_tail(const guarded *g, size_t len)
{
    return g->map + g->cap - len;
}

static bool ref_is_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

static void test_impl(const vmig_zero_impl *im, const vmig_zero_impl *scalar)
{
    guarded g;
    guarded_make(&g, 3u << 20); /* 2 MiB + room for offsets */
    int before = tu_failures;

    /* All zero: every length 0..600, page multiples, at start offsets
     * 0..63, both at the start of the mapping and ending at the guard. */
    static const size_t big[] = {1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 65536, 65600};
    for (size_t off = 0; off < 64; off++) {
        for (size_t len = 0; len <= 600; len++) {
            CHECK(im->fn(g.map + off, len), "%s: zero, len %zu offset %zu", im->name, len, off);
            CHECK(im->fn(guarded_tail(&g, len + off), len), "%s: zero at guard, len %zu (+%zu)",
                  im->name, len, off);
        }
        for (size_t k = 0; k < VMIG_ARRAY_SIZE(big); k++) {
            CHECK(im->fn(g.map + off, big[k]), "%s: zero, len %zu offset %zu", im->name, big[k],
                  off);
            CHECK(im->fn(guarded_tail(&g, big[k]), big[k]), "%s: zero at guard, len %zu", im->name,
                  big[k]);
        }
    }
    CHECK(im->fn(NULL, 0), "%s: NULL, 0 is zero", im->name);

    /* One byte set, at every position of every length: the buffer ends at
     * the guard page, and the start offset varies with the length so that
     * all alignments are covered. */
    static const uint8_t vals[] = {0x01, 0x80};
    for (size_t len = 1; len <= 8192; len++) {
        if (len > 600 && len != 4096 && len != 8192)
            continue;
        for (int pass = 0; pass < 2; pass++) {
            /* pass 0: ends at the guard; pass 1: starts at offset len % 64 */
            uint8_t *b = pass == 0 ? guarded_tail(&g, len) : g.map + len % 64;
            for (size_t i = 0; i < len; i++) {
                for (size_t v = 0; v < VMIG_ARRAY_SIZE(vals); v++) {
                    b[i] = vals[v];
                    bool got = im->fn(b, len);
                    CHECK(!got, "%s: byte %zu of %zu = 0x%02x (%s) reported zero", im->name, i, len,
                          vals[v], pass == 0 ? "at guard" : "offset");
                    b[i] = 0;
                    if (!got)
                        continue;
                    goto next_len; /* one message per length is enough */
                }
            }
        next_len:;
        }
    }

    /* Unaligned starts 1..63 for page-sized buffers, byte set near both ends
     * and in the middle (the hot size, every head/tail alignment). */
    for (size_t off = 1; off < 64; off++) {
        size_t len = 4096;
        uint8_t *b = g.map + off;
        size_t pos[] = {0, 1, 63, 64, 65, 255, 256, 2048, 4031, 4032, 4094, 4095};
        for (size_t k = 0; k < VMIG_ARRAY_SIZE(pos); k++) {
            b[pos[k]] = 0x80;
            CHECK(!im->fn(b, len), "%s: offset %zu, byte %zu set", im->name, off, pos[k]);
            b[pos[k]] = 0;
        }
        CHECK(im->fn(b, len), "%s: offset %zu all zero", im->name, off);
    }

    /* 2 MiB, only the very last byte set; also ending at the guard page. */
    size_t huge = 2u << 20;
    uint8_t *h = guarded_tail(&g, huge);
    CHECK(im->fn(h, huge), "%s: 2 MiB zero", im->name);
    h[huge - 1] = 1;
    CHECK(!im->fn(h, huge), "%s: 2 MiB with last byte set", im->name);
    h[huge - 1] = 0;
    h[0] = 1;
    CHECK(!im->fn(h, huge), "%s: 2 MiB with first byte set", im->name);
    h[0] = 0;

    /* Random: sparse non-zero bytes (often none) at random lengths and
     * offsets, compared with the scalar path and the definition. */
    uint64_t seed = 0x7a65726f; /* "zero" */
    for (int iter = 0; iter < 20000; iter++) {
        uint64_t r = tu_rand(&seed);
        size_t len = (r & 1) ? (size_t)(r >> 8) % 9000 : (size_t)(r >> 8) % 300;
        bool at_guard = (r >> 1) & 1;
        uint8_t *b = at_guard ? guarded_tail(&g, len) : g.map + (r >> 2) % 64;
        size_t nset = (r >> 40) % 3; /* 0, 1 or 2 bytes set */
        size_t where[2] = {0, 0};
        for (size_t k = 0; k < nset && len; k++) {
            uint64_t s = tu_rand(&seed);
            where[k] = (size_t)(s % len);
            b[where[k]] = (uint8_t)((s >> 32) | 1);
        }
        bool want = ref_is_zero(b, len);
        bool got = im->fn(b, len), sc = scalar->fn(b, len);
        CHECK(got == want && sc == want, "%s: random #%d len %zu: got %d, scalar %d, want %d",
              im->name, iter, len, got, sc, want);
        for (size_t k = 0; k < nset && len; k++)
            b[where[k]] = 0;
    }

    munmap(g.map, g.maplen);
    fprintf(stderr, "%s: %s\n", im->name, tu_failures == before ? "ok" : "FAILED");
}

int main(void)
{
    unsigned have = vmig_cpu_features();
    const vmig_zero_impl *scalar = NULL, *first = NULL;
    int tested = 0;

    for (const vmig_zero_impl *im = vmig_zero_impls; im->name; im++)
        if (!strcmp(im->name, "scalar"))
            scalar = im;
    REQUIRE(scalar && scalar->need == 0, "the table has a 'scalar' entry that needs nothing");

    for (const vmig_zero_impl *im = vmig_zero_impls; im->name; im++) {
        REQUIRE(im->fn, "%s has a function", im->name);
        if ((im->need & have) != im->need) {
            fprintf(stderr, "%s: skipped, this CPU lacks it (needs 0x%x, has 0x%x)\n", im->name,
                    im->need, have);
            continue;
        }
        if (!first)
            first = im;
        test_impl(im, scalar);
        tested++;
    }

    /* Dispatch: the best is the first runnable entry, and is_zero follows it. */
    CHECK(vmig_zero_best() == first, "vmig_zero_best() is %s, expected %s", vmig_zero_best()->name,
          first->name);
    static uint8_t page[4096] __attribute__((aligned(4096)));
    CHECK(vmig_is_zero(page, sizeof(page)), "vmig_is_zero on a zero page");
    page[4095] = 2;
    CHECK(!vmig_is_zero(page, sizeof(page)), "vmig_is_zero on a non-zero page");
    CHECK(vmig_is_zero(page, 4095), "vmig_is_zero on the zero prefix");
    fprintf(stderr, "best: %s, %d implementation(s) tested\n", vmig_zero_best()->name, tested);
    return tu_result("test_zero");
}
