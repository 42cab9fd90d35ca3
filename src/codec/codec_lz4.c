/*
 * lz4: one LZ4 block (no frame, no stream state) per packet, holding the
 * packet's normal pages one after the other:
 *
 *   payload:  | LZ4 block of page 0 | page 1 | ... | page n-1 |  (one block)
 *
 * The encoder copies the pages into a contiguous staging buffer first: the
 * block format needs contiguous input, and a private copy also cannot change
 * while LZ4 reads it (VMIG_ENC_VOLATILE needs nothing more).
 *
 * The decoder decodes straight into the pages when they are contiguous in
 * memory, else into a staging buffer that it then copies out. Either way the
 * block must decode to exactly n * page_size bytes; LZ4_decompress_safe()
 * never writes beyond the capacity it is given and refuses a block that does
 * not end exactly at the end of its input.
 *
 * Staging buffers grow on demand, never beyond max_pages * max_page_size of
 * the configuration (checked before every use).
 */
#include "vmig_config.h"

#include <limits.h>
#include <stdlib.h>

#include "codec.h"

#if VMIG_HAVE_LZ4

#include <lz4.h>

typedef struct lz4_ctx {
    uint32_t max_pages;
    uint32_t max_page_size;
    uint8_t *stage; /* staging buffer, stage_cap bytes */
    size_t stage_cap;
    void *state; /* encoder only: LZ4_sizeofState() bytes, kept off the stack */
} lz4_ctx;

static size_t lz4_bound(uint32_t n, uint32_t page_size)
{
    /* LZ4_COMPRESSBOUND() without its int range check: encode() refuses
     * inputs beyond LZ4_MAX_INPUT_SIZE itself. */
    uint64_t raw = (uint64_t)n * page_size;
    return (size_t)(raw + raw / 255 + 16);
}

static void lz4_free(void *ctx)
{
    lz4_ctx *c = ctx;
    if (!c)
        return;
    free(c->stage);
    free(c->state);
    free(c);
}

static int lz4_create(const vmig_codec_cfg *cfg, bool enc, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    if (!cfg->max_pages || !cfg->max_page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "lz4: max_pages %u and max_page_size %u must be >= 1", cfg->max_pages,
                              cfg->max_page_size);
    lz4_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vmig_error_set(err, VMIG_ENOMEM, "lz4: cannot allocate a codec context");
    c->max_pages = cfg->max_pages;
    c->max_page_size = cfg->max_page_size;
    if (enc) {
        c->state = malloc((size_t)LZ4_sizeofState());
        if (!c->state) {
            lz4_free(c);
            return vmig_error_set(err, VMIG_ENOMEM, "lz4: cannot allocate the compression state");
        }
    }
    *ctx = c;
    return 0;
}

static int lz4_enc_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    return lz4_create(cfg, true, ctx, err);
}

static int lz4_dec_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    return lz4_create(cfg, false, ctx, err);
}

/* The shape of a call against the limits, and the int range of the LZ4 API.
 * `code`: VMIG_EINVAL for the encoder, VMIG_EPROTO for the decoder. */
static int lz4_check_shape(const lz4_ctx *c, uint32_t n, uint32_t page_size, int code,
                           vmig_error *err)
{
    if (n < 1 || n > c->max_pages)
        return vmig_error_set(err, code, "lz4 packet: %u pages (must be 1..%u)", n, c->max_pages);
    if (page_size < 1 || page_size > c->max_page_size)
        return vmig_error_set(err, code, "lz4 packet: page size %u (must be 1..%u)", page_size,
                              c->max_page_size);
    uint64_t raw = (uint64_t)n * page_size;
    if (raw > LZ4_MAX_INPUT_SIZE)
        return vmig_error_set(err, code,
                              "lz4 packet: %u pages of %u bytes exceed LZ4's block limit of %u "
                              "bytes",
                              n, page_size, (unsigned)LZ4_MAX_INPUT_SIZE);
    return 0;
}

/* A staging buffer of at least `len` bytes (len was checked against the
 * configured limits by lz4_check_shape). */
static int lz4_stage(lz4_ctx *c, size_t len, vmig_error *err)
{
    if (len <= c->stage_cap)
        return 0;
    free(c->stage);
    c->stage_cap = 0;
    c->stage = malloc(len);
    if (!c->stage)
        return vmig_error_set(err, VMIG_ENOMEM, "lz4: cannot allocate a %zu-byte staging buffer",
                              len);
    c->stage_cap = len;
    return 0;
}

static int lz4_encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size,
                      unsigned flags, uint8_t *out, size_t cap, size_t *out_len, vmig_error *err)
{
    (void)flags; /* the staging copy is taken in any case */
    lz4_ctx *c = ctx;
    *out_len = 0;
    int rc = lz4_check_shape(c, n, page_size, VMIG_EINVAL, err);
    size_t raw = (size_t)n * page_size;
    if (!rc)
        rc = lz4_stage(c, raw, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        memcpy(c->stage + (size_t)i * page_size, pages[i], page_size);
    int dcap = cap > INT_MAX ? INT_MAX : (int)cap;
    int r = LZ4_compress_fast_extState(c->state, (const char *)c->stage, (char *)out, (int)raw,
                                       dcap, 1);
    if (r <= 0)
        return vmig_error_set(err, VMIG_EIO,
                              "lz4: compressing %u pages of %u bytes into %zu bytes failed", n,
                              page_size, cap);
    *out_len = (size_t)r;
    return 0;
}

static int lz4_decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                      uint32_t page_size, vmig_error *err)
{
    lz4_ctx *c = ctx;
    int rc = lz4_check_shape(c, n, page_size, VMIG_EPROTO, err);
    if (rc)
        return rc;
    size_t raw = (size_t)n * page_size;
    if (len < 1 || len > INT_MAX)
        return vmig_error_set(err, VMIG_EPROTO, "lz4 packet: %zu bytes (must be 1..%d)", len,
                              INT_MAX);
    bool contiguous = true;
    for (uint32_t i = 1; i < n && contiguous; i++)
        contiguous = (uintptr_t)pages[i] == (uintptr_t)pages[0] + (uintptr_t)i * page_size;
    uint8_t *dst = pages[0];
    if (!contiguous) {
        rc = lz4_stage(c, raw, err);
        if (rc)
            return rc;
        dst = c->stage;
    }
    /* Writes only inside dst[0 .. raw): the n pages or the staging buffer. */
    int r = LZ4_decompress_safe((const char *)in, (char *)dst, (int)len, (int)raw);
    if (r < 0)
        return vmig_error_set(err, VMIG_EPROTO,
                              "lz4 packet: corrupt block of %zu bytes for %u pages of %u bytes "
                              "(truncated, trailing bytes or more than %u pages; error at input "
                              "byte %d)",
                              len, n, page_size, n, -r - 1);
    if ((size_t)r != raw)
        return vmig_error_set(err, VMIG_EPROTO,
                              "lz4 packet: decodes to %d bytes, not %u pages of %u bytes (%zu)", r,
                              n, page_size, raw);
    if (!contiguous)
        for (uint32_t i = 0; i < n; i++)
            memcpy(pages[i], c->stage + (size_t)i * page_size, page_size);
    return 0;
}

const vmig_codec_ops vmig_codec_lz4_ops = {
    .id = VMIG_CODEC_LZ4,
    .name = "lz4",
    .missing = NULL,
    .bound = lz4_bound,
    .enc_create = lz4_enc_create,
    .enc_free = lz4_free,
    .encode = lz4_encode,
    .dec_create = lz4_dec_create,
    .dec_free = lz4_free,
    .decode = lz4_decode,
    .describe = NULL,
};

#else /* !VMIG_HAVE_LZ4 */

const vmig_codec_ops vmig_codec_lz4_ops = {
    .id = VMIG_CODEC_LZ4,
    .name = "lz4",
    .missing = "not built (liblz4 was not found at build time)",
};

#endif
