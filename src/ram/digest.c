/* End-of-migration digest; see digest.h and docs/wire-format.md. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "digest.h"

uint64_t vmig_page_hash(const void *page, size_t len)
{
    return XXH3_64bits(page, len);
}

uint64_t vmig_zero_page_hash(size_t len)
{
    /* Hash in 4 KiB steps of one static zero buffer: the streaming state
     * gives the same result as one call over `len` zero bytes. */
    static const uint8_t zeros[4096];
    if (len <= sizeof(zeros))
        return XXH3_64bits(zeros, len);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t done = 0; done < len; done += sizeof(zeros))
        XXH3_64bits_update(&st, zeros, VMIG_MIN(sizeof(zeros), len - done));
    return XXH3_64bits_digest(&st);
}

void vmig_digest_add(vmig_digest *d, uint64_t index, uint64_t page_hash)
{
    uint8_t rec[16];
    vmig_put_be64(rec, index);
    vmig_put_be64(rec + 8, page_hash);
    XXH128_hash_t h = XXH3_128bits(rec, sizeof(rec));
    uint64_t lo = d->lo + h.low64;
    d->hi += h.high64 + (lo < d->lo);
    d->lo = lo;
}

vmig_digest vmig_digest_of(const uint64_t *page_hashes, uint64_t npages)
{
    vmig_digest d = {0, 0};
    for (uint64_t i = 0; i < npages; i++)
        vmig_digest_add(&d, i, page_hashes[i]);
    return d;
}

vmig_digest vmig_digest_memory(const void *mem, uint64_t npages, size_t page_size)
{
    vmig_digest d = {0, 0};
    const uint8_t *p = mem;
    for (uint64_t i = 0; i < npages; i++)
        vmig_digest_add(&d, i, vmig_page_hash(p + i * page_size, page_size));
    return d;
}

void vmig_digest_to_bytes(const vmig_digest *d, uint8_t out[16])
{
    vmig_put_be64(out, d->hi);
    vmig_put_be64(out + 8, d->lo);
}

vmig_digest vmig_digest_from_bytes(const uint8_t in[16])
{
    vmig_digest d = {vmig_get_be64(in), vmig_get_be64(in + 8)};
    return d;
}
