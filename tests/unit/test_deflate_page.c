/*
 * deflate-page: the format, interoperability, hostile input, the device path
 * on the software model, the incompressibility probe and describe().
 *
 *   format      lengths are u32 BE and sum to the payload; length == page_size
 *               is the raw page and page_size - 1 is a deflate stream (a
 *               hand-built stream of exactly page_size - 1 bytes); a page that
 *               does not shrink goes raw; a probe-flagged page goes raw
 *               without being compressed
 *   interop     every compressed page inflates with zlib limited to a 4 KiB
 *               window (1-byte output steps, so any distance beyond 4096 is
 *               refused: the negative control shows it is), at page sizes 4, 8
 *               and 64 KiB; zlib-made raw deflate decodes with the codec
 *   hostile     bad length tables and streams are refused with VMIG_EPROTO and
 *               a sentence; decoding next to PROT_NONE pages (ISA-L's assembly
 *               is invisible to ASan)
 *   model       batches at queue depth 1, 8 and 1024; BUSY retried at most
 *               VMIG_DP_SUBMIT_RETRIES times then the CPU (submits counted: no
 *               endless loop); failed compress jobs => raw, failed decompress
 *               jobs => CPU decode, both => VMIG_EPROTO with the queue drained;
 *               repeated destination pages; volatile staging; a device that
 *               does not open. Payloads shaped like the CPU path's (same
 *               raw pages, lengths within 1/32) and pages byte-identical.
 *   volatile    a writer thread races the encoder (CPU path without a copy,
 *               model path with its staging copy): every packet decodes
 *   probe       thousands of standard-mix pages: no text or zero page
 *               flagged, every random page flagged, a repeated 256-byte random
 *               block never flagged, and its cost well under 10% of
 *               compressing a text page
 *   describe    the sentence for every configuration
 */
#include "mix.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmig_config.h"
#include "src/codec/deflate_engine.h"

#if VMIG_HAVE_ZLIB
#include <zlib.h>
#endif

#include "../testutil.h"

#define PS    4096u
#define MAXN  128u
#define MAXPS 65536u

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static const vmig_codec_ops *ops;
static bool verbose;

/* ------------------------------------------------------------------ helpers */

static vmig_codec_cfg base_cfg(void)
{
    vmig_codec_cfg cfg = {.level = 1, .max_pages = MAXN, .max_page_size = MAXPS};
    cfg.deflate_path = VMIG_DEFLATE_PATH_SOFTWARE;
    return cfg;
}

static void *enc_new(const vmig_codec_cfg *cfg)
{
    void *c = NULL;
    vmig_error e = {0};
    int rc = ops->enc_create(cfg, &c, &e);
    REQUIRE(rc == 0 && c, "enc_create: %d %s", rc, e.msg);
    return c;
}

static void *dec_new(const vmig_codec_cfg *cfg)
{
    void *c = NULL;
    vmig_error e = {0};
    int rc = ops->dec_create(cfg, &c, &e);
    REQUIRE(rc == 0 && c, "dec_create: %d %s", rc, e.msg);
    return c;
}

static size_t encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t ps, unsigned flags,
                     uint8_t *out)
{
    size_t len = 0;
    vmig_error e = {0};
    int rc = ops->encode(ctx, pages, n, ps, flags, out, ops->bound(n, ps), &len, &e);
    REQUIRE(rc == 0, "encode of %u pages: %d %s", n, rc, e.msg);
    REQUIRE(len <= ops->bound(n, ps), "encode: %zu bytes beyond the bound %zu", len,
            ops->bound(n, ps));
    return len;
}

static int decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                  uint32_t ps, vmig_error *e)
{
    memset(e, 0, sizeof(*e));
    return ops->decode(ctx, in, len, pages, n, ps, e);
}

static void xmalloc_pages(uint8_t **buf, uint8_t **pages, uint32_t n, uint32_t ps)
{
    *buf = malloc((size_t)n * ps);
    REQUIRE(*buf, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        pages[i] = *buf + (size_t)i * ps;
}

/* A page of size ps built from standard-mix pages of one class. */
static void fill_page(uint8_t *dst, uint32_t ps, enum vmig_mix_class cls, uint64_t seed,
                      uint64_t idx)
{
    for (uint32_t off = 0; off < ps; off += VMIG_MIX_PAGE_SIZE)
        vmig_mix_page_fill(seed, cls, idx * (ps / VMIG_MIX_PAGE_SIZE) + off / VMIG_MIX_PAGE_SIZE,
                           dst + off);
}

static void fill_random(uint8_t *dst, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = tu_rand(&seed);
        memcpy(dst + i, &v, VMIG_MIN(8, len - i));
    }
}

/* A 256-byte random block repeated over the page: compresses very well. */
static void fill_rep256(uint8_t *dst, uint32_t ps, uint64_t seed)
{
    fill_random(dst, 256, seed);
    for (uint32_t off = 256; off < ps; off += 256)
        memcpy(dst + off, dst, 256);
}

static uint32_t len_at(const uint8_t *payload, uint32_t i)
{
    return vmig_get_be32(payload + 4ull * i);
}

/* The mixed packet most tests use: text, random, repeated-block and zero
 * pages in a fixed pattern. */
static enum vmig_mix_class kind_of(uint32_t i)
{
    static const enum vmig_mix_class k[8] = {VMIG_MIX_TEXT, VMIG_MIX_RANDOM, VMIG_MIX_TEXT,
                                             VMIG_MIX_TEXT, VMIG_MIX_RANDOM, VMIG_MIX_ZERO,
                                             VMIG_MIX_TEXT, VMIG_MIX_RANDOM};
    return k[i % 8];
}

static void fill_mixed(uint8_t *const *pages, uint32_t n, uint32_t ps, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++) {
        if (i % 11 == 10)
            fill_rep256(pages[i], ps, seed * 1000 + i);
        else
            fill_page(pages[i], ps, kind_of(i), seed, i);
    }
}

/* ------------------------------------------------------------------ format */

/* LSB-first bit writer for hand-built deflate streams. */
typedef struct bw {
    uint8_t *p;
    size_t bits;
} bw;

static void bw_put(bw *w, uint32_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++, w->bits++) {
        if (!(w->bits & 7))
            w->p[w->bits >> 3] = 0;
        w->p[w->bits >> 3] |= (uint8_t)(((v >> i) & 1) << (w->bits & 7));
    }
}

/* A Huffman code goes most significant bit first. */
static void bw_code(bw *w, uint32_t code, unsigned n)
{
    for (unsigned i = n; i-- > 0;)
        bw_put(w, (code >> i) & 1, 1);
}

/*
 * A raw deflate stream that inflates to exactly PS bytes: a non-final stored
 * block of `stored` bytes of `src`, then a final fixed-Huffman block: the
 * literal 'x' and a match of length 9 at distance 1 ("xxxxxxxxxx"), so
 * stored = PS - 10. Its length is 5 + stored + 4 = PS - 1 exactly.
 */
static size_t build_stream(uint8_t *out, const uint8_t *src, uint8_t *expect)
{
    uint32_t stored = PS - 10;
    out[0] = 0; /* BFINAL 0, BTYPE 00, padding */
    out[1] = (uint8_t)stored, out[2] = (uint8_t)(stored >> 8);
    out[3] = (uint8_t)~stored, out[4] = (uint8_t)(~stored >> 8);
    memcpy(out + 5, src, stored);
    bw w = {out + 5 + stored, 0};
    bw_put(&w, 1, 1);           /* BFINAL */
    bw_put(&w, 1, 2);           /* BTYPE 01: fixed Huffman */
    bw_code(&w, 0x30 + 'x', 8); /* literal 'x' (0..143: 8 bits from 0x30) */
    bw_code(&w, 263 - 256, 7);  /* length 9: symbol 263, 7 bits */
    bw_code(&w, 0, 5);          /* distance 1: code 0 */
    bw_code(&w, 0, 7);          /* end of block: symbol 256 */
    memcpy(expect, src, stored);
    memset(expect + stored, 'x', 10);
    return 5 + stored + (w.bits + 7) / 8;
}

static void test_format(void)
{
    vmig_codec_cfg cfg = base_cfg();
    void *enc = enc_new(&cfg), *dec = dec_new(&cfg);
    const uint32_t n = 12;
    uint8_t *buf, *pages[MAXN], *obuf, *opages[MAXN];
    xmalloc_pages(&buf, pages, n, PS);
    xmalloc_pages(&obuf, opages, n, PS);
    fill_mixed(pages, n, PS, 7);
    /* Page 11: random, but with a recurring 4-byte string inside the probe's
     * first sample: the probe lets it through, the compressor cannot shrink it. */
    fill_random(pages[11], PS, 99);
    memcpy(pages[11] + 20, pages[11] + 4, 4);
    REQUIRE(!vmig_codec_probe_incompressible(pages[11], PS), "test page 11 is probe-flagged");

    uint8_t *out = malloc(ops->bound(n, PS));
    REQUIRE(out, "out of memory");
    CHECK(ops->bound(n, PS) == 4ull * n + (uint64_t)n * PS, "bound(%u, %u) = %zu", n, PS,
          ops->bound(n, PS));
    struct vmig_dp_stats st0, st1;
    vmig_codec_deflate_page_stats(enc, &st0);
    size_t len = encode(enc, pages, n, PS, 0, out);
    vmig_codec_deflate_page_stats(enc, &st1);

    uint64_t sum = 0, off = 4ull * n;
    uint32_t nrandom = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = len_at(out, i);
        CHECK(l >= 1 && l <= PS, "page %u: length %u", i, l);
        bool random = i != 11 && i % 11 != 10 && kind_of(i) == VMIG_MIX_RANDOM;
        nrandom += random;
        if (random || i == 11) {
            CHECK(l == PS, "page %u (%s) has length %u, not raw", i,
                  i == 11 ? "unshrinkable" : "random", l);
            CHECK(l != PS || !memcmp(out + off, pages[i], PS), "raw page %u is not the page", i);
        } else {
            CHECK(l < PS / 2, "page %u (%s) compressed to only %u bytes", i,
                  i % 11 == 10 ? "repeated block" : vmig_mix_class_name(kind_of(i)), l);
        }
        sum += l;
        off += l;
    }
    CHECK(len == 4ull * n + sum, "payload %zu bytes, table says %llu", len,
          (unsigned long long)(4ull * n + sum));
    CHECK(st1.probed_raw - st0.probed_raw == nrandom,
          "the probe flagged %llu pages, expected the %u random ones",
          (unsigned long long)(st1.probed_raw - st0.probed_raw), nrandom);
    CHECK(st1.raw - st0.raw == nrandom + 1, "%llu raw pages, expected %u",
          (unsigned long long)(st1.raw - st0.raw), nrandom + 1);

    vmig_error e;
    int rc = decode(dec, out, len, opages, n, PS, &e);
    CHECK(rc == 0, "decode: %d %s", rc, e.msg);
    for (uint32_t i = 0; i < n; i++)
        CHECK(!memcmp(pages[i], opages[i], PS), "page %u differs after the round trip", i);

    /* The raw escape is exactly page_size: a page_size - 1 stream inflates. */
    uint8_t *pay = malloc(4 + PS), *expect = malloc(PS);
    REQUIRE(pay && expect, "out of memory");
    size_t sl = build_stream(pay + 4, pages[0], expect);
    REQUIRE(sl == PS - 1, "hand-built stream is %zu bytes", sl);
    vmig_put_be32(pay, (uint32_t)sl);
    rc = decode(dec, pay, 4 + sl, opages, 1, PS, &e);
    CHECK(rc == 0 && !memcmp(opages[0], expect, PS),
          "a %u-byte deflate stream (page_size - 1): %d %s", PS - 1, rc, e.msg);
    /* ... and the same bytes framed as page_size - 1 raw bytes are not a page. */
    vmig_put_be32(pay, PS - 1);
    memcpy(pay + 4, pages[1], PS - 1);
    rc = decode(dec, pay, 4 + PS - 1, opages, 1, PS, &e);
    CHECK(rc == VMIG_EPROTO && e.msg[0], "page_size - 1 random bytes decoded: %d", rc);
    /* length == page_size: copied as it is. */
    vmig_put_be32(pay, PS);
    memcpy(pay + 4, pages[1], PS);
    rc = decode(dec, pay, 4 + PS, opages, 1, PS, &e);
    CHECK(rc == 0 && !memcmp(opages[0], pages[1], PS), "raw page: %d %s", rc, e.msg);

    /* Shape limits: EINVAL for the encoder, EPROTO for the decoder. */
    size_t l2;
    memset(&e, 0, sizeof(e));
    rc = ops->encode(enc, pages, MAXN + 1, PS, 0, out, ops->bound(n, PS), &l2, &e);
    CHECK(rc == VMIG_EINVAL && e.msg[0], "encode of max_pages + 1 pages: %d", rc);
    rc = decode(dec, out, len, opages, MAXN + 1, PS, &e);
    CHECK(rc == VMIG_EPROTO && e.msg[0], "decode of max_pages + 1 pages: %d", rc);
    rc = decode(dec, out, len, opages, n, MAXPS * 2, &e);
    CHECK(rc == VMIG_EPROTO && e.msg[0], "decode with a page size beyond the limit: %d", rc);

    free(pay);
    free(expect);
    free(out);
    free(buf);
    free(obuf);
    ops->enc_free(enc);
    ops->dec_free(dec);
}

/* ------------------------------------------------------------------ interop */

#if VMIG_HAVE_ZLIB
/* Inflate with zlib, window 2^wbits, `step` output bytes per call. 0 when the
 * stream gives exactly len bytes and ends exactly at in_len. */
static int zlib_inflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t len, int wbits,
                        size_t step, const char **msg)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    REQUIRE(inflateInit2(&z, -wbits) == Z_OK, "inflateInit2");
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    int rc = Z_OK;
    size_t done = 0;
    while (rc == Z_OK && done < len + 1) {
        uint8_t extra;
        size_t want = VMIG_MIN(step, len - done);
        z.next_out = want ? out + done : &extra; /* past the end: one byte to see it ends */
        z.avail_out = want ? (uInt)want : 1;
        size_t before = z.total_out;
        rc = inflate(&z, Z_NO_FLUSH);
        done += z.total_out - before;
        if (rc == Z_BUF_ERROR && z.avail_in == 0)
            break;
    }
    *msg = z.msg;
    int ok = rc == Z_STREAM_END && z.total_out == len && z.avail_in == 0;
    inflateEnd(&z);
    return ok ? 0 : -1;
}

static size_t zlib_deflate(const uint8_t *in, size_t len, uint8_t *out, size_t cap, int wbits)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    REQUIRE(deflateInit2(&z, 1, Z_DEFLATED, -wbits, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    REQUIRE(rc == Z_STREAM_END, "zlib deflate: %d", rc);
    size_t r = z.total_out;
    deflateEnd(&z);
    return r;
}
#endif

static void test_interop(void)
{
#if !VMIG_HAVE_ZLIB
    fprintf(stderr, "interop: skipped (zlib not built)\n");
#else
    /* Negative control: a 32 KiB-window stream with distances of 5000 must be
     * refused by the 4 KiB check, or the check proves nothing. */
    {
        uint32_t ps = 16384;
        uint8_t *pg = malloc(ps), *z = malloc(2 * ps), *o = malloc(ps);
        REQUIRE(pg && z && o, "out of memory");
        fill_random(pg, 5000, 5);
        for (uint32_t i = 5000; i < ps; i++)
            pg[i] = pg[i - 5000];
        size_t zl = zlib_deflate(pg, ps, z, 2 * ps, 15);
        const char *msg = NULL;
        CHECK(zl < ps / 2, "control stream is %zu bytes", zl);
        CHECK(zlib_inflate(z, zl, o, ps, 15, ps, &msg) == 0, "control: 32 KiB inflate failed");
        CHECK(zlib_inflate(z, zl, o, ps, 12, 1, &msg) != 0,
              "the 4 KiB-window check accepted distances of 5000");
        if (verbose)
            fprintf(stderr, "interop: control refused with '%s'\n", msg ? msg : "?");
        free(pg);
        free(z);
        free(o);
    }

    static const uint32_t sizes[] = {4096, 8192, 65536};
    for (unsigned si = 0; si < VMIG_ARRAY_SIZE(sizes); si++) {
        uint32_t ps = sizes[si];
        uint32_t n = ps == 65536 ? 24 : 128;
        vmig_codec_cfg cfg = base_cfg();
        void *enc = enc_new(&cfg), *dec = dec_new(&cfg);
        uint8_t *buf, *pages[MAXN], *obuf, *opages[MAXN];
        xmalloc_pages(&buf, pages, n, ps);
        xmalloc_pages(&obuf, opages, n, ps);
        uint8_t *out = malloc(ops->bound(n, ps)), *tmp = malloc(ps);
        REQUIRE(out && tmp, "out of memory");
        uint32_t checked = 0;
        for (uint32_t round = 0; round < (ps == 4096 ? 8u : 1u); round++) {
            for (uint32_t i = 0; i < n; i++) {
                if (i % 5 == 4)
                    fill_rep256(pages[i], ps, round * 1000 + i);
                else
                    fill_page(pages[i], ps, VMIG_MIX_TEXT, 3 + round, i);
            }
            size_t len = encode(enc, pages, n, ps, 0, out);
            size_t off = 4ull * n;
            for (uint32_t i = 0; i < n; i++) {
                uint32_t l = len_at(out, i);
                if (l < ps) {
                    const char *msg = NULL;
                    int r = zlib_inflate(out + off, l, tmp, ps, 12, 1, &msg);
                    CHECK(r == 0 && !memcmp(tmp, pages[i], ps),
                          "page size %u, page %u (%u bytes): zlib with a 4 KiB window: %s", ps, i,
                          l, r ? (msg ? msg : "failed") : "wrong content");
                    checked++;
                }
                off += l;
            }
            CHECK(off == len, "table and payload disagree");

            /* zlib-made pages (4 KiB window, as IAA) decode with the codec. */
            off = 4ull * n;
            for (uint32_t i = 0; i < n; i++) {
                size_t zl = zlib_deflate(pages[i], ps, out + off, ps + 64, 12);
                if (zl >= ps) {
                    memcpy(out + off, pages[i], ps);
                    zl = ps;
                }
                vmig_put_be32(out + 4ull * i, (uint32_t)zl);
                off += zl;
            }
            vmig_error e;
            int rc = decode(dec, out, off, opages, n, ps, &e);
            CHECK(rc == 0, "zlib-made packet, page size %u: %d %s", ps, rc, e.msg);
            for (uint32_t i = 0; i < n && rc == 0; i++)
                CHECK(!memcmp(opages[i], pages[i], ps), "zlib-made page %u differs", i);
        }
        CHECK(checked >= n / 2, "page size %u: only %u compressed pages checked", ps, checked);
        if (verbose)
            fprintf(stderr, "interop: page size %u: %u pages inflate with a 4 KiB window\n", ps,
                    checked);
        free(out);
        free(tmp);
        free(buf);
        free(obuf);
        ops->enc_free(enc);
        ops->dec_free(dec);
    }
#endif
}

/* ------------------------------------------------------------------ hostile */

static void expect_refused(void *dec, const uint8_t *in, size_t len, uint32_t n, const char *what)
{
    uint8_t *buf, *pages[MAXN];
    xmalloc_pages(&buf, pages, n, PS);
    vmig_error e;
    int rc = decode(dec, in, len, pages, n, PS, &e);
    CHECK(rc == VMIG_EPROTO && e.code == rc && e.msg[0], "%s: returned %d '%s'", what, rc, e.msg);
    if (verbose && rc == VMIG_EPROTO)
        fprintf(stderr, "hostile: %-34s -> %s\n", what, e.msg);
    free(buf);
}

static void test_hostile(void)
{
    vmig_codec_cfg cfg = base_cfg();
    void *enc = enc_new(&cfg);
    const uint32_t n = 4;
    uint8_t *buf, *pages[MAXN];
    xmalloc_pages(&buf, pages, n, PS);
    fill_page(pages[0], PS, VMIG_MIX_TEXT, 11, 0);
    fill_page(pages[1], PS, VMIG_MIX_RANDOM, 11, 1);
    fill_page(pages[2], PS, VMIG_MIX_TEXT, 11, 2);
    fill_page(pages[3], PS, VMIG_MIX_TEXT, 11, 3);
    size_t cap = ops->bound(n, PS) + 16;
    uint8_t *good = malloc(cap), *bad = malloc(cap);
    REQUIRE(good && bad, "out of memory");
    size_t len = encode(enc, pages, n, PS, 0, good);
    uint32_t l0 = len_at(good, 0);
    REQUIRE(l0 < PS && len_at(good, 1) == PS, "unexpected shape");

    /* A fresh decoder per case: after a failure a context is only fit for free. */
#define REFUSE(blen, nn, what)                                                                     \
    do {                                                                                           \
        void *d = dec_new(&cfg);                                                                   \
        expect_refused(d, bad, (blen), (nn), (what));                                              \
        ops->dec_free(d);                                                                          \
    } while (0)
#define RESET() memcpy(bad, good, len)

    static const uint32_t badlens[] = {0, PS + 1, 0x80000000u, 0xFFFFFFFCu, 0xFFFFFFFFu};
    for (unsigned k = 0; k < VMIG_ARRAY_SIZE(badlens); k++) {
        char what[64];
        RESET();
        vmig_put_be32(bad + 8, badlens[k]);
        snprintf(what, sizeof(what), "length %u", badlens[k]);
        REFUSE(len, n, what);
    }
    RESET();
    REFUSE(len - 1, n, "sum one more than the payload");
    RESET();
    bad[len] = 0;
    REFUSE(len + 1, n, "sum one less than the payload");
    RESET();
    vmig_put_be32(bad, l0 + 1); /* table sum off by one, payload unchanged */
    REFUSE(len, n, "one length one too large");
    RESET();
    vmig_put_be32(bad, l0 - 1);
    REFUSE(len, n, "one length one too small");
    RESET();
    REFUSE(4 * n - 1, n, "4n > len");
    REFUSE(0, n, "empty payload");
    RESET();
    REFUSE(len, n + 1, "more pages than lengths");
    RESET();
    /* A huge length after a valid one (a 32-bit running sum would wrap). */
    vmig_put_be32(bad + 4, 0xFFFFFFFFu);
    REFUSE(len, n, "length 2^32 - 1 after a valid one");
    RESET();
    /* The stream of page 0 cut by a byte (and the table adjusted). */
    memmove(bad + 4ull * n + l0 - 1, good + 4ull * n + l0, len - 4ull * n - l0);
    vmig_put_be32(bad, l0 - 1);
    REFUSE(len - 1, n, "a stream one byte short");
    RESET();
    /* Garbage in place of page 0's stream. */
    memset(bad + 4ull * n, 0xff, l0);
    REFUSE(len, n, "garbage stream");
    RESET();
    /* One stray byte after page 0's stream (the table adjusted). */
    memmove(bad + 4ull * n + l0 + 1, good + 4ull * n + l0, len - 4ull * n - l0);
    bad[4ull * n + l0] = 0;
    vmig_put_be32(bad, l0 + 1);
    REFUSE(len + 1, n, "a byte after the final block");
    /* A stream that ends before the page is full: page 0 compressed from a
     * shorter input. */
    {
        uint8_t *one = malloc(8 + PS);
        REQUIRE(one, "out of memory");
        vmig_dp_sw *sw = NULL;
        REQUIRE(vmig_dp_sw_create(VMIG_DP_SW_ENC, &sw, NULL) == 0, "sw create");
        int r = vmig_dp_sw_compress(sw, pages[0], PS - 1, one + 4, PS - 1, NULL);
        REQUIRE(r > 0, "short compress");
        vmig_put_be32(one, (uint32_t)r);
        memcpy(bad, one, 4 + (size_t)r);
        REFUSE(4 + (size_t)r, 1, "a stream inflating to page_size - 1");
        r = vmig_dp_sw_compress(sw, pages[0], PS, one + 4, PS - 1, NULL);
        REQUIRE(r > 0, "compress");
        vmig_put_be32(one, (uint32_t)r);
        memcpy(bad, one, 4 + (size_t)r);
        memcpy(bad + 4 + r, one + 4, (size_t)r); /* a second page's worth of stream */
        vmig_put_be32(bad, 2u * (uint32_t)r);
        REFUSE(4 + 2 * (size_t)r, 1, "two streams in one page");
        vmig_dp_sw_free(sw);
        free(one);
    }
#undef REFUSE
#undef RESET

    /* Decoding next to PROT_NONE pages: ISA-L's assembly must neither read
     * past the payload nor write past the page. */
    {
        long sys = sysconf(_SC_PAGESIZE);
        REQUIRE(sys > 0 && (uint32_t)sys <= PS, "system page size");
        size_t plen = len;
        size_t span = ((plen + PS - 1) / PS) * PS;
        uint8_t *m = mmap(NULL, span + 3 * PS + (size_t)PS * n, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(m != MAP_FAILED, "mmap");
        /* [in ... span][guard][page][guard] ... input ends at its guard */
        uint8_t *in = m + span - plen;
        memcpy(in, good, plen);
        REQUIRE(mprotect(m + span, PS, PROT_NONE) == 0, "mprotect");
        uint8_t *pg = m + span + PS;
        REQUIRE(mprotect(pg + PS, PS, PROT_NONE) == 0, "mprotect");
        uint8_t *dst[MAXN];
        for (uint32_t i = 0; i < n; i++)
            dst[i] = pg; /* every page lands on the guarded one, in order */
        void *d = dec_new(&cfg);
        vmig_error e;
        int rc = decode(d, in, plen, dst, n, PS, &e);
        CHECK(rc == 0 && !memcmp(pg, pages[n - 1], PS), "guarded decode: %d %s", rc, e.msg);
        ops->dec_free(d);
        munmap(m, span + 3 * PS + (size_t)PS * n);
    }

    free(good);
    free(bad);
    free(buf);
    ops->enc_free(enc);
}

/* ------------------------------------------------------------------ model */

typedef struct model_run {
    const char *name;
    struct vmig_dp_model_params enc_p, dec_p;
    unsigned flags;
} model_run;

/* Same packet shape as the CPU path's: the same pages raw, every compressed
 * page within 1/32 of the CPU's length, and the same total within 1/64. Not
 * byte equality: ISA-L's output for one page is not reproducible across
 * stream instances (about one process in 30 here, pinned to one CPU and
 * without ASLR, a page came out one byte longer, still valid deflate), and a
 * real IAA differs from ISA-L anyway. The decode below proves placement. */
static bool same_shape(const uint8_t *a, size_t la, const uint8_t *b, size_t lb, uint32_t n)
{
    if (la + la / 64 < lb || lb + lb / 64 < la)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t x = len_at(a, i), y = len_at(b, i);
        if ((x == PS) != (y == PS) || x + x / 32 + 2 < y || y + y / 32 + 2 < x)
            return false;
    }
    return true;
}

/* Encode and decode `n` mixed pages through the model and the CPU path; the
 * payloads must have the same shape (the model runs the same compressor),
 * except where a failed compress job sent a page raw, and the pages must come
 * back exact. */
static void run_model(const model_run *r, uint32_t n, uint64_t seed, struct vmig_dp_stats *enc_st,
                      struct vmig_dp_stats *dec_st, bool *payload_same)
{
    vmig_codec_cfg sw_cfg = base_cfg();
    vmig_codec_cfg ecfg = base_cfg(), dcfg = base_cfg();
    ecfg.dp_model = &r->enc_p;
    dcfg.dp_model = &r->dec_p;
    void *sw_enc = enc_new(&sw_cfg), *enc = enc_new(&ecfg), *dec = dec_new(&dcfg);
    CHECK(!strcmp(ops->describe(enc), "model (tests)"), "%s: describe '%s'", r->name,
          ops->describe(enc));
    uint8_t *buf, *pages[MAXN], *obuf, *opages[MAXN];
    xmalloc_pages(&buf, pages, n, PS);
    xmalloc_pages(&obuf, opages, n, PS);
    fill_mixed(pages, n, PS, seed);
    uint8_t *a = malloc(ops->bound(n, PS)), *b = malloc(ops->bound(n, PS));
    REQUIRE(a && b, "out of memory");
    size_t la = encode(sw_enc, pages, n, PS, r->flags, a);
    size_t lb = encode(enc, pages, n, PS, r->flags, b);
    *payload_same = same_shape(a, la, b, lb, n);
    vmig_error e;
    int rc = decode(dec, b, lb, opages, n, PS, &e);
    CHECK(rc == 0, "%s: decode: %d %s", r->name, rc, e.msg);
    for (uint32_t i = 0; i < n && rc == 0; i++)
        CHECK(!memcmp(opages[i], pages[i], PS), "%s: page %u differs", r->name, i);
    vmig_codec_deflate_page_stats(enc, enc_st);
    vmig_codec_deflate_page_stats(dec, dec_st);
    free(a);
    free(b);
    free(buf);
    free(obuf);
    ops->enc_free(sw_enc);
    ops->enc_free(enc);
    ops->dec_free(dec);
}

/* Pages of fill_mixed() the encoder submits (the probe does not flag). */
static uint32_t submitted_pages(uint32_t n, uint64_t seed)
{
    uint8_t *pg = malloc(PS);
    uint8_t *pages[1] = {pg};
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i % 11 == 10)
            fill_rep256(pg, PS, seed * 1000 + i);
        else
            fill_page(pg, PS, kind_of(i), seed, i);
        k += !vmig_codec_probe_incompressible(pages[0], PS);
    }
    free(pg);
    return k;
}

static void test_model(void)
{
    const uint32_t n = MAXN;
    const uint64_t seed = 21;
    uint32_t sub = submitted_pages(n, seed);
    struct vmig_dp_stats es, ds;
    bool same;

    /* Batches at depth 1, 8 and beyond the packet. */
    static const uint32_t depths[] = {1, 8, 1024};
    for (unsigned k = 0; k < VMIG_ARRAY_SIZE(depths); k++) {
        struct vmig_dp_model_counters ce = {0}, cd = {0};
        model_run r = {.name = "depth"};
        r.enc_p = (struct vmig_dp_model_params){.depth = depths[k], .counters = &ce};
        r.dec_p = (struct vmig_dp_model_params){.depth = depths[k], .counters = &cd};
        run_model(&r, n, seed, &es, &ds, &same);
        uint64_t want_depth = VMIG_MIN(depths[k], sub); /* only unflagged pages are jobs */
        CHECK(same, "depth %u: payload shape differs from the CPU path's", depths[k]);
        CHECK(ce.submits == sub && ce.queued == sub && ce.busy == 0,
              "depth %u: %llu submits, %llu queued for %u pages", depths[k],
              (unsigned long long)ce.submits, (unsigned long long)ce.queued, sub);
        CHECK(ce.completed == es.dev_jobs && ce.completed + ce.failed == ce.queued,
              "depth %u: completed %llu failed %llu dev_jobs %llu", depths[k],
              (unsigned long long)ce.completed, (unsigned long long)ce.failed,
              (unsigned long long)es.dev_jobs);
        CHECK(ce.max_in_flight == want_depth, "depth %u: at most %llu in flight, expected %llu",
              depths[k], (unsigned long long)ce.max_in_flight, (unsigned long long)want_depth);
        CHECK(cd.max_in_flight >= 1 && cd.max_in_flight <= want_depth,
              "depth %u: decoder had %llu in flight", depths[k],
              (unsigned long long)cd.max_in_flight);
        CHECK(cd.completed == cd.queued && ds.cpu_failed == 0 && ds.cpu_busy == 0,
              "depth %u: decoder fell back to the CPU", depths[k]);
    }

    /* Always busy: 1 + VMIG_DP_SUBMIT_RETRIES submits per page, then the CPU. */
    {
        struct vmig_dp_model_counters ce = {0}, cd = {0};
        model_run r = {.name = "always busy"};
        r.enc_p = (struct vmig_dp_model_params){
            .depth = 16, .busy_period = 1, .busy_burst = 1, .counters = &ce};
        r.dec_p = r.enc_p;
        r.dec_p.counters = &cd;
        run_model(&r, n, seed, &es, &ds, &same);
        uint64_t per = 1 + VMIG_DP_SUBMIT_RETRIES;
        CHECK(same, "always busy: payload shape differs from the CPU path's");
        CHECK(ce.submits == per * sub && ce.busy == ce.submits && ce.queued == 0,
              "always busy: %llu submits (%llu busy) for %u pages, expected %llu",
              (unsigned long long)ce.submits, (unsigned long long)ce.busy, sub,
              (unsigned long long)(per * sub));
        CHECK(es.cpu_busy == sub && es.busy_retries == VMIG_DP_SUBMIT_RETRIES * (uint64_t)sub,
              "always busy: %llu pages on the CPU, %llu retries", (unsigned long long)es.cpu_busy,
              (unsigned long long)es.busy_retries);
        CHECK(cd.submits == per * ds.cpu_busy && cd.queued == 0 && ds.dev_jobs == 0,
              "always busy (decode): %llu submits for %llu pages", (unsigned long long)cd.submits,
              (unsigned long long)ds.cpu_busy);
    }

    /* Busy exactly VMIG_DP_SUBMIT_RETRIES times in a row: the last retry gets
     * through, no page on the CPU. One more busy: every other page on the CPU. */
    for (uint32_t extra = 0; extra <= 1; extra++) {
        struct vmig_dp_model_counters ce = {0};
        uint32_t burst = VMIG_DP_SUBMIT_RETRIES + extra;
        model_run r = {.name = "bursts"};
        r.enc_p = (struct vmig_dp_model_params){
            .depth = 8, .busy_period = burst + 1, .busy_burst = burst, .counters = &ce};
        r.dec_p = (struct vmig_dp_model_params){.depth = 8};
        run_model(&r, n, seed, &es, &ds, &same);
        /* Replay the plan: page by page, attempts until OK or 1 + retries. */
        uint64_t s = 0, cpu = 0, dev = 0;
        for (uint32_t p = 0; p < sub; p++) {
            unsigned att = 0;
            for (;; att++) {
                bool busy = s++ % (burst + 1) < burst;
                if (!busy) {
                    dev++;
                    break;
                }
                if (att == VMIG_DP_SUBMIT_RETRIES) {
                    cpu++;
                    break;
                }
            }
        }
        CHECK(same, "burst %u: payload shape differs", burst);
        CHECK(ce.submits == s && ce.queued == dev && es.cpu_busy == cpu,
              "burst %u: %llu submits, %llu queued, %llu CPU; plan says %llu, %llu, %llu", burst,
              (unsigned long long)ce.submits, (unsigned long long)ce.queued,
              (unsigned long long)es.cpu_busy, (unsigned long long)s, (unsigned long long)dev,
              (unsigned long long)cpu);
        CHECK(extra ? cpu > 0 : cpu == 0, "burst %u: %llu pages on the CPU", burst,
              (unsigned long long)cpu);
    }

    /* Every compress job fails on the device: those pages go raw. */
    {
        struct vmig_dp_model_counters ce = {0};
        model_run r = {.name = "compress fails"};
        r.enc_p = (struct vmig_dp_model_params){.depth = 8, .fail_every = 1, .counters = &ce};
        r.dec_p = (struct vmig_dp_model_params){.depth = 8};
        run_model(&r, n, seed, &es, &ds, &same);
        CHECK(ce.failed == sub && es.cpu_failed == sub && es.raw == n && es.dev_jobs == 0,
              "compress fails: %llu failed, %llu redone, %llu raw of %u",
              (unsigned long long)ce.failed, (unsigned long long)es.cpu_failed,
              (unsigned long long)es.raw, n);
        CHECK(ds.raw == n, "compress fails: decoder saw %llu raw pages",
              (unsigned long long)ds.raw);
    }

    /* Every third decompress job fails on the device: the CPU decodes it. */
    {
        struct vmig_dp_model_counters cd = {0};
        model_run r = {.name = "decompress fails"};
        r.enc_p = (struct vmig_dp_model_params){.depth = 8};
        r.dec_p = (struct vmig_dp_model_params){.depth = 8, .fail_every = 3, .counters = &cd};
        run_model(&r, n, seed, &es, &ds, &same);
        CHECK(same, "decompress fails: payload shape differs");
        CHECK(cd.failed == cd.queued / 3 && ds.cpu_failed == cd.failed &&
                  ds.dev_jobs == cd.completed && cd.failed > 0,
              "decompress fails: %llu queued, %llu failed, %llu redone on the CPU",
              (unsigned long long)cd.queued, (unsigned long long)cd.failed,
              (unsigned long long)ds.cpu_failed);
    }

    /* Volatile on the device path: staged copies, same payload. */
    {
        model_run r = {.name = "volatile", .flags = VMIG_ENC_VOLATILE};
        r.enc_p = (struct vmig_dp_model_params){.depth = 8};
        r.dec_p = r.enc_p;
        run_model(&r, n, seed, &es, &ds, &same);
        CHECK(same && es.volatile_copies == sub, "volatile: same %d, %llu copies for %u pages",
              same, (unsigned long long)es.volatile_copies, sub);
    }

    /* Device fails and the CPU fails too: VMIG_EPROTO, nothing left queued. */
    {
        struct vmig_dp_model_counters cd = {0};
        struct vmig_dp_model_params dp = {.depth = 4, .fail_every = 1, .counters = &cd};
        vmig_codec_cfg cfg = base_cfg(), dcfg = base_cfg();
        dcfg.dp_model = &dp;
        void *enc = enc_new(&cfg), *dec = dec_new(&dcfg);
        uint8_t *buf, *pages[MAXN];
        xmalloc_pages(&buf, pages, 16, PS);
        for (uint32_t i = 0; i < 16; i++)
            fill_page(pages[i], PS, VMIG_MIX_TEXT, 5, i);
        uint8_t *out = malloc(ops->bound(16, PS));
        size_t len = encode(enc, pages, 16, PS, 0, out);
        size_t off = 4ull * 16;
        for (uint32_t i = 0; i < 6; i++)
            off += len_at(out, i);
        memset(out + off, 0xff, len_at(out, 6)); /* page 6's stream: garbage */
        vmig_error e;
        int rc = decode(dec, out, len, pages, 16, PS, &e);
        CHECK(rc == VMIG_EPROTO && strstr(e.msg, "page 6 of 16"),
              "device and CPU both fail: %d '%s'", rc, e.msg);
        CHECK(cd.queued == cd.completed + cd.failed && cd.queued >= 7,
              "jobs left in flight: %llu queued, %llu done", (unsigned long long)cd.queued,
              (unsigned long long)(cd.completed + cd.failed));
        free(out);
        free(buf);
        ops->enc_free(enc);
        ops->dec_free(dec);
    }

    /* Every page to the same destination: packet order must win. */
    {
        struct vmig_dp_model_params dp = {.depth = 8};
        vmig_codec_cfg cfg = base_cfg(), dcfg = base_cfg();
        dcfg.dp_model = &dp;
        void *enc = enc_new(&cfg), *dec = dec_new(&dcfg);
        uint8_t *buf, *pages[MAXN], *one = malloc(PS), *same_pg[MAXN];
        xmalloc_pages(&buf, pages, 32, PS);
        fill_mixed(pages, 32, PS, 9);
        for (uint32_t i = 0; i < 32; i++)
            same_pg[i] = one;
        uint8_t *out = malloc(ops->bound(32, PS));
        size_t len = encode(enc, pages, 32, PS, 0, out);
        for (uint32_t last = 0; last < 2; last++) {
            /* 32 pages end on a random (raw) page, 31 on a text (compressed) one. */
            uint32_t nn = last ? 31 : 32;
            size_t l = last ? encode(enc, pages, nn, PS, 0, out) : len;
            vmig_error e;
            int rc = decode(dec, out, l, same_pg, nn, PS, &e);
            CHECK(rc == 0 && !memcmp(one, pages[nn - 1], PS),
                  "%u pages to one destination: %d %s, last page %s", nn, rc, e.msg,
                  rc                               ? "?"
                  : memcmp(one, pages[nn - 1], PS) ? "wrong"
                                                   : "right");
        }
        free(one);
        free(out);
        free(buf);
        ops->enc_free(enc);
        ops->dec_free(dec);
    }

    /* No device: the CPU, and describe() says why. */
    {
        struct vmig_dp_model_counters c = {0};
        struct vmig_dp_model_params p = {.open_fail = "model told to fail", .counters = &c};
        vmig_codec_cfg cfg = base_cfg();
        cfg.dp_model = &p;
        void *enc = enc_new(&cfg), *dec = dec_new(&cfg);
        CHECK(!strcmp(ops->describe(enc), "software (no IAA device: model told to fail)"),
              "describe '%s'", ops->describe(enc));
        uint8_t *buf, *pages[MAXN], *obuf, *opages[MAXN];
        xmalloc_pages(&buf, pages, 8, PS);
        xmalloc_pages(&obuf, opages, 8, PS);
        fill_mixed(pages, 8, PS, 4);
        uint8_t *out = malloc(ops->bound(8, PS));
        size_t len = encode(enc, pages, 8, PS, 0, out);
        vmig_error e;
        int rc = decode(dec, out, len, opages, 8, PS, &e);
        CHECK(rc == 0 && !memcmp(buf, obuf, 8ull * PS), "no device: %d %s", rc, e.msg);
        CHECK(c.opens == 2 && c.submits == 0, "no device: %llu opens, %llu submits",
              (unsigned long long)c.opens, (unsigned long long)c.submits);
        free(out);
        free(buf);
        free(obuf);
        ops->enc_free(enc);
        ops->dec_free(dec);
    }
}

/* ------------------------------------------------------------------ volatile */

typedef struct racer {
    uint8_t *region;
    size_t len;
    atomic_bool stop;
    uint64_t writes;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    uint64_t s = 77;
    uint8_t text[PS];
    vmig_mix_page_fill(1, VMIG_MIX_TEXT, 3, text);
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        uint64_t v = tu_rand(&s);
        size_t at = (size_t)(v % (r->len - 64));
        switch ((v >> 40) & 3) {
        case 0: /* a random word */
            __atomic_store_n((uint64_t *)(void *)(r->region + (at & ~(size_t)7)), tu_rand(&s),
                             __ATOMIC_RELAXED);
            break;
        case 1: /* a run of text bytes */
            for (size_t k = 0; k < 64; k++)
                __atomic_store_n(r->region + at + k, text[(at + k) % PS], __ATOMIC_RELAXED);
            break;
        default: /* single random bytes */
            for (size_t k = 0; k < 16; k++)
                __atomic_store_n(r->region + (tu_rand(&s) % r->len), (uint8_t)v, __ATOMIC_RELAXED);
            break;
        }
        r->writes++;
    }
    return NULL;
}

static void test_volatile(void)
{
    const uint32_t n = 16;
    const uint64_t budget_ns = (SANITIZED ? 300 : 600) * 1000000ull;
    for (int path = 0; path < 2; path++) {
        struct vmig_dp_model_params mp = {.depth = 4};
        vmig_codec_cfg cfg = base_cfg();
        if (path)
            cfg.dp_model = &mp;
        void *enc = enc_new(&cfg), *dec = dec_new(&cfg);
        racer r = {.len = (size_t)n * PS};
        uint8_t *pages[MAXN], *obuf, *opages[MAXN];
        xmalloc_pages(&r.region, pages, n, PS);
        xmalloc_pages(&obuf, opages, n, PS);
        fill_mixed(pages, n, PS, 2);
        atomic_init(&r.stop, false);
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, racer_main, &r) == 0, "pthread_create");
        uint8_t *out = malloc(ops->bound(n, PS));
        uint64_t t0 = tu_now_ns(), packets = 0, bad = 0;
        while (tu_now_ns() - t0 < budget_ns) {
            size_t len = encode(enc, pages, n, PS, VMIG_ENC_VOLATILE, out);
            vmig_error e;
            int rc = decode(dec, out, len, opages, n, PS, &e);
            if (rc) {
                if (!bad)
                    fprintf(stderr, "volatile (%s): packet %llu: %s\n", path ? "model" : "CPU",
                            (unsigned long long)packets, e.msg);
                bad++;
                ops->dec_free(dec);
                dec = dec_new(&cfg);
            }
            packets++;
        }
        atomic_store(&r.stop, true);
        pthread_join(t, NULL);
        struct vmig_dp_stats st;
        vmig_codec_deflate_page_stats(enc, &st);
        CHECK(bad == 0, "volatile (%s): %llu of %llu packets did not decode",
              path ? "model" : "CPU", (unsigned long long)bad, (unsigned long long)packets);
        CHECK(path ? st.volatile_copies > 0 : st.volatile_copies == 0, "volatile (%s): %llu copies",
              path ? "model" : "CPU", (unsigned long long)st.volatile_copies);
        if (verbose)
            fprintf(stderr, "volatile (%s): %llu packets against %llu writes, all decoded\n",
                    path ? "model, staged" : "CPU, no copy", (unsigned long long)packets,
                    (unsigned long long)r.writes);
        free(out);
        free(r.region);
        free(obuf);
        ops->enc_free(enc);
        ops->dec_free(dec);
    }
}

/* ------------------------------------------------------------------ probe */

static void test_probe(void)
{
    const uint64_t count = 4096;
    uint8_t *pg = malloc(PS);
    REQUIRE(pg, "out of memory");
    uint64_t flagged[VMIG_MIX_NCLASSES] = {0};
    for (uint64_t seed = 1; seed <= 2; seed++)
        for (int c = 0; c < VMIG_MIX_NCLASSES; c++)
            for (uint64_t i = 0; i < count; i++) {
                vmig_mix_page_fill(seed, (enum vmig_mix_class)c, i, pg);
                flagged[c] += vmig_codec_probe_incompressible(pg, PS);
            }
    CHECK(flagged[VMIG_MIX_ZERO] == 0, "%llu zero pages flagged",
          (unsigned long long)flagged[VMIG_MIX_ZERO]);
    CHECK(flagged[VMIG_MIX_TEXT] == 0, "%llu of %llu text pages flagged",
          (unsigned long long)flagged[VMIG_MIX_TEXT], (unsigned long long)(2 * count));
    CHECK(flagged[VMIG_MIX_RANDOM] == 2 * count, "%llu of %llu random pages flagged",
          (unsigned long long)flagged[VMIG_MIX_RANDOM], (unsigned long long)(2 * count));

    /* The standard mix as planned (runs of each class), 16 MiB. */
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    struct vmig_mix_plan *plan = NULL;
    REQUIRE(vmig_mix_plan_create(&mp, count, &plan) == 0, "plan");
    uint64_t wrong = 0;
    for (uint64_t i = 0; i < count; i++) {
        enum vmig_mix_class c = vmig_mix_plan_class(plan, i);
        vmig_mix_page_fill(mp.seed, c, i, pg);
        wrong += vmig_codec_probe_incompressible(pg, PS) != (c == VMIG_MIX_RANDOM);
    }
    CHECK(wrong == 0, "%llu of %llu planned mix pages misjudged", (unsigned long long)wrong,
          (unsigned long long)count);
    vmig_mix_plan_free(plan);

    /* A repeated 256-byte random block: diverse bytes, but it compresses. */
    vmig_dp_sw *sw = NULL;
    REQUIRE(vmig_dp_sw_create(VMIG_DP_SW_ENC, &sw, NULL) == 0, "sw create");
    uint8_t *z = malloc(PS);
    uint64_t rep_flagged = 0, worst = 0;
    for (uint64_t s = 0; s < 512; s++) {
        fill_rep256(pg, PS, s + 1);
        rep_flagged += vmig_codec_probe_incompressible(pg, PS);
        int l = vmig_dp_sw_compress(sw, pg, PS, z, PS - 1, NULL);
        worst = VMIG_MAX(worst, l > 0 ? (uint64_t)l : PS);
    }
    CHECK(rep_flagged == 0, "%llu of 512 repeated-block pages flagged",
          (unsigned long long)rep_flagged);
    CHECK(worst < PS / 4, "a repeated-block page compressed to %llu bytes",
          (unsigned long long)worst);

    /* Cost: the probe on random pages (its full work) against compressing
     * text pages, best of 5 rounds of 256 pages each. */
    const uint32_t np = 256;
    uint8_t *text = malloc((size_t)np * PS), *rnd = malloc((size_t)np * PS);
    REQUIRE(text && rnd, "out of memory");
    for (uint32_t i = 0; i < np; i++) {
        vmig_mix_page_fill(5, VMIG_MIX_TEXT, i, text + (size_t)i * PS);
        vmig_mix_page_fill(5, VMIG_MIX_RANDOM, i, rnd + (size_t)i * PS);
    }
    double best_probe_r = 1e30, best_probe_t = 1e30, best_comp = 1e30;
    volatile unsigned sink = 0;
    for (int round = 0; round < 5; round++) {
        uint64_t t0 = tu_now_ns();
        for (int rep = 0; rep < 8; rep++)
            for (uint32_t i = 0; i < np; i++)
                sink += vmig_codec_probe_incompressible(rnd + (size_t)i * PS, PS);
        uint64_t t1 = tu_now_ns();
        for (int rep = 0; rep < 8; rep++)
            for (uint32_t i = 0; i < np; i++)
                sink += vmig_codec_probe_incompressible(text + (size_t)i * PS, PS);
        uint64_t t2 = tu_now_ns();
        for (uint32_t i = 0; i < np; i++)
            sink += (unsigned)vmig_dp_sw_compress(sw, text + (size_t)i * PS, PS, z, PS - 1, NULL);
        uint64_t t3 = tu_now_ns();
        best_probe_r = VMIG_MIN(best_probe_r, (double)(t1 - t0) / (8.0 * np));
        best_probe_t = VMIG_MIN(best_probe_t, (double)(t2 - t1) / (8.0 * np));
        best_comp = VMIG_MIN(best_comp, (double)(t3 - t2) / np);
    }
    (void)sink;
    double frac = best_probe_r / best_comp;
    if (verbose || frac >= 0.05)
        fprintf(stderr,
                "probe: %.0f ns on a random page, %.0f ns on a text page; compressing a text "
                "page: %.0f ns (probe = %.1f%%)\n",
                best_probe_r, best_probe_t, best_comp, 100 * frac);
    if (SANITIZED)
        fprintf(stderr, "probe: cost not checked under a sanitizer (%.1f%%)\n", 100 * frac);
    else
        CHECK(frac < 0.10, "the probe costs %.1f%% of compressing a text page", 100 * frac);
    free(text);
    free(rnd);
    free(z);
    vmig_dp_sw_free(sw);
    free(pg);
}

/* ------------------------------------------------------------------ describe */

static void test_describe(void)
{
    static const struct {
        uint32_t path;
        const char *want; /* NULL: depends on QPL and the machine */
    } cases[] = {
        {VMIG_DEFLATE_PATH_SOFTWARE, "software"},
        {VMIG_DEFLATE_PATH_AUTO, VMIG_HAVE_QPL ? NULL : "software (hardware path not built)"},
        {VMIG_DEFLATE_PATH_HARDWARE, VMIG_HAVE_QPL ? NULL : "software (hardware path not built)"},
    };
    for (unsigned k = 0; k < VMIG_ARRAY_SIZE(cases); k++) {
        vmig_codec_cfg cfg = base_cfg();
        cfg.deflate_path = cases[k].path;
        for (int d = 0; d < 2; d++) {
            void *c = d ? dec_new(&cfg) : enc_new(&cfg);
            const char *got = ops->describe(c);
            if (cases[k].want)
                CHECK(got && !strcmp(got, cases[k].want), "path %u: '%s', expected '%s'",
                      cases[k].path, got, cases[k].want);
            else
                CHECK(got && (!strcmp(got, "hardware (IAA via QPL)") ||
                              !strncmp(got, "software (no IAA device: ", 25)),
                      "path %u: '%s'", cases[k].path, got);
            if (verbose && d == 0)
                fprintf(stderr, "describe: path %u: %s\n", cases[k].path, got);
            (d ? ops->dec_free : ops->enc_free)(c);
        }
    }
    vmig_codec_cfg cfg = base_cfg();
    cfg.deflate_path = 7;
    void *c = NULL;
    vmig_error e = {0};
    int rc = ops->enc_create(&cfg, &c, &e);
    CHECK(rc == VMIG_EINVAL && !c && e.msg[0], "deflate_path 7: %d", rc);
    CHECK(ops->describe(NULL) == NULL, "describe(NULL)");
}

int main(int argc, char **argv)
{
    verbose = argc > 1 && !strcmp(argv[1], "-v");
    ops = vmig_codec_get(VMIG_CODEC_DEFLATE_PAGE);
    REQUIRE(ops, "no deflate-page codec in the registry");
    if (ops->missing)
        SKIP("deflate-page: %s", ops->missing);
    test_format();
    test_interop();
    test_hostile();
    test_model();
    test_volatile();
    test_probe();
    test_describe();
    return tu_result("test_deflate_page");
}
