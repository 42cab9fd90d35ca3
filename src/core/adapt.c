/* compression=auto: the cost model of adapt.h. */
#include "adapt.h"

#define ALPHA 0.125 /* weight of a new sample in the moving averages */

/* Order in which never-measured candidates are tried: none first (it
 * measures the link), then the cheapest encoders. */
static const uint32_t warmup_order[] = {VMIG_CODEC_NONE, VMIG_CODEC_LZ4, VMIG_CODEC_DEFLATE_PAGE,
                                        VMIG_CODEC_ZSTD, VMIG_CODEC_ZLIB};

static double ewma(double old, double sample, uint32_t seen)
{
    return seen == 0 ? sample : old + ALPHA * (sample - old);
}

void vmig_adapt_init(vmig_adapt *a, uint32_t mask)
{
    memset(a, 0, sizeof(*a));
    a->mask = (mask | 1u << VMIG_CODEC_NONE) & ((1u << VMIG_CODEC_COUNT) - 1);
    a->wire = -1;
    for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++)
        a->ratio[c] = 1;
}

double vmig_adapt_cost(const vmig_adapt *a, uint32_t codec, double f)
{
    if (codec >= VMIG_CODEC_COUNT || !(a->mask & 1u << codec) || a->wire < 0)
        return -1;
    if (codec == VMIG_CODEC_NONE)
        return a->wire;
    if (!a->seen[codec])
        return -1;
    double r = f + (1 - f) * a->ratio[codec];
    return a->enc[codec] + r * a->wire;
}

uint32_t vmig_adapt_choose(vmig_adapt *a, uint32_t normal, uint32_t flagged)
{
    if (normal == 0)
        return VMIG_CODEC_NONE;
    double f = (double)flagged / normal;
    if (f >= VMIG_ADAPT_RANDOM_SHARE || a->mask == 1u << VMIG_CODEC_NONE)
        return VMIG_CODEC_NONE;
    uint64_t n = a->npkt++;
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(warmup_order); i++) {
        uint32_t c = warmup_order[i];
        bool unknown = c == VMIG_CODEC_NONE ? a->wire < 0 : !a->seen[c];
        if ((a->mask & 1u << c) && unknown) {
            a->last[c] = n;
            return c;
        }
    }
    uint32_t best = VMIG_CODEC_NONE;
    double best_cost = vmig_adapt_cost(a, VMIG_CODEC_NONE, f);
    for (uint32_t c = 1; c < VMIG_CODEC_COUNT; c++) {
        double k = vmig_adapt_cost(a, c, f);
        if (k >= 0 && k < best_cost) {
            best = c;
            best_cost = k;
        }
    }
    /* The most overdue other candidate gets this packet, if any is due. */
    uint32_t pick = best;
    double overdue = 0;
    for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++) {
        if (c == best || !(a->mask & 1u << c))
            continue;
        double k = vmig_adapt_cost(a, c, f);
        double rel = best_cost > 0 ? k / best_cost : VMIG_ADAPT_EXPLORE_MAX;
        double interval = VMIG_ADAPT_EXPLORE_MIN * rel * rel;
        if (interval > VMIG_ADAPT_EXPLORE_MAX)
            interval = VMIG_ADAPT_EXPLORE_MAX;
        if (interval < VMIG_ADAPT_EXPLORE_MIN)
            interval = VMIG_ADAPT_EXPLORE_MIN;
        double late = (double)(n - a->last[c]) / interval;
        if (late >= 1 && late > overdue) {
            overdue = late;
            pick = c;
        }
    }
    a->last[pick] = n;
    return pick;
}

void vmig_adapt_observe(vmig_adapt *a, uint32_t codec, uint32_t normal, uint32_t flagged,
                        uint64_t in, uint64_t out, uint64_t wire_bytes, uint64_t enc_ns,
                        uint64_t wire_ns)
{
    if (codec >= VMIG_CODEC_COUNT || in == 0 || wire_bytes == 0)
        return;
    a->wire = ewma(a->wire, (double)wire_ns / (double)wire_bytes, a->wire_seen);
    a->wire_seen++;
    if (codec == VMIG_CODEC_NONE)
        return;
    double f = normal ? (double)flagged / normal : 0;
    a->enc[codec] = ewma(a->enc[codec], (double)enc_ns / (double)in, a->seen[codec]);
    if (f < 1) {
        /* The flagged pages cost about their size; the rest is the codec's. */
        double r = ((double)out - f * (double)in) / ((1 - f) * (double)in);
        if (r < 0.001)
            r = 0.001;
        if (r > 1.5)
            r = 1.5;
        a->ratio[codec] = ewma(a->ratio[codec], r, a->seen[codec]);
    }
    a->seen[codec]++;
}
