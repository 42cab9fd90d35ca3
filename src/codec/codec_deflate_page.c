/*
 * deflate-page: every normal page its own raw deflate stream with a 4 KiB
 * window, the format of Intel IAA (QPL) and of QEMU's multifd-qpl.
 *
 * Payload of an n-page packet (codec.h, docs/wire-format.md):
 *
 *   +----------+----------+-----+------------+--------+-----+------------+
 *   | len[0]   | len[1]   | ... | len[n-1]   | data 0 | ... | data n-1   |
 *   | u32 BE   | u32 BE   |     | u32 BE     | len[0] |     | len[n-1]   |
 *   +----------+----------+-----+------------+--------+-----+------------+
 *   len == page_size     the raw page
 *   1..page_size-1       one raw deflate stream, BFINAL set, that inflates to
 *                        exactly page_size bytes and ends exactly at len
 *   payload length == 4n + sum(len)
 *
 * Where pages are compressed (chosen at enc_create/dec_create, describe()):
 *   cfg.dp_model      the software model of the device (tests)
 *   AUTO / HARDWARE   IAA through QPL when it was built and a device opens,
 *                     else the CPU (HARDWARE unavailable is not an error)
 *   SOFTWARE          the CPU
 *
 * The CPU path is ISA-L igzip (stateless, level 1, hist_bits 12), or zlib
 * (level 1, windowBits -12) when ISA-L is absent. Every page first goes
 * through the incompressibility probe; a flagged page is sent raw at the cost
 * of the probe, and the output of a compression is capped at page_size - 1, so
 * a page that does not shrink overflows and is sent raw.
 *
 * The device path (QEMU's scheme, improved): every page of the packet becomes
 * one job; up to `depth` jobs are in flight, waited for in submission order.
 * A submit that finds the queue busy is retried VMIG_DP_SUBMIT_RETRIES times,
 * then that one page is done on the CPU at once. A compress job the device
 * fails sends its page raw; a decompress job the device fails (or whose
 * output or consumption is not exact) is decoded on the CPU, which has the
 * last word: if it fails too the packet is refused.
 *
 * Pages changing underneath (VMIG_ENC_VOLATILE): both CPU compressors read
 * each input byte once (ISA-L level 1 turns it into tokens, then builds the
 * Huffman code from the tokens' histogram; zlib copies it into its window),
 * so the stream is well-formed whatever the page did meanwhile and decodes to
 * page_size bytes of some content. No copy on the CPU path (test_deflate_page
 * races a writer against it). The device's dynamic Huffman mode reads the
 * page twice (statistics, then compression): a byte that changed in between
 * could have no code, so on the device path a volatile page is copied into a
 * per-slot staging buffer first.
 */
#include <stdio.h>
#include <stdlib.h>

#include "deflate_engine.h"

#if VMIG_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#elif VMIG_HAVE_ZLIB
#include <zlib.h>
#endif

#define DP_HAVE_SW   (VMIG_HAVE_ISAL || VMIG_HAVE_ZLIB)
#define DP_HIST_BITS 12 /* IAA compresses with, and decompresses only, a 4 KiB window */

/* ------------------------------------------------------------------ */
/* the CPU deflate                                                     */

struct vmig_dp_sw {
#if VMIG_HAVE_ISAL
    struct isal_zstream *zs;  /* about 80 KiB: heap, not stack */
    uint8_t *level_buf;       /* ISAL_DEF_LVL1_DEFAULT bytes */
    struct inflate_state *is; /* about 75 KiB */
#elif VMIG_HAVE_ZLIB
    z_stream def, inf;
    bool def_ok, inf_ok;
#else
    int unused;
#endif
};

void vmig_dp_sw_free(vmig_dp_sw *sw)
{
    if (!sw)
        return;
#if VMIG_HAVE_ISAL
    free(sw->zs);
    free(sw->level_buf);
    free(sw->is);
#elif VMIG_HAVE_ZLIB
    if (sw->def_ok)
        deflateEnd(&sw->def);
    if (sw->inf_ok)
        inflateEnd(&sw->inf);
#endif
    free(sw);
}

int vmig_dp_sw_create(unsigned what, vmig_dp_sw **out, vmig_error *err)
{
    *out = NULL;
#if !DP_HAVE_SW
    (void)what;
    return vmig_error_set(err, VMIG_ENOTSUP, "deflate-page: %s",
                          vmig_codec_deflate_page_ops.missing);
#else
    vmig_dp_sw *sw = calloc(1, sizeof(*sw));
    if (!sw)
        goto nomem;
#if VMIG_HAVE_ISAL
    if (what & VMIG_DP_SW_ENC) {
        /* The level-1 size ISA-L documents: room for the tokens of 64 Ki
         * input bytes, so a page up to 64 KiB is one block (one Huffman
         * code); the part a 4 KiB page never touches is never faulted in. */
        sw->zs = malloc(sizeof(*sw->zs));
        sw->level_buf = malloc(ISAL_DEF_LVL1_DEFAULT);
        if (!sw->zs || !sw->level_buf)
            goto nomem;
    }
    if (what & VMIG_DP_SW_DEC) {
        sw->is = malloc(sizeof(*sw->is));
        if (!sw->is)
            goto nomem;
    }
#else
    if (what & VMIG_DP_SW_ENC) {
        /* windowBits -12: raw deflate, 4 KiB window (zlib keeps distances
         * below 4096 - 262); memLevel 8, zlib's default, was the fastest here. */
        int zrc = deflateInit2(&sw->def, 1, Z_DEFLATED, -DP_HIST_BITS, 8, Z_DEFAULT_STRATEGY);
        if (zrc != Z_OK)
            goto zfail;
        sw->def_ok = true;
    }
    if (what & VMIG_DP_SW_DEC) {
        /* -15: accept every valid window, not only IAA's. */
        int zrc = inflateInit2(&sw->inf, -15);
        if (zrc != Z_OK)
            goto zfail;
        sw->inf_ok = true;
    }
#endif
    *out = sw;
    return 0;
#if VMIG_HAVE_ZLIB && !VMIG_HAVE_ISAL
zfail:
    vmig_dp_sw_free(sw);
    return vmig_error_set(err, VMIG_ENOMEM, "deflate-page: zlib could not set up a stream");
#endif
nomem:
    vmig_dp_sw_free(sw);
    return vmig_error_set(err, VMIG_ENOMEM, "deflate-page: out of memory for the compressor");
#endif
}

int vmig_dp_sw_compress(vmig_dp_sw *sw, const uint8_t *in, uint32_t len, uint8_t *out, uint32_t cap,
                        vmig_error *err)
{
#if VMIG_HAVE_ISAL
    struct isal_zstream *zs = sw->zs;
    isal_deflate_stateless_init(zs);
    zs->level = 1;
    zs->level_buf = sw->level_buf;
    zs->level_buf_size = ISAL_DEF_LVL1_DEFAULT;
    zs->gzip_flag = IGZIP_DEFLATE;
    zs->hist_bits = DP_HIST_BITS;
    zs->flush = NO_FLUSH; /* one final block: BFINAL set */
    zs->end_of_stream = 1;
    zs->next_in = (uint8_t *)in; /* ISA-L's prototype is not const; it only reads */
    zs->avail_in = len;
    zs->next_out = out;
    zs->avail_out = cap;
    int rc = isal_deflate_stateless(zs);
    if (rc == COMP_OK && zs->avail_in == 0 && zs->total_out >= 1 && zs->total_out <= cap)
        return (int)zs->total_out;
    if (rc == STATELESS_OVERFLOW)
        return 0;
    return vmig_error_set(err, VMIG_EIO, "deflate-page: isal_deflate_stateless failed (%d)", rc);
#elif VMIG_HAVE_ZLIB
    z_stream *z = &sw->def;
    if (deflateReset(z) != Z_OK)
        return vmig_error_set(err, VMIG_EIO, "deflate-page: deflateReset failed");
    z->next_in = (Bytef *)in;
    z->avail_in = len;
    z->next_out = out;
    z->avail_out = cap;
    int rc = deflate(z, Z_FINISH);
    if (rc == Z_STREAM_END && z->total_out >= 1 && z->total_out <= cap)
        return (int)z->total_out;
    if (rc == Z_OK || rc == Z_BUF_ERROR)
        return 0; /* the output buffer filled first */
    return vmig_error_set(err, VMIG_EIO, "deflate-page: zlib deflate failed (%d)", rc);
#else
    (void)sw, (void)in, (void)len, (void)out, (void)cap;
    return vmig_error_set(err, VMIG_ENOTSUP, "deflate-page: %s",
                          vmig_codec_deflate_page_ops.missing);
#endif
}

int vmig_dp_sw_decompress(vmig_dp_sw *sw, const uint8_t *in, uint32_t len, uint8_t *out,
                          uint32_t out_len, const char **why)
{
#if VMIG_HAVE_ISAL
    struct inflate_state *is = sw->is;
    isal_inflate_init(is);
    is->next_in = (uint8_t *)in;
    is->avail_in = len;
    is->next_out = out;
    is->avail_out = out_len;
    is->crc_flag = ISAL_DEFLATE;
    int rc = isal_inflate_stateless(is);
    switch (rc) {
    case ISAL_DECOMP_OK:
        if (is->total_out != out_len) {
            *why = "the stream ends before the page is full";
            return VMIG_EPROTO;
        }
        if (is->avail_in != 0) {
            *why = "bytes follow the end of the stream";
            return VMIG_EPROTO;
        }
        return 0;
    case ISAL_END_INPUT:
        *why = "the stream is truncated";
        return VMIG_EPROTO;
    case ISAL_OUT_OVERFLOW:
        *why = "the stream inflates to more than the page";
        return VMIG_EPROTO;
    case ISAL_INVALID_LOOKBACK:
        *why = "the stream refers back beyond its start";
        return VMIG_EPROTO;
    default:
        *why = "the stream is corrupt";
        return VMIG_EPROTO;
    }
#elif VMIG_HAVE_ZLIB
    z_stream *z = &sw->inf;
    if (inflateReset(z) != Z_OK) {
        *why = "zlib could not reset its inflate stream";
        return VMIG_EPROTO;
    }
    z->next_in = (Bytef *)in;
    z->avail_in = len;
    z->next_out = out;
    z->avail_out = out_len;
    int rc = inflate(z, Z_FINISH);
    if (rc == Z_STREAM_END) {
        if (z->total_out != out_len) {
            *why = "the stream ends before the page is full";
            return VMIG_EPROTO;
        }
        if (z->avail_in != 0) {
            *why = "bytes follow the end of the stream";
            return VMIG_EPROTO;
        }
        return 0;
    }
    if (rc == Z_DATA_ERROR)
        *why = "the stream is corrupt";
    else if (z->avail_out == 0)
        *why = "the stream inflates to more than the page";
    else
        *why = "the stream is truncated";
    return VMIG_EPROTO;
#else
    (void)sw, (void)in, (void)len, (void)out, (void)out_len;
    *why = "deflate-page was not built";
    return VMIG_EPROTO;
#endif
}

/* ------------------------------------------------------------------ */
/* context                                                             */

typedef struct dp_ctx {
    bool enc;
    uint32_t max_pages, max_page_size;
    vmig_dp_sw *sw;
    /* The device path; eng == NULL: the CPU does every page. */
    const vmig_dp_engine_ops *eops;
    void *eng;
    uint32_t depth;     /* jobs in flight at most */
    vmig_dp_job *jobs;  /* [depth], slot i's job */
    uint32_t *job_page; /* [depth], the page index of slot i's job */
    uint32_t *lens;     /* encode: [max_pages], each page's length or DP_LEN_RAW */
    /* Decode: in-flight jobs per hash of their destination page, so that a
     * page listed twice is written in packet order (pages[i] may repeat). */
    uint16_t dst_count[256];
    /* Encode: volatile pages are copied here first, one page per slot. */
    uint8_t *stage;
    uint32_t stage_page;
    char desc[96];
    struct vmig_dp_stats st;
} dp_ctx;

static size_t dp_bound(uint32_t n, uint32_t page_size)
{
    return (size_t)(4ull * n + (uint64_t)n * page_size);
}

static void dp_free(void *ctx)
{
    dp_ctx *c = ctx;
    if (!c)
        return;
    if (c->eops)
        c->eops->close(c->eng);
    vmig_dp_sw_free(c->sw);
    free(c->jobs);
    free(c->job_page);
    free(c->lens);
    free(c->stage);
    free(c);
}

/* Opens the engine the configuration asks for; a missing device only sets
 * the description. */
static int dp_open_engine(dp_ctx *c, const vmig_codec_cfg *cfg, vmig_error *err)
{
    const vmig_dp_engine_ops *eops = NULL;
    const void *arg = NULL;
    if (cfg->dp_model) {
        eops = &vmig_dp_engine_model;
        arg = cfg->dp_model;
        snprintf(c->desc, sizeof(c->desc), "model (tests)");
    } else if (cfg->deflate_path == VMIG_DEFLATE_PATH_SOFTWARE) {
        snprintf(c->desc, sizeof(c->desc), "software");
        return 0;
    } else {
#if VMIG_DP_QPL
        eops = &vmig_dp_engine_qpl;
        snprintf(c->desc, sizeof(c->desc), "hardware (IAA via QPL)");
#else
        snprintf(c->desc, sizeof(c->desc), "software (hardware path not built)");
        return 0;
#endif
    }

    uint32_t slots = VMIG_MIN(c->max_pages, VMIG_DP_MAX_DEPTH);
    char why[64] = "";
    int rc = eops->open(arg, slots, &c->eng, &c->depth, why, sizeof(why));
    if (rc == VMIG_ENOTSUP) {
        snprintf(c->desc, sizeof(c->desc), "software (no IAA device: %s)",
                 why[0] ? why : "unknown reason");
        c->eng = NULL;
        return 0;
    }
    if (rc)
        return vmig_error_set(err, rc, "deflate-page: cannot open the %s engine: %s", eops->name,
                              why[0] ? why : vmig_strerror(rc));
    c->eops = eops;
    if (c->depth < 1 || c->depth > slots)
        c->depth = slots;
    c->jobs = calloc(c->depth, sizeof(*c->jobs));
    c->job_page = calloc(c->depth, sizeof(*c->job_page));
    if (c->enc)
        c->lens = calloc(c->max_pages, sizeof(*c->lens));
    if (!c->jobs || !c->job_page || (c->enc && !c->lens))
        return vmig_error_set(err, VMIG_ENOMEM, "deflate-page: out of memory for %u jobs",
                              c->depth);
    return 0;
}

static int dp_create(const vmig_codec_cfg *cfg, void **ctx, bool enc, vmig_error *err)
{
    *ctx = NULL;
    if (!cfg->max_pages || !cfg->max_page_size)
        return vmig_error_set(err, VMIG_EINVAL,
                              "deflate-page: max_pages %u and max_page_size %u must be >= 1",
                              cfg->max_pages, cfg->max_page_size);
    if (cfg->deflate_path > VMIG_DEFLATE_PATH_HARDWARE)
        return vmig_error_set(err, VMIG_EINVAL,
                              "deflate-page: deflate_path %u is not auto (0), software (1) or "
                              "hardware (2)",
                              cfg->deflate_path);
    dp_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return vmig_error_set(err, VMIG_ENOMEM, "deflate-page: cannot allocate a codec context");
    c->enc = enc;
    c->max_pages = cfg->max_pages;
    c->max_page_size = cfg->max_page_size;
    int rc = vmig_dp_sw_create(enc ? VMIG_DP_SW_ENC : VMIG_DP_SW_DEC, &c->sw, err);
    if (!rc)
        rc = dp_open_engine(c, cfg, err);
    if (rc) {
        dp_free(c);
        return rc;
    }
    *ctx = c;
    return 0;
}

static int dp_enc_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    return dp_create(cfg, ctx, true, err);
}

static int dp_dec_create(const vmig_codec_cfg *cfg, void **ctx, vmig_error *err)
{
    return dp_create(cfg, ctx, false, err);
}

static const char *dp_describe(void *ctx)
{
    return ctx ? ((dp_ctx *)ctx)->desc : NULL;
}

void vmig_codec_deflate_page_stats(void *ctx, struct vmig_dp_stats *out)
{
    if (ctx)
        *out = ((dp_ctx *)ctx)->st;
    else
        memset(out, 0, sizeof(*out));
}

/* The shape (n, page_size) against the context's limits: VMIG_EINVAL for
 * the encoder (a caller bug), VMIG_EPROTO for the decoder (peer numbers). */
static int dp_check_shape(const dp_ctx *c, uint32_t n, uint32_t page_size, int code,
                          vmig_error *err)
{
    if (n < 1 || n > c->max_pages)
        return vmig_error_set(err, code, "deflate-page packet: %u pages (must be 1..%u)", n,
                              c->max_pages);
    if (page_size < 2 || page_size > c->max_page_size)
        return vmig_error_set(err, code, "deflate-page packet: page size %u (must be 2..%u)",
                              page_size, c->max_page_size);
    return 0;
}

/* Submit `job` in `slot`, retrying a busy queue VMIG_DP_SUBMIT_RETRIES
 * times. True when it was queued. */
static bool dp_submit(dp_ctx *c, uint32_t slot, vmig_dp_job *job)
{
    for (unsigned attempt = 0;; attempt++) {
        int s = c->eops->submit(c->eng, slot, job);
        if (s == VMIG_DP_OK)
            return true;
        if (s != VMIG_DP_BUSY || attempt == VMIG_DP_SUBMIT_RETRIES)
            return false;
        c->st.busy_retries++;
    }
}

/* ------------------------------------------------------------------ */
/* encode                                                              */

#define DP_LEN_RAW UINT32_MAX /* lens[] of the device path: send the page raw */

/*
 * Device path. While jobs are in flight, page i's data is kept at its
 * worst-case place out + 4n + i * page_size ("slot i" below, not to be
 * confused with the engine's job slots); the length table is written and the
 * data moved down in page order at the end. Moving page i writes only below
 * the end of slot i, so it never touches data of a later page.
 */
static int dp_encode_dev(dp_ctx *c, uint8_t *const *pages, uint32_t n, uint32_t ps, unsigned flags,
                         uint8_t *out, size_t *out_len, vmig_error *err)
{
    const size_t base = 4ull * n;
    bool copy = flags & VMIG_ENC_VOLATILE;
    if (copy && c->stage_page < ps) {
        free(c->stage);
        c->stage_page = 0;
        if (!(c->stage = malloc((size_t)c->depth * ps)))
            return vmig_error_set(err, VMIG_ENOMEM,
                                  "deflate-page: out of memory for %u staging pages", c->depth);
        c->stage_page = ps;
    }
    uint32_t *lens = c->lens;
    uint32_t head = 0, inflight = 0; /* the oldest job's slot; jobs in flight */
    uint32_t end = n;                /* pages to go through: n, or fewer after a failure */
    int rc = 0;

    for (uint32_t i = 0; i <= end; i++) {
        /* Make room (or, after the last page, drain): wait for the oldest. */
        while (inflight && (inflight == c->depth || i == end)) {
            vmig_dp_job *j = &c->jobs[head];
            uint32_t p = c->job_page[head];
            int s = c->eops->wait(c->eng, head, j);
            if (s == VMIG_DP_OK && j->out_len >= 1 && j->out_len < ps) {
                lens[p] = j->out_len;
                c->st.dev_jobs++;
            } else {
                lens[p] = DP_LEN_RAW; /* the device failed it, e.g. it did not shrink */
                c->st.cpu_failed++;
            }
            head = (head + 1) % c->depth;
            inflight--;
        }
        if (i == end)
            break;

        const uint8_t *page = pages[i];
        uint8_t *dst = out + base + (size_t)i * ps;
        if (vmig_codec_probe_incompressible(page, ps)) {
            lens[i] = DP_LEN_RAW;
            c->st.probed_raw++;
            continue;
        }
        uint32_t slot = (head + inflight) % c->depth;
        if (copy) {
            uint8_t *st = c->stage + (size_t)slot * ps;
            memcpy(st, page, ps);
            page = st;
            c->st.volatile_copies++;
        }
        vmig_dp_job *j = &c->jobs[slot];
        *j = (vmig_dp_job){
            .op = VMIG_DP_COMPRESS, .in_len = ps, .out_cap = ps - 1, .in = page, .out = dst};
        if (dp_submit(c, slot, j)) {
            c->job_page[slot] = i;
            inflight++;
            continue;
        }
        /* The queue stayed busy: this page on the CPU, now. */
        c->st.cpu_busy++;
        int r = vmig_dp_sw_compress(c->sw, page, ps, dst, ps - 1, err);
        if (r < 0) {
            rc = r;
            end = i + 1; /* drain what is in flight, then fail */
            continue;
        }
        lens[i] = r ? (uint32_t)r : DP_LEN_RAW;
    }
    if (rc)
        return rc;

    /* Move the data down in page order and write the table. */
    size_t pos = base;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = lens[i];
        if (l == DP_LEN_RAW) {
            memcpy(out + pos, pages[i], ps);
            l = ps;
            c->st.raw++;
        } else {
            memmove(out + pos, out + base + (size_t)i * ps, l);
        }
        vmig_put_be32(out + 4ull * i, l);
        pos += l;
    }
    *out_len = pos;
    return 0;
}

static int dp_encode(void *ctx, uint8_t *const *pages, uint32_t n, uint32_t page_size,
                     unsigned flags, uint8_t *out, size_t cap, size_t *out_len, vmig_error *err)
{
    dp_ctx *c = ctx;
    *out_len = 0;
    int rc = dp_check_shape(c, n, page_size, VMIG_EINVAL, err);
    if (rc)
        return rc;
    if (cap < dp_bound(n, page_size))
        return vmig_error_set(err, VMIG_EINVAL,
                              "deflate-page: output buffer of %zu bytes for %u pages of %u "
                              "bytes (needs %zu)",
                              cap, n, page_size, dp_bound(n, page_size));
    c->st.pages += n;
    if (c->eng)
        return dp_encode_dev(c, pages, n, page_size, flags, out, out_len, err);

    /* CPU path: each page straight to its final place. No copy for volatile
     * pages: see the top of this file. */
    size_t pos = 4ull * n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *page = pages[i];
        int l = 0;
        if (vmig_codec_probe_incompressible(page, page_size)) {
            c->st.probed_raw++;
        } else {
            l = vmig_dp_sw_compress(c->sw, page, page_size, out + pos, page_size - 1, err);
            if (l < 0)
                return l;
        }
        if (l == 0) {
            memcpy(out + pos, page, page_size);
            l = (int)page_size;
            c->st.raw++;
        }
        vmig_put_be32(out + 4ull * i, (uint32_t)l);
        pos += (uint32_t)l;
    }
    *out_len = pos;
    return 0;
}

/* ------------------------------------------------------------------ */
/* decode                                                              */

static inline unsigned dst_hash(const uint8_t *p)
{
    return (unsigned)((((uintptr_t)p >> 12) * 0x9E3779B97F4A7C15ull) >> 56);
}

static int dp_fail_page(uint32_t i, uint32_t n, uint32_t len, size_t off, const char *why,
                        vmig_error *err)
{
    return vmig_error_set(err, VMIG_EPROTO,
                          "deflate-page packet: page %u of %u (%u bytes at payload offset %zu): %s",
                          i, n, len, off, why);
}

/* Device path: see the top of this file. Every page a job may still write is
 * waited for before a later page writes the same destination, and before
 * returning, whatever happened. */
static int dp_decode_dev(dp_ctx *c, const uint8_t *in, uint8_t *const *pages, uint32_t n,
                         uint32_t ps, vmig_error *err)
{
    uint32_t head = 0, inflight = 0;
    size_t off = 4ull * n;
    int rc = 0;

    for (uint32_t i = 0; i <= n; i++) {
        const uint8_t *src = NULL;
        uint32_t len = 0;
        uint8_t *dst = NULL;
        if (i < n && !rc) {
            len = vmig_get_be32(in + 4ull * i);
            src = in + off;
            dst = pages[i];
        }
        /* Wait for the oldest job while the queue is full, while an earlier
         * job may still write dst, and at the end (or after a failure). */
        while (inflight && (inflight == c->depth || !dst || c->dst_count[dst_hash(dst)])) {
            vmig_dp_job *j = &c->jobs[head];
            uint32_t p = c->job_page[head];
            int s = c->eops->wait(c->eng, head, j);
            c->dst_count[dst_hash(j->out)]--;
            head = (head + 1) % c->depth;
            inflight--;
            if (s == VMIG_DP_OK && j->out_len == ps && j->in_used == j->in_len) {
                c->st.dev_jobs++;
                continue;
            }
            /* The device failed it or was not exact: the CPU decides. */
            c->st.cpu_failed++;
            const char *why = NULL;
            if (!rc && vmig_dp_sw_decompress(c->sw, j->in, j->in_len, j->out, ps, &why))
                rc = dp_fail_page(p, n, j->in_len, (size_t)(j->in - in), why, err);
        }
        if (!dst)
            break;
        off += len;
        if (len == ps) {
            memcpy(dst, src, ps);
            c->st.raw++;
            continue;
        }
        uint32_t slot = (head + inflight) % c->depth;
        vmig_dp_job *j = &c->jobs[slot];
        *j = (vmig_dp_job){
            .op = VMIG_DP_DECOMPRESS, .in_len = len, .out_cap = ps, .in = src, .out = dst};
        if (dp_submit(c, slot, j)) {
            c->job_page[slot] = i;
            c->dst_count[dst_hash(dst)]++;
            inflight++;
            continue;
        }
        c->st.cpu_busy++;
        const char *why = NULL;
        if (vmig_dp_sw_decompress(c->sw, src, len, dst, ps, &why))
            rc = dp_fail_page(i, n, len, (size_t)(src - in), why, err);
    }
    return rc;
}

static int dp_decode(void *ctx, const uint8_t *in, size_t len, uint8_t *const *pages, uint32_t n,
                     uint32_t page_size, vmig_error *err)
{
    dp_ctx *c = ctx;
    int rc = dp_check_shape(c, n, page_size, VMIG_EPROTO, err);
    if (rc)
        return rc;
    /* The length table, checked whole before any page is read or written. */
    if (4ull * n > len)
        return vmig_error_set(err, VMIG_EPROTO,
                              "deflate-page packet: %zu payload bytes cannot hold the lengths "
                              "of %u pages (%llu bytes)",
                              len, n, 4ull * n);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = vmig_get_be32(in + 4ull * i);
        if (l < 1 || l > page_size)
            return vmig_error_set(err, VMIG_EPROTO,
                                  "deflate-page packet: page %u of %u has length %u (must be "
                                  "1..%u)",
                                  i, n, l, page_size);
        sum += l;
    }
    if (sum != len - 4ull * n)
        return vmig_error_set(err, VMIG_EPROTO,
                              "deflate-page packet: the %u page lengths sum to %llu bytes but "
                              "%llu follow the table",
                              n, (unsigned long long)sum, (unsigned long long)(len - 4ull * n));
    c->st.pages += n;
    if (c->eng)
        return dp_decode_dev(c, in, pages, n, page_size, err);

    size_t off = 4ull * n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = vmig_get_be32(in + 4ull * i);
        if (l == page_size) {
            memcpy(pages[i], in + off, page_size);
            c->st.raw++;
        } else {
            const char *why = NULL;
            if (vmig_dp_sw_decompress(c->sw, in + off, l, pages[i], page_size, &why))
                return dp_fail_page(i, n, l, off, why, err);
        }
        off += l;
    }
    return 0;
}

const vmig_codec_ops vmig_codec_deflate_page_ops = {
    .id = VMIG_CODEC_DEFLATE_PAGE,
    .name = "deflate-page",
#if DP_HAVE_SW
    .missing = NULL,
#else
    .missing = "not built (neither ISA-L nor zlib was found at build time)",
#endif
    .bound = dp_bound,
    .enc_create = dp_enc_create,
    .enc_free = dp_free,
    .encode = dp_encode,
    .dec_create = dp_dec_create,
    .dec_free = dp_free,
    .decode = dp_decode,
    .describe = dp_describe,
};
