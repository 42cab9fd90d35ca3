/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI,
 * ext4 and SCTP. The SSE4.2 crc32 instruction computes it 8 bytes at a
 * time; the portable path uses a 256-entry table built at compile time.
 */
#include "base.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define P      0x82F63B78u
#define T1(c)  (((c)&1) ? ((c) >> 1) ^ P : (c) >> 1)
#define T8(c)  T1(T1(T1(T1(T1(T1(T1(T1(c))))))))
#define R4(n)  T8(n), T8(n + 1), T8(n + 2), T8(n + 3)
#define R16(n) R4(n), R4(n + 4), R4(n + 8), R4(n + 12)
#define R64(n) R16(n), R16(n + 16), R16(n + 32), R16(n + 48)
static const uint32_t crc_table[256] = {R64(0u), R64(64u), R64(128u), R64(192u)};

uint32_t vmig_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
                                                            size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

/*
 * Large buffers: the crc32 instruction has a latency of 3 cycles and a
 * throughput of 1, so one dependency chain uses a third of it. Three
 * chains over three equal parts run at once; the parts' CRCs are then
 * joined with vmig_crc32c_combine (a few microseconds), which pays off
 * from a few tens of KiB.
 */
#define HW3_MIN (64u << 10)

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw3(uint32_t crc, const uint8_t *p,
                                                             size_t len)
{
    size_t third = (len / 3) & ~(size_t)7;
    const uint8_t *q = p + third, *r = p + 2 * third;
    uint64_t c0 = ~crc, c1 = 0xffffffffu, c2 = 0xffffffffu;
    for (size_t i = 0; i < third; i += 8) {
        uint64_t v0, v1, v2;
        memcpy(&v0, p + i, 8);
        memcpy(&v1, q + i, 8);
        memcpy(&v2, r + i, 8);
        c0 = _mm_crc32_u64(c0, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
    }
    uint32_t a = ~(uint32_t)c0, b = ~(uint32_t)c1, c = ~(uint32_t)c2;
    uint32_t ab = vmig_crc32c_combine(a, b, third);
    return crc32c_hw(vmig_crc32c_combine(ab, c, third), r + third, len - 3 * third);
}
#endif

/* GF(2)[x] modulo the polynomial, in the reflected order of the register
 * (bit 31 is x^0): a * b mod P. */
static uint32_t gf2_mulmod(uint32_t a, uint32_t b)
{
    uint32_t prod = 0;
    for (uint32_t m = 0x80000000u; m; m >>= 1) {
        if (a & m)
            prod ^= b;
        b = b & 1 ? (b >> 1) ^ P : b >> 1; /* b * x */
    }
    return prod;
}

/* x^(8 n) mod P, by squaring x^8. */
static uint32_t x_pow_8n(uint64_t n)
{
    uint32_t r = 0x80000000u, sq = 0x00800000u; /* x^0, x^8 */
    for (; n; n >>= 1) {
        if (n & 1)
            r = gf2_mulmod(r, sq);
        sq = gf2_mulmod(sq, sq);
    }
    return r;
}

/* Appending len_b bytes multiplies A's CRC by x^(8 len_b); the
 * conditioning (~ before and after) cancels out of the sum. */
uint32_t vmig_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    return gf2_mulmod(x_pow_8n(len_b), crc_a) ^ crc_b;
}

uint32_t vmig_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
    if (vmig_cpu_features() & VMIG_CPU_SSE42)
        return len >= HW3_MIN ? crc32c_hw3(crc, buf, len) : crc32c_hw(crc, buf, len);
#endif
    return vmig_crc32c_sw(crc, buf, len);
}
