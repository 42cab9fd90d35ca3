/*
 * Incompressibility probe (codec.h): is this page random-looking?
 *
 * It reads PROBE_SAMPLES samples of PROBE_LEN bytes spread over the page:
 *
 *   page:  |S0......|........|S1......|........|S2......|........|S3......|....
 *   offset  k * page_size/4 + k * PROBE_SKEW   (k = 0..3)
 *
 * and calls the page random only when both hold:
 *   1. every sample is byte-diverse: at least PROBE_MIN_DISTINCT distinct byte
 *      values out of PROBE_LEN. Random bytes give 56.7 on average (sd 2.3), so
 *      the threshold is 5.6 sd below (1e-8 per sample). English-like text,
 *      numbers and zero-filled structures stay far below it, machine code
 *      nearly always (1 of libc.so.6's 470 pages passes; compressed files: 99%
 *      of the pages pass, as they should). This runs
 *      sample by sample and stops at the first low one, so a compressible page
 *      usually costs one sample.
 *   2. no 4-byte string occurs twice in the samples, within one sample or
 *      between two (looked for among a content-defined quarter of the
 *      strings, see below). Random data repeats one with probability below
 *      (4*61)^2/2 / 2^32 = 7e-6 per page; data built from a repeated block
 *      (a 256-byte random block repeated over the page compresses to a few
 *      hundred bytes) repeats dozens: the skew makes the samples meet the block
 *      at different phases 16 bytes apart, so they overlap for every period that
 *      divides page_size/4 and for most others.
 *
 * A wrong "random" only costs ratio (the page goes raw), a wrong "compressible"
 * only time (the compressor finds out), so the thresholds favour neither
 * strongly. Cost: 256 byte loads, 244 multiplications and about 61 table
 * probes on a random page (0.4 us here, 3% of compressing a text page), one
 * 64-byte sample on most compressible ones; no state, any thread.
 */
#include "codec.h"

#define PROBE_SAMPLES      4
#define PROBE_LEN          64
#define PROBE_SKEW         16
#define PROBE_MIN_DISTINCT 44
#define PROBE_WINDOWS      (PROBE_LEN - 3)
#define PROBE_HASH_BITS    8 /* 256 slots for about 61 strings */

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Distinct byte values in p[0 .. PROBE_LEN). `seen` holds tags of earlier
 * samples; tag is unique per sample, so it needs no clearing in between. */
static unsigned distinct_bytes(const uint8_t *p, uint8_t seen[256], uint8_t tag)
{
    unsigned n = 0;
    for (unsigned i = 0; i < PROBE_LEN; i++) {
        n += seen[p[i]] != tag;
        seen[p[i]] = tag;
    }
    return n;
}

bool vmig_codec_probe_incompressible(const uint8_t *page, uint32_t page_size)
{
    uint32_t step = page_size / PROBE_SAMPLES;
    if (step < PROBE_LEN + (PROBE_SAMPLES - 1) * PROBE_SKEW)
        return false; /* too small to judge: let the compressor decide */

    const uint8_t *s[PROBE_SAMPLES];
    for (unsigned k = 0; k < PROBE_SAMPLES; k++)
        s[k] = page + (size_t)k * step + k * PROBE_SKEW;

    uint8_t seen[256];
    memset(seen, 0, sizeof(seen));
    for (unsigned k = 0; k < PROBE_SAMPLES; k++)
        if (distinct_bytes(s[k], seen, (uint8_t)(k + 1)) < PROBE_MIN_DISTINCT)
            return false;

    /* Repeated 4-byte strings. Each window is hashed with an odd multiplier
     * (a bijection, so equal hashes mean equal strings) and only the quarter
     * whose hash starts with two zero bits is kept: a string and its repeat
     * are kept or dropped together, so a repetition still shows (an overlap
     * of 45 windows goes unseen with probability 0.75^45 = 2e-6) at a quarter
     * of the table work. Branch-free selection, then open addressing; only
     * the occupancy bitmap is cleared, `key` is read only where it was set. */
    uint32_t cand[PROBE_SAMPLES * PROBE_WINDOWS];
    unsigned m = 0;
    for (unsigned k = 0; k < PROBE_SAMPLES; k++)
        for (unsigned i = 0; i < PROBE_WINDOWS; i++) {
            uint32_t h = load32(s[k] + i) * 0x9E3779B1u;
            cand[m] = h;
            m += (h >> 30) == 0;
        }
    uint64_t used[(1u << PROBE_HASH_BITS) / 64] = {0};
    uint32_t key[1u << PROBE_HASH_BITS];
    const uint32_t mask = (1u << PROBE_HASH_BITS) - 1;
    for (unsigned j = 0; j < m; j++) {
        uint32_t h = cand[j];
        uint32_t x = (h >> (30 - PROBE_HASH_BITS)) & mask; /* bits below the selector */
        for (;;) {
            uint64_t bit = 1ull << (x & 63);
            if (!(used[x >> 6] & bit)) {
                used[x >> 6] |= bit;
                key[x] = h;
                break;
            }
            if (key[x] == h)
                return false; /* a string recurs: a compressor finds it too */
            x = (x + 1) & mask;
        }
    }
    return true;
}
