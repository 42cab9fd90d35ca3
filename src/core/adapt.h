/*
 * compression=auto: the per-channel choice of a codec for each packet
 * (docs/design.md "Adaptive compression" has the model and its reasons).
 *
 * Each source channel owns one vmig_adapt and is the only thread that
 * touches it. Before a packet it calls choose() with what the probe saw;
 * after the write it reports what happened with observe(). Pure arithmetic:
 * no clock, no I/O, so the unit test drives it with synthetic links.
 *
 * The model, per channel, in nanoseconds per byte of page data:
 *   cost(c) = enc(c) + ratio_eff(c) * wire
 *   enc(c)        encode time / input bytes             (EWMA, measured)
 *   ratio(c)      output / input on the pages the probe  (EWMA, measured)
 *                 did not flag as random
 *   ratio_eff(c)  f + (1 - f) * ratio(c), f = flagged share of this packet
 *   wire          write time (including pacing) / wire bytes (EWMA, measured)
 * none has enc = 0 and ratio = 1. The cheapest codec wins; every other
 * candidate is re-measured now and then, the more rarely the worse it is,
 * so the estimates follow the link and the content at a bounded price.
 */
#ifndef VMIG_ADAPT_H
#define VMIG_ADAPT_H

#include "../base/base.h"

/* Packets between two trials of a candidate: 16 * (cost / best cost)^2, in
 * this range. */
#define VMIG_ADAPT_EXPLORE_MIN 64
#define VMIG_ADAPT_EXPLORE_MAX 1024
/* A packet whose pages the probe flags at least this share of is sent raw
 * without asking the model (no codec would gain on it). */
#define VMIG_ADAPT_RANDOM_SHARE 0.9

typedef struct vmig_adapt {
    uint32_t mask; /* candidate codecs, bit (1 << id); none always included */
    uint64_t npkt; /* packets decided so far */
    uint64_t last[VMIG_CODEC_COUNT];
    uint32_t seen[VMIG_CODEC_COUNT];
    double enc[VMIG_CODEC_COUNT];   /* ns per input byte */
    double ratio[VMIG_CODEC_COUNT]; /* output / input, compressible pages */
    double wire;                    /* ns per wire byte; < 0 until measured */
    uint32_t wire_seen;
} vmig_adapt;

/* Codecs auto may choose from, before intersecting with what is built here
 * and what the destination decodes: none, lz4, zstd, deflate-page. zlib is
 * left out: at every level it is slower than zstd for a worse ratio. */
#define VMIG_ADAPT_CANDIDATES                                                                      \
    ((1u << VMIG_CODEC_NONE) | (1u << VMIG_CODEC_LZ4) | (1u << VMIG_CODEC_ZSTD) |                  \
     (1u << VMIG_CODEC_DEFLATE_PAGE))

void vmig_adapt_init(vmig_adapt *a, uint32_t mask);

/* The codec for a packet of `normal` pages of which `flagged` look random
 * to the probe. Records the choice (the caller must send with it). */
uint32_t vmig_adapt_choose(vmig_adapt *a, uint32_t normal, uint32_t flagged);

/*
 * What sending one packet with `codec` cost: `in` page bytes became `out`
 * payload bytes (wire_bytes with the header) in enc_ns of encoding, and the
 * write (with pacing) took wire_ns. `flagged` as given to choose().
 */
void vmig_adapt_observe(vmig_adapt *a, uint32_t codec, uint32_t normal, uint32_t flagged,
                        uint64_t in, uint64_t out, uint64_t wire_bytes, uint64_t enc_ns,
                        uint64_t wire_ns);

/* The model's current estimate for `codec` in ns per input byte at share f of
 * random pages; < 0 while it is unknown. For tests and statistics. */
double vmig_adapt_cost(const vmig_adapt *a, uint32_t codec, double f);

#endif /* VMIG_ADAPT_H */
