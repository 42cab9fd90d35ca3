/*
 * compression=auto's cost model (src/core/adapt.c) on synthetic links and
 * codecs: it must pick none on a fast link, compress on a slow one, follow
 * the link and the content when they change, send random packets raw, keep
 * its exploration cheap and never pick a codec outside its mask.
 *
 * A synthetic codec has a fixed encode cost (ns per input byte) and ratio on
 * compressible pages; random pages come out at their own size. The link
 * costs `wire` ns per wire byte whatever the codec.
 */
#include "src/core/adapt.h"

#include "../testutil.h"

#define PKT_PAGES 128u
#define PKT_BYTES (PKT_PAGES * 4096ull)
#define HDR       (304u + 8u * PKT_PAGES)

typedef struct codec_model {
    double enc;   /* ns per input byte */
    double ratio; /* on compressible pages */
} codec_model;

/* lz4 cheap and weak, deflate-page in between, zstd strong and slower. */
static const codec_model models[VMIG_CODEC_COUNT] = {
    [VMIG_CODEC_NONE] = {0, 1},      [VMIG_CODEC_ZLIB] = {20, 0.38},
    [VMIG_CODEC_ZSTD] = {2.5, 0.33}, [VMIG_CODEC_DEFLATE_PAGE] = {1.2, 0.42},
    [VMIG_CODEC_LZ4] = {0.8, 0.55},
};

/* Run `n` packets over a link of `wire` ns/byte with `flagged` random pages
 * per packet; counts[] receives how often each codec was chosen. Returns the
 * total simulated time in ms. */
static double run(vmig_adapt *a, uint32_t n, double wire, uint32_t flagged,
                  uint64_t counts[VMIG_CODEC_COUNT])
{
    double total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = vmig_adapt_choose(a, PKT_PAGES, flagged);
        REQUIRE(c < VMIG_CODEC_COUNT, "codec %u", c);
        counts[c]++;
        double f = (double)flagged / PKT_PAGES;
        const codec_model *m = &models[c];
        uint64_t out = (uint64_t)(PKT_BYTES * (f + (1 - f) * m->ratio));
        uint64_t enc = (uint64_t)(m->enc * PKT_BYTES);
        uint64_t wns = (uint64_t)(wire * (double)(out + HDR));
        vmig_adapt_observe(a, c, PKT_PAGES, flagged, PKT_BYTES, out, out + HDR, enc, wns);
        total += (double)(enc + wns) / 1e6;
    }
    return total;
}

/* Time of the same packets with one fixed codec. */
static double fixed_time(uint32_t c, uint32_t n, double wire, uint32_t flagged)
{
    double f = (double)flagged / PKT_PAGES;
    const codec_model *m = &models[c];
    double out = PKT_BYTES * (f + (1 - f) * m->ratio);
    return n * (m->enc * PKT_BYTES + wire * (out + HDR)) / 1e6;
}

static const uint32_t ALL = (1u << VMIG_CODEC_COUNT) - 1;

static void test_links(void)
{
    /* wire ns/byte: loopback-like copy, 10 Gbit/s shared by 4 channels,
     * 1 Gbit/s shared by 4 channels, a very slow link */
    static const double links[] = {0.25, 3.2, 32, 200};
    static const char *names[] = {"fast", "10G/4", "1G/4", "slow"};
    for (size_t l = 0; l < VMIG_ARRAY_SIZE(links); l++) {
        vmig_adapt a;
        vmig_adapt_init(&a, VMIG_ADAPT_CANDIDATES);
        uint64_t counts[VMIG_CODEC_COUNT] = {0};
        uint32_t n = 4000;
        double t = run(&a, n, links[l], 0, counts);
        uint32_t best = 0;
        double best_t = 0;
        for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++) {
            if (!(VMIG_ADAPT_CANDIDATES & 1u << c))
                continue;
            double ft = fixed_time(c, n, links[l], 0);
            if (c == 0 || ft < best_t) {
                best = c;
                best_t = ft;
            }
        }
        double none_t = fixed_time(VMIG_CODEC_NONE, n, links[l], 0);
        printf("%-6s link: auto %.1f ms, best fixed %s %.1f ms (%.3fx), none %.1f ms; chose "
               "none %llu lz4 %llu deflate-page %llu zstd %llu zlib %llu\n",
               names[l], t, vmig_codec_name(best), best_t, t / best_t, none_t,
               (unsigned long long)counts[0], (unsigned long long)counts[4],
               (unsigned long long)counts[3], (unsigned long long)counts[2],
               (unsigned long long)counts[1]);
        CHECK(counts[best] >= n * 95 / 100, "%s link: best codec %s chosen %llu of %u times",
              names[l], vmig_codec_name(best), (unsigned long long)counts[best], n);
        CHECK(t <= best_t * 1.03, "%s link: auto %.1f ms vs best %.1f ms", names[l], t, best_t);
        CHECK(t <= none_t * 1.03, "%s link: auto %.1f ms vs none %.1f ms", names[l], t, none_t);
        CHECK(counts[VMIG_CODEC_ZLIB] == 0, "zlib is not a candidate");
    }
    /* The fast link picks none, the 1 Gbit/s one compresses with zstd. */
    vmig_adapt a;
    vmig_adapt_init(&a, VMIG_ADAPT_CANDIDATES);
    uint64_t counts[VMIG_CODEC_COUNT] = {0};
    run(&a, 2000, 0.25, 0, counts);
    CHECK(counts[VMIG_CODEC_NONE] >= 1950, "fast link: none %llu of 2000",
          (unsigned long long)counts[VMIG_CODEC_NONE]);
}

/* The link slows down, then speeds up again: auto follows within a few
 * dozen packets each time. */
static void test_link_change(void)
{
    vmig_adapt a;
    vmig_adapt_init(&a, VMIG_ADAPT_CANDIDATES);
    uint64_t counts[VMIG_CODEC_COUNT] = {0};
    run(&a, 1000, 0.25, 0, counts);
    uint64_t slow[VMIG_CODEC_COUNT] = {0};
    run(&a, 100, 32, 0, slow); /* the first packets after the change may still go raw */
    uint64_t later[VMIG_CODEC_COUNT] = {0};
    run(&a, 1000, 32, 0, later);
    CHECK(later[VMIG_CODEC_ZSTD] >= 950, "after slowing down: zstd %llu of 1000",
          (unsigned long long)later[VMIG_CODEC_ZSTD]);
    CHECK(slow[VMIG_CODEC_NONE] <= 30, "slowing down took %llu raw packets",
          (unsigned long long)slow[VMIG_CODEC_NONE]);
    uint64_t fast[VMIG_CODEC_COUNT] = {0};
    run(&a, 200, 0.25, 0, fast);
    uint64_t fast2[VMIG_CODEC_COUNT] = {0};
    run(&a, 1000, 0.25, 0, fast2);
    CHECK(fast2[VMIG_CODEC_NONE] >= 950, "after speeding up: none %llu of 1000",
          (unsigned long long)fast2[VMIG_CODEC_NONE]);
    printf("link change: slow phase zstd %llu/1000, fast again none %llu/1000\n",
           (unsigned long long)later[VMIG_CODEC_ZSTD], (unsigned long long)fast2[VMIG_CODEC_NONE]);
}

/* Random content goes raw on any link, without a single compression;
 * compressible content afterwards is compressed again. */
static void test_content(void)
{
    vmig_adapt a;
    vmig_adapt_init(&a, VMIG_ADAPT_CANDIDATES);
    uint64_t counts[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 32, 0, counts);
    uint64_t rnd[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 32, PKT_PAGES, rnd);
    CHECK(rnd[VMIG_CODEC_NONE] == 500, "random packets: none %llu of 500",
          (unsigned long long)rnd[VMIG_CODEC_NONE]);
    uint64_t most[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 32, PKT_PAGES * 95 / 100, most);
    CHECK(most[VMIG_CODEC_NONE] == 500, "95%% random packets: none %llu of 500",
          (unsigned long long)most[VMIG_CODEC_NONE]);
    uint64_t back[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 32, 0, back);
    CHECK(back[VMIG_CODEC_ZSTD] >= 470, "text again: zstd %llu of 500",
          (unsigned long long)back[VMIG_CODEC_ZSTD]);
    /* Half random: still worth compressing on a slow link. */
    uint64_t half[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 32, PKT_PAGES / 2, half);
    CHECK(half[VMIG_CODEC_NONE] <= 25, "half random on a slow link: none %llu of 500",
          (unsigned long long)half[VMIG_CODEC_NONE]);
    CHECK(vmig_adapt_choose(&a, 0, 0) == VMIG_CODEC_NONE, "a packet of zero pages only");
}

/* Only codecs in the mask, whatever the link. */
static void test_mask(void)
{
    vmig_adapt a;
    vmig_adapt_init(&a, 0); /* none is always in */
    uint64_t counts[VMIG_CODEC_COUNT] = {0};
    run(&a, 500, 200, 0, counts);
    CHECK(counts[VMIG_CODEC_NONE] == 500, "mask none: %llu", (unsigned long long)counts[0]);
    uint32_t mask = (1u << VMIG_CODEC_LZ4) | (1u << VMIG_CODEC_DEFLATE_PAGE);
    vmig_adapt_init(&a, mask);
    memset(counts, 0, sizeof(counts));
    run(&a, 1000, 32, 0, counts);
    CHECK(counts[VMIG_CODEC_ZSTD] == 0 && counts[VMIG_CODEC_ZLIB] == 0, "mask respected");
    CHECK(counts[VMIG_CODEC_DEFLATE_PAGE] >= 950, "best of the mask: deflate-page %llu",
          (unsigned long long)counts[VMIG_CODEC_DEFLATE_PAGE]);
    /* zlib is honoured when a caller puts it in the mask */
    vmig_adapt_init(&a, ALL);
    memset(counts, 0, sizeof(counts));
    run(&a, 200, 32, 0, counts);
    CHECK(counts[VMIG_CODEC_ZLIB] >= 1, "zlib in the mask is measured at least once");
    CHECK(vmig_adapt_cost(&a, VMIG_CODEC_COUNT, 0) < 0, "cost of an unknown id");
}

int main(void)
{
    test_links();
    test_link_change();
    test_content();
    test_mask();
    return tu_result("test_adapt");
}
