/*
 * Every codec of the registry that this build has (ops->missing == NULL)
 * against the contract of src/codec/codec.h. Codecs that are missing are
 * listed and skipped, so a backend that does not exist yet costs nothing
 * and is covered as soon as it does.
 *
 * Round trip (property): packets of the standard content mix and of
 * adversarial pages (all 0xff, one byte value, a single non-zero byte at
 * the start or end, period 1/2/3/7/4095 patterns, random with one repeated
 * 4-byte word, random with far 3-byte repeats, maximal-entropy pages, a copy
 * of the previous page, alternating compressible and incompressible pages),
 * n = 1..128 pages of 4096 and 16384 bytes, many packets through one
 * encoder/decoder pair (stream continuity), and packets that switch codec
 * (each codec's contexts see only their own packets). Each decode must give
 * the original bytes; 1 <= out_len <= bound(n, page_size) <=
 * vmig_wire_codec_bound(n * page_size); the encoder writes nothing beyond
 * its cap nor into its input; deflate-page payloads have a valid length
 * table and their raw pages are the pages. Destination pages are scattered,
 * contiguous (lz4's direct path) or all the same page.
 *
 * Hostile input (every codec): after the previous packets of the stream,
 * a packet cut at every length (small packets) or at random points, with
 * trailing bytes, with bit flips, decoded as n - 1 or n + 1 pages, and
 * random garbage. Each must fail with VMIG_EPROTO and a sentence, except a
 * bit flip (or garbage for none) that happens to be valid data, which must
 * succeed. Every destination page has canaries (page_size + 64 bytes on
 * each side), checked after every decode; inputs are exact-size heap copies
 * so ASan sees any read beyond them.
 *
 * VMIG_TEST_VERBOSE=1 prints one rejection sentence per kind.
 */
#include "mix.h"

#include <stdlib.h>

#include "src/codec/codec.h"
#include "src/wire/wire.h"

#include "../testutil.h"

#define MAXN  128u /* cfg.max_pages */
#define MAXPS 16384u
#define NPS   2
static const uint32_t page_sizes[NPS] = {4096, 16384};

static int verbose;

/* ------------------------------------------------------------------ */
/* guarded buffers                                                     */

typedef struct gbuf {
    uint8_t *base; /* guard | data (len) | guard */
    size_t len, guard;
} gbuf;

/* The canary pattern, long enough for the largest guard. */
#define GUARD_MAX (2 * (MAXPS + 64) + 512)
static uint8_t canary_pat[GUARD_MAX];

static void canary_init(void)
{
    for (size_t j = 0; j < GUARD_MAX; j++)
        canary_pat[j] = (uint8_t)(0xa5 ^ (j * 131));
}

static void gbuf_alloc(gbuf *g, size_t len, size_t guard)
{
    REQUIRE(2 * guard <= GUARD_MAX, "guard %zu", guard);
    g->len = len;
    g->guard = guard;
    g->base = malloc(len + 2 * guard);
    REQUIRE(g->base, "malloc %zu", len + 2 * guard);
    memcpy(g->base, canary_pat, guard);
    memcpy(g->base + guard + len, canary_pat + guard, guard);
}

static uint8_t *gbuf_data(const gbuf *g)
{
    return g->base + g->guard;
}

static bool gbuf_intact(const gbuf *g)
{
    return !memcmp(g->base, canary_pat, g->guard) &&
           !memcmp(g->base + g->guard + g->len, canary_pat + g->guard, g->guard);
}

static void gbuf_free(gbuf *g)
{
    free(g->base);
    g->base = NULL;
}

/* Destination pages: one guarded buffer per page (scattered), one guarded
 * region of MAXN pages (contiguous), or every pointer to scattered[0]. */
enum { LAYOUT_SCATTERED, LAYOUT_CONTIGUOUS, LAYOUT_SAME, LAYOUT_COUNT };
static const char *const layout_name[LAYOUT_COUNT] = {"scattered", "contiguous", "same page"};

typedef struct dest {
    uint32_t ps;
    gbuf single[MAXN];
    gbuf contig;
    uint8_t *pages[MAXN];
    int layout; /* of the last dest_set() */
    uint32_t n;
} dest;

static void dest_alloc(dest *d, uint32_t ps)
{
    d->ps = ps;
    for (uint32_t i = 0; i < MAXN; i++)
        gbuf_alloc(&d->single[i], ps, ps + 64);
    gbuf_alloc(&d->contig, (size_t)MAXN * ps, ps + 64);
    d->layout = LAYOUT_SCATTERED;
    d->n = 0;
}

static void dest_free(dest *d)
{
    for (uint32_t i = 0; i < MAXN; i++)
        gbuf_free(&d->single[i]);
    gbuf_free(&d->contig);
}

/* Point d->pages at n pages of `layout` and poison them. */
static void dest_set(dest *d, int layout, uint32_t n)
{
    d->layout = layout;
    d->n = n;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = layout == LAYOUT_CONTIGUOUS ? gbuf_data(&d->contig) + (size_t)i * d->ps
                     : layout == LAYOUT_SAME     ? gbuf_data(&d->single[0])
                                                 : gbuf_data(&d->single[i]);
        d->pages[i] = p;
        memset(p, 0xcc, d->ps);
    }
}

/* The guards around the pages of the last dest_set(): a write beyond a
 * page lands in its own guard (page_size + 64 bytes) first. The contiguous
 * region's guards are always checked. */
static bool dest_intact(const dest *d)
{
    bool ok = gbuf_intact(&d->contig);
    if (d->layout == LAYOUT_SCATTERED)
        for (uint32_t i = 0; i < d->n; i++)
            ok = ok && gbuf_intact(&d->single[i]);
    else
        ok = ok && gbuf_intact(&d->single[0]);
    return ok;
}

/* ------------------------------------------------------------------ */
/* page content                                                        */

enum {
    G_TEXT,
    G_RANDOM,
    G_ZERO,
    G_FF,
    G_BYTE,    /* all one (random) byte value */
    G_FIRST,   /* one non-zero byte at the start */
    G_LAST,    /* one non-zero byte at the end */
    G_PERIOD,  /* period 1, 2, 3, 7 or 4095 */
    G_WORD,    /* random with one 4-byte word repeated at random places */
    G_FAR3,    /* random with 3-byte repeats from far back */
    G_ENTROPY, /* every 256 bytes a permutation of all byte values */
    G_PREV,    /* identical to the previous page */
    G_COUNT
};
static const char *const gen_name[G_COUNT] = {
    "text",        "random",        "zero",   "0xff",          "one byte",
    "first byte",  "last byte",     "period", "repeated word", "far 3-byte repeats",
    "max entropy", "previous page",
};

/* Standard mix pages for any page size: 4 KiB pieces of the mix. */
static void mix_fill(uint64_t seed, enum vmig_mix_class c, uint64_t page, uint8_t *dst, uint32_t ps)
{
    for (uint32_t off = 0; off < ps; off += VMIG_MIX_PAGE_SIZE)
        vmig_mix_page_fill(seed, c, page * (ps / VMIG_MIX_PAGE_SIZE) + off / VMIG_MIX_PAGE_SIZE,
                           dst + off);
}

static void gen_page(int kind, uint64_t *rng, uint8_t *dst, const uint8_t *prev, uint32_t ps)
{
    uint64_t r = tu_rand(rng);
    switch (kind) {
    case G_TEXT:
        mix_fill(r, VMIG_MIX_TEXT, r >> 40, dst, ps);
        break;
    case G_RANDOM:
        mix_fill(r, VMIG_MIX_RANDOM, r >> 40, dst, ps);
        break;
    case G_ZERO:
        memset(dst, 0, ps);
        break;
    case G_FF:
        memset(dst, 0xff, ps);
        break;
    case G_BYTE:
        memset(dst, (int)(r & 0xff), ps);
        break;
    case G_FIRST:
    case G_LAST:
        memset(dst, 0, ps);
        dst[kind == G_FIRST ? 0 : ps - 1] = (uint8_t)(r | 1);
        break;
    case G_PERIOD: {
        static const uint32_t periods[] = {1, 2, 3, 7, 4095};
        uint32_t p = periods[r % VMIG_ARRAY_SIZE(periods)];
        uint8_t pat[4095];
        for (uint32_t i = 0; i < p; i++)
            pat[i] = (uint8_t)tu_rand(rng);
        for (uint32_t i = 0; i < ps; i++)
            dst[i] = pat[i % p];
        break;
    }
    case G_WORD: {
        mix_fill(r, VMIG_MIX_RANDOM, r >> 40, dst, ps);
        uint32_t w = (uint32_t)tu_rand(rng);
        for (uint32_t k = 0; k < ps / 32; k++)
            memcpy(dst + (tu_rand(rng) % (ps / 4)) * 4, &w, 4);
        break;
    }
    case G_FAR3:
        mix_fill(r, VMIG_MIX_RANDOM, r >> 40, dst, ps);
        for (uint32_t i = 2048; i + 3 <= ps; i += 4 + (uint32_t)(tu_rand(rng) % 4)) {
            uint32_t from = (uint32_t)(tu_rand(rng) % (i - 1024));
            memcpy(dst + i, dst + from, 3);
        }
        break;
    case G_ENTROPY:
        for (uint32_t off = 0; off < ps; off += 256) {
            uint8_t *q = dst + off;
            for (int i = 0; i < 256; i++)
                q[i] = (uint8_t)i;
            for (int i = 255; i > 0; i--) {
                int j = (int)(tu_rand(rng) % (uint64_t)(i + 1));
                uint8_t t = q[i];
                q[i] = q[j];
                q[j] = t;
            }
        }
        break;
    case G_PREV:
        if (prev)
            memcpy(dst, prev, ps);
        else
            mix_fill(r, VMIG_MIX_TEXT, r >> 40, dst, ps);
        break;
    }
}

/* How the pages of a packet are chosen. */
enum { PK_MIX, PK_ADVERSARIAL, PK_ALTERNATING, PK_UNIFORM, PK_COUNT };

typedef struct source {
    uint32_t ps;
    uint8_t *pages[MAXN]; /* scattered, as a RAM block's pages are */
    uint8_t *expect;      /* MAXN * ps: what the pages hold */
    uint8_t last[MAXPS];  /* the last page of the previous packet */
    bool have_last;
} source;

static void source_alloc(source *s, uint32_t ps)
{
    memset(s, 0, sizeof(*s));
    s->ps = ps;
    for (uint32_t i = 0; i < MAXN; i++) {
        s->pages[i] = malloc(ps);
        REQUIRE(s->pages[i], "malloc");
    }
    s->expect = malloc((size_t)MAXN * ps);
    REQUIRE(s->expect, "malloc");
}

static void source_free(source *s)
{
    for (uint32_t i = 0; i < MAXN; i++)
        free(s->pages[i]);
    free(s->expect);
}

/* Fill n pages of packet kind `pk`; returns a short description. */
static const char *source_fill(source *s, int pk, uint32_t n, uint64_t *rng)
{
    uint32_t ps = s->ps;
    static char desc[64];
    int uniform = (int)(tu_rand(rng) % G_COUNT);
    struct vmig_mix_plan *plan = NULL;
    uint64_t seed = tu_rand(rng);
    if (pk == PK_MIX) {
        struct vmig_mix_params mp;
        vmig_mix_params_default(&mp);
        mp.seed = seed;
        REQUIRE(vmig_mix_plan_create(&mp, n, &plan) == 0, "mix plan");
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *prev = i ? s->pages[i - 1] : s->have_last ? s->last : NULL;
        switch (pk) {
        case PK_MIX:
            mix_fill(seed, vmig_mix_plan_class(plan, i), i, s->pages[i], ps);
            break;
        case PK_ADVERSARIAL:
            gen_page((int)(tu_rand(rng) % G_COUNT), rng, s->pages[i], prev, ps);
            break;
        case PK_ALTERNATING:
            gen_page(i % 2 ? G_RANDOM : G_TEXT, rng, s->pages[i], prev, ps);
            break;
        default:
            gen_page(uniform, rng, s->pages[i], prev, ps);
            break;
        }
        memcpy(s->expect + (size_t)i * ps, s->pages[i], ps);
    }
    vmig_mix_plan_free(plan);
    memcpy(s->last, s->pages[n - 1], ps);
    s->have_last = true;
    static const char *const pk_name[PK_COUNT] = {"mix", "adversarial", "alternating", "uniform"};
    snprintf(desc, sizeof(desc), "%s%s%s", pk_name[pk], pk == PK_UNIFORM ? " " : "",
             pk == PK_UNIFORM ? gen_name[uniform] : "");
    return desc;
}

/* ------------------------------------------------------------------ */
/* one codec's contexts                                                */

typedef struct pair {
    const vmig_codec_ops *ops;
    void *enc, *dec;
} pair;

static vmig_codec_cfg make_cfg(uint32_t id, uint32_t level)
{
    vmig_codec_cfg cfg = {0};
    cfg.level = level ? level : 1;
    (void)id;
    cfg.max_pages = MAXN;
    cfg.max_page_size = MAXPS;
    cfg.deflate_path = VMIG_DEFLATE_PATH_AUTO;
    return cfg;
}

static void *dec_new(const vmig_codec_ops *ops, uint32_t level)
{
    vmig_codec_cfg cfg = make_cfg(ops->id, level);
    vmig_error e = {0};
    void *ctx = NULL;
    int rc = ops->dec_create(&cfg, &ctx, &e);
    REQUIRE(rc == 0 && ctx, "%s: dec_create: %d %s", ops->name, rc, e.msg);
    return ctx;
}

static pair pair_new(const vmig_codec_ops *ops, uint32_t level)
{
    pair p = {ops, NULL, NULL};
    vmig_codec_cfg cfg = make_cfg(ops->id, level);
    vmig_error e = {0};
    int rc = ops->enc_create(&cfg, &p.enc, &e);
    REQUIRE(rc == 0 && p.enc, "%s: enc_create: %d %s", ops->name, rc, e.msg);
    p.dec = dec_new(ops, level);
    return p;
}

static void pair_free(pair *p)
{
    p->ops->enc_free(p->enc);
    p->ops->dec_free(p->dec);
}

/* A recorded packet, for replays. */
typedef struct packet {
    uint8_t *data;
    size_t len;
    uint32_t n;
} packet;

typedef struct stats {
    uint64_t packets, pages, in_bytes, out_bytes, enc_ns, dec_ns, max_over;
} stats;

/* Checks a deflate-page payload's length table (codec.h). */
static void check_deflate_page(const uint8_t *out, size_t len, const uint8_t *expect, uint32_t n,
                               uint32_t ps)
{
    if (len < 4ull * n) {
        CHECK(0, "deflate-page: %zu bytes for a table of %u lengths", len, n);
        return;
    }
    uint64_t off = 4ull * n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t l = vmig_get_be32(out + 4 * i);
        CHECK(l >= 1 && l <= ps, "deflate-page: page %u has length %u (page size %u)", i, l, ps);
        if (l == ps && off + l <= len)
            CHECK(!memcmp(out + off, expect + (size_t)i * ps, ps),
                  "deflate-page: raw page %u differs from the page", i);
        off += l;
    }
    CHECK(off == len, "deflate-page: lengths sum to %llu, payload is %zu bytes",
          (unsigned long long)off, len);
}

/*
 * Encode the source's n pages with p->enc into a buffer of exactly
 * bound(n, ps) bytes (plus a canary tail), check it, decode it with p->dec
 * into `layout` and compare. Returns a heap copy of the payload when
 * `keep` (else NULL).
 */
static packet roundtrip(pair *p, source *s, uint32_t n, dest *d, int layout, unsigned flags,
                        bool keep, stats *st, const char *what)
{
    const vmig_codec_ops *ops = p->ops;
    uint32_t ps = s->ps;
    packet pkt = {NULL, 0, n};
    size_t bound = ops->bound(n, ps);
    uint64_t raw = (uint64_t)n * ps;
    CHECK(bound <= vmig_wire_codec_bound(raw), "%s: bound(%u, %u) = %zu > wire bound %llu",
          ops->name, n, ps, bound, (unsigned long long)vmig_wire_codec_bound(raw));
    gbuf out;
    gbuf_alloc(&out, bound, 256);
    vmig_error e = {0};
    size_t olen = 0;
    uint64_t t0 = tu_now_ns();
    int rc = ops->encode(p->enc, s->pages, n, ps, flags, gbuf_data(&out), bound, &olen, &e);
    uint64_t t1 = tu_now_ns();
    REQUIRE(rc == 0, "%s: encode of %u pages of %u (%s) failed: %d %s", ops->name, n, ps, what, rc,
            e.msg);
    CHECK(olen >= 1 && olen <= bound, "%s: %zu bytes for %u pages of %u (bound %zu, %s)", ops->name,
          olen, n, ps, bound, what);
    CHECK(gbuf_intact(&out), "%s: encode wrote beyond its cap of %zu bytes (%s)", ops->name, bound,
          what);
    for (uint32_t i = 0; i < n; i++)
        CHECK(!memcmp(s->pages[i], s->expect + (size_t)i * ps, ps),
              "%s: encode changed input page %u", ops->name, i);
    if (olen > raw && olen - raw > st->max_over)
        st->max_over = olen - raw;
    if (ops->id == VMIG_CODEC_DEFLATE_PAGE)
        check_deflate_page(gbuf_data(&out), olen, s->expect, n, ps);

    /* Decode from an exact-size copy. */
    uint8_t *in = malloc(olen);
    REQUIRE(in, "malloc");
    memcpy(in, gbuf_data(&out), olen);
    gbuf_free(&out);
    dest_set(d, layout, n);
    memset(&e, 0, sizeof(e));
    uint64_t t2 = tu_now_ns();
    rc = ops->decode(p->dec, in, olen, d->pages, n, ps, &e);
    uint64_t t3 = tu_now_ns();
    CHECK(dest_intact(d), "%s: decode wrote outside the pages (%u pages of %u, %s, %s)", ops->name,
          n, ps, layout_name[layout], what);
    REQUIRE(rc == 0, "%s: decode of its own %zu-byte packet (%u pages of %u, %s, %s) failed: %d %s",
            ops->name, olen, n, ps, layout_name[layout], what, rc, e.msg);
    if (layout == LAYOUT_SAME) {
        CHECK(!memcmp(d->pages[0], s->expect + (size_t)(n - 1) * ps, ps),
              "%s: same-page decode does not hold the last page (%s)", ops->name, what);
    } else {
        for (uint32_t i = 0; i < n; i++)
            if (memcmp(d->pages[i], s->expect + (size_t)i * ps, ps)) {
                CHECK(0, "%s: page %u of %u (size %u, %s, %s) differs after the round trip",
                      ops->name, i, n, ps, layout_name[layout], what);
                break;
            }
    }
    st->packets++;
    st->pages += n;
    st->in_bytes += raw;
    st->out_bytes += olen;
    st->enc_ns += t1 - t0;
    st->dec_ns += t3 - t2;
    if (keep) {
        pkt.data = in;
        pkt.len = olen;
    } else {
        free(in);
    }
    return pkt;
}

/* Packet sizes: the edges and a spread in between. */
static uint32_t pick_n(unsigned k, uint64_t *rng, uint32_t ps)
{
    static const uint32_t edges[] = {1, 128, 2, 127, 3, 64, 7, 16, 31, 100};
    uint32_t n = k < VMIG_ARRAY_SIZE(edges) ? edges[k] : 1 + (uint32_t)(tu_rand(rng) % MAXN);
    if (ps > 4096 && n > 32 && (tu_rand(rng) % 4) && k != 1)
        n = 1 + n % 32; /* keep most 16 KiB packets smaller */
    return n;
}

/* ------------------------------------------------------------------ */
/* hostile input                                                       */

enum { MUST_FAIL, MAY_PASS };

typedef struct negstats {
    uint64_t rejected, accepted;
    bool shown[16];
} negstats;

/*
 * A fresh decoder takes packets 0..k-1 of `pk` (which must decode), then
 * `bad` as an n-page packet: it must fail with VMIG_EPROTO and a sentence
 * (MUST_FAIL), or may instead succeed (MAY_PASS). Canaries are checked.
 */
static void neg_try(const vmig_codec_ops *ops, const packet *pk, unsigned k, const uint8_t *bad,
                    size_t badlen, uint32_t n, dest *d, int expect, int kind, const char *what,
                    negstats *ns)
{
    void *dec = dec_new(ops, 1);
    vmig_error e = {0};
    for (unsigned j = 0; j < k; j++) {
        dest_set(d, LAYOUT_SCATTERED, pk[j].n);
        int rc = ops->decode(dec, pk[j].data, pk[j].len, d->pages, pk[j].n, d->ps, &e);
        REQUIRE(rc == 0, "%s: replay of packet %u failed: %s", ops->name, j, e.msg);
    }
    uint8_t *in = malloc(badlen ? badlen : 1);
    REQUIRE(in, "malloc");
    if (badlen)
        memcpy(in, bad, badlen);
    int layout = (int)((badlen + k) % LAYOUT_COUNT);
    dest_set(d, layout, n);
    memset(&e, 0, sizeof(e));
    int rc = ops->decode(dec, in, badlen, d->pages, n, d->ps, &e);
    CHECK(dest_intact(d),
          "%s: decode of %s (packet %u, %zu bytes, %u pages) wrote outside the pages", ops->name,
          what, k, badlen, n);
    if (rc == 0) {
        ns->accepted++;
        CHECK(expect == MAY_PASS, "%s: accepted %s (packet %u, %zu bytes, %u pages of %u)",
              ops->name, what, k, badlen, n, d->ps);
    } else {
        ns->rejected++;
        CHECK(rc == VMIG_EPROTO && e.code == rc && e.msg[0],
              "%s: %s (packet %u): returned %d, recorded %d '%s' (want VMIG_EPROTO and a sentence)",
              ops->name, what, k, rc, e.code, e.msg);
        if (verbose && !ns->shown[kind]) {
            ns->shown[kind] = true;
            fprintf(stderr, "  %s, %s: %s\n", ops->name, what, e.msg);
        }
    }
    free(in);
    ops->dec_free(dec);
}

static void negative(const vmig_codec_ops *ops, source *s, dest *d, uint64_t *rng, negstats *ns)
{
    uint32_t ps = s->ps;
    /* A short stream: small packets (every cut is tried) and larger ones. */
    static const struct {
        int pk;
        uint32_t n;
    } plan[] = {
        {PK_MIX, 1},         {PK_ADVERSARIAL, 1}, {PK_ALTERNATING, 1}, {PK_ALTERNATING, 2},
        {PK_ADVERSARIAL, 3}, {PK_UNIFORM, 2},     {PK_MIX, 8},         {PK_ADVERSARIAL, MAXN},
    };
    enum { NP = VMIG_ARRAY_SIZE(plan) };
    packet pk[NP];
    pair p = pair_new(ops, 1);
    stats st = {0};
    for (unsigned k = 0; k < NP; k++) {
        const char *what = source_fill(s, plan[k].pk, plan[k].n, rng);
        pk[k] = roundtrip(&p, s, plan[k].n, d, LAYOUT_SCATTERED, 0, true, &st, what);
    }
    pair_free(&p);

    size_t maxlen = 0;
    for (unsigned k = 0; k < NP; k++)
        maxlen = VMIG_MAX(maxlen, pk[k].len);
    uint8_t *buf = malloc(2 * maxlen + (size_t)MAXN * ps + 128);
    REQUIRE(buf, "malloc");
    uint32_t replayed = 0; /* pages the replay before packet k decodes */
    for (unsigned k = 0; k < NP; replayed += pk[k].n, k++) {
        const packet *q = &pk[k];
        uint32_t n = q->n;
        /* Cut short: every length for small packets early in the stream,
         * else the edges and random points. */
        if (q->len <= 9000 && replayed <= 8) {
            for (size_t l = 0; l < q->len; l++)
                neg_try(ops, pk, k, q->data, l, n, d, MUST_FAIL, 0, "a truncated packet", ns);
        } else {
            for (size_t l = 0; l < 16; l++) {
                neg_try(ops, pk, k, q->data, l, n, d, MUST_FAIL, 0, "a truncated packet", ns);
                neg_try(ops, pk, k, q->data, q->len - 1 - l, n, d, MUST_FAIL, 0,
                        "a truncated packet", ns);
            }
            for (int t = 0; t < (q->len > 65536 ? 24 : 100); t++)
                neg_try(ops, pk, k, q->data, (size_t)(tu_rand(rng) % q->len), n, d, MUST_FAIL, 0,
                        "a truncated packet", ns);
        }
        /* Trailing bytes: random ones, zeros, and the packet twice. */
        static const size_t extra[] = {1, 2, 3, 4, 5, 7, 16, 100};
        for (size_t t = 0; t < VMIG_ARRAY_SIZE(extra); t++) {
            memcpy(buf, q->data, q->len);
            for (size_t j = 0; j < extra[t]; j++)
                buf[q->len + j] = (uint8_t)tu_rand(rng);
            neg_try(ops, pk, k, buf, q->len + extra[t], n, d, MUST_FAIL, 1, "trailing bytes", ns);
            memset(buf + q->len, 0, extra[t]);
            neg_try(ops, pk, k, buf, q->len + extra[t], n, d, MUST_FAIL, 1, "trailing zero bytes",
                    ns);
        }
        memcpy(buf, q->data, q->len);
        memcpy(buf + q->len, q->data, q->len);
        neg_try(ops, pk, k, buf, 2 * q->len, n, d, MUST_FAIL, 2, "a packet followed by itself", ns);
        /* Bit flips: at every byte of small packets (random bit), else at
         * random positions, and at both ends. */
        bool every = q->len <= 512;
        size_t flips = every ? q->len : (q->len > 65536 ? 40 : 300) + 8;
        for (size_t t = 0; t < flips; t++) {
            size_t pos = every   ? t
                         : t < 4 ? t
                         : t < 8 ? q->len - 1 - (t - 4)
                                 : (size_t)(tu_rand(rng) % q->len);
            memcpy(buf, q->data, q->len);
            buf[pos] ^= (uint8_t)(1u << (tu_rand(rng) % 8));
            neg_try(ops, pk, k, buf, q->len, n, d, MAY_PASS, 3, "a bit flip", ns);
        }
        /* The wrong page count (within the contract: 1..max_pages). */
        if (n > 1)
            neg_try(ops, pk, k, q->data, q->len, n - 1, d, MUST_FAIL, 4, "n - 1 pages", ns);
        if (n < MAXN)
            neg_try(ops, pk, k, q->data, q->len, n + 1, d, MUST_FAIL, 5, "n + 1 pages", ns);
        /* Garbage in place of the packet. */
        size_t glen[] = {1, 2, 5, 64, q->len, (size_t)n * ps, 2 * maxlen};
        for (size_t t = 0; t < VMIG_ARRAY_SIZE(glen); t++) {
            for (size_t j = 0; j < glen[t]; j++)
                buf[j] = (uint8_t)tu_rand(rng);
            bool valid_raw = ops->id == VMIG_CODEC_NONE && glen[t] == (size_t)n * ps;
            neg_try(ops, pk, k, buf, glen[t], n, d, valid_raw ? MAY_PASS : MUST_FAIL, 6,
                    "random garbage", ns);
        }
    }
    free(buf);
    for (unsigned k = 0; k < NP; k++)
        free(pk[k].data);
}

/* ------------------------------------------------------------------ */

static void run_codec(const vmig_codec_ops *ops, source *src, dest *dst, uint64_t *rng)
{
    for (int pi = 0; pi < NPS; pi++) {
        uint32_t ps = page_sizes[pi];
        source *s = &src[pi];
        dest *d = &dst[pi];
        s->have_last = false;
        /* One pair for a long stream of packets (stream continuity). */
        pair p = pair_new(ops, 1);
        stats st = {0};
        unsigned npk = ps == 4096 ? 48 : 24;
        for (unsigned k = 0; k < npk; k++) {
            uint32_t n = pick_n(k, rng, ps);
            const char *what = source_fill(s, (int)(k % PK_COUNT), n, rng);
            roundtrip(&p, s, n, d, (int)(k % LAYOUT_COUNT), k % 2 ? VMIG_ENC_VOLATILE : 0, false,
                      &st, what);
        }
        pair_free(&p);
        printf("%-12s %5u-byte pages: %3llu packets, %5llu pages round-trip; ratio %.2f; "
               "largest expansion %llu bytes\n",
               ops->name, ps, (unsigned long long)st.packets, (unsigned long long)st.pages,
               st.out_bytes ? (double)st.in_bytes / (double)st.out_bytes : 0.0,
               (unsigned long long)st.max_over);

        /* Other levels (zlib, zstd): a shorter stream each. */
        static const uint32_t zlib_levels[] = {6, 9}, zstd_levels[] = {3, 19};
        const uint32_t *lv = ops->id == VMIG_CODEC_ZLIB   ? zlib_levels
                             : ops->id == VMIG_CODEC_ZSTD ? zstd_levels
                                                          : NULL;
        for (int li = 0; lv && li < 2; li++) {
            pair q = pair_new(ops, lv[li]);
            stats sl = {0};
            for (unsigned k = 0; k < 10; k++) {
                uint32_t n = 1 + (uint32_t)(tu_rand(rng) % (lv[li] >= 19 ? 8 : 32));
                const char *what = source_fill(s, (int)(k % PK_COUNT), n, rng);
                roundtrip(&q, s, n, d, (int)(k % LAYOUT_COUNT), VMIG_ENC_VOLATILE, false, &sl,
                          what);
            }
            pair_free(&q);
            printf("%-12s %5u-byte pages, level %u: %llu packets round-trip; ratio %.2f\n",
                   ops->name, ps, lv[li], (unsigned long long)sl.packets,
                   sl.out_bytes ? (double)sl.in_bytes / (double)sl.out_bytes : 0.0);
        }

        /* Speed on the standard mix (informational). */
        if (ps == 4096) {
            pair q = pair_new(ops, 1);
            stats sm = {0};
            for (unsigned k = 0; k < 16; k++) {
                source_fill(s, PK_MIX, MAXN, rng);
                roundtrip(&q, s, MAXN, d, LAYOUT_SCATTERED, 0, false, &sm, "mix");
            }
            pair_free(&q);
            printf("%-12s standard mix, 128-page packets: ratio %.2f, encode %.0f MB/s, decode "
                   "%.0f MB/s\n",
                   ops->name, (double)sm.in_bytes / (double)sm.out_bytes,
                   (double)sm.in_bytes * 1e3 / (double)VMIG_MAX(sm.enc_ns, 1),
                   (double)sm.in_bytes * 1e3 / (double)VMIG_MAX(sm.dec_ns, 1));
        }

        negstats ns = {0};
        negative(ops, s, d, rng, &ns);
        printf("%-12s %5u-byte pages: hostile input: %llu rejected, %llu bit flips or garbage "
               "accepted as valid data\n",
               ops->name, ps, (unsigned long long)ns.rejected, (unsigned long long)ns.accepted);
    }
}

/*
 * Worst cases for the bound: 128 incompressible pages per packet at every
 * level, one stream per level.
 */
static void run_expansion(const vmig_codec_ops *ops, source *s, dest *d, uint64_t *rng, bool full)
{
    static const uint32_t zlib_levels[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    static const uint32_t zstd_levels[] = {1, 2, 5, 12, 19};
    static const uint32_t one_level[] = {1};
    const uint32_t *lv = one_level;
    size_t nlv = 1;
    if (ops->id == VMIG_CODEC_ZLIB) {
        lv = zlib_levels;
        nlv = VMIG_ARRAY_SIZE(zlib_levels);
    } else if (ops->id == VMIG_CODEC_ZSTD) {
        lv = zstd_levels;
        nlv = VMIG_ARRAY_SIZE(zstd_levels);
    }
    static const int kinds[] = {G_ENTROPY, G_FAR3, G_RANDOM, G_WORD};
    uint64_t worst = 0;
    uint32_t worst_level = 0;
    for (size_t li = 0; li < nlv; li++) {
        if (!full && li != 0 && li != nlv - 1)
            continue; /* large pages: the lowest and highest level */
        pair p = pair_new(ops, lv[li]);
        stats st = {0};
        for (size_t k = 0; k < VMIG_ARRAY_SIZE(kinds); k++) {
            if ((lv[li] >= 12 || !full) && k >= 2)
                break; /* slow cases: the two worst kinds only */
            for (uint32_t i = 0; i < MAXN; i++) {
                gen_page(kinds[k], rng, s->pages[i], NULL, s->ps);
                memcpy(s->expect + (size_t)i * s->ps, s->pages[i], s->ps);
            }
            roundtrip(&p, s, MAXN, d, LAYOUT_CONTIGUOUS, 0, false, &st, gen_name[kinds[k]]);
        }
        pair_free(&p);
        if (st.max_over >= worst) {
            worst = st.max_over;
            worst_level = lv[li];
        }
    }
    printf("%-12s incompressible 128-page packets of %u bytes: largest expansion %llu bytes "
           "(level %u), bound allows %zu\n",
           ops->name, s->ps, (unsigned long long)worst, worst_level,
           ops->bound(MAXN, s->ps) - (size_t)MAXN * s->ps);
}

/* Packets that switch codec: each codec's pair sees only its own packets. */
static void run_switching(const vmig_codec_ops **built, int nbuilt, source *s, dest *d,
                          uint64_t *rng)
{
    pair p[VMIG_CODEC_COUNT];
    stats st[VMIG_CODEC_COUNT] = {0};
    for (int i = 0; i < nbuilt; i++)
        p[i] = pair_new(built[i], 1);
    unsigned total = 0;
    s->have_last = false;
    for (unsigned k = 0; k < 90; k++) {
        /* Runs like zstd, none, zstd, zstd, lz4, ... */
        int c = (int)(tu_rand(rng) % (uint64_t)nbuilt);
        uint32_t n = 1 + (uint32_t)(tu_rand(rng) % 48);
        const char *what = source_fill(s, (int)(k % PK_COUNT), n, rng);
        roundtrip(&p[c], s, n, d, (int)(k % LAYOUT_COUNT), 0, false, &st[c], what);
        total++;
    }
    for (int i = 0; i < nbuilt; i++)
        pair_free(&p[i]);
    printf("codec switching: %u packets over %d codecs, each decoded by its own stream\n", total,
           nbuilt);
}

/* bound() against the wire bound over the whole range the wire allows. */
static void check_bounds(const vmig_codec_ops *ops)
{
    for (uint32_t ps = VMIG_WIRE_MIN_PAGE_SIZE; ps <= VMIG_WIRE_MAX_PAGE_SIZE; ps *= 2)
        for (uint32_t n = 1; n <= VMIG_WIRE_MAX_PACKET_PAGES; n++) {
            uint64_t raw = (uint64_t)n * ps;
            size_t b = ops->bound(n, ps);
            if (b > vmig_wire_codec_bound(raw) || (ops->id != VMIG_CODEC_NONE && b < raw)) {
                CHECK(0, "%s: bound(%u, %u) = %zu, wire bound %llu", ops->name, n, ps, b,
                      (unsigned long long)vmig_wire_codec_bound(raw));
                return;
            }
        }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    canary_init();
    verbose = getenv("VMIG_TEST_VERBOSE") && atoi(getenv("VMIG_TEST_VERBOSE"));
    const vmig_codec_ops *built[VMIG_CODEC_COUNT];
    int nbuilt = 0;
    for (uint32_t id = 0; id < VMIG_CODEC_COUNT; id++) {
        const vmig_codec_ops *ops = vmig_codec_get(id);
        REQUIRE(ops && ops->id == id && ops->name, "registry entry %u", id);
        if (ops->missing) {
            printf("%-12s skipped: %s\n", ops->name, ops->missing);
            continue;
        }
        REQUIRE(ops->bound && ops->enc_create && ops->enc_free && ops->encode && ops->dec_create &&
                    ops->dec_free && ops->decode,
                "%s: built but a hook is missing", ops->name);
        built[nbuilt++] = ops;
    }
    CHECK(vmig_codec_get(VMIG_CODEC_COUNT) == NULL, "an id beyond the registry has a codec");
    CHECK(vmig_codec_built_mask() & (1u << VMIG_CODEC_NONE), "none is not in the built mask");

    source src[NPS];
    dest *dst = malloc(NPS * sizeof(*dst));
    REQUIRE(dst, "malloc");
    for (int i = 0; i < NPS; i++) {
        source_alloc(&src[i], page_sizes[i]);
        dest_alloc(&dst[i], page_sizes[i]);
    }
    uint64_t rng = 0x5eed;
    for (int c = 0; c < nbuilt; c++) {
        check_bounds(built[c]);
        /* free(NULL) is a no-op. */
        built[c]->enc_free(NULL);
        built[c]->dec_free(NULL);
        run_codec(built[c], src, dst, &rng);
        run_expansion(built[c], &src[0], &dst[0], &rng, true);
        run_expansion(built[c], &src[1], &dst[1], &rng, false);
    }
    if (nbuilt > 1)
        run_switching(built, nbuilt, &src[0], &dst[0], &rng);
    for (int i = 0; i < NPS; i++) {
        source_free(&src[i]);
        dest_free(&dst[i]);
    }
    free(dst);
    return tu_result("test_codec");
}
