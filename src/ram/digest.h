/*
 * The end-of-migration digest (docs/wire-format.md, "Digest"):
 *   digest = sum over pages i of XXH3_128(be64(i) || be64(XXH3_64(page i))) mod 2^128
 * Order-independent, so channel threads build it page by page, as pages
 * are sent or land, and a page sent again simply replaces its hash.
 */
#ifndef VMIG_DIGEST_H
#define VMIG_DIGEST_H

#include "../base/base.h"

typedef struct vmig_digest {
    uint64_t hi, lo;
} vmig_digest;

/* Hash of one page's content. */
uint64_t vmig_page_hash(const void *page, size_t len);
/* Hash of a page of `len` zero bytes (computed once per page size). */
uint64_t vmig_zero_page_hash(size_t len);

/* d += XXH3_128(be64(index) || be64(page_hash)), modulo 2^128. */
void vmig_digest_add(vmig_digest *d, uint64_t index, uint64_t page_hash);

/* Digest of a whole array of page hashes. */
vmig_digest vmig_digest_of(const uint64_t *page_hashes, uint64_t npages);

/* Digest of memory, read page by page (the verify=full path and tests). */
vmig_digest vmig_digest_memory(const void *mem, uint64_t npages, size_t page_size);

void vmig_digest_to_bytes(const vmig_digest *d, uint8_t out[16]);
vmig_digest vmig_digest_from_bytes(const uint8_t in[16]);

#endif /* VMIG_DIGEST_H */
