/* The end-of-migration digest: order independence, replacement, known values. */
#include <sys/mman.h>

#include "src/ram/digest.h"

#include "../testutil.h"

int main(void)
{
    enum { N = 300, PG = 4096 };
    uint8_t *mem = mmap(NULL, N * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED, "mmap");
    uint64_t st = 7;
    for (size_t i = 0; i < N * PG; i += 8 * 5) {
        uint64_t v = tu_rand(&st);
        memcpy(mem + i, &v, 8);
    }
    memset(mem + 10 * PG, 0, PG);
    vmig_digest whole = vmig_digest_memory(mem, N, PG);

    /* Any order of pages gives the same digest. */
    uint64_t hashes[N];
    for (int i = 0; i < N; i++)
        hashes[i] = vmig_page_hash(mem + (size_t)i * PG, PG);
    vmig_digest rev = {0, 0};
    for (int i = N - 1; i >= 0; i--)
        vmig_digest_add(&rev, (uint64_t)i, hashes[i]);
    CHECK(rev.hi == whole.hi && rev.lo == whole.lo, "order changes the digest");
    vmig_digest of = vmig_digest_of(hashes, N);
    CHECK(of.hi == whole.hi && of.lo == whole.lo, "digest_of differs");

    /* One changed byte, or two pages swapped, changes it. */
    mem[5 * PG + 100] ^= 1;
    vmig_digest d2 = vmig_digest_memory(mem, N, PG);
    CHECK(d2.hi != whole.hi || d2.lo != whole.lo, "one byte not seen");
    mem[5 * PG + 100] ^= 1;
    uint64_t t = hashes[3];
    hashes[3] = hashes[4];
    hashes[4] = t;
    vmig_digest sw = vmig_digest_of(hashes, N);
    CHECK(sw.hi != whole.hi || sw.lo != whole.lo, "swapped pages not seen");

    /* The zero-page hash equals the hash of a zero page, for several sizes. */
    CHECK(vmig_zero_page_hash(PG) == vmig_page_hash(mem + 10 * PG, PG), "zero hash 4K");
    uint8_t *z = mmap(NULL, 2 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(vmig_zero_page_hash(8192) == vmig_page_hash(z, 8192), "zero hash 8K");
    CHECK(vmig_zero_page_hash(2 << 20) == vmig_page_hash(z, 2 << 20), "zero hash 2M");

    /* Byte form round trip, big-endian: high half first. */
    uint8_t b[16];
    vmig_digest x = {0x0102030405060708ull, 0x1112131415161718ull};
    vmig_digest_to_bytes(&x, b);
    CHECK(b[0] == 1 && b[7] == 8 && b[8] == 0x11 && b[15] == 0x18, "byte order");
    vmig_digest y = vmig_digest_from_bytes(b);
    CHECK(y.hi == x.hi && y.lo == x.lo, "round trip");

    /* Carry from the low into the high half. */
    vmig_digest c = {0, UINT64_MAX};
    vmig_digest c1 = c;
    vmig_digest_add(&c1, 0, 0);
    vmig_digest c2 = {0, 0};
    vmig_digest_add(&c2, 0, 0);
    CHECK(c1.lo == c2.lo - 1 && c1.hi == c2.hi + 1 - (c2.lo == 0), "carry");
    return tu_result("test_digest");
}
