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
#endif

uint32_t vmig_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
    if (vmig_cpu_features() & VMIG_CPU_SSE42)
        return crc32c_hw(crc, buf, len);
#endif
    return vmig_crc32c_sw(crc, buf, len);
}
