/*
 * zstd: one zstd frame per channel and direction that never ends, window
 * 2^VMIG_ZSTD_WINDOW_LOG. Each packet is the output of feeding its pages
 * with ZSTD_e_continue and flushing after the last one (ZSTD_e_flush), so
 * it holds only whole blocks and decodes on arrival:
 *
 *   first packet:  | frame header | block | block | ... |
 *   later packets: | block | block | ... |
 *   block:         | 3-byte header (last, type, size) | content |
 *                    content: raw: size bytes; RLE: 1 byte; compressed: size bytes
 *
 * Before decoding, the decoder walks the block headers of the packet (RFC
 * 8878, section 3.1.1.2): the packet must be whole non-empty blocks, none
 * with the last-block flag (the frame never ends), and the first packet must start
 * with a frame header. Then the pages must be filled exactly with nothing
 * left over, in the input or in zstd's own buffer. Without the walk, junk
 * after the last block could be swallowed as a block header and leave the
 * stream out of step with the sender's.
 */
#include "vmig_config.h"

#include <stdlib.h>

#include "codec.h"

#if VMIG_HAVE_ZSTD

#include <zstd.h>

#define ZSTD_BLOCK_HEADER_SIZE 3u

typedef struct zstd_enc {
    ZSTD_CCtx *cctx;
    bool broken; /* an encode failed: the stream is out of step with the peer */
    uint32_t max_pages;
    uint32_t max_page_size;
} zstd_enc;

typedef struct zstd_dec {
    ZSTD_DCtx *dctx;
    bool started; /* the frame header has been seen */
    bool broken;  /* a decode failed: only dec_free is allowed */
    uint32_t max_pages;
    uint32_t max_page_size;
} zstd_dec;

/*
 * A packet holds ceil(raw / 128 KiB) blocks of at most their raw size plus
 * a 3-byte header each (zstd stores a block that does not shrink), plus the
 * frame header (at most 18 bytes) in the first packet. ZSTD_COMPRESSBOUND
 * (raw/256 and a margin of 64 bytes for small inputs) covers that, and 32
 * bytes more cover the frame header; all far below vmig_wire_codec_bound().
 */
static size_t zstd_bound(uint32_t n, uint32_t page_size)
{
    uint64_t raw = (uint64_t)n * page_size;
    uint64_t margin = raw < (128u << 10) ? ((128u << 10) - raw) >> 11 : 0;
    return (size_t)(raw + (raw >> 8) + margin + 32);
}

static int zstd_check_cfg(const vmig_codec_cfg *cfg, vmig_error *err)
{
    if (!cfg->max_pages || !cfg->max_page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "zstd: max_pages %u and max_page_size %u must be >= 1",
                              cfg->max_pages, cfg->max_page_size);
    return 0;
}

/* `code`: VMIG_EINVAL for the encoder (a caller bug), VMIG_EPROTO for the
 * decoder (the numbers came from the peer's header). */
static int zstd_check_shape(uint32_t n, uint32_t page_size, uint32_t max_pages,
                            uint32_t max_page_size, int code, vmig_error *err)
{
    if (n < 1 || n > max_pages)
        return vmig_error_set(err, code, "zstd packet: %u pages (must be 1..%u)", n, max_pages);
    if (page_size < 1 || page_size > max_page_size)
        return vmig_error_set(err, code, "zstd packet: page size %u (must be 1..%u)", page_size,
                              max_page_size);
    return 0;
}

/* ---------------- encoder ---------------- */

static void zstd_enc_free(void *ctx)
{
    zstd_enc *e = ctx;
    if (!e)
        return;
    ZSTD_freeCCtx(e->cctx);
    free(e);
}

static int zstd_enc_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    int rc = zstd_check_cfg(cfg, err);
    if (rc)
        return rc;
    if (cfg->level < 1 || cfg->level > 19)
        return vmig_error_set(err, VMIG_EINVAL, "zstd: level %u (must be 1..19)", cfg->level);
    zstd_enc *e = calloc(1, sizeof(*e));
    if (!e)
        return vmig_error_set(err, VMIG_ENOMEM, "zstd: cannot allocate an encoder context");
    e->max_pages = cfg->max_pages;
    e->max_page_size = cfg->max_page_size;
    e->cctx = ZSTD_createCCtx();
    if (!e->cctx) {
        zstd_enc_free(e);
        return vmig_error_set(err, VMIG_ENOMEM, "zstd: cannot allocate a compression context");
    }
    /* ZSTD_c_stableInBuffer stays unset on purpose: in its default buffered
     * mode zstd copies every input byte into its own window buffer before it
     * looks at it, so pages that change while encode() runs cannot make the
     * stream inconsistent, and VMIG_ENC_VOLATILE needs no copy here
     * (tests/unit/test_codec_volatile.c checks it). */
    size_t zr = ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_compressionLevel, (int)cfg->level);
    if (!ZSTD_isError(zr))
        zr = ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_windowLog, VMIG_ZSTD_WINDOW_LOG);
    if (ZSTD_isError(zr)) {
        zstd_enc_free(e);
        return vmig_error_set(err, VMIG_EINVAL, "zstd: cannot set level %u / window log %d: %s",
                              cfg->level, VMIG_ZSTD_WINDOW_LOG, ZSTD_getErrorName(zr));
    }
    *ctx = e;
    return 0;
}

static int zstd_encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size,
                       unsigned flags, uint8_t *out, size_t cap, size_t *out_len, vmig_error *err)
{
    (void)flags; /* zstd copies its input (see zstd_enc_create) */
    zstd_enc *e = ctx;
    *out_len = 0;
    if (e->broken)
        return vmig_error_set(err, VMIG_EIO, "zstd: the stream broke in an earlier packet");
    int rc = zstd_check_shape(n, page_size, e->max_pages, e->max_page_size, VMIG_EINVAL, err);
    if (rc)
        return rc;
    ZSTD_outBuffer ob = {out, cap, 0};
    for (uint32_t i = 0; i < n; i++) {
        ZSTD_inBuffer ib = {pages[i], page_size, 0};
        ZSTD_EndDirective mode = i + 1 == n ? ZSTD_e_flush : ZSTD_e_continue;
        for (;;) {
            size_t left = ZSTD_compressStream2(e->cctx, &ob, &ib, mode);
            if (ZSTD_isError(left)) {
                e->broken = true;
                return vmig_error_set(err, VMIG_EIO,
                                      "zstd: compression failed at page %u of %u: %s", i + 1, n,
                                      ZSTD_getErrorName(left));
            }
            if (mode == ZSTD_e_continue ? ib.pos == ib.size : left == 0)
                break;
            if (ob.pos == ob.size) {
                /* Cannot happen with cap >= bound(); the stream is lost. */
                e->broken = true;
                return vmig_error_set(err, VMIG_EIO,
                                      "zstd: output of page %u of %u does not fit in %zu bytes",
                                      i + 1, n, cap);
            }
        }
    }
    *out_len = ob.pos;
    return 0;
}

/* ---------------- decoder ---------------- */

static void zstd_dec_free(void *ctx)
{
    zstd_dec *d = ctx;
    if (!d)
        return;
    ZSTD_freeDCtx(d->dctx);
    free(d);
}

static int zstd_dec_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    int rc = zstd_check_cfg(cfg, err);
    if (rc)
        return rc;
    zstd_dec *d = calloc(1, sizeof(*d));
    if (!d)
        return vmig_error_set(err, VMIG_ENOMEM, "zstd: cannot allocate a decoder context");
    d->max_pages = cfg->max_pages;
    d->max_page_size = cfg->max_page_size;
    d->dctx = ZSTD_createDCtx();
    if (!d->dctx) {
        zstd_dec_free(d);
        return vmig_error_set(err, VMIG_ENOMEM, "zstd: cannot allocate a decompression context");
    }
    /* The window bounds what the decoder allocates for a peer's frame. */
    size_t zr = ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax, VMIG_ZSTD_WINDOW_LOG);
    if (ZSTD_isError(zr)) {
        zstd_dec_free(d);
        return vmig_error_set(err, VMIG_EINVAL, "zstd: cannot set the window log limit %d: %s",
                              VMIG_ZSTD_WINDOW_LOG, ZSTD_getErrorName(zr));
    }
    *ctx = d;
    return 0;
}

static uint32_t zstd_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * The packet's structure, without decoding: [frame header] whole blocks.
 * The frame header's fields are checked by zstd itself (window size, reserved
 * bit); only its length is needed here.
 */
static int zstd_walk(const uint8_t *in, size_t len, bool first, vmig_error *err)
{
    size_t pos = 0;
    if (first) {
        /* Also keeps skippable and legacy frames away from the decoder. */
        if (len < 5 || zstd_le32(in) != ZSTD_MAGICNUMBER)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: the first packet of a stream does not start with "
                                  "a zstd frame header");
        static const uint8_t did_len[4] = {0, 1, 2, 4};
        static const uint8_t fcs_len[4] = {0, 2, 4, 8};
        uint8_t fhd = in[4];
        bool single = fhd & 0x20;
        size_t hlen = 5 + (single ? 0 : 1) + did_len[fhd & 3] + fcs_len[fhd >> 6] +
                      (single && (fhd >> 6) == 0 ? 1 : 0);
        if (len < hlen)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: %zu bytes, truncated in the %zu-byte frame header",
                                  len, hlen);
        pos = hlen;
    }
    if (pos == len)
        return vmig_error_set(err, VMIG_EPROTO, "zstd packet: %zu bytes and no block", len);
    for (unsigned b = 1; pos < len; b++) {
        if (len - pos < ZSTD_BLOCK_HEADER_SIZE)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: truncated header of block %u at byte %zu of %zu", b,
                                  pos, len);
        uint32_t bh = (uint32_t)in[pos] | (uint32_t)in[pos + 1] << 8 | (uint32_t)in[pos + 2] << 16;
        uint32_t type = (bh >> 1) & 3, size = bh >> 3;
        if (bh & 1)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: block %u at byte %zu ends the frame (vmig streams "
                                  "never end)",
                                  b, pos);
        if (type == 3)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: block %u at byte %zu has the reserved type 3", b,
                                  pos);
        /* libzstd never emits an empty block before the last one (it skips
         * a flush with nothing buffered), so one here is bytes that do not
         * belong to the packet. */
        if (size == 0)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: block %u at byte %zu is empty (trailing bytes?)", b,
                                  pos);
        if (size > ZSTD_BLOCKSIZE_MAX)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: block %u at byte %zu declares %u bytes (limit %u)",
                                  b, pos, size, (unsigned)ZSTD_BLOCKSIZE_MAX);
        size_t clen = type == 1 ? 1 : size; /* RLE: one byte repeated `size` times */
        pos += ZSTD_BLOCK_HEADER_SIZE;
        if (clen > len - pos)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "zstd packet: truncated: block %u needs %zu bytes at byte %zu, "
                                  "%zu remain",
                                  b, clen, pos, len - pos);
        pos += clen;
    }
    return 0;
}

static int zstd_decode_pages(zstd_dec *d, const uint8_t *in, size_t len, uint8_t *const *pages,
                             uint32_t n, uint32_t page_size, vmig_error *err)
{
    ZSTD_inBuffer ib = {in, len, 0};
    for (uint32_t i = 0; i < n; i++) {
        /* Every byte zstd produces lands in pages[i][0 .. page_size). */
        ZSTD_outBuffer ob = {pages[i], page_size, 0};
        while (ob.pos < ob.size) {
            size_t in0 = ib.pos, out0 = ob.pos;
            size_t r = ZSTD_decompressStream(d->dctx, &ob, &ib);
            if (ZSTD_isError(r))
                return vmig_error_set(err, VMIG_EPROTO, "zstd packet: %s in page %u of %u",
                                      ZSTD_getErrorName(r), i + 1, n);
            if (r == 0)
                return vmig_error_set(err, VMIG_EPROTO,
                                      "zstd packet: the frame ends in page %u of %u", i + 1, n);
            if (ib.pos == in0 && ob.pos == out0) {
                if (ib.pos == ib.size)
                    return vmig_error_set(err, VMIG_EPROTO,
                                          "zstd packet: truncated: %zu bytes end in page %u of %u "
                                          "(%zu of %u bytes filled)",
                                          len, i + 1, n, ob.pos, page_size);
                return vmig_error_set(err, VMIG_EPROTO, "zstd packet: no progress in page %u of %u",
                                      i + 1, n);
            }
        }
    }
    /* zstd stops with input left only when its output is full. */
    if (ib.pos != ib.size)
        return vmig_error_set(err, VMIG_EPROTO,
                              "zstd packet: decodes to more than %u pages (%zu input bytes left "
                              "after page %u of %u)",
                              n, ib.size - ib.pos, n, n);
    /* All input taken and the pages full: zstd may still hold decoded bytes
     * in its buffer (a block that decodes beyond the last page). */
    uint8_t scratch;
    ZSTD_outBuffer ob = {&scratch, 1, 0};
    size_t r = ZSTD_decompressStream(d->dctx, &ob, &ib);
    if (ZSTD_isError(r))
        return vmig_error_set(err, VMIG_EPROTO, "zstd packet: %s after page %u of %u",
                              ZSTD_getErrorName(r), n, n);
    if (ob.pos)
        return vmig_error_set(err, VMIG_EPROTO, "zstd packet: decodes to more than %u pages", n);
    if (r == 0)
        return vmig_error_set(err, VMIG_EPROTO, "zstd packet: the frame ends after page %u of %u",
                              n, n);
    return 0;
}

static int zstd_decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                       uint32_t page_size, vmig_error *err)
{
    zstd_dec *d = ctx;
    if (d->broken)
        return vmig_error_set(err, VMIG_EPROTO,
                              "zstd packet: the stream broke in an earlier packet");
    int rc = zstd_check_shape(n, page_size, d->max_pages, d->max_page_size, VMIG_EPROTO, err);
    if (!rc)
        rc = zstd_walk(in, len, !d->started, err);
    d->started = true;
    if (!rc)
        rc = zstd_decode_pages(d, in, len, pages, n, page_size, err);
    if (rc)
        d->broken = true;
    return rc;
}

const vmig_codec_ops vmig_codec_zstd_ops = {
    .id = VMIG_CODEC_ZSTD,
    .name = "zstd",
    .missing = NULL,
    .bound = zstd_bound,
    .enc_create = zstd_enc_create,
    .enc_free = zstd_enc_free,
    .encode = zstd_encode,
    .dec_create = zstd_dec_create,
    .dec_free = zstd_dec_free,
    .decode = zstd_decode,
    .describe = NULL,
};

#else /* !VMIG_HAVE_ZSTD */

const vmig_codec_ops vmig_codec_zstd_ops = {
    .id = VMIG_CODEC_ZSTD,
    .name = "zstd",
    .missing = "not built (libzstd was not found at build time)",
};

#endif
