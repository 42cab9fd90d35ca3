/*
 * zlib: one raw deflate stream per channel and direction, for the whole
 * migration (no zlib header, no adler32: the packet crc and the final
 * digest cover the data).
 *
 * Each packet feeds its pages to the stream and ends with Z_SYNC_FLUSH, so
 * that it ends on a byte boundary with an empty stored block and decodes on
 * arrival with the window the previous zlib packets of the channel left:
 *
 *   packet k:  | blocks holding pages 0..n-1 ... | EOB | 000 pad | 00 00 ff ff |
 *                                                  empty stored block (sync)
 *
 * The decoder inflates straight into the destination pages and accepts a
 * packet only when (1) the n pages are filled exactly, (2) the stream then
 * stands on the header of a stored block (inflateSyncPoint) and (3) the last
 * four bytes are that block's LEN/NLEN 00 00 ff ff. This refuses a packet
 * cut anywhere, including one cut just before its sync marker, which would
 * otherwise fill its pages and leave the stream out of step with the
 * sender's.
 */
#include "vmig_config.h"

#include <limits.h>
#include <stdlib.h>

#include "codec.h"

#if VMIG_HAVE_ZLIB

#define ZLIB_CONST
#include <zlib.h>

#define ZLIB_WINDOW_BITS 15 /* negative in the Init2 calls: raw deflate */
#define ZLIB_MEM_LEVEL   8

/* The empty stored block's LEN and NLEN, the last bytes of every packet. */
static const uint8_t zlib_sync_marker[4] = {0x00, 0x00, 0xff, 0xff};

typedef struct zlib_enc {
    z_stream zs;
    bool zs_init;
    bool broken; /* an encode failed: the stream is out of step with the peer */
    uint32_t max_pages;
    uint32_t max_page_size;
    uint8_t *copy; /* max_page_size bytes: VMIG_ENC_VOLATILE feeds pages from here */
} zlib_enc;

typedef struct zlib_dec {
    z_stream zs;
    bool zs_init;
    bool broken; /* a decode failed: only dec_free is allowed */
    uint32_t max_pages;
    uint32_t max_page_size;
} zlib_dec;

/*
 * For windowBits 15 and memLevel 8 zlib's deflateBound() is the tight
 * bound raw + raw/4096 + raw/16384 + raw/2^25 + 7: a block holds at most
 * 16383 symbols and is never larger than its stored form (5 bytes more). A
 * packet adds the block the flush cuts short and the empty stored block
 * (about 12 bytes). raw/2048 + 64 covers both with room to spare, and stays
 * far below vmig_wire_codec_bound() (raw/8 + 1024).
 */
static size_t zlib_bound(uint32_t n, uint32_t page_size)
{
    uint64_t raw = (uint64_t)n * page_size;
    return (size_t)(raw + (raw >> 11) + 64);
}

static int zlib_check_cfg(const vmig_codec_cfg *cfg, vmig_error *err)
{
    if (!cfg->max_pages || !cfg->max_page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "zlib: max_pages %u and max_page_size %u must be >= 1",
                              cfg->max_pages, cfg->max_page_size);
    return 0;
}

/* `code`: VMIG_EINVAL for the encoder (a caller bug), VMIG_EPROTO for the
 * decoder (the numbers came from the peer's header). */
static int zlib_check_shape(uint32_t n, uint32_t page_size, uint32_t max_pages,
                            uint32_t max_page_size, int code, vmig_error *err)
{
    if (n < 1 || n > max_pages)
        return vmig_error_set(err, code, "zlib packet: %u pages (must be 1..%u)", n, max_pages);
    if (page_size < 1 || page_size > max_page_size)
        return vmig_error_set(err, code, "zlib packet: page size %u (must be 1..%u)", page_size,
                              max_page_size);
    return 0;
}

/* ---------------- encoder ---------------- */

static void zlib_enc_free(void *ctx)
{
    zlib_enc *e = ctx;
    if (!e)
        return;
    if (e->zs_init)
        deflateEnd(&e->zs);
    free(e->copy);
    free(e);
}

static int zlib_enc_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    int rc = zlib_check_cfg(cfg, err);
    if (rc)
        return rc;
    if (cfg->level < 1 || cfg->level > 9)
        return vmig_error_set(err, VMIG_EINVAL, "zlib: level %u (must be 1..9)", cfg->level);
    zlib_enc *e = calloc(1, sizeof(*e));
    if (!e)
        return vmig_error_set(err, VMIG_ENOMEM, "zlib: cannot allocate an encoder context");
    e->max_pages = cfg->max_pages;
    e->max_page_size = cfg->max_page_size;
    e->copy = malloc(cfg->max_page_size);
    if (!e->copy) {
        zlib_enc_free(e);
        return vmig_error_set(err, VMIG_ENOMEM, "zlib: cannot allocate a %u-byte page copy",
                              cfg->max_page_size);
    }
    int zr = deflateInit2(&e->zs, (int)cfg->level, Z_DEFLATED, -ZLIB_WINDOW_BITS, ZLIB_MEM_LEVEL,
                          Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        zlib_enc_free(e);
        return vmig_error_set(err, zr == Z_MEM_ERROR ? VMIG_ENOMEM : VMIG_EINVAL,
                              "zlib: deflateInit2 failed (%d)", zr);
    }
    e->zs_init = true;
    *ctx = e;
    return 0;
}

static int zlib_encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size,
                       unsigned flags, uint8_t *out, size_t cap, size_t *out_len, vmig_error *err)
{
    zlib_enc *e = ctx;
    *out_len = 0;
    if (e->broken)
        return vmig_error_set(err, VMIG_EIO, "zlib: the stream broke in an earlier packet");
    int rc = zlib_check_shape(n, page_size, e->max_pages, e->max_page_size, VMIG_EINVAL, err);
    if (rc)
        return rc;
    uInt avail = cap > UINT_MAX ? UINT_MAX : (uInt)cap;
    e->zs.next_out = out;
    e->zs.avail_out = avail;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *src = pages[i];
        if (flags & VMIG_ENC_VOLATILE) {
            /* zlib does not promise to read its input only once (its stored
             * path copies input to the output and to the window separately),
             * so the page changing under deflate() could desynchronise the
             * two ends; QEMU copies for the same reason. The copy is reused
             * for the next page because deflate() returns only once it has
             * taken all of its input into its window (or when the output is
             * full, which is an error here). */
            memcpy(e->copy, src, page_size);
            src = e->copy;
        }
        e->zs.next_in = src;
        e->zs.avail_in = page_size;
        int flush = i + 1 == n ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        int zr = deflate(&e->zs, flush);
        if (zr != Z_OK) {
            e->broken = true;
            return vmig_error_set(err, VMIG_EIO, "zlib: deflate failed (%d) at page %u of %u", zr,
                                  i + 1, n);
        }
        /* With output room left, deflate() has taken the whole page and, for
         * the sync flush, written everything out. No room left means the
         * bound was wrong: the stream cannot be continued then. */
        if (e->zs.avail_out == 0 || e->zs.avail_in != 0) {
            e->broken = true;
            return vmig_error_set(err, VMIG_EIO,
                                  "zlib: output of page %u of %u does not fit in %zu bytes", i + 1,
                                  n, cap);
        }
    }
    *out_len = (size_t)(avail - e->zs.avail_out);
    e->zs.next_in = NULL; /* no pointer into the caller's buffers survives the call */
    e->zs.next_out = NULL;
    return 0;
}

/* ---------------- decoder ---------------- */

static void zlib_dec_free(void *ctx)
{
    zlib_dec *d = ctx;
    if (!d)
        return;
    if (d->zs_init)
        inflateEnd(&d->zs);
    free(d);
}

static int zlib_dec_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    *ctx = NULL;
    int rc = zlib_check_cfg(cfg, err);
    if (rc)
        return rc;
    zlib_dec *d = calloc(1, sizeof(*d));
    if (!d)
        return vmig_error_set(err, VMIG_ENOMEM, "zlib: cannot allocate a decoder context");
    d->max_pages = cfg->max_pages;
    d->max_page_size = cfg->max_page_size;
    int zr = inflateInit2(&d->zs, -ZLIB_WINDOW_BITS);
    if (zr != Z_OK) {
        zlib_dec_free(d);
        return vmig_error_set(err, zr == Z_MEM_ERROR ? VMIG_ENOMEM : VMIG_EINVAL,
                              "zlib: inflateInit2 failed (%d)", zr);
    }
    d->zs_init = true;
    *ctx = d;
    return 0;
}

/* One inflate() call; a return that is not progress is a sentence. */
static int zlib_inflate_step(zlib_dec *d, uint32_t page, uint32_t n, vmig_error *err)
{
    int zr = inflate(&d->zs, Z_NO_FLUSH);
    switch (zr) {
    case Z_OK:
    case Z_BUF_ERROR: /* no progress possible: the caller looks at avail_in/out */
        return 0;
    case Z_STREAM_END:
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: the deflate stream ends (final block) in page %u of %u",
                              page, n);
    case Z_NEED_DICT:
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: asks for a dictionary in page %u of %u", page, n);
    case Z_DATA_ERROR:
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: corrupt deflate data in page %u of %u (%s)", page, n,
                              d->zs.msg ? d->zs.msg : "no detail");
    case Z_MEM_ERROR:
        return vmig_error_set(err, VMIG_ENOMEM, "zlib: out of memory in page %u of %u", page, n);
    default:
        return vmig_error_set(err, VMIG_EIO, "zlib: inflate failed (%d) in page %u of %u", zr, page,
                              n);
    }
}

static int zlib_decode_body(zlib_dec *d, const uint8_t *in, size_t len, uint8_t *const *pages,
                            uint32_t n, uint32_t page_size, vmig_error *err)
{
    if (len > UINT_MAX)
        return vmig_error_set(err, VMIG_EPROTO, "zlib packet: %zu bytes (too large)", len);
    if (len < sizeof(zlib_sync_marker) + 1)
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: %zu bytes (too short for data and a sync flush)", len);
    size_t body = len - sizeof(zlib_sync_marker);
    d->zs.next_in = in;
    d->zs.avail_in = (uInt)body;
    for (uint32_t i = 0; i < n; i++) {
        /* Every byte inflate() produces lands in pages[i][0 .. page_size). */
        d->zs.next_out = pages[i];
        d->zs.avail_out = page_size;
        while (d->zs.avail_out) {
            uInt in0 = d->zs.avail_in, out0 = d->zs.avail_out;
            int rc = zlib_inflate_step(d, i + 1, n, err);
            if (rc)
                return rc;
            if (d->zs.avail_in == in0 && d->zs.avail_out == out0) {
                if (d->zs.avail_in == 0)
                    return vmig_error_set(err, VMIG_EPROTO,
                                          "zlib packet: truncated: %zu bytes end in page %u of %u "
                                          "(%u of %u bytes filled)",
                                          len, i + 1, n, page_size - d->zs.avail_out, page_size);
                return vmig_error_set(err, VMIG_EPROTO,
                                      "zlib packet: inflate makes no progress in page %u of %u",
                                      i + 1, n);
            }
        }
    }
    /* inflate() stops with input left only when it needs more output. */
    if (d->zs.avail_in)
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: decodes to more than %u pages (%u input bytes left)", n,
                              d->zs.avail_in + (uInt)sizeof(zlib_sync_marker));
    if (inflateSyncPoint(&d->zs) != 1) {
        /* Output still pending (a literal or match cut by the page end)
         * means too much data; otherwise the packet does not end with the
         * sync flush. */
        uint8_t scratch;
        d->zs.next_out = &scratch;
        d->zs.avail_out = 1;
        int rc = zlib_inflate_step(d, n, n, err);
        if (rc)
            return rc;
        if (d->zs.avail_out == 0)
            return vmig_error_set(err, VMIG_EPROTO, "zlib packet: decodes to more than %u pages",
                                  n);
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: does not end with a sync flush after page %u of %u "
                              "(truncated or trailing bytes)",
                              n, n);
    }
    return 0;
}

static int zlib_decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                       uint32_t page_size, vmig_error *err)
{
    zlib_dec *d = ctx;
    if (d->broken)
        return vmig_error_set(err, VMIG_EPROTO,
                              "zlib packet: the stream broke in an earlier packet");
    int rc = zlib_check_shape(n, page_size, d->max_pages, d->max_page_size, VMIG_EPROTO, err);
    if (!rc)
        rc = zlib_decode_body(d, in, len, pages, n, page_size, err);
    /* zlib_decode_body() checked len >= 5 before it returned 0. */
    const uint8_t *tail = rc ? NULL : in + len - sizeof(zlib_sync_marker);
    if (!rc && memcmp(tail, zlib_sync_marker, sizeof(zlib_sync_marker)))
        rc = vmig_error_set(err, VMIG_EPROTO,
                            "zlib packet: ends with %02x %02x %02x %02x, not the sync flush's "
                            "00 00 ff ff",
                            tail[0], tail[1], tail[2], tail[3]);
    if (!rc) {
        /* Take the marker, so that the next packet starts on a block header.
         * It cannot produce output (LEN 0), hence the one-byte scratch. */
        uint8_t scratch;
        d->zs.next_in = tail;
        d->zs.avail_in = sizeof(zlib_sync_marker);
        d->zs.next_out = &scratch;
        d->zs.avail_out = 1;
        rc = zlib_inflate_step(d, n, n, err);
        if (!rc && (d->zs.avail_in || !d->zs.avail_out))
            rc = vmig_error_set(err, VMIG_EPROTO, "zlib packet: the sync flush does not decode");
    }
    d->zs.next_in = NULL; /* no pointer into the caller's buffers survives the call */
    d->zs.next_out = NULL;
    if (rc)
        d->broken = true;
    return rc;
}

const vmig_codec_ops vmig_codec_zlib_ops = {
    .id = VMIG_CODEC_ZLIB,
    .name = "zlib",
    .missing = NULL,
    .bound = zlib_bound,
    .enc_create = zlib_enc_create,
    .enc_free = zlib_enc_free,
    .encode = zlib_encode,
    .dec_create = zlib_dec_create,
    .dec_free = zlib_dec_free,
    .decode = zlib_decode,
    .describe = NULL,
};

#else /* !VMIG_HAVE_ZLIB */

const vmig_codec_ops vmig_codec_zlib_ops = {
    .id = VMIG_CODEC_ZLIB,
    .name = "zlib",
    .missing = "not built (zlib was not found at build time)",
};

#endif
