/*
 * The wire encoder and decoders against docs/wire-format.md: a round trip
 * of every message, then one rejection per rule of the spec, each with the
 * exact return code and a message that names the field. Every limit is
 * tested at `== limit` (accepted) and `limit + 1` (rejected).
 *
 * Negative inputs are built byte by byte with a small writer (not with the
 * encoder, which refuses invalid values), and decoded from heap buffers of
 * the exact size so that ASan sees any read past the end.
 *
 * VMIG_TEST_VERBOSE=1 prints every rejection sentence.
 */
#include <stdlib.h>

#include "src/wire/wire.h"

#include "../testutil.h"

/* ---- expectations ---- */

static vmig_error E;
static int verbose;

static vmig_error *fresh(void)
{
    memset(&E, 0, sizeof(E));
    return &E;
}
#define ERR fresh()

static void expect(int line, int rc, int code, const char *word)
{
    if (code == 0) {
        if (rc != 0) {
            fprintf(stderr, "line %d: expected success, got %d: %s\n", line, rc, E.msg);
            tu_failures++;
        }
        return;
    }
    if (rc != code || E.code != code || !strstr(E.msg, word)) {
        fprintf(stderr, "line %d: expected %d naming '%s', got %d (recorded %d): %s\n", line, code,
                word, rc, E.code, E.msg);
        tu_failures++;
    } else if (verbose) {
        fprintf(stderr, "line %d: ok: %s\n", line, E.msg);
    }
}
#define OK(expr)                expect(__LINE__, (expr), 0, NULL)
#define FAILS(expr, code, word) expect(__LINE__, (expr), (code), (word))
#define EPROTO_(expr, word)     FAILS(expr, VMIG_EPROTO, word)

/* A heap copy of exactly n bytes: reading past it is an ASan report. */
static uint8_t *exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    REQUIRE(q, "malloc");
    if (n)
        memcpy(q, p, n);
    return q;
}

/* ---- a byte writer for hand-built messages ---- */

typedef struct raw {
    uint8_t *b;
    size_t n, cap;
} raw;

static raw *raw_new(size_t cap)
{
    raw *r = calloc(1, sizeof(*r));
    REQUIRE(r, "calloc");
    r->b = calloc(1, cap);
    REQUIRE(r->b, "calloc");
    r->cap = cap;
    return r;
}
static void raw_free(raw *r)
{
    free(r->b);
    free(r);
}
static void put(raw *r, const void *p, size_t n)
{
    REQUIRE(r->n + n <= r->cap, "raw buffer too small");
    memcpy(r->b + r->n, p, n);
    r->n += n;
}
static void put8(raw *r, uint8_t v)
{
    put(r, &v, 1);
}
static void put16(raw *r, uint16_t v)
{
    uint8_t b[2];
    vmig_put_be16(b, v);
    put(r, b, 2);
}
static void put32(raw *r, uint32_t v)
{
    uint8_t b[4];
    vmig_put_be32(b, v);
    put(r, b, 4);
}
static void put64(raw *r, uint64_t v)
{
    uint8_t b[8];
    vmig_put_be64(b, v);
    put(r, b, 8);
}

/* ------------------------------------------------------------------ */
/* handshake                                                          */

static const uint8_t UUID[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void hs_fix_crc(uint8_t *b)
{
    vmig_put_be32(b + 36, vmig_crc32c(0, b, 36));
}

static void hs_make(uint8_t *b, uint8_t kind, uint16_t id, uint16_t count)
{
    vmig_wire_hs h = {.kind = kind, .channel_id = id, .channel_count = count};
    memcpy(h.uuid, UUID, 16);
    vmig_wire_hs_encode(&h, b);
}

static int hs_dec(const uint8_t *b, vmig_wire_hs *h)
{
    uint8_t *q = exact(b, VMIG_HS_LEN);
    int rc = vmig_wire_hs_decode(q, h, ERR);
    free(q);
    return rc;
}

static void test_handshake(void)
{
    uint8_t b[VMIG_HS_LEN];
    vmig_wire_hs h;

    /* Round trips, and the layout by hand. */
    hs_make(b, VMIG_CH_CONTROL, 0, 4);
    CHECK(vmig_get_be32(b) == 0x564D4947 && vmig_get_be16(b + 4) == 1 && b[6] == 0 && b[7] == 0,
          "handshake layout");
    CHECK(!memcmp(b + 8, UUID, 16) && vmig_get_be16(b + 24) == 0 && vmig_get_be16(b + 26) == 4,
          "handshake layout");
    CHECK(vmig_get_be32(b + 36) == vmig_crc32c(0, b, 36), "handshake crc");
    memset(&h, 0xAA, sizeof(h));
    OK(hs_dec(b, &h));
    CHECK(h.kind == VMIG_CH_CONTROL && h.channel_id == 0 && h.channel_count == 4 &&
              !memcmp(h.uuid, UUID, 16),
          "control handshake round trip");
    hs_make(b, VMIG_CH_DATA, 3, 4);
    OK(hs_dec(b, &h));
    CHECK(h.kind == VMIG_CH_DATA && h.channel_id == 3 && h.channel_count == 4,
          "data handshake round trip");

    /* magic, version */
    hs_make(b, VMIG_CH_DATA, 0, 1);
    b[0] ^= 1;
    hs_fix_crc(b);
    EPROTO_(hs_dec(b, &h), "magic");
    for (uint16_t v = 0; v <= 2; v += 2) {
        hs_make(b, VMIG_CH_DATA, 0, 1);
        vmig_put_be16(b + 4, v);
        hs_fix_crc(b);
        EPROTO_(hs_dec(b, &h), "version");
    }
    /* crc: of the crc field, of a uuid byte, of a count byte */
    hs_make(b, VMIG_CH_DATA, 0, 1);
    b[39] ^= 0x80;
    EPROTO_(hs_dec(b, &h), "crc");
    hs_make(b, VMIG_CH_DATA, 0, 1);
    b[12] ^= 1;
    EPROTO_(hs_dec(b, &h), "crc");
    hs_make(b, VMIG_CH_DATA, 0, 1);
    b[27] = 2;
    EPROTO_(hs_dec(b, &h), "crc");
    /* kind */
    for (unsigned k = 2; k < 256; k += 253) {
        hs_make(b, VMIG_CH_DATA, 0, 1);
        b[6] = (uint8_t)k;
        hs_fix_crc(b);
        EPROTO_(hs_dec(b, &h), "kind");
    }
    /* flags: resume on a data channel only, no other bit */
    hs_make(b, VMIG_CH_DATA, 2, 4);
    b[7] = VMIG_HS_F_RESUME;
    hs_fix_crc(b);
    OK(hs_dec(b, &h));
    CHECK(h.kind == VMIG_CH_DATA && h.flags == VMIG_HS_F_RESUME && h.channel_id == 2,
          "resume handshake round trip");
    {
        vmig_wire_hs r = {.kind = VMIG_CH_DATA, .flags = VMIG_HS_F_RESUME, .channel_count = 1};
        uint8_t rb[VMIG_HS_LEN];
        vmig_wire_hs_encode(&r, rb);
        CHECK(rb[7] == VMIG_HS_F_RESUME, "resume flag encoded at byte 7");
    }
    for (unsigned f = 2; f < 256; f <<= 1) {
        hs_make(b, VMIG_CH_DATA, 0, 1);
        b[7] = (uint8_t)f;
        hs_fix_crc(b);
        EPROTO_(hs_dec(b, &h), "unknown bits");
    }
    hs_make(b, VMIG_CH_CONTROL, 0, 1);
    b[7] = VMIG_HS_F_RESUME;
    hs_fix_crc(b);
    EPROTO_(hs_dec(b, &h), "on a control channel");
    /* every reserved byte */
    for (int i = 28; i < 36; i++) {
        hs_make(b, VMIG_CH_DATA, 0, 1);
        b[i] = 0x10;
        hs_fix_crc(b);
        EPROTO_(hs_dec(b, &h), "reserved");
    }
    /* channel_count: 0 rejected, 64 accepted, 65 rejected */
    hs_make(b, VMIG_CH_DATA, 0, 0);
    EPROTO_(hs_dec(b, &h), "channel_count");
    hs_make(b, VMIG_CH_CONTROL, 0, 0);
    EPROTO_(hs_dec(b, &h), "channel_count");
    hs_make(b, VMIG_CH_DATA, 63, 64);
    OK(hs_dec(b, &h));
    hs_make(b, VMIG_CH_CONTROL, 0, 64);
    OK(hs_dec(b, &h));
    hs_make(b, VMIG_CH_DATA, 0, 65);
    EPROTO_(hs_dec(b, &h), "channel_count");
    hs_make(b, VMIG_CH_DATA, 0, 0xFFFF);
    EPROTO_(hs_dec(b, &h), "channel_count");
    /* channel_id: count - 1 accepted, count rejected; control must be 0 */
    hs_make(b, VMIG_CH_DATA, 2, 3);
    OK(hs_dec(b, &h));
    hs_make(b, VMIG_CH_DATA, 3, 3);
    EPROTO_(hs_dec(b, &h), "channel_id");
    hs_make(b, VMIG_CH_DATA, 0xFFFF, 64);
    EPROTO_(hs_dec(b, &h), "channel_id");
    hs_make(b, VMIG_CH_CONTROL, 1, 4);
    EPROTO_(hs_dec(b, &h), "channel_id");
}

/* ------------------------------------------------------------------ */
/* control frames                                                     */

static void test_ctl_frame(void)
{
    static const char *names[] = {"unknown", "HELLO",     "READY",  "END",      "RESULT",
                                  "ERROR",   "DEVSTATE",  "COMMIT", "DEVCHUNK", "CKPT",
                                  "ACK",     "HEARTBEAT", "unknown"};
    for (unsigned t = 0; t < 13; t++)
        CHECK(!strcmp(vmig_wire_ctl_name(t), names[t]), "ctl_name(%u)", t);
    CHECK(!strcmp(vmig_wire_ctl_name(0x10001), "unknown"), "ctl_name(large)");

    /* READY: the 4-byte codec mask, 16 bytes in all. */
    uint8_t f[64];
    vmig_wire_ready_encode(0x15, f + 8);
    size_t n = vmig_wire_ctl_frame(f, VMIG_CTL_READY, 4);
    CHECK(n == 16, "READY frame length %zu", n);
    CHECK(vmig_get_be16(f) == 2 && vmig_get_be16(f + 2) == 0 && vmig_get_be32(f + 4) == 4 &&
              vmig_get_be32(f + 8) == 0x15 && vmig_get_be32(f + 12) == vmig_crc32c(0, f, 12),
          "READY layout");
    unsigned type = 99;
    uint32_t len = 99;
    OK(vmig_wire_ctl_decode_hdr(f, &type, &len, ERR));
    CHECK(type == VMIG_CTL_READY && len == 4, "READY header: %u %u", type, len);
    OK(vmig_wire_ctl_check_crc(f, 4, ERR));
    uint32_t codecs = 0;
    OK(vmig_wire_ready_decode(f + 8, 4, &codecs, ERR));
    CHECK(codecs == 0x15, "READY codecs 0x%x", codecs);
    /* bit 0 (none) is required; bits of codecs unknown here are dropped */
    vmig_put_be32(f + 8, 0x14);
    EPROTO_(vmig_wire_ready_decode(f + 8, 4, &codecs, ERR), "lacks bit 0");
    vmig_put_be32(f + 8, 0xffffffffu);
    OK(vmig_wire_ready_decode(f + 8, 4, &codecs, ERR));
    CHECK(codecs == (1u << VMIG_CODEC_COUNT) - 1, "READY unknown bits kept: 0x%x", codecs);
    vmig_put_be32(f + 8, 1);
    OK(vmig_wire_ready_decode(f + 8, 4, &codecs, ERR));
    CHECK(codecs == 1, "READY none only: 0x%x", codecs);
    EPROTO_(vmig_wire_ready_decode(f + 8, 3, &codecs, ERR), "3 bytes");
    EPROTO_(vmig_wire_ready_decode(f + 8, 5, &codecs, ERR), "5 bytes");

    /* A frame with a payload; crc over header and payload. */
    memcpy(f + 8, "abcdefgh", 8);
    n = vmig_wire_ctl_frame(f, VMIG_CTL_RESULT, 8);
    CHECK(n == 20 && vmig_get_be32(f + 16) == vmig_crc32c(0, f, 16), "RESULT frame");
    OK(vmig_wire_ctl_decode_hdr(f, &type, &len, ERR));
    CHECK(type == VMIG_CTL_RESULT && len == 8, "header");
    OK(vmig_wire_ctl_check_crc(f, 8, ERR));
    /* bad crc: a payload byte, the trailer, the type in the header */
    f[10] ^= 4;
    EPROTO_(vmig_wire_ctl_check_crc(f, 8, ERR), "crc");
    f[10] ^= 4;
    f[19] ^= 1;
    EPROTO_(vmig_wire_ctl_check_crc(f, 8, ERR), "crc");
    f[19] ^= 1;
    f[1] = VMIG_CTL_ERROR;
    EPROTO_(vmig_wire_ctl_check_crc(f, 8, ERR), "crc");
    f[1] = VMIG_CTL_RESULT;
    OK(vmig_wire_ctl_check_crc(f, 8, ERR));
    /* the caller's length must be the header's */
    FAILS(vmig_wire_ctl_check_crc(f, 7, ERR), VMIG_EINVAL, "payload_len");

    /* type: 0, 12 and 0xFFFF rejected, 1..11 accepted */
    uint8_t h[8] = {0};
    for (unsigned t = 0; t <= 12; t++) {
        vmig_put_be16(h, (uint16_t)t);
        vmig_put_be32(h + 4, t == VMIG_CTL_READY ? VMIG_READY_LEN
                             : t == VMIG_CTL_ACK ? VMIG_ACK_LEN
                                                 : 0);
        if (t >= 1 && t <= 11)
            OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
        else
            EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "type");
    }
    vmig_put_be16(h, 0xFFFF);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "type");
    /* flags */
    vmig_put_be16(h, VMIG_CTL_HELLO);
    vmig_put_be16(h + 2, 0x8000);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "flags");
    vmig_put_be16(h + 2, 1);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "flags");
    vmig_put_be16(h + 2, 0);
    vmig_put_be32(h + 4, 0);
    /* READY: the payload is exactly 4 bytes */
    vmig_put_be16(h, VMIG_CTL_READY);
    for (uint32_t l = 0; l <= 8; l++) {
        vmig_put_be32(h + 4, l);
        if (l == VMIG_READY_LEN)
            OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
        else
            EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "READY: payload length");
    }
    /* COMMIT too; DEVSTATE takes any length up to the limit */
    vmig_put_be16(h, VMIG_CTL_COMMIT);
    vmig_put_be32(h + 4, 1);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "COMMIT: payload length 1");
    vmig_put_be32(h + 4, 0);
    OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
    CHECK(type == VMIG_CTL_COMMIT, "COMMIT type %u", type);
    vmig_put_be16(h, VMIG_CTL_DEVSTATE);
    vmig_put_be32(h + 4, VMIG_WIRE_MAX_CTL_PAYLOAD);
    OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
    vmig_put_be32(h + 4, 0);
    OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
    vmig_put_be16(h, VMIG_CTL_HELLO);
    /* length: MAX_CTL_PAYLOAD accepted, +1 rejected */
    vmig_put_be32(h + 4, VMIG_WIRE_MAX_CTL_PAYLOAD);
    OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
    CHECK(len == VMIG_WIRE_MAX_CTL_PAYLOAD, "max length");
    vmig_put_be32(h + 4, VMIG_WIRE_MAX_CTL_PAYLOAD + 1);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "length");
    vmig_put_be32(h + 4, UINT32_MAX);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "length");

    /* A frame of the largest payload checks out. */
    size_t big = VMIG_WIRE_MAX_CTL_PAYLOAD;
    uint8_t *bf = calloc(1, big + 12);
    REQUIRE(bf, "calloc");
    for (size_t i = 0; i < big; i++)
        bf[8 + i] = (uint8_t)(i * 7);
    CHECK(vmig_wire_ctl_frame(bf, VMIG_CTL_HELLO, (uint32_t)big) == big + 12, "big frame");
    OK(vmig_wire_ctl_decode_hdr(bf, &type, &len, ERR));
    OK(vmig_wire_ctl_check_crc(bf, len, ERR));
    bf[8 + big / 2] ^= 1;
    EPROTO_(vmig_wire_ctl_check_crc(bf, len, ERR), "crc");
    free(bf);
}

/* ---- HELLO ---- */

static vmig_wire_block BLK[VMIG_WIRE_MAX_BLOCKS + 1];
static vmig_wire_device DEVS[VMIG_WIRE_MAX_DEVICES];

static void hello_fixed(raw *r, uint32_t pp, uint16_t ch, uint8_t zd, uint8_t v, uint32_t feat,
                        uint32_t nb)
{
    r->n = 0;
    put32(r, pp);
    put16(r, ch);
    put8(r, zd);
    put8(r, v);
    put32(r, feat);
    put32(r, nb);
}

static void hello_block(raw *r, const void *name, uint16_t nl, uint64_t length, uint32_t ps)
{
    put16(r, nl);
    put(r, name, nl);
    put64(r, length);
    put32(r, ps);
}

static int hello_dec(const raw *r, vmig_wire_hello *h, uint32_t max_blocks)
{
    uint8_t *q = exact(r->b, r->n);
    h->blocks = BLK;
    h->devices = DEVS;
    int rc = vmig_wire_hello_decode(q, r->n, h, max_blocks, ERR);
    free(q);
    return rc;
}

/* One-block HELLO with the given fields (and a valid block "ram"). */
static int hello1(raw *r, uint32_t pp, uint16_t ch, uint8_t zd, uint8_t v, uint32_t feat,
                  uint64_t length, uint32_t ps)
{
    vmig_wire_hello h;
    hello_fixed(r, pp, ch, zd, v, feat, 1);
    hello_block(r, "ram", 3, length, ps);
    return hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS);
}

static void test_hello(void)
{
    raw *r = raw_new(1 << 20);
    vmig_wire_hello h;
    static uint8_t enc[1 << 20];
    char longname[256];
    memset(longname, 'n', 255);
    longname[255] = 0;

    /* Round trip: the encoder produces exactly the hand-built bytes. */
    vmig_wire_block in[3] = {
        {.name = "pc.ram", .length = 1ull << 30, .page_size = 4096},
        {.name = "vga", .length = 16 << 20, .page_size = 2 << 20},
        {.length = 1ull << 48, .page_size = 65536},
    };
    memcpy(in[2].name, longname, 256);
    vmig_wire_hello hin = {.packet_pages = 32,
                           .channels = 8,
                           .zero_detect = 1,
                           .verify = 2,
                           .nblocks = 3,
                           .blocks = in};
    int n = vmig_wire_hello_encode(&hin, enc, sizeof(enc));
    hello_fixed(r, 32, 8, 1, 2, 0, 3);
    hello_block(r, "pc.ram", 6, 1ull << 30, 4096);
    hello_block(r, "vga", 3, 16 << 20, 2 << 20);
    hello_block(r, longname, 255, 1ull << 48, 65536);
    CHECK(n == (int)r->n && !memcmp(enc, r->b, r->n), "HELLO encoding: %d vs %zu bytes", n, r->n);
    memset(&h, 0, sizeof(h));
    OK(hello_dec(r, &h, 3));
    CHECK(h.packet_pages == 32 && h.channels == 8 && h.zero_detect == 1 && h.verify == 2 &&
              h.nblocks == 3,
          "HELLO fields");
    for (int i = 0; i < 3; i++)
        CHECK(!strcmp(BLK[i].name, in[i].name) && BLK[i].length == in[i].length &&
                  BLK[i].page_size == in[i].page_size,
              "HELLO block %d", i);

    /* Encoder: room exactly enough, one byte short, and invalid values. */
    CHECK(vmig_wire_hello_encode(&hin, enc, (size_t)n) == n, "exact room");
    for (size_t cap = 0; cap < (size_t)n; cap += (cap < 40 ? 1 : 97))
        CHECK(vmig_wire_hello_encode(&hin, enc, cap) == VMIG_EINVAL, "cap %zu", cap);
    CHECK(vmig_wire_hello_encode(&hin, enc, (size_t)n - 1) == VMIG_EINVAL, "cap n-1");
    {
        vmig_wire_hello b = hin;
        vmig_wire_block bb[2] = {in[0], in[1]};
        b.blocks = bb;
        b.nblocks = 2;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) > 0, "2 blocks");
        strcpy(bb[1].name, "pc.ram");
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "dup name");
        bb[1].name[0] = 0;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "empty name");
        memset(bb[1].name, 'x', sizeof(bb[1].name));
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "unterminated name");
        bb[1] = in[1];
        bb[1].page_size = 3000;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "page size");
        bb[1] = in[1];
        bb[1].length = 0;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "length 0");
        bb[1] = in[1];
        b.packet_pages = 33; /* 33 * 2 MiB > 64 MiB */
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "payload");
        b = hin;
        b.channels = 65;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "channels");
        b = hin;
        b.verify = 3;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "verify");
        b = hin;
        b.nblocks = 0;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "nblocks 0");
        b = hin;
        b.blocks = NULL;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "no blocks");
        b = hin;
        b.features = VMIG_HELLO_F_DEVSTATE;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) > 0 && vmig_get_be32(enc + 8) == 1,
              "features encoded");
        b.features = 2;
        CHECK(vmig_wire_hello_encode(&b, enc, sizeof(enc)) == VMIG_EINVAL, "unknown feature");
    }

    /* packet_pages: 0 rejected, 1 and 1024 accepted, 1025 rejected */
    EPROTO_(hello1(r, 0, 1, 0, 0, 0, 4096, 4096), "packet_pages");
    OK(hello1(r, 1, 1, 0, 0, 0, 4096, 4096));
    OK(hello1(r, 1024, 1, 0, 0, 0, 4096, 4096));
    EPROTO_(hello1(r, 1025, 1, 0, 0, 0, 4096, 4096), "packet_pages");
    EPROTO_(hello1(r, UINT32_MAX, 1, 0, 0, 0, 4096, 4096), "packet_pages");
    /* channels: 0 rejected, 64 accepted, 65 rejected */
    EPROTO_(hello1(r, 1, 0, 0, 0, 0, 4096, 4096), "channels");
    OK(hello1(r, 1, 64, 0, 0, 0, 4096, 4096));
    EPROTO_(hello1(r, 1, 65, 0, 0, 0, 4096, 4096), "channels");
    /* zero_detect and verify: 2 accepted, 3 rejected */
    OK(hello1(r, 1, 1, 2, 2, 0, 4096, 4096));
    EPROTO_(hello1(r, 1, 1, 3, 0, 0, 4096, 4096), "zero_detect");
    EPROTO_(hello1(r, 1, 1, 255, 0, 0, 4096, 4096), "zero_detect");
    EPROTO_(hello1(r, 1, 1, 0, 3, 0, 4096, 4096), "verify");
    /* features: bits 0..2 (DEVSTATE, DEVICES, COLO) known, every other bit refused */
    OK(hello1(r, 1, 1, 0, 0, VMIG_HELLO_F_DEVSTATE, 4096, 4096));
    {
        vmig_wire_hello hf;
        hello_fixed(r, 1, 1, 0, 0, VMIG_HELLO_F_DEVSTATE, 1);
        hello_block(r, "ram", 3, 4096, 4096);
        OK(hello_dec(r, &hf, VMIG_WIRE_MAX_BLOCKS));
        CHECK(hf.features == VMIG_HELLO_F_DEVSTATE, "features decoded: 0x%x", hf.features);
    }
    OK(hello1(r, 1, 1, 0, 0, VMIG_HELLO_F_COLO, 4096, 4096));
    OK(hello1(r, 1, 1, 0, 0, VMIG_HELLO_F_RESUME, 4096, 4096));
    EPROTO_(hello1(r, 1, 1, 0, 0, 0x10, 4096, 4096), "features");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0x19, 4096, 4096), "features");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0x80000000u, 4096, 4096), "features");
    /* page_size: power of two in 4096..2 MiB */
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 4096, 0), "page_size");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 12288, 6144), "page_size");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 8192, 8191), "page_size");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 4096, 2048), "page_size");
    OK(hello1(r, 1, 1, 0, 0, 0, 4096, 4096));
    OK(hello1(r, 1, 1, 0, 0, 0, 2 << 20, 2 << 20));
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 4 << 20, 4 << 20), "page_size");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 1ull << 31, 1u << 31), "page_size");
    /* packet_pages * page_size: == 64 MiB accepted, one page more rejected */
    OK(hello1(r, 32, 1, 0, 0, 0, 2 << 20, 2 << 20));
    EPROTO_(hello1(r, 33, 1, 0, 0, 0, 2 << 20, 2 << 20), "packet_pages");
    OK(hello1(r, 1024, 1, 0, 0, 0, 65536, 65536));
    EPROTO_(hello1(r, 1024, 1, 0, 0, 0, 131072, 131072), "payload");
    /* length: > 0, multiple of page_size, <= 2^48 */
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 0, 4096), "length");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 4097, 4096), "length");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 4095, 4096), "length");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, 3 << 20, 2 << 20), "length");
    OK(hello1(r, 1, 1, 0, 0, 0, 1ull << 48, 4096));
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, (1ull << 48) + 4096, 4096), "length");
    EPROTO_(hello1(r, 1, 1, 0, 0, 0, UINT64_MAX - 4095, 4096), "length");

    /* nblocks: 0 rejected, 1024 accepted, 1025 rejected, beyond the caller's room */
    hello_fixed(r, 1, 1, 0, 0, 0, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "nblocks");
    for (uint32_t nb = 1024; nb <= 1025; nb++) {
        hello_fixed(r, 1, 1, 0, 0, 0, nb);
        for (uint32_t i = 0; i < nb; i++) {
            char nm[16];
            int l = snprintf(nm, sizeof(nm), "b%u", i);
            hello_block(r, nm, (uint16_t)l, 4096, 4096);
        }
        if (nb == 1024) {
            OK(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS));
            CHECK(h.nblocks == 1024 && !strcmp(BLK[1023].name, "b1023"), "1024 blocks");
            EPROTO_(hello_dec(r, &h, 1023), "nblocks");
        } else {
            EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS + 1), "nblocks");
        }
    }
    hello_fixed(r, 1, 1, 0, 0, 0, UINT32_MAX);
    EPROTO_(hello_dec(r, &h, UINT32_MAX), "nblocks");
    /* name_len: 0 rejected, 255 accepted, 256 rejected */
    hello_fixed(r, 1, 1, 0, 0, 0, 1);
    hello_block(r, "", 0, 4096, 4096);
    EPROTO_(hello_dec(r, &h, 4), "name_len");
    hello_fixed(r, 1, 1, 0, 0, 0, 1);
    hello_block(r, longname, 255, 4096, 4096);
    OK(hello_dec(r, &h, 4));
    CHECK(strlen(BLK[0].name) == 255, "255-byte name");
    char name256[256];
    memset(name256, 'n', sizeof(name256));
    hello_fixed(r, 1, 1, 0, 0, 0, 1);
    hello_block(r, name256, 256, 4096, 4096);
    EPROTO_(hello_dec(r, &h, 4), "name_len");
    /* a NUL inside the name: first, middle, last byte */
    for (int at = 0; at < 3; at++) {
        char nm[3] = {'a', 'b', 'c'};
        nm[at] = 0;
        hello_fixed(r, 1, 1, 0, 0, 0, 1);
        hello_block(r, nm, 3, 4096, 4096);
        EPROTO_(hello_dec(r, &h, 4), "name");
        CHECK(strstr(E.msg, "NUL"), "NUL named: %s", E.msg);
    }
    /* duplicate names; names differing only in length are distinct */
    hello_fixed(r, 1, 1, 0, 0, 0, 3);
    hello_block(r, "ram", 3, 4096, 4096);
    hello_block(r, "ra", 2, 4096, 4096);
    hello_block(r, "ram", 3, 8192, 4096);
    EPROTO_(hello_dec(r, &h, 4), "name 'ram'");
    hello_fixed(r, 1, 1, 0, 0, 0, 3);
    hello_block(r, "ram", 3, 4096, 4096);
    hello_block(r, "ra", 2, 4096, 4096);
    hello_block(r, "ram0", 4, 8192, 4096);
    OK(hello_dec(r, &h, 4));

    /* Every truncation fails (and names the payload), one byte more fails. */
    hello_fixed(r, 4, 2, 1, 1, 0, 2);
    hello_block(r, "alpha", 5, 1 << 20, 4096);
    hello_block(r, "beta", 4, 4 << 20, 2 << 20);
    OK(hello_dec(r, &h, 4));
    size_t full = r->n;
    for (size_t cut = 0; cut < full; cut++) {
        r->n = cut;
        EPROTO_(hello_dec(r, &h, 4), "payload");
    }
    r->n = full;
    put8(r, 0);
    EPROTO_(hello_dec(r, &h, 4), "after the last block");
    r->n = full;
    put32(r, 0);
    EPROTO_(hello_dec(r, &h, 4), "payload");

    /* No array from the caller. */
    {
        vmig_wire_hello z = {0};
        hello_fixed(r, 1, 1, 0, 0, 0, 1);
        hello_block(r, "ram", 3, 4096, 4096);
        FAILS(vmig_wire_hello_decode(r->b, r->n, &z, 1, ERR), VMIG_EINVAL, "blocks");
    }
    raw_free(r);
}

/* ---- END ---- */

static int end_dec(const uint8_t *p, size_t n, vmig_wire_end *e, uint32_t expect)
{
    uint8_t *q = exact(p, n);
    int rc = vmig_wire_end_decode(q, n, e, expect, ERR);
    free(q);
    return rc;
}

/* HELLO with a device list (HELLO_F_DEVICES) and DEVCHUNK payloads. */
static void hello_devhead(raw *r, uint8_t path, uint8_t rsv, uint16_t n, uint32_t chunk)
{
    hello_fixed(r, 128, 4, 2, 1, VMIG_HELLO_F_DEVICES, 1);
    hello_block(r, "ram", 3, 1 << 20, 4096);
    put8(r, path);
    put8(r, rsv);
    put16(r, n);
    put32(r, chunk);
}

static void hello_dev(raw *r, const char *id, uint16_t nl, uint32_t instance)
{
    put16(r, nl);
    put(r, id, nl);
    put32(r, instance);
}

static void test_hello_devices(void)
{
    raw *r = raw_new(1 << 20);
    vmig_wire_hello h;
    static uint8_t enc[1 << 20];
    char longid[256];
    memset(longid, 'd', 255);
    longid[255] = 0;

    hello_devhead(r, VMIG_WIRE_DEV_CONTROL, 0, 3, 1 << 20);
    hello_dev(r, "gpu", 3, 0);
    hello_dev(r, "gpu", 3, 1); /* same id, another instance */
    hello_dev(r, longid, 255, UINT32_MAX);
    OK(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS));
    CHECK(h.ndevices == 3 && h.dev_path == VMIG_WIRE_DEV_CONTROL && h.dev_chunk == 1u << 20 &&
              !strcmp(h.devices[0].id, "gpu") && h.devices[1].instance == 1 &&
              !strcmp(h.devices[2].id, longid) && h.devices[2].instance == UINT32_MAX,
          "devices decoded");
    int n = vmig_wire_hello_encode(&h, enc, sizeof(enc));
    CHECK(n == (int)r->n && !memcmp(enc, r->b, r->n), "devices re-encode to the same bytes");
    CHECK(vmig_wire_hello_encode(&h, enc, (size_t)n - 1) == VMIG_EINVAL, "cap n-1");
    /* Without the feature bit, no device section is written or read. */
    vmig_wire_hello plain = h;
    plain.features = 0;
    n = vmig_wire_hello_encode(&plain, enc, sizeof(enc));
    CHECK(n == 16 + 2 + 3 + 12, "no device list without the feature: %d", n);
    vmig_wire_hello dup = h;
    dup.devices = DEVS;
    snprintf(DEVS[1].id, sizeof(DEVS[1].id), "gpu");
    DEVS[1].instance = 0;
    CHECK(vmig_wire_hello_encode(&dup, enc, sizeof(enc)) == VMIG_EINVAL, "duplicate device");

    hello_devhead(r, 0, 0, 2, 4096);
    hello_dev(r, "cpu", 3, 7);
    hello_dev(r, "cpu", 3, 7);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "repeats");
    hello_devhead(r, 2, 0, 1, 4096);
    hello_dev(r, "a", 1, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "dev_path");
    hello_devhead(r, 0, 1, 1, 4096);
    hello_dev(r, "a", 1, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "must be 0");
    hello_devhead(r, 0, 0, 0, 4096);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "ndevices");
    hello_devhead(r, 0, 0, VMIG_WIRE_MAX_DEVICES + 1, 4096);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "ndevices");
    hello_devhead(r, 0, 0, 1, 4095);
    hello_dev(r, "a", 1, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "dev_chunk");
    hello_devhead(r, 0, 0, 1, VMIG_WIRE_MAX_DEV_CHUNK + 1);
    hello_dev(r, "a", 1, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "dev_chunk");
    hello_devhead(r, 0, 0, 1, VMIG_WIRE_MAX_DEV_CHUNK);
    hello_dev(r, "a", 1, 0);
    OK(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS));
    hello_devhead(r, 0, 0, 1, 4096);
    hello_dev(r, "", 0, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "id_len");
    hello_devhead(r, 0, 0, 1, 4096);
    hello_dev(r, "a\0b", 3, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "NUL");
    hello_devhead(r, 0, 0, 2, 4096);
    hello_dev(r, "a", 1, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "truncated");
    hello_devhead(r, 0, 0, 1, 4096);
    hello_dev(r, "abc", 3, 0);
    r->n -= 1; /* instance cut short */
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "truncated");
    hello_devhead(r, 0, 0, 1, 4096);
    hello_dev(r, "abc", 3, 0);
    put8(r, 0);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "after the last device");
    hello_fixed(r, 128, 4, 2, 1, VMIG_HELLO_F_DEVICES, 1);
    hello_block(r, "ram", 3, 1 << 20, 4096);
    EPROTO_(hello_dec(r, &h, VMIG_WIRE_MAX_BLOCKS), "device list");

    /* DEVCHUNK: device index, flags, chunk, data within the announced size. */
    uint8_t dc[16 + 4096];
    memset(dc, 0xAB, sizeof(dc));
    vmig_wire_devchunk c = {.device = 2, .last = true, .chunk = 77};
    vmig_wire_devchunk_encode_hdr(&c, dc);
    vmig_wire_devchunk d;
    OK(vmig_wire_devchunk_decode(dc, 8 + 4096, 3, 4096, &d, ERR));
    CHECK(d.device == 2 && d.last && d.chunk == 77 && d.len == 4096 && d.data == dc + 8,
          "devchunk decoded");
    EPROTO_(vmig_wire_devchunk_decode(dc, 8 + 4096, 2, 4096, &d, ERR), "device 2");
    EPROTO_(vmig_wire_devchunk_decode(dc, 8 + 4096, 3, 4095, &d, ERR), "more than");
    EPROTO_(vmig_wire_devchunk_decode(dc, 7, 3, 4096, &d, ERR), "shorter");
    OK(vmig_wire_devchunk_decode(dc, 8, 3, 4096, &d, ERR)); /* empty, last */
    c.last = false;
    vmig_wire_devchunk_encode_hdr(&c, dc);
    EPROTO_(vmig_wire_devchunk_decode(dc, 8, 3, 4096, &d, ERR), "empty");
    vmig_put_be16(dc + 2, 2);
    EPROTO_(vmig_wire_devchunk_decode(dc, 9, 3, 4096, &d, ERR), "flags");
    vmig_put_be16(dc + 2, 0);
    vmig_put_be32(dc + 4, VMIG_WIRE_MAX_DEV_CHUNKS);
    EPROTO_(vmig_wire_devchunk_decode(dc, 9, 3, 4096, &d, ERR), "limit");
    vmig_put_be32(dc + 4, VMIG_WIRE_MAX_DEV_CHUNKS - 1);
    OK(vmig_wire_devchunk_decode(dc, 9, 3, 4096, &d, ERR));
    raw_free(r);
}

static void test_end(void)
{
    static uint8_t dg[VMIG_WIRE_MAX_BLOCKS][16], out[VMIG_WIRE_MAX_BLOCKS][16];
    static uint8_t buf[16 * 1024 + 64];
    for (int i = 0; i < VMIG_WIRE_MAX_BLOCKS; i++)
        for (int k = 0; k < 16; k++)
            dg[i][k] = (uint8_t)(i * 16 + k);

    vmig_wire_end e = {.nblocks = 3,
                       .digests = dg,
                       .packets = 0x0102030405060708ull,
                       .normal_pages = 1ull << 40,
                       .zero_pages = UINT64_MAX};
    int n = vmig_wire_end_encode(&e, buf, sizeof(buf));
    CHECK(n == 4 + 48 + 24, "END length %d", n);
    CHECK(vmig_get_be32(buf) == 3 && !memcmp(buf + 4, dg, 48) &&
              vmig_get_be64(buf + 52) == e.packets && vmig_get_be64(buf + 60) == 1ull << 40 &&
              vmig_get_be64(buf + 68) == UINT64_MAX,
          "END layout");
    vmig_wire_end d = {.digests = out};
    OK(end_dec(buf, (size_t)n, &d, 3));
    CHECK(d.nblocks == 3 && !memcmp(out, dg, 48) && d.packets == e.packets &&
              d.normal_pages == e.normal_pages && d.zero_pages == e.zero_pages,
          "END round trip");
    /* nblocks must equal HELLO's */
    EPROTO_(end_dec(buf, (size_t)n, &d, 2), "nblocks");
    EPROTO_(end_dec(buf, (size_t)n, &d, 4), "nblocks");
    /* every truncation, and one byte more */
    for (int cut = 0; cut < n; cut++)
        EPROTO_(end_dec(buf, (size_t)cut, &d, 3), "payload");
    buf[n] = 0;
    EPROTO_(end_dec(buf, (size_t)n + 1, &d, 3), "payload");
    CHECK(strstr(E.msg, "overlong"), "overlong named: %s", E.msg);
    /* 1024 blocks (the limit) */
    e.nblocks = VMIG_WIRE_MAX_BLOCKS;
    n = vmig_wire_end_encode(&e, buf, sizeof(buf));
    CHECK(n == 4 + 16 * 1024 + 24, "END of 1024 blocks: %d", n);
    OK(end_dec(buf, (size_t)n, &d, VMIG_WIRE_MAX_BLOCKS));
    CHECK(d.nblocks == 1024 && !memcmp(out, dg, sizeof(dg)), "1024 digests");
    /* caller mistakes */
    FAILS(end_dec(buf, (size_t)n, &d, 0), VMIG_EINVAL, "block count");
    FAILS(end_dec(buf, (size_t)n, &d, VMIG_WIRE_MAX_BLOCKS + 1), VMIG_EINVAL, "block count");
    e.nblocks = 3;
    CHECK(vmig_wire_end_encode(&e, buf, 75) == VMIG_EINVAL, "END cap short");
    CHECK(vmig_wire_end_encode(&e, buf, 76) == 76, "END cap exact");
    e.nblocks = 0;
    CHECK(vmig_wire_end_encode(&e, buf, sizeof(buf)) == VMIG_EINVAL, "END 0 blocks");
    e.nblocks = VMIG_WIRE_MAX_BLOCKS + 1;
    CHECK(vmig_wire_end_encode(&e, buf, sizeof(buf)) == VMIG_EINVAL, "END 1025 blocks");
    e.nblocks = 1;
    e.digests = NULL;
    CHECK(vmig_wire_end_encode(&e, buf, sizeof(buf)) == VMIG_EINVAL, "END no digests");
}

/* ---- CKPT, ACK, HEARTBEAT ---- */

static int ckpt_dec(const uint8_t *p, size_t n, vmig_wire_ckpt *c, uint32_t expect)
{
    uint8_t *q = exact(p, n);
    int rc = vmig_wire_ckpt_decode(q, n, c, expect, ERR);
    free(q);
    return rc;
}

static void test_ckpt(void)
{
    uint8_t dg[2][16], out[2][16], buf[128];
    for (int i = 0; i < 32; i++)
        dg[i / 16][i % 16] = (uint8_t)(0xA0 + i);
    vmig_wire_ckpt c = {
        .id = 0x1122334455667788ull,
        .pass = 7,
        .end = {.nblocks = 2, .digests = dg, .packets = 5, .normal_pages = 9, .zero_pages = 3}};
    int n = vmig_wire_ckpt_encode(&c, buf, sizeof(buf));
    CHECK(n == 12 + 4 + 32 + 24, "CKPT length %d", n);
    CHECK(vmig_get_be64(buf) == c.id && vmig_get_be32(buf + 8) == 7 &&
              vmig_get_be32(buf + 12) == 2 && !memcmp(buf + 16, dg, 32) &&
              vmig_get_be64(buf + 48) == 5,
          "CKPT layout");
    vmig_wire_ckpt d = {.end = {.digests = out}};
    OK(ckpt_dec(buf, (size_t)n, &d, 2));
    CHECK(d.id == c.id && d.pass == 7 && d.end.nblocks == 2 && !memcmp(out, dg, 32) &&
              d.end.packets == 5 && d.end.normal_pages == 9 && d.end.zero_pages == 3,
          "CKPT round trip");
    /* every truncation, one byte more, another block count */
    for (int cut = 0; cut < n; cut++)
        EPROTO_(ckpt_dec(buf, (size_t)cut, &d, 2), "CKPT");
    buf[n] = 0;
    EPROTO_(ckpt_dec(buf, (size_t)n + 1, &d, 2), "overlong");
    EPROTO_(ckpt_dec(buf, (size_t)n, &d, 1), "nblocks");
    CHECK(strstr(E.msg, "CKPT 1234605616436508552"), "the checkpoint named: %s", E.msg);
    /* pass 0 is refused */
    vmig_put_be32(buf + 8, 0);
    EPROTO_(ckpt_dec(buf, (size_t)n, &d, 2), "pass 0");
    CHECK(vmig_wire_ckpt_encode(&c, buf, 11) == VMIG_EINVAL, "CKPT cap short");
    CHECK(vmig_wire_ckpt_encode(&c, buf, (size_t)n - 1) == VMIG_EINVAL, "CKPT cap short by one");
    c.pass = 0;
    CHECK(vmig_wire_ckpt_encode(&c, buf, sizeof(buf)) == VMIG_EINVAL, "CKPT of pass 0 encoded");

    /* ACK: exactly 8 bytes */
    uint8_t a[VMIG_ACK_LEN + 1];
    uint64_t id = 0;
    vmig_wire_ack_encode(0xFEDCBA9876543210ull, a);
    CHECK(vmig_get_be64(a) == 0xFEDCBA9876543210ull, "ACK layout");
    OK(vmig_wire_ack_decode(a, VMIG_ACK_LEN, &id, ERR));
    CHECK(id == 0xFEDCBA9876543210ull, "ACK round trip");
    EPROTO_(vmig_wire_ack_decode(a, 7, &id, ERR), "ACK");
    EPROTO_(vmig_wire_ack_decode(a, 9, &id, ERR), "ACK");

    /* the header rules of ACK and HEARTBEAT */
    uint8_t h[8] = {0};
    unsigned type;
    uint32_t len;
    vmig_put_be16(h, VMIG_CTL_ACK);
    vmig_put_be32(h + 4, 7);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "must be 8");
    vmig_put_be16(h, VMIG_CTL_HEARTBEAT);
    vmig_put_be32(h + 4, 1);
    EPROTO_(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR), "must be 0");
    vmig_put_be32(h + 4, 0);
    OK(vmig_wire_ctl_decode_hdr(h, &type, &len, ERR));
    CHECK(type == VMIG_CTL_HEARTBEAT && len == 0, "HEARTBEAT header");
}

/* ---- RESULT / ERROR ---- */

static int st_dec(const uint8_t *p, size_t n, bool is_error, vmig_wire_status *st)
{
    uint8_t *q = exact(p, n);
    int rc = vmig_wire_status_decode(q, n, is_error, st, ERR);
    free(q);
    return rc;
}

static void st_raw(raw *r, int32_t status, const void *msg, uint16_t len)
{
    r->n = 0;
    put32(r, (uint32_t)status);
    put16(r, len);
    put(r, msg, len);
}

static void test_status(void)
{
    static vmig_wire_status st;
    static uint8_t buf[2048];
    static char msg[VMIG_WIRE_MAX_MSG + 2];
    raw *r = raw_new(4096);

    int n = vmig_wire_status_encode(0, "", buf, sizeof(buf));
    CHECK(n == 6 && vmig_get_be32(buf) == 0 && vmig_get_be16(buf + 4) == 0, "RESULT ok bytes");
    OK(st_dec(buf, (size_t)n, false, &st));
    CHECK(st.status == 0 && st.msg[0] == 0, "RESULT ok");
    CHECK(vmig_wire_status_encode(0, NULL, buf, sizeof(buf)) == 6, "NULL message");
    n = vmig_wire_status_encode(VMIG_EVERIFY, "digest mismatch", buf, sizeof(buf));
    CHECK(n == 21 && vmig_get_be32(buf) == 0xFFFFFFFAu && vmig_get_be16(buf + 4) == 15 &&
              !memcmp(buf + 6, "digest mismatch", 15),
          "status layout");
    OK(st_dec(buf, (size_t)n, false, &st));
    CHECK(st.status == VMIG_EVERIFY && !strcmp(st.msg, "digest mismatch"), "RESULT error");
    OK(st_dec(buf, (size_t)n, true, &st));
    CHECK(st.status == VMIG_EVERIFY && !strcmp(st.msg, "digest mismatch"), "ERROR");
    n = vmig_wire_status_encode(INT32_MIN, "x", buf, sizeof(buf));
    OK(st_dec(buf, (size_t)n, true, &st));
    CHECK(st.status == INT32_MIN, "INT32_MIN");

    /* status: ERROR needs < 0, RESULT <= 0 */
    st_raw(r, 0, "m", 1);
    EPROTO_(st_dec(r->b, r->n, true, &st), "status");
    OK(st_dec(r->b, r->n, false, &st));
    st_raw(r, 1, "m", 1);
    EPROTO_(st_dec(r->b, r->n, true, &st), "status");
    EPROTO_(st_dec(r->b, r->n, false, &st), "status");
    st_raw(r, INT32_MAX, "m", 1);
    EPROTO_(st_dec(r->b, r->n, false, &st), "status");
    st_raw(r, -1, "m", 1);
    OK(st_dec(r->b, r->n, true, &st));

    /* msg_len: 1024 accepted, 1025 rejected */
    memset(msg, 'm', sizeof(msg) - 1);
    st_raw(r, -1, msg, VMIG_WIRE_MAX_MSG);
    OK(st_dec(r->b, r->n, true, &st));
    CHECK(strlen(st.msg) == VMIG_WIRE_MAX_MSG, "1024-byte message");
    st_raw(r, -1, msg, VMIG_WIRE_MAX_MSG + 1);
    EPROTO_(st_dec(r->b, r->n, true, &st), "msg_len");
    EPROTO_(st_dec(r->b, r->n, false, &st), "msg_len");
    st_raw(r, -1, "", 0);
    put16(r, 0); /* filler so that a huge msg_len is not merely truncated */
    vmig_put_be16(r->b + 4, 0xFFFF);
    EPROTO_(st_dec(r->b, r->n, true, &st), "msg_len");
    /* NUL inside the message */
    st_raw(r, -1, "ab\0d", 4);
    EPROTO_(st_dec(r->b, r->n, true, &st), "msg");
    CHECK(strstr(E.msg, "NUL"), "NUL named: %s", E.msg);
    st_raw(r, 0, "\0", 1);
    EPROTO_(st_dec(r->b, r->n, false, &st), "NUL");
    /* truncations and one byte more */
    st_raw(r, -3, "hello", 5);
    for (size_t cut = 0; cut < r->n; cut++)
        EPROTO_(st_dec(r->b, cut, true, &st), "payload");
    put8(r, 'x');
    EPROTO_(st_dec(r->b, r->n, true, &st), "payload");
    CHECK(strstr(E.msg, "overlong"), "overlong named: %s", E.msg);

    /* encoder: 1024 accepted, 1025 refused, status > 0 refused, cap */
    msg[VMIG_WIRE_MAX_MSG] = 0;
    CHECK(vmig_wire_status_encode(-1, msg, buf, sizeof(buf)) == 6 + VMIG_WIRE_MAX_MSG,
          "encode 1024");
    CHECK(vmig_wire_status_encode(-1, msg, buf, 6 + VMIG_WIRE_MAX_MSG - 1) == VMIG_EINVAL,
          "encode cap short");
    msg[VMIG_WIRE_MAX_MSG] = 'm';
    msg[VMIG_WIRE_MAX_MSG + 1] = 0;
    CHECK(vmig_wire_status_encode(-1, msg, buf, sizeof(buf)) == VMIG_EINVAL, "encode 1025");
    CHECK(vmig_wire_status_encode(1, "x", buf, sizeof(buf)) == VMIG_EINVAL, "encode status 1");
    raw_free(r);
}

/* ------------------------------------------------------------------ */
/* data packets                                                       */

enum { PG = 4096 };
static uint8_t P[VMIG_PKT_HDR_LEN + 8 * 1100];

static size_t pkt(uint8_t type, uint64_t seq, uint32_t pass, uint32_t ps, uint32_t normal,
                  uint32_t zero, const char *name, const uint64_t *offs)
{
    vmig_pkt_hdr h = {
        .type = type, .seq = seq, .pass = pass, .page_size = ps, .normal = normal, .zero = zero};
    if (name)
        snprintf(h.block, sizeof(h.block), "%s", name);
    return vmig_wire_pkt_encode(&h, offs, P);
}

static int hdr_dec(vmig_pkt_hdr *h, uint32_t max_pages)
{
    uint8_t *q = exact(P, VMIG_PKT_HDR_LEN);
    int rc = vmig_wire_pkt_decode_hdr(q, h, max_pages, ERR);
    free(q);
    return rc;
}

/* decode_hdr, then decode_offsets over exact copies. */
static int pkt_dec(vmig_pkt_hdr *h, uint64_t block_len, uint64_t *offs)
{
    int rc = hdr_dec(h, VMIG_WIRE_MAX_PACKET_PAGES);
    if (rc)
        return rc;
    size_t n = (size_t)h->normal + h->zero;
    uint8_t *hq = exact(P, VMIG_PKT_HDR_LEN);
    uint8_t *oq = n ? exact(P + VMIG_PKT_HDR_LEN, 8 * n) : NULL;
    rc = vmig_wire_pkt_decode_offsets(h, hq, oq, block_len, offs, ERR);
    free(hq);
    free(oq);
    return rc;
}

static void test_packet_roundtrip(void)
{
    static uint64_t offs[1100], out[1100];
    vmig_pkt_hdr h;
    offs[0] = 0;
    offs[1] = 0x1000;
    offs[2] = 0x200000;
    size_t n = pkt(VMIG_PKT_RAM, 42, 2, PG, 2, 1, "pc.ram", offs);
    CHECK(n == VMIG_PKT_HDR_LEN + 24, "RAM length %zu", n);
    /* the layout by hand */
    CHECK(vmig_get_be32(P) == 0x564D5047 && P[4] == 1 && P[5] == 1 && vmig_get_be16(P + 6) == 0,
          "RAM layout");
    CHECK(vmig_get_be64(P + 8) == 42 && vmig_get_be32(P + 16) == 2 && vmig_get_be32(P + 20) == PG &&
              vmig_get_be32(P + 24) == 2 && vmig_get_be32(P + 28) == 1 &&
              vmig_get_be32(P + 32) == 2 * PG,
          "RAM layout");
    CHECK(!memcmp(P + 40, "pc.ram", 7) && vmig_get_be64(P + 304) == 0 &&
              vmig_get_be64(P + 312) == 0x1000 && vmig_get_be64(P + 320) == 0x200000,
          "RAM layout");
    uint8_t tmp[VMIG_PKT_HDR_LEN + 24];
    memcpy(tmp, P, sizeof(tmp));
    memset(tmp + 36, 0, 4);
    CHECK(vmig_get_be32(P + 36) == vmig_crc32c(0, tmp, sizeof(tmp)), "hdr_crc by hand");
    memset(&h, 0xAA, sizeof(h));
    OK(pkt_dec(&h, 4 << 20, out));
    CHECK(h.type == VMIG_PKT_RAM && h.flags == 0 && h.seq == 42 && h.pass == 2 &&
              h.page_size == PG && h.normal == 2 && h.zero == 1 && h.payload_len == 2 * PG &&
              h.hdr_crc == vmig_get_be32(P + 36) && !strcmp(h.block, "pc.ram"),
          "RAM header round trip");
    CHECK(out[0] == 0 && out[1] == 0x1000 && out[2] == 0x200000, "offsets round trip");
    /* re-encoding the decoded header gives the same bytes */
    uint8_t again[VMIG_PKT_HDR_LEN + 24];
    memcpy(tmp, P, sizeof(tmp));
    CHECK(vmig_wire_pkt_encode(&h, out, again) == sizeof(again) && !memcmp(again, tmp, 24 + 304),
          "canonical");

    for (uint8_t t = VMIG_PKT_SYNC; t <= VMIG_PKT_FIN; t++) {
        n = pkt(t, 1ull << 40, 7, 0, 0, 0, NULL, NULL);
        CHECK(n == VMIG_PKT_HDR_LEN, "marker length %zu", n);
        memset(&h, 0xAA, sizeof(h));
        OK(hdr_dec(&h, 1));
        CHECK(h.type == t && h.seq == 1ull << 40 && h.pass == 7 && h.page_size == 0 &&
                  h.normal == 0 && h.zero == 0 && h.payload_len == 0 && h.block[0] == 0,
              "marker round trip");
        /* as the destination calls it: no offsets, no block */
        OK(vmig_wire_pkt_decode_offsets(&h, P, NULL, 0, NULL, ERR));
        P[12] ^= 1; /* seq is covered by the crc */
        OK(hdr_dec(&h, 1));
        EPROTO_(vmig_wire_pkt_decode_offsets(&h, P, NULL, 0, NULL, ERR), "hdr_crc");
    }
}

/* The codec field (flags bits 0-3) and the payload length it allows. */
static void test_packet_codec(void)
{
    static uint64_t offs[8];
    for (size_t i = 0; i < 8; i++)
        offs[i] = i * PG;
    vmig_pkt_hdr h;
    for (uint32_t c = 1; c < 16; c++) {
        for (uint32_t normal = 0; normal <= 4; normal += 4) {
            uint64_t raw = (uint64_t)normal * PG, bound = vmig_wire_codec_bound(raw);
            uint64_t lens[] = {0, 1, raw, bound, bound + 1};
            for (size_t k = 0; k < VMIG_ARRAY_SIZE(lens); k++) {
                vmig_pkt_hdr x = {.type = VMIG_PKT_RAM,
                                  .seq = 1,
                                  .pass = 1,
                                  .flags = (uint16_t)c,
                                  .page_size = PG,
                                  .normal = normal,
                                  .zero = 4 - normal,
                                  .payload_len = (uint32_t)lens[k],
                                  .block = "ram"};
                vmig_wire_pkt_encode(&x, offs, P);
                bool ok = c < VMIG_CODEC_COUNT && normal >= 1 && lens[k] >= 1 && lens[k] <= bound;
                if (ok) {
                    OK(hdr_dec(&h, 16));
                    CHECK(vmig_pkt_codec(&h) == c && h.payload_len == lens[k],
                          "codec %u payload %llu", c, (unsigned long long)lens[k]);
                } else {
                    EPROTO_(hdr_dec(&h, 16), "codec");
                }
            }
        }
    }
    /* the bound at the largest payload still fits 32 bits */
    CHECK(vmig_wire_codec_bound(VMIG_WIRE_MAX_PAYLOAD) < UINT32_MAX, "bound of MAX_PAYLOAD");
    /* SYNC and FIN carry no codec */
    for (uint8_t t = VMIG_PKT_SYNC; t <= VMIG_PKT_FIN; t++) {
        vmig_pkt_hdr x = {.type = t, .seq = 1, .pass = 1, .flags = VMIG_CODEC_ZSTD};
        vmig_wire_pkt_encode(&x, NULL, P);
        EPROTO_(hdr_dec(&h, 16), "codec");
    }
}

static void test_packet_hdr(void)
{
    static uint64_t offs[1100];
    vmig_pkt_hdr h;
    for (size_t i = 0; i < 1100; i++)
        offs[i] = i * PG;
#define RAM1() pkt(VMIG_PKT_RAM, 1, 1, PG, 1, 0, "ram", offs)

    /* magic, version, type, flags, reserved */
    RAM1();
    P[3] ^= 1;
    EPROTO_(hdr_dec(&h, 16), "magic");
    RAM1();
    P[4] = 0;
    EPROTO_(hdr_dec(&h, 16), "version");
    RAM1();
    P[4] = 2;
    EPROTO_(hdr_dec(&h, 16), "version");
    for (unsigned t = 0; t < 256; t += (t == 0 ? 5 : 250)) {
        RAM1();
        P[5] = (uint8_t)t;
        EPROTO_(hdr_dec(&h, 16), "type");
    }
    for (uint8_t t = VMIG_PKT_RAM; t <= VMIG_PKT_FIN; t++) {
        vmig_pkt_hdr x = {.type = t, .seq = 1, .pass = 1, .flags = 0x10};
        if (t == VMIG_PKT_RAM) {
            x.page_size = PG;
            x.normal = 1;
            strcpy(x.block, "ram");
        }
        vmig_wire_pkt_encode(&x, offs, P);
        EPROTO_(hdr_dec(&h, 16), "flags");
        P[7] = 0;
        OK(hdr_dec(&h, 16));
        for (int i = 296; i < 304; i++) {
            P[i] = 0x01;
            EPROTO_(hdr_dec(&h, 16), "reserved");
            P[i] = 0;
        }
        /* pass 0 */
        vmig_put_be32(P + 16, 0);
        EPROTO_(hdr_dec(&h, 16), "pass 0");
        vmig_put_be32(P + 16, 1);
        OK(hdr_dec(&h, 16));
        /* seq 0 (sequence numbers start at 1); the largest is fine */
        vmig_put_be64(P + 8, 0);
        EPROTO_(hdr_dec(&h, 16), "seq 0");
        vmig_put_be64(P + 8, UINT64_MAX);
        OK(hdr_dec(&h, 16));
    }

    /* RAM page_size */
    const uint32_t bad_ps[] = {0, 2048, 4095, 12288, 4 << 20, 1u << 31, UINT32_MAX};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(bad_ps); i++) {
        pkt(VMIG_PKT_RAM, 1, 1, bad_ps[i], 1, 0, "ram", offs);
        EPROTO_(hdr_dec(&h, 16), "page_size");
    }
    pkt(VMIG_PKT_RAM, 1, 1, 2 << 20, 1, 0, "ram", offs);
    OK(hdr_dec(&h, 16));
    /* normal + zero: 0 rejected; == max_pages accepted, + 1 rejected */
    pkt(VMIG_PKT_RAM, 1, 1, PG, 0, 0, "ram", offs);
    EPROTO_(hdr_dec(&h, 16), "normal+zero");
    pkt(VMIG_PKT_RAM, 1, 1, PG, 10, 6, "ram", offs);
    OK(hdr_dec(&h, 16));
    pkt(VMIG_PKT_RAM, 1, 1, PG, 10, 7, "ram", offs);
    EPROTO_(hdr_dec(&h, 16), "normal+zero pages 17 exceed the limit 16");
    pkt(VMIG_PKT_RAM, 1, 1, PG, 0, 1024, "ram", offs);
    OK(hdr_dec(&h, 1024));
    pkt(VMIG_PKT_RAM, 1, 1, PG, 1000, 25, "ram", offs);
    EPROTO_(hdr_dec(&h, 1024), "normal+zero pages 1025 exceed the limit 1024");
    /* a caller limit above 1024 is capped at 1024; 0 is a caller mistake */
    EPROTO_(hdr_dec(&h, 5000), "normal+zero pages 1025 exceed the limit 1024");
    FAILS(hdr_dec(&h, 0), VMIG_EINVAL, "limit");
    /* counts that wrap 32 bits */
    pkt(VMIG_PKT_RAM, 1, 1, PG, 1, 0, "ram", offs);
    vmig_put_be32(P + 24, UINT32_MAX);
    vmig_put_be32(P + 28, 1);
    EPROTO_(hdr_dec(&h, 1024), "normal+zero");
    vmig_put_be32(P + 24, 1);
    vmig_put_be32(P + 28, UINT32_MAX);
    EPROTO_(hdr_dec(&h, 1024), "normal+zero");
    /* payload: == 64 MiB accepted, one 2 MiB page more rejected */
    pkt(VMIG_PKT_RAM, 1, 1, 2 << 20, 32, 0, "ram", offs);
    OK(hdr_dec(&h, 1024));
    CHECK(h.payload_len == 64u << 20, "64 MiB payload");
    pkt(VMIG_PKT_RAM, 1, 1, 2 << 20, 33, 0, "ram", offs);
    EPROTO_(hdr_dec(&h, 1024), "payload");
    /* payload_len must be normal * page_size */
    pkt(VMIG_PKT_RAM, 1, 1, PG, 2, 1, "ram", offs);
    vmig_put_be32(P + 32, 2 * PG + 1);
    EPROTO_(hdr_dec(&h, 16), "payload_len");
    vmig_put_be32(P + 32, 3 * PG);
    EPROTO_(hdr_dec(&h, 16), "payload_len");
    vmig_put_be32(P + 32, 0);
    EPROTO_(hdr_dec(&h, 16), "payload_len");
    pkt(VMIG_PKT_RAM, 1, 1, PG, 0, 3, "ram", offs);
    OK(hdr_dec(&h, 16));
    vmig_put_be32(P + 32, PG);
    EPROTO_(hdr_dec(&h, 16), "payload_len");

    /* block name: 255 bytes + NUL accepted; 256 bytes without NUL; empty; padding */
    char nm[256];
    memset(nm, 'q', 255);
    nm[255] = 0;
    pkt(VMIG_PKT_RAM, 1, 1, PG, 1, 0, nm, offs);
    OK(hdr_dec(&h, 16));
    CHECK(strlen(h.block) == 255, "255-byte block name");
    P[40 + 255] = 'q';
    EPROTO_(hdr_dec(&h, 16), "block name");
    CHECK(strstr(E.msg, "NUL"), "no NUL named: %s", E.msg);
    RAM1();
    memset(P + 40, 0, 256);
    EPROTO_(hdr_dec(&h, 16), "block name");
    RAM1();
    P[40 + 200] = 'x'; /* "ram\0...x..." */
    EPROTO_(hdr_dec(&h, 16), "padding");
    RAM1();
    P[40 + 4] = 1;
    EPROTO_(hdr_dec(&h, 16), "padding");

    /* SYNC and FIN carry no pages, no payload, no name */
    for (uint8_t t = VMIG_PKT_SYNC; t <= VMIG_PKT_FIN; t++) {
        pkt(t, 5, 1, PG, 0, 0, NULL, NULL);
        EPROTO_(hdr_dec(&h, 16), "page_size");
        pkt(t, 5, 1, 0, 1, 0, NULL, offs);
        EPROTO_(hdr_dec(&h, 16), "normal");
        pkt(t, 5, 1, 0, 0, 1, NULL, offs);
        EPROTO_(hdr_dec(&h, 16), "zero");
        pkt(t, 5, 1, 0, 0, 0, NULL, NULL);
        vmig_put_be32(P + 32, 1);
        EPROTO_(hdr_dec(&h, 16), "payload_len");
        pkt(t, 5, 1, 0, 0, 0, "ram", NULL);
        EPROTO_(hdr_dec(&h, 16), "block");
        pkt(t, 5, 1, 0, 0, 0, NULL, NULL);
        P[40 + 255] = 1;
        EPROTO_(hdr_dec(&h, 16), "block");
        /* a RAM packet relabelled as a marker */
        pkt(VMIG_PKT_RAM, 5, 1, PG, 1, 0, "ram", offs);
        P[5] = t;
        EPROTO_(hdr_dec(&h, 16), t == VMIG_PKT_SYNC ? "SYNC" : "FIN");
    }
#undef RAM1
}

/* DEV packets: a device's state chunk. */
static size_t devpkt(uint32_t instance, uint32_t chunk, const char *id, const uint8_t *payload,
                     uint32_t len, bool last)
{
    vmig_pkt_hdr h = {.type = VMIG_PKT_DEV,
                      .seq = 9,
                      .pass = 2,
                      .flags = last ? VMIG_PKT_F_LAST : 0,
                      .instance = instance,
                      .chunk = chunk,
                      .payload_len = len,
                      .payload_crc = len ? vmig_crc32c(0, payload, len) : 0};
    snprintf(h.block, sizeof(h.block), "%s", id);
    size_t n = vmig_wire_pkt_encode(&h, NULL, P);
    if (len)
        memcpy(P + VMIG_PKT_HDR_LEN, payload, len);
    return n;
}

/* decode_hdr, then check_dev over exact copies. */
static int dev_dec(vmig_pkt_hdr *h)
{
    int rc = hdr_dec(h, 16);
    if (rc)
        return rc;
    uint8_t *hq = exact(P, VMIG_PKT_HDR_LEN);
    uint8_t *pq = h->payload_len ? exact(P + VMIG_PKT_HDR_LEN, h->payload_len) : NULL;
    rc = vmig_wire_pkt_check_dev(h, hq, pq, ERR);
    free(hq);
    free(pq);
    return rc;
}

static void test_packet_dev(void)
{
    uint8_t pl[300];
    for (size_t i = 0; i < sizeof(pl); i++)
        pl[i] = (uint8_t)(i * 7 + 1);
    vmig_pkt_hdr h;
    REQUIRE(devpkt(7, 3, "gpu0", pl, sizeof(pl), false) == VMIG_PKT_HDR_LEN, "size");
    OK(dev_dec(&h));
    CHECK(h.type == VMIG_PKT_DEV && h.instance == 7 && h.chunk == 3 && !strcmp(h.block, "gpu0") &&
              h.payload_len == sizeof(pl) && !(h.flags & VMIG_PKT_F_LAST) && h.seq == 9 &&
              h.pass == 2 && h.page_size == 0 && h.normal == 0 && h.zero == 0,
          "DEV round trip");
    /* The fields' places: instance at 20, chunk at 24, payload crc at 296. */
    CHECK(vmig_get_be32(P + 20) == 7 && vmig_get_be32(P + 24) == 3 &&
              vmig_get_be32(P + 296) == vmig_crc32c(0, pl, sizeof(pl)) && P[5] == 4,
          "DEV layout");
    /* The last chunk may be empty; another may not. */
    devpkt(0, 0, "vcpu", NULL, 0, true);
    OK(dev_dec(&h));
    CHECK((h.flags & VMIG_PKT_F_LAST) && h.payload_len == 0, "empty last chunk");
    devpkt(0, 1, "vcpu", NULL, 0, false);
    EPROTO_(hdr_dec(&h, 16), "empty chunk");
    /* Limits: the largest chunk index and payload pass, one more fails. */
    devpkt(0xffffffffu, VMIG_WIRE_MAX_DEV_CHUNKS - 1, "d", pl, 1, false);
    OK(dev_dec(&h));
    vmig_put_be32(P + 24, VMIG_WIRE_MAX_DEV_CHUNKS);
    EPROTO_(hdr_dec(&h, 16), "chunk");
    devpkt(0, 0, "d", pl, 1, false);
    vmig_put_be32(P + 32, VMIG_WIRE_MAX_PAYLOAD);
    CHECK(hdr_dec(&h, 16) == 0, "payload_len == MAX_PAYLOAD");
    vmig_put_be32(P + 32, VMIG_WIRE_MAX_PAYLOAD + 1);
    EPROTO_(hdr_dec(&h, 16), "payload_len");
    /* zero must be 0; flags: LAST only (no codec, no other bit). */
    devpkt(0, 0, "d", pl, 1, false);
    vmig_put_be32(P + 28, 1);
    EPROTO_(hdr_dec(&h, 16), "zero");
    for (uint16_t f = 1; f; f <<= 1) {
        if (f == VMIG_PKT_F_LAST)
            continue;
        devpkt(0, 0, "d", pl, 1, false);
        vmig_put_be16(P + 6, f);
        EPROTO_(hdr_dec(&h, 16), "flags");
    }
    /* The device id: empty, unterminated, unclean padding. */
    devpkt(0, 0, "d", pl, 1, false);
    P[40] = 0;
    EPROTO_(hdr_dec(&h, 16), "device id is empty");
    devpkt(0, 0, "d", pl, 1, false);
    memset(P + 40, 'x', 256);
    EPROTO_(hdr_dec(&h, 16), "no NUL");
    devpkt(0, 0, "d", pl, 1, false);
    P[200] = 1;
    EPROTO_(hdr_dec(&h, 16), "padding");
    /* Reserved: 296..299 are the payload crc, 300..303 must be 0. */
    for (int i = 300; i < 304; i++) {
        devpkt(0, 0, "d", pl, 1, false);
        P[i] = 1;
        EPROTO_(hdr_dec(&h, 16), "reserved");
    }
    /* Both crcs. */
    devpkt(1, 2, "gpu0", pl, sizeof(pl), false);
    P[VMIG_PKT_HDR_LEN + 17] ^= 0x40;
    EPROTO_(dev_dec(&h), "payload crc");
    devpkt(1, 2, "gpu0", pl, sizeof(pl), false);
    P[44] ^= 1; /* in the id's padding: decodes, but the crc says no */
    P[44] ^= 1;
    vmig_put_be32(P + 20, 2); /* another instance */
    EPROTO_(dev_dec(&h), "hdr_crc");
    /* check_dev only takes DEV packets. */
    pkt(VMIG_PKT_SYNC, 1, 1, 0, 0, 0, NULL, NULL);
    OK(hdr_dec(&h, 16));
    FAILS(vmig_wire_pkt_check_dev(&h, P, NULL, ERR), VMIG_EINVAL, "not a DEV packet");
}

static void test_packet_offsets(void)
{
    static uint64_t offs[1100], out[1100];
    vmig_pkt_hdr h;
    const uint64_t BL = 1 << 20; /* 256 pages of 4 KiB */

    /* the last page of the block (length - page_size) accepted, length rejected */
    offs[0] = BL - PG;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    OK(pkt_dec(&h, BL, out));
    CHECK(out[0] == BL - PG, "last page");
    offs[0] = BL;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    EPROTO_(pkt_dec(&h, BL, out), "offset[0]");
    CHECK(strstr(E.msg, "beyond block 'ram'"), "beyond named: %s", E.msg);
    /* the zero pages are checked too: offset[2] is a zero page */
    offs[0] = 0;
    offs[1] = PG;
    offs[2] = BL;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 2, 1, "ram", offs);
    EPROTO_(pkt_dec(&h, BL, out), "offset[2]");
    offs[2] = BL - PG;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 2, 1, "ram", offs);
    OK(pkt_dec(&h, BL, out));
    /* offsets that would wrap: 2^64 - page_size */
    offs[0] = UINT64_MAX - (PG - 1);
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    EPROTO_(pkt_dec(&h, BL, out), "beyond");
    EPROTO_(pkt_dec(&h, UINT64_MAX - (PG - 1), out), "beyond");
    offs[0] = UINT64_MAX - (2 * PG - 1); /* the last whole page of a 2^64 - 1 byte block */
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    OK(pkt_dec(&h, UINT64_MAX, out));
    EPROTO_(pkt_dec(&h, UINT64_MAX - PG, out), "beyond");
    /* a block shorter than one page holds no page */
    offs[0] = 0;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    EPROTO_(pkt_dec(&h, PG - 1, out), "beyond");
    EPROTO_(pkt_dec(&h, 0, out), "beyond");
    OK(pkt_dec(&h, PG, out));
    /* unaligned offsets */
    const uint64_t bad[] = {1, PG - 1, PG + 1, PG / 2, BL - 1};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(bad); i++) {
        offs[0] = bad[i];
        pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
        EPROTO_(pkt_dec(&h, BL, out), "not a multiple of page_size");
    }
    /* 2 MiB pages: a 4 KiB-aligned offset is not enough */
    offs[0] = 2 << 20;
    offs[1] = (2 << 20) + PG;
    pkt(VMIG_PKT_RAM, 9, 1, 2 << 20, 1, 1, "vram", offs);
    EPROTO_(pkt_dec(&h, 8 << 20, out), "offset[1]");
    offs[1] = 6 << 20;
    pkt(VMIG_PKT_RAM, 9, 1, 2 << 20, 1, 1, "vram", offs);
    OK(pkt_dec(&h, 8 << 20, out));

    /* hdr_crc: over the header (seq, name) and the offsets, and the field itself */
    offs[0] = 0;
    offs[1] = PG;
    const size_t flips[] = {8, 15, 16, 41, 36, 39, VMIG_PKT_HDR_LEN, VMIG_PKT_HDR_LEN + 15};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(flips); i++) {
        pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 1, "ram", offs);
        P[flips[i]] ^= 0x01;
        EPROTO_(pkt_dec(&h, BL, out), "hdr_crc");
    }
    /* 1024 offsets (the limit), all valid */
    for (size_t i = 0; i < 1024; i++)
        offs[i] = (1023 - i) * PG;
    pkt(VMIG_PKT_RAM, 9, 1, PG, 512, 512, "ram", offs);
    OK(pkt_dec(&h, 1024 * PG, out));
    CHECK(out[0] == 1023 * PG && out[1023] == 0, "1024 offsets");

    /* caller mistakes: offsets without bytes, a header that was not decoded */
    pkt(VMIG_PKT_RAM, 9, 1, PG, 1, 0, "ram", offs);
    OK(hdr_dec(&h, 16));
    FAILS(vmig_wire_pkt_decode_offsets(&h, P, NULL, BL, out, ERR), VMIG_EINVAL, "offsets");
    vmig_pkt_hdr bogus = h;
    bogus.normal = 5000;
    FAILS(vmig_wire_pkt_decode_offsets(&bogus, P, P + 304, BL, out, ERR), VMIG_EINVAL, "offsets");
    bogus = h;
    bogus.page_size = 0;
    FAILS(vmig_wire_pkt_decode_offsets(&bogus, P, P + 304, BL, out, ERR), VMIG_EINVAL, "offsets");
}

/* The first error wins and a NULL vmig_error is fine. */
/* Acknowledgements: layout, round trips at the extremes, every byte guarded. */
static void test_chack(void)
{
    uint8_t b[VMIG_CHACK_LEN];
    uint64_t seq = 0;
    vmig_wire_chack_encode(0x0102030405060708ull, b);
    CHECK(vmig_get_be32(b) == 0x564D414B && vmig_get_be64(b + 4) == 0x0102030405060708ull &&
              vmig_get_be32(b + 12) == vmig_crc32c(0, b, 12),
          "ack layout");
    const uint64_t vals[] = {0, 1, UINT64_MAX};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(vals); i++) {
        vmig_wire_chack_encode(vals[i], b);
        uint8_t *q = exact(b, VMIG_CHACK_LEN);
        seq = 7;
        OK(vmig_wire_chack_decode(q, &seq, ERR));
        free(q);
        CHECK(seq == vals[i], "ack round trip of %llu: %llu", (unsigned long long)vals[i],
              (unsigned long long)seq);
    }
    for (int i = 0; i < VMIG_CHACK_LEN; i++) {
        vmig_wire_chack_encode(42, b);
        b[i] ^= 0x20;
        EPROTO_(vmig_wire_chack_decode(b, &seq, ERR), i < 4 ? "magic" : "crc");
    }
}

static void test_error_channel(void)
{
    uint8_t b[VMIG_HS_LEN] = {0};
    vmig_wire_hs h;
    CHECK(vmig_wire_hs_decode(b, &h, NULL) == VMIG_EPROTO, "NULL err");
    vmig_error e = {0};
    vmig_wire_hs_decode(b, &h, &e);
    hs_make(b, VMIG_CH_DATA, 5, 2);
    CHECK(vmig_wire_hs_decode(b, &h, &e) == VMIG_EPROTO, "second error");
    CHECK(strstr(e.msg, "magic") && !strstr(e.msg, "channel_id"), "first error kept: %s", e.msg);
}

int main(void)
{
    verbose = getenv("VMIG_TEST_VERBOSE") != NULL;
    test_handshake();
    test_ctl_frame();
    test_hello();
    test_hello_devices();
    test_end();
    test_ckpt();
    test_status();
    test_packet_roundtrip();
    test_packet_hdr();
    test_packet_codec();
    test_packet_offsets();
    test_packet_dev();
    test_chack();
    test_error_channel();
    return tu_result("test_wire");
}
