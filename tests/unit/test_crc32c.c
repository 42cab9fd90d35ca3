/*
 * CRC32C: the standard check values, continuation, and the hardware path
 * (SSE4.2 when the CPU has it) against the portable table on every length
 * 0..300 at every alignment 0..7.
 */
#include <stdlib.h>

#include "src/base/base.h"

#include "../testutil.h"

/* Bit-at-a-time reference, straight from the definition. */
static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

int main(void)
{
    static const char check[] = "123456789";
    static const uint8_t zeros[32];
    uint8_t ones[32];
    memset(ones, 0xFF, sizeof(ones));

    /* Standard vectors (RFC 3720 B.4 and the usual check string). */
    CHECK(vmig_crc32c(0, check, 9) == 0xE3069283u, "check string: 0x%08x",
          vmig_crc32c(0, check, 9));
    CHECK(vmig_crc32c_sw(0, check, 9) == 0xE3069283u, "sw check string: 0x%08x",
          vmig_crc32c_sw(0, check, 9));
    CHECK(vmig_crc32c(0, "", 0) == 0, "empty: 0x%08x", vmig_crc32c(0, "", 0));
    CHECK(vmig_crc32c(0, NULL, 0) == 0, "empty NULL buffer");
    CHECK(vmig_crc32c(0x12345678u, check, 0) == 0x12345678u, "empty continuation keeps the crc");
    CHECK(vmig_crc32c(0, zeros, 32) == 0x8A9136AAu, "32 zeros: 0x%08x", vmig_crc32c(0, zeros, 32));
    CHECK(vmig_crc32c_sw(0, zeros, 32) == 0x8A9136AAu, "sw 32 zeros");
    CHECK(vmig_crc32c(0, ones, 32) == 0x62A8AB43u, "32 0xFF: 0x%08x", vmig_crc32c(0, ones, 32));
    uint8_t inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        inc[i] = (uint8_t)i;
        dec[i] = (uint8_t)(31 - i);
    }
    CHECK(vmig_crc32c(0, inc, 32) == 0x46DD794Eu, "0..31: 0x%08x", vmig_crc32c(0, inc, 32));
    CHECK(vmig_crc32c(0, dec, 32) == 0x113FDB5Cu, "31..0: 0x%08x", vmig_crc32c(0, dec, 32));

    /* Incremental continuation: any split gives the one-shot value. */
    for (size_t cut = 0; cut <= 9; cut++) {
        uint32_t c = vmig_crc32c(0, check, cut);
        c = vmig_crc32c(c, check + cut, 9 - cut);
        CHECK(c == 0xE3069283u, "split at %zu: 0x%08x", cut, c);
        uint32_t s = vmig_crc32c_sw(vmig_crc32c(0, check, cut), check + cut, 9 - cut);
        CHECK(s == 0xE3069283u, "mixed hw/sw split at %zu: 0x%08x", cut, s);
    }

    /* Hardware vs software vs the definition: every length, every alignment. */
    if (!(vmig_cpu_features() & VMIG_CPU_SSE42))
        fprintf(stderr, "note: no SSE4.2, vmig_crc32c is the table path here\n");
    enum { MAXLEN = 300 };
    static uint8_t buf[MAXLEN + 16];
    uint64_t st = 0xC0FFEE;
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof(buf); i++)
            buf[i] = (uint8_t)tu_rand(&st);
        for (size_t align = 0; align < 8; align++) {
            for (size_t len = 0; len <= MAXLEN; len++) {
                const uint8_t *p = buf + align;
                uint32_t hw = vmig_crc32c(0, p, len);
                uint32_t sw = vmig_crc32c_sw(0, p, len);
                CHECK(hw == sw, "len %zu align %zu: hw 0x%08x sw 0x%08x", len, align, hw, sw);
                if (round == 0) {
                    uint32_t ref = crc_bitwise(p, len);
                    CHECK(sw == ref, "len %zu align %zu: sw 0x%08x ref 0x%08x", len, align, sw,
                          ref);
                }
                /* Continuation from a non-zero start, split at a random point. */
                size_t cut = len ? (size_t)(tu_rand(&st) % (len + 1)) : 0;
                uint32_t a = vmig_crc32c(vmig_crc32c(0, p, cut), p + cut, len - cut);
                uint32_t b = vmig_crc32c_sw(vmig_crc32c_sw(0, p, cut), p + cut, len - cut);
                CHECK(a == hw && b == hw, "len %zu align %zu cut %zu: 0x%08x 0x%08x 0x%08x", len,
                      align, cut, a, b, hw);
            }
        }
    }
    /* Combining: crc(A || B) from crc(A), crc(B), |B|, for many splits. */
    for (size_t cut = 0; cut <= 9; cut++) {
        uint32_t a = vmig_crc32c(0, check, cut), b = vmig_crc32c(0, check + cut, 9 - cut);
        CHECK(vmig_crc32c_combine(a, b, 9 - cut) == 0xE3069283u, "combine at %zu", cut);
    }
    /* Large buffers (three chains and a combine) against the table, at
     * lengths around the threshold and its thirds, at odd offsets. */
    size_t big = (1u << 20) + 77;
    uint8_t *lbuf = malloc(big + 8);
    REQUIRE(lbuf, "malloc");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < big + 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        lbuf[i] = (uint8_t)x;
    }
    static const size_t lens[] = {65535,  65536,  65537,          65543,    100000,
                                  196608, 196615, (1u << 20) - 1, 1u << 20, (1u << 20) + 77};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++)
        for (size_t off = 0; off < 8; off += 3) {
            uint32_t hw = vmig_crc32c(0x5A5A5A5Au, lbuf + off, lens[k]);
            uint32_t sw = vmig_crc32c_sw(0x5A5A5A5Au, lbuf + off, lens[k]);
            CHECK(hw == sw, "length %zu offset %zu: 0x%08x, table 0x%08x", lens[k], off, hw, sw);
        }
    free(lbuf);
    return tu_result("test_crc32c");
}
