/*
 * none: the payload is the packet's normal pages one after the other.
 *
 * The core sends and lands raw pages itself without calling this backend;
 * it exists so that tests and fuzzers can treat every codec alike. The
 * context only remembers the limits, so that decode() checks the shape it
 * is given like every other decoder.
 */
#include <stdlib.h>

#include "codec.h"

typedef struct none_ctx {
    uint32_t max_pages;
    uint32_t max_page_size;
} none_ctx;

static size_t none_bound(uint32_t n, uint32_t page_size)
{
    return (size_t)((uint64_t)n * page_size);
}

static int none_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    if (!cfg->max_pages || !cfg->max_page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "none: max_pages %u and max_page_size %u must be >= 1",
                              cfg->max_pages, cfg->max_page_size);
    none_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vmig_error_set(err, VMIG_ENOMEM, "none: cannot allocate a codec context");
    c->max_pages = cfg->max_pages;
    c->max_page_size = cfg->max_page_size;
    *ctx = c;
    return 0;
}

static void none_free(void *ctx)
{
    free(ctx);
}

/* The shape (n, page_size) against the context's limits; `code` is
 * VMIG_EINVAL for the encoder (a caller bug) and VMIG_EPROTO for the
 * decoder (the numbers came from the peer). */
static int none_check_shape(const none_ctx *c, uint32_t n, uint32_t page_size, int code,
                            vmig_error *err)
{
    if (n < 1 || n > c->max_pages)
        return vmig_error_set(err, code, "none packet: %u pages (must be 1..%u)", n, c->max_pages);
    if (page_size < 1 || page_size > c->max_page_size)
        return vmig_error_set(err, code, "none packet: page size %u (must be 1..%u)", page_size,
                              c->max_page_size);
    return 0;
}

static int none_encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size,
                       unsigned flags, uint8_t *out, size_t cap, size_t *out_len, vmig_error *err)
{
    (void)flags; /* a plain copy cannot be confused by pages that change */
    none_ctx *c = ctx;
    *out_len = 0;
    int rc = none_check_shape(c, n, page_size, VMIG_EINVAL, err);
    if (rc)
        return rc;
    size_t raw = (size_t)n * page_size;
    if (cap < raw)
        return vmig_error_set(err, VMIG_EINVAL,
                              "none: output buffer of %zu bytes for %u pages of %u bytes", cap, n,
                              page_size);
    for (uint32_t i = 0; i < n; i++)
        memcpy(out + (size_t)i * page_size, pages[i], page_size);
    *out_len = raw;
    return 0;
}

static int none_decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                       uint32_t page_size, vmig_error *err)
{
    none_ctx *c = ctx;
    int rc = none_check_shape(c, n, page_size, VMIG_EPROTO, err);
    if (rc)
        return rc;
    uint64_t raw = (uint64_t)n * page_size;
    if (len != raw)
        return vmig_error_set(err, VMIG_EPROTO,
                              "none packet: %zu bytes for %u pages of %u bytes (expected %llu)",
                              len, n, page_size, (unsigned long long)raw);
    for (uint32_t i = 0; i < n; i++)
        memcpy(pages[i], in + (size_t)i * page_size, page_size);
    return 0;
}

const vmig_codec_ops vmig_codec_none_ops = {
    .id = VMIG_CODEC_NONE,
    .name = "none",
    .missing = NULL,
    .bound = none_bound,
    .enc_create = none_create,
    .enc_free = none_free,
    .encode = none_encode,
    .dec_create = none_create,
    .dec_free = none_free,
    .decode = none_decode,
    .describe = NULL,
};
