/*
 * Writes the seed corpora of the codec fuzz targets (fuzz_codec.inc):
 * tests/fuzz/corpus/codec_<name>/, a few valid packet streams of text, zero
 * and random pages made by the real encoders, and a few broken ones (one
 * flaw each, named after it).
 *
 * Not part of the build (a one-off tool; rerun it when the input format of
 * fuzz_codec.inc changes). From the source root, after building into
 * `build`:
 *
 *   cc -std=c11 -D_GNU_SOURCE -I. -Ibuild -Iinclude tests/fuzz/gen_codec_corpus.c \
 *      build/libvmig.a $(pkg-config --libs zlib libzstd liblz4 libxxhash) \
 *      $(pkg-config --libs libisal 2>/dev/null) -lpthread -lm \
 *      -o /tmp/gen_codec_corpus && /tmp/gen_codec_corpus tests/fuzz/corpus
 *
 * deflate-page seeds come from its encoder when it is built; one more seed
 * (and all of them when the backend is not built) is written in its format
 * directly (codec.h: u32 BE lengths, then each page raw or as one raw
 * deflate stream with a 4 KiB window, made here with zlib), so the decoder
 * also sees a deflate encoder other than its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <zlib.h>

#include "src/codec/codec.h"

#define PS_MAX    8192u
#define MAX_PAGES 16u

enum { C_ZERO, C_TEXT, C_RANDOM };

static uint64_t rng_state = 0x5eedc0dec;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill(uint8_t *p, uint32_t ps, int cls)
{
    static const char *const words[] = {"the",   "page",   "migration", "of",   "memory", "dirty",
                                        "guest", "vcpu",   "channel",   "and",  "zero",   "packet",
                                        "ram",   "stream", "window",    "flush"};
    if (cls == C_ZERO) {
        memset(p, 0, ps);
    } else if (cls == C_RANDOM) {
        for (uint32_t i = 0; i < ps; i++)
            p[i] = (uint8_t)rnd();
    } else {
        uint32_t i = 0;
        while (i < ps) {
            const char *w = words[rnd() % 16];
            size_t l = strlen(w);
            for (size_t j = 0; j < l && i < ps; j++)
                p[i++] = (uint8_t)w[j];
            if (i < ps)
                p[i++] = rnd() % 9 ? ' ' : '\n';
        }
    }
}

/* A packet stream under construction, in the harness's format. */
typedef struct out {
    uint8_t buf[1 << 16];
    size_t len;
} out;

static void out_packet(out *o, uint32_t n, const uint8_t *payload, size_t len)
{
    if (len > 0xffff || o->len + 3 + len > sizeof(o->buf)) {
        fprintf(stderr, "packet of %zu bytes does not fit\n", len);
        exit(1);
    }
    o->buf[o->len++] = (uint8_t)(n - 1);
    vmig_put_be16(o->buf + o->len, (uint16_t)len);
    o->len += 2;
    memcpy(o->buf + o->len, payload, len);
    o->len += len;
}

/* deflate-page without its backend: the format written directly. */
static size_t dp_encode(uint8_t *const *pages, uint32_t n, uint32_t ps, uint8_t *dst)
{
    size_t pos = 4u * n;
    for (uint32_t i = 0; i < n; i++) {
        z_stream zs;
        memset(&zs, 0, sizeof(zs));
        if (deflateInit2(&zs, 6, Z_DEFLATED, -12, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            exit(1);
        uint8_t tmp[PS_MAX * 2];
        zs.next_in = pages[i];
        zs.avail_in = ps;
        zs.next_out = tmp;
        zs.avail_out = sizeof(tmp);
        if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
            exit(1);
        size_t clen = sizeof(tmp) - zs.avail_out;
        deflateEnd(&zs);
        if (clen >= ps) {
            memcpy(dst + pos, pages[i], ps);
            clen = ps;
        } else {
            memcpy(dst + pos, tmp, clen);
        }
        vmig_put_be32(dst + 4 * i, (uint32_t)clen);
        pos += clen;
    }
    return pos;
}

typedef struct gen {
    const vmig_codec_ops *ops;
    bool direct; /* deflate-page: write the format with zlib, not the encoder */
    void *enc;   /* NULL: deflate-page written directly */
} gen;

/* Encode n pages of the given classes; returns the payload length. */
static size_t encode(gen *g, const int *cls, uint32_t n, uint32_t ps, uint8_t *dst, size_t cap)
{
    static uint8_t store[MAX_PAGES][PS_MAX];
    uint8_t *pages[MAX_PAGES];
    for (uint32_t i = 0; i < n; i++) {
        pages[i] = store[i];
        fill(pages[i], ps, cls[i]);
    }
    if (!g->enc)
        return dp_encode(pages, n, ps, dst);
    size_t len = 0;
    vmig_error e = {0};
    if (g->ops->encode(g->enc, pages, n, ps, 0, dst, cap, &len, &e)) {
        fprintf(stderr, "%s: encode: %s\n", g->ops->name, e.msg);
        exit(1);
    }
    return len;
}

static void gen_start(gen *g)
{
    g->enc = NULL;
    if (g->ops->missing || g->direct)
        return;
    vmig_codec_cfg cfg = {.level = 1, .max_pages = MAX_PAGES, .max_page_size = PS_MAX};
    vmig_error e = {0};
    if (g->ops->enc_create(&cfg, &g->enc, &e)) {
        fprintf(stderr, "%s: enc_create: %s\n", g->ops->name, e.msg);
        exit(1);
    }
}

static void gen_end(gen *g)
{
    if (g->enc)
        g->ops->enc_free(g->enc);
    g->enc = NULL;
}

static void write_file(const char *dir, const char *name, const out *o)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(o->buf, 1, o->len, f) != o->len || fclose(f)) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        exit(1);
    }
    printf("%s: %zu bytes\n", path, o->len);
}

/* One seed: byte 0, then packets of the given shapes (classes per page). */
typedef struct shape {
    uint32_t n;
    int cls[MAX_PAGES];
} shape;

static out *seed(gen *g, uint8_t byte0, uint32_t ps, const shape *sh, int nsh)
{
    static out o;
    static uint8_t payload[1 << 18];
    o.len = 0;
    o.buf[o.len++] = byte0;
    gen_start(g);
    for (int k = 0; k < nsh; k++) {
        size_t len = encode(g, sh[k].cls, sh[k].n, ps, payload, sizeof(payload));
        out_packet(&o, sh[k].n, payload, len);
    }
    gen_end(g);
    return &o;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
        return 1;
    }
    static const uint32_t ids[] = {VMIG_CODEC_ZLIB, VMIG_CODEC_ZSTD, VMIG_CODEC_DEFLATE_PAGE,
                                   VMIG_CODEC_LZ4};
    for (size_t c = 0; c < sizeof(ids) / sizeof(ids[0]); c++) {
        gen g = {vmig_codec_get(ids[c]), false, NULL};
        if (g.ops->missing && ids[c] != VMIG_CODEC_DEFLATE_PAGE) {
            fprintf(stderr, "%s: %s\n", g.ops->name, g.ops->missing);
            return 1;
        }
        char dir[4096], name[64];
        snprintf(name, sizeof(name), "codec_%s", g.ops->name);
        for (char *p = name; *p; p++)
            if (*p == '-')
                *p = '_';
        snprintf(dir, sizeof(dir), "%s/%s", argv[1], name);
        mkdir(dir, 0755);

        const shape one_text[] = {{1, {C_TEXT}}};
        write_file(dir, "valid_one_text_page", seed(&g, 0, 4096, one_text, 1));
        const shape stream3[] = {
            {4, {C_TEXT, C_TEXT, C_TEXT, C_TEXT}},
            {2, {C_ZERO, C_ZERO}},
            {2, {C_RANDOM, C_TEXT}},
        };
        write_file(dir, "valid_stream_text_zero_random", seed(&g, 0, 4096, stream3, 3));
        const shape big[] = {{16,
                              {C_TEXT, C_ZERO, C_TEXT, C_TEXT, C_ZERO, C_RANDOM, C_TEXT, C_ZERO,
                               C_TEXT, C_TEXT, C_ZERO, C_ZERO, C_TEXT, C_RANDOM, C_TEXT, C_TEXT}}};
        write_file(dir, "valid_16_pages", seed(&g, 0, 4096, big, 1));
        const shape k8[] = {{3, {C_TEXT, C_ZERO, C_TEXT}}, {2, {C_RANDOM, C_TEXT}}};
        write_file(dir, "valid_8k_pages_contiguous", seed(&g, 1 | 2, 8192, k8, 2));
        const shape same[] = {{4, {C_TEXT, C_RANDOM, C_ZERO, C_TEXT}}};
        write_file(dir, "valid_same_destination_page", seed(&g, 4, 4096, same, 1));

        /* Broken: one flaw each. */
        out *o = seed(&g, 0, 4096, stream3, 3);
        o->len -= 7; /* the last packet loses 7 bytes (its length is clamped) */
        write_file(dir, "broken_truncated_last_packet", o);
        o = seed(&g, 0, 4096, stream3, 3);
        {
            size_t l0 = vmig_get_be16(o->buf + 2);
            size_t p1 = 1 + 3 + l0; /* the second packet's header */
            size_t l1 = vmig_get_be16(o->buf + p1 + 1);
            o->buf[p1 + 3 + l1 / 2] ^= 0x10;
        }
        write_file(dir, "broken_bit_flip_second_packet", o);
        o = seed(&g, 0, 4096, stream3, 3);
        o->buf[1] = 4; /* the first packet, of 4 pages, announced as 5 */
        write_file(dir, "broken_page_count", o);
        if (ids[c] == VMIG_CODEC_DEFLATE_PAGE && !g.ops->missing) {
            gen z = {g.ops, true, NULL};
            write_file(dir, "valid_stream_zlib_made", seed(&z, 0, 4096, stream3, 3));
        }
    }
    return 0;
}
