/*
 * Zero-page detection; see zero.h.
 *
 * Every vector implementation has the same shape, tuned for the hot case of
 * one 4 KiB page-aligned page that is usually either all zero or non-zero
 * from its first bytes:
 *
 *   buf                                                          buf+len
 *   |<- line 0 ->|<------ blocks of 256 bytes, aligned loads ------>|..| tail
 *   | unaligned  |  q = (buf + 64) & -V                              |  | loadu(end - V)
 *   tested alone  OR-reduced into 2 accumulators, one test per block
 *
 *   1. The first 64 bytes (one cache line) are loaded and tested alone, so
 *      a non-zero page costs one cache miss.
 *   2. q is rounded DOWN from buf + 64 to a vector boundary: [buf, q) is
 *      already covered, and every later load is aligned.
 *   3. Blocks of 256 bytes are OR-reduced into two independent accumulators
 *      and tested once; the branch is predicted "zero", so the out-of-order
 *      core keeps many cache misses in flight across blocks (and across
 *      calls), which is what makes a memory-bound scan fast.
 *   4. Fewer than 256 bytes remain: aligned vectors while more than one
 *      vector remains, then one unaligned vector that ends exactly at
 *      buf + len (it may overlap bytes already seen, which is harmless).
 *
 * Nothing is ever loaded outside [buf, buf + len): lengths shorter than a
 * vector fall to narrower overlapping loads, down to single bytes.
 *
 * Out of the caches the scan runs at one core's read bandwidth (bench/
 * bench_zero.c: the same as one plain sequential read of the buffer).
 * Measured and dropped because they did not help there or in L2: software
 * prefetch (within the page, or of the next page by the caller), 512-byte
 * blocks, one test per page, no separate first line (slower early exit).
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VMIG_ZERO_X86 1
#else
#define VMIG_ZERO_X86 0
#endif

#include "zero.h"

#define BLOCK 256 /* bytes OR-reduced between two tests */
#define LINE  64  /* bytes tested alone at the start */

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* 0..15 bytes with two overlapping loads (or three bytes). */
static inline bool zero_small(const uint8_t *p, size_t len)
{
    if (len >= 8)
        return !(load64(p) | load64(p + len - 8));
    if (len >= 4)
        return !(load32(p) | load32(p + len - 4));
    if (len)
        return !(p[0] | p[len / 2] | p[len - 1]); /* covers 1, 2 and 3 bytes */
    return true;
}

/* Portable C: 64 bytes (eight words) per test. */
static bool zero_scalar(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len < 16)
        return zero_small(p, len); /* also buf == NULL, len == 0 */
    const uint8_t *end = p + len;
    for (; end - p >= 64; p += 64) {
        uint64_t a = load64(p) | load64(p + 8) | load64(p + 16) | load64(p + 24);
        uint64_t b = load64(p + 32) | load64(p + 40) | load64(p + 48) | load64(p + 56);
        if (a | b)
            return false;
    }
    uint64_t acc = load64(end - 8);
    for (; end - p > 8; p += 8)
        acc |= load64(p);
    return !acc;
}

#if VMIG_ZERO_X86

/* ---- SSE2: 16-byte vectors ---- */

#define SSE2_FN __attribute__((target("sse2")))

static inline SSE2_FN bool sse2_zero(__m128i v)
{
    return _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) == 0xFFFF;
}

#define L16(p)  _mm_load_si128((const __m128i *)(p))
#define LU16(p) _mm_loadu_si128((const __m128i *)(p))

/* 0..31 bytes. */
static inline SSE2_FN bool zero_sse2_short(const uint8_t *p, size_t len)
{
    if (len < 16)
        return zero_small(p, len);
    return sse2_zero(_mm_or_si128(LU16(p), LU16(p + len - 16)));
}

static SSE2_FN bool zero_sse2(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len < 32)
        return zero_sse2_short(p, len);
    const uint8_t *end = p + len;
    if (len <= LINE)
        return sse2_zero(_mm_or_si128(_mm_or_si128(LU16(p), LU16(p + 16)),
                                      _mm_or_si128(LU16(end - 32), LU16(end - 16))));
    if (!sse2_zero(_mm_or_si128(_mm_or_si128(LU16(p), LU16(p + 16)),
                                _mm_or_si128(LU16(p + 32), LU16(p + 48)))))
        return false;
    const uint8_t *q = (const uint8_t *)((uintptr_t)(p + LINE) & ~(uintptr_t)15);
    for (; end - q >= BLOCK; q += BLOCK) {
        __m128i a =
            _mm_or_si128(_mm_or_si128(L16(q), L16(q + 16)), _mm_or_si128(L16(q + 32), L16(q + 48)));
        __m128i b = _mm_or_si128(_mm_or_si128(L16(q + 64), L16(q + 80)),
                                 _mm_or_si128(L16(q + 96), L16(q + 112)));
        a = _mm_or_si128(a, _mm_or_si128(_mm_or_si128(L16(q + 128), L16(q + 144)),
                                         _mm_or_si128(L16(q + 160), L16(q + 176))));
        b = _mm_or_si128(b, _mm_or_si128(_mm_or_si128(L16(q + 192), L16(q + 208)),
                                         _mm_or_si128(L16(q + 224), L16(q + 240))));
        if (!sse2_zero(_mm_or_si128(a, b)))
            return false;
    }
    __m128i acc = LU16(end - 16);
    for (; end - q > 16; q += 16)
        acc = _mm_or_si128(acc, L16(q));
    return sse2_zero(acc);
}

/* ---- AVX2: 32-byte vectors ---- */

#define AVX2_FN __attribute__((target("avx2")))

#define L32(p)  _mm256_load_si256((const __m256i *)(p))
#define LU32(p) _mm256_loadu_si256((const __m256i *)(p))

static inline AVX2_FN bool avx2_zero(__m256i v)
{
    return _mm256_testz_si256(v, v);
}

/* 0..64 bytes. */
static inline AVX2_FN bool zero_avx2_short(const uint8_t *p, size_t len)
{
    if (len < 32)
        return zero_sse2_short(p, len);
    return avx2_zero(_mm256_or_si256(LU32(p), LU32(p + len - 32)));
}

static AVX2_FN bool zero_avx2(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len <= LINE)
        return zero_avx2_short(p, len);
    const uint8_t *end = p + len;
    if (!avx2_zero(_mm256_or_si256(LU32(p), LU32(p + 32))))
        return false;
    const uint8_t *q = (const uint8_t *)((uintptr_t)(p + LINE) & ~(uintptr_t)31);
    for (; end - q >= BLOCK; q += BLOCK) {
        __m256i a = _mm256_or_si256(_mm256_or_si256(L32(q), L32(q + 32)),
                                    _mm256_or_si256(L32(q + 64), L32(q + 96)));
        __m256i b = _mm256_or_si256(_mm256_or_si256(L32(q + 128), L32(q + 160)),
                                    _mm256_or_si256(L32(q + 192), L32(q + 224)));
        if (!avx2_zero(_mm256_or_si256(a, b)))
            return false;
    }
    __m256i acc = LU32(end - 32);
    for (; end - q > 32; q += 32)
        acc = _mm256_or_si256(acc, L32(q));
    return avx2_zero(acc);
}

/* ---- AVX-512: 64-byte vectors (BW is required by the table entry only) ---- */

#define AVX512_FN __attribute__((target("avx512f,avx512bw")))

#define L64(p)  _mm512_load_si512((const void *)(p))
#define LU64(p) _mm512_loadu_si512((const void *)(p))

static inline AVX512_FN bool avx512_zero(__m512i v)
{
    return _mm512_test_epi64_mask(v, v) == 0;
}

static AVX512_FN bool zero_avx512(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len < LINE)
        return zero_avx2_short(p, len);
    const uint8_t *end = p + len;
    if (len <= 2 * LINE)
        return avx512_zero(_mm512_or_si512(LU64(p), LU64(end - 64)));
    if (!avx512_zero(LU64(p)))
        return false;
    const uint8_t *q = (const uint8_t *)((uintptr_t)(p + LINE) & ~(uintptr_t)63);
    for (; end - q >= BLOCK; q += BLOCK) {
        __m512i a = _mm512_or_si512(L64(q), L64(q + 64));
        __m512i b = _mm512_or_si512(L64(q + 128), L64(q + 192));
        if (!avx512_zero(_mm512_or_si512(a, b)))
            return false;
    }
    __m512i acc = LU64(end - 64);
    for (; end - q > 64; q += 64)
        acc = _mm512_or_si512(acc, L64(q));
    return avx512_zero(acc);
}

#endif /* VMIG_ZERO_X86 */

const vmig_zero_impl vmig_zero_impls[] = {
#if VMIG_ZERO_X86
    {"avx512", zero_avx512, VMIG_CPU_AVX512BW},
    {"avx2", zero_avx2, VMIG_CPU_AVX2},
    {"sse2", zero_sse2, VMIG_CPU_SSE2},
#endif
    {"scalar", zero_scalar, 0},
    {NULL, NULL, 0},
};

const vmig_zero_impl *vmig_zero_best(void)
{
    unsigned have = vmig_cpu_features();
    const vmig_zero_impl *im = vmig_zero_impls;
    while ((im->need & have) != im->need)
        im++; /* stops at "scalar" at the latest: it needs nothing */
    return im;
}

bool vmig_is_zero(const void *buf, size_t len)
{
    /* Resolved on first use; racing first calls store the same pointer. */
    static vmig_zero_fn cached;
    vmig_zero_fn fn = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (VMIG_UNLIKELY(!fn)) {
        fn = vmig_zero_best()->fn;
        __atomic_store_n(&cached, fn, __ATOMIC_RELAXED);
    }
    return fn(buf, len);
}
