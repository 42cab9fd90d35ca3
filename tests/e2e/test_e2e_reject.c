/*
 * The destination refuses every malformed or inconsistent message with the
 * right error code, writes nothing outside its block, and stays usable: after
 * each refusal the same session completes a real migration. The catalogue:
 * handshakes (each field), control frames (type, flags, a length up to
 * 4 GiB - 1, CRC, garbage HELLO, a frame cut short or out of turn, END of
 * garbage), data channels, RAM packets (offsets, blocks, CRC, passes,
 * sequences), compressed payloads for every codec, device-state chunks,
 * END digests and counts, the source's ERROR; and on the source side, a
 * destination that never answers or lacks a codec. (Checkpoint messages:
 * test_e2e_colo_reject; TLS refusals: test_tls.sh.)
 *
 * A fake source built from the wire encoders sends each bad message.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "src/codec/codec.h"
#include "src/transport/transport.h"
#include "src/wire/wire.h"

#include "../testutil.h"
#include "../tu_fakesrc.h"

#define PAGES 64
#define PG    4096

typedef struct dest {
    vmig_session *s;
    uint8_t *area; /* guard page, PAGES pages of block, guard page */
    uint8_t *mem;
    char uri[256];
    pthread_t t;
    int rc;
    vmig_error err;
} dest;

static void *dest_main(void *p)
{
    dest *d = p;
    memset(&d->err, 0, sizeof(d->err));
    d->rc = vmig_incoming_run(d->s, &d->err);
    return NULL;
}

static void dest_start(dest *d)
{
    pthread_create(&d->t, NULL, dest_main, d);
}

static int dest_wait(dest *d)
{
    pthread_join(d->t, NULL);
    return d->rc;
}

static const uint8_t uuid_a[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* ---- the fake source ---- */

static void fs_hello(vmig_conn *c, const char *name, uint64_t len, uint16_t channels)
{
    vmig_wire_block b = {.length = len, .page_size = PG};
    snprintf(b.name, sizeof(b.name), "%s", name);
    vmig_wire_hello h = {.packet_pages = 128,
                         .channels = channels,
                         .zero_detect = 2,
                         .verify = 1,
                         .nblocks = 1,
                         .blocks = &b};
    uint8_t buf[1024];
    int n = vmig_wire_hello_encode(&h, buf, sizeof(buf));
    tf_ctl(c, VMIG_CTL_HELLO, buf, n);
}

/* Control + HELLO + READY + `n` data channels; returns the control conn. */
static vmig_conn *fs_setup(dest *d, vmig_conn **data, uint16_t n)
{
    vmig_conn *ctl = tf_connect(d->uri, VMIG_CH_CONTROL, 0, n, uuid_a);
    fs_hello(ctl, "ram", PAGES * PG, n);
    unsigned t = tf_read_frame(ctl);
    REQUIRE(t == VMIG_CTL_READY, "expected READY, got %u (%s)", t, d->err.msg);
    for (uint16_t i = 0; i < n; i++)
        data[i] = tf_connect(d->uri, VMIG_CH_DATA, i, n, uuid_a);
    return ctl;
}

static void fs_packet(vmig_conn *c, uint8_t type, uint64_t seq, uint32_t pass, const char *block,
                      const uint64_t *offs, uint32_t normal, uint32_t zero, int corrupt)
{
    vmig_pkt_hdr h = {.type = type, .seq = seq, .pass = pass};
    if (type == VMIG_PKT_RAM) {
        h.page_size = PG;
        h.normal = normal;
        h.zero = zero;
        snprintf(h.block, sizeof(h.block), "%s", block);
    }
    uint8_t buf[VMIG_PKT_HDR_LEN + 8 * 16];
    size_t n = vmig_wire_pkt_encode(&h, offs, buf);
    if (corrupt)
        buf[n - 1] ^= 0x40;
    vmig_conn_write_all(c, buf, n, "pkt", NULL);
    static uint8_t page[PG];
    memset(page, 0x5A, sizeof(page));
    for (uint32_t i = 0; i < normal; i++)
        vmig_conn_write_all(c, page, PG, "page", NULL);
}

/* A RAM packet of `normal` pages (offsets 0, PG, ...) with codec `codec`
 * and the given payload. */
static void fs_cpacket(vmig_conn *c, uint32_t codec, uint32_t normal, const uint8_t *payload,
                       size_t len)
{
    vmig_pkt_hdr h = {.type = VMIG_PKT_RAM,
                      .flags = (uint16_t)codec,
                      .seq = 1,
                      .pass = 1,
                      .page_size = PG,
                      .normal = normal,
                      .payload_len = (uint32_t)len};
    strcpy(h.block, "ram");
    uint64_t o[16];
    for (uint32_t i = 0; i < normal; i++)
        o[i] = (uint64_t)i * PG;
    uint8_t buf[VMIG_PKT_HDR_LEN + 8 * 16];
    size_t n = vmig_wire_pkt_encode(&h, o, buf);
    vmig_conn_write_all(c, buf, n, "pkt", NULL);
    vmig_conn_write_all(c, payload, len, "payload", NULL);
}

static void fs_close(vmig_conn *ctl, vmig_conn **data, int n)
{
    for (int i = 0; i < n; i++)
        vmig_conn_close(data[i]);
    vmig_conn_close(ctl);
}

/* ---- a fake destination that decodes nothing but none ---- */

typedef struct fake_dest {
    vmig_listener *l;
    int data_channels;
    bool got_error;
} fake_dest;

static void *fake_dest_main(void *p)
{
    fake_dest *f = p;
    vmig_conn *c;
    vmig_error e = {0};
    static const int no_abort = 0;
    if (f->l->ops->accept(f->l, 2000, &no_abort, &c, &e))
        return NULL;
    uint8_t hs[VMIG_HS_LEN];
    if (!vmig_conn_read_all(c, hs, sizeof(hs), "hs", NULL) && tf_read_frame(c) == VMIG_CTL_HELLO) {
        uint8_t ready[VMIG_READY_LEN];
        vmig_wire_ready_encode(1u << VMIG_CODEC_NONE, ready);
        tf_ctl(c, VMIG_CTL_READY, ready, sizeof(ready));
        f->got_error = tf_read_frame(c) == VMIG_CTL_ERROR;
    }
    /* Any data channel would be the next connection. */
    vmig_conn *d;
    while (!f->l->ops->accept(f->l, 200, &no_abort, &d, NULL)) {
        f->data_channels++;
        vmig_conn_close(d);
    }
    vmig_conn_close(c);
    return NULL;
}

/* ---- checks ---- */

static void check_guards(dest *d, const char *what)
{
    for (size_t i = 0; i < PG; i++) {
        if (d->area[i] != 0xEE || d->area[PG + PAGES * PG + i] != 0xEE) {
            CHECK(0, "%s: memory outside the block was written", what);
            return;
        }
    }
}

/* A real migration on the same destination session must still work. */
static void *real_src(void *p)
{
    dest *d = p;
    vmig_session *s;
    vmig_error e = {0};
    static uint8_t *mem;
    if (!mem) {
        mem = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (size_t i = 0; i < PAGES * PG; i += 3)
            mem[i] = (uint8_t)(i / 7);
    }
    vmig_params prm;
    vmig_params_init(&prm);
    prm.channels = 2;
    vmig_session_create(&s, VMIG_ROLE_SOURCE, &prm, &e);
    vmig_ram_add(s, "ram", mem, PAGES * PG, PG, 0, &e);
    int rc = vmig_migrate(s, d->uri, &e);
    CHECK(rc == 0, "real migration after a refusal failed: %s", e.msg);
    CHECK(!memcmp(mem, d->mem, PAGES * PG), "real migration: memory differs");
    vmig_session_free(s);
    return NULL;
}

static void expect(dest *d, int code, const char *needle, const char *what)
{
    int rc = dest_wait(d);
    CHECK(rc == code, "%s: got %d (%s), expected %d (%s): %s", what, rc, vmig_strerror(rc), code,
          vmig_strerror(code), d->err.msg);
    CHECK(!needle || strcasestr(d->err.msg, needle), "%s: message '%s' does not mention '%s'", what,
          d->err.msg, needle);
    check_guards(d, what);
    fprintf(stderr, "  ok: %-34s -> %s\n", what, d->err.msg);
    /* Still alive and with no half state: a real migration succeeds. */
    pthread_t t;
    dest_start(d);
    pthread_create(&t, NULL, real_src, d);
    pthread_join(t, NULL);
    CHECK(dest_wait(d) == 0, "%s: the next migration failed: %s", what, d->err.msg);
    memset(d->mem, 0, PAGES * PG);
}

int main(void)
{
    dest d = {0};
    vmig_error e = {0};
    vmig_params p;
    vmig_params_init(&p);
    p.connect_timeout_ms = 500;
    REQUIRE(!vmig_session_create(&d.s, VMIG_ROLE_DEST, &p, &e), "%s", e.msg);
    d.area =
        mmap(NULL, (PAGES + 2) * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(d.area, 0xEE, (PAGES + 2) * PG);
    d.mem = d.area + PG;
    memset(d.mem, 0, PAGES * PG);
    REQUIRE(!vmig_ram_add(d.s, "ram", d.mem, PAGES * PG, PG, 0, &e), "%s", e.msg);
    REQUIRE(!vmig_incoming_listen(d.s, "tcp:127.0.0.1:0", &e), "%s", e.msg);
    vmig_incoming_uri(d.s, d.uri, sizeof(d.uri));

    vmig_conn *ctl, *data[4];
    uint64_t offs[4];

    /* Handshakes. */
    dest_start(&d);
    {
        vmig_conn *c;
        vmig_connect(d.uri, 2000, &c, &e);
        uint8_t raw[VMIG_HS_LEN] = "NOPE";
        vmig_conn_write_all(c, raw, sizeof(raw), "hs", NULL);
        expect(&d, VMIG_EPROTO, "magic", "handshake: wrong magic");
        vmig_conn_close(c);
    }
    /* Handshakes with one field wrong (the CRC recomputed unless it is the
     * field): each names the field. */
    struct {
        const char *what, *needle;
        int at, value, fix_crc;
    } bad_hs[] = {
        {"handshake: version 2", "version 2", 5, 2, 0},
        {"handshake: bad crc", "crc", 20, 0x77, 0},
        {"handshake: kind 7", "kind 7", 6, 7, 1},
        {"handshake: resume flag on the control channel", "on a control channel", 7, 1, 1},
        {"handshake: unknown flag", "unknown bits", 7, 0x80, 1},
        {"handshake: reserved byte set", "reserved", 30, 1, 1},
        {"handshake: control with id 1", "channel_id 1", 25, 1, 1},
    };
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(bad_hs); i++) {
        dest_start(&d);
        vmig_conn *c;
        vmig_connect(d.uri, 2000, &c, &e);
        vmig_wire_hs hs = {.kind = VMIG_CH_CONTROL, .channel_count = 2};
        memcpy(hs.uuid, uuid_a, 16);
        uint8_t raw[VMIG_HS_LEN];
        vmig_wire_hs_encode(&hs, raw);
        raw[bad_hs[i].at] = (uint8_t)bad_hs[i].value;
        if (bad_hs[i].fix_crc)
            vmig_put_be32(raw + VMIG_HS_LEN - 4, vmig_crc32c(0, raw, VMIG_HS_LEN - 4));
        vmig_conn_write_all(c, raw, sizeof(raw), "hs", NULL);
        expect(&d, VMIG_EPROTO, bad_hs[i].needle, bad_hs[i].what);
        vmig_conn_close(c);
    }

    /* Control frames: a header, payload or CRC that is wrong, a frame out of
     * turn, a frame cut short. The destination reads no more than the
     * header's length allows and allocates nothing for a length above the
     * limit. */
    struct {
        const char *what, *needle;
        int code;
        uint16_t type, flags;
        uint32_t len;  /* the header's payload length */
        uint32_t sent; /* payload bytes actually sent, then the CRC unless cut */
        int flip, cut; /* flip: a payload byte changed after the CRC */
        uint8_t fill;
    } bad_ctl[] = {
        {"control: frame type 99", "type 99", VMIG_EPROTO, 99, 0, 0, 0, 0, 0, 0},
        {"control: frame type 0", "type 0", VMIG_EPROTO, 0, 0, 0, 0, 0, 0, 0},
        {"control: flags set", "flags 0x0001", VMIG_EPROTO, VMIG_CTL_HELLO, 1, 16, 16, 0, 0, 0},
        {"control: length above the limit", "exceeds the limit", VMIG_EPROTO, VMIG_CTL_HELLO, 0,
         VMIG_WIRE_MAX_CTL_PAYLOAD + 1, 0, 0, 1, 0},
        {"control: length 4 GiB - 1", "exceeds the limit", VMIG_EPROTO, VMIG_CTL_HELLO, 0,
         0xFFFFFFFFu, 0, 0, 1, 0},
        {"control: HELLO with a bad crc", "crc", VMIG_EPROTO, VMIG_CTL_HELLO, 0, 0, 0, 1, 0, 0},
        {"control: HELLO of garbage", "HELLO", VMIG_EPROTO, VMIG_CTL_HELLO, 0, 64, 64, 0, 0, 0xFF},
        {"control: HELLO cut short", "closed", VMIG_ECONN, VMIG_CTL_HELLO, 0, 100, 10, 0, 1, 0},
        {"control: END before HELLO", "expected a HELLO frame, got END", VMIG_EPROTO, VMIG_CTL_END,
         0, 8, 8, 0, 0, 0},
        {"control: COMMIT with a payload", "must be 0", VMIG_EPROTO, VMIG_CTL_COMMIT, 0, 4, 4, 0, 0,
         0},
        {"control: READY of the wrong size", "READY", VMIG_EPROTO, VMIG_CTL_READY, 0, 3, 3, 0, 0,
         0},
    };
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(bad_ctl); i++) {
        dest_start(&d);
        vmig_conn *c = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        uint8_t frame[VMIG_CTL_HDR_LEN + 256 + VMIG_CTL_TRAILER_LEN] = {0};
        uint32_t sent = bad_ctl[i].sent;
        size_t n;
        if (bad_ctl[i].flip) { /* a real HELLO, one byte changed on the way */
            uint8_t hb[512];
            vmig_wire_block b = {.length = PAGES * PG, .page_size = PG};
            snprintf(b.name, sizeof(b.name), "ram");
            vmig_wire_hello h = {.packet_pages = 128,
                                 .channels = 2,
                                 .zero_detect = 2,
                                 .verify = 1,
                                 .nblocks = 1,
                                 .blocks = &b};
            int hl = vmig_wire_hello_encode(&h, hb, sizeof(hb));
            REQUIRE(hl > 0 && hl <= 256, "HELLO of %d bytes", hl);
            memcpy(frame + VMIG_CTL_HDR_LEN, hb, (size_t)hl);
            n = vmig_wire_ctl_frame(frame, VMIG_CTL_HELLO, (uint32_t)hl);
            frame[VMIG_CTL_HDR_LEN + 3] ^= 0x10;
        } else {
            memset(frame + VMIG_CTL_HDR_LEN, bad_ctl[i].fill, sent);
            n = vmig_wire_ctl_frame(frame, VMIG_CTL_HELLO, sent);
            vmig_put_be16(frame, bad_ctl[i].type);
            vmig_put_be16(frame + 2, bad_ctl[i].flags);
            vmig_put_be32(frame + 4, bad_ctl[i].len);
            vmig_put_be32(frame + VMIG_CTL_HDR_LEN + sent,
                          vmig_crc32c(0, frame, VMIG_CTL_HDR_LEN + sent));
            if (bad_ctl[i].cut)
                n = VMIG_CTL_HDR_LEN + sent; /* no more, and no CRC */
        }
        vmig_conn_write_all(c, frame, n, "frame", NULL);
        if (bad_ctl[i].cut)
            vmig_conn_close(c);
        expect(&d, bad_ctl[i].code, bad_ctl[i].needle, bad_ctl[i].what);
        if (!bad_ctl[i].cut)
            vmig_conn_close(c);
    }

    dest_start(&d);
    {
        vmig_conn *c = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(c, "other", PAGES * PG, 2);
        expect(&d, VMIG_ENOENT, "other", "HELLO: unknown block");
        vmig_conn_close(c);
    }
    dest_start(&d);
    {
        vmig_conn *c = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(c, "ram", PAGES * PG * 2, 2);
        expect(&d, VMIG_EINVAL, "ram", "HELLO: block size differs");
        vmig_conn_close(c);
    }
    dest_start(&d);
    {
        vmig_conn *c = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(c, "ram", PAGES * PG, 3);
        expect(&d, VMIG_EPROTO, "channels", "HELLO: channel count differs");
        vmig_conn_close(c);
    }
    dest_start(&d);
    {
        ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(ctl, "ram", PAGES * PG, 2);
        tf_read_frame(ctl);
        uint8_t other[16] = {9};
        data[0] = tf_connect(d.uri, VMIG_CH_DATA, 0, 2, other);
        expect(&d, VMIG_EPROTO, "another migration", "data channel: wrong session uuid");
        fs_close(ctl, data, 1);
    }
    dest_start(&d);
    {
        ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(ctl, "ram", PAGES * PG, 2);
        tf_read_frame(ctl);
        data[0] = tf_connect(d.uri, VMIG_CH_DATA, 1, 2, uuid_a);
        data[1] = tf_connect(d.uri, VMIG_CH_DATA, 1, 2, uuid_a);
        expect(&d, VMIG_EPROTO, "already connected", "data channel: duplicate id");
        fs_close(ctl, data, 2);
    }
    dest_start(&d);
    {
        ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(ctl, "ram", PAGES * PG, 2);
        tf_read_frame(ctl);
        data[0] = tf_connect(d.uri, VMIG_CH_DATA, 0, 3, uuid_a);
        expect(&d, VMIG_EPROTO, "channels", "data channel: count differs");
        fs_close(ctl, data, 1);
    }
    dest_start(&d);
    {
        ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 2, uuid_a);
        fs_hello(ctl, "ram", PAGES * PG, 2);
        tf_read_frame(ctl);
        vmig_conn *c;
        vmig_connect(d.uri, 2000, &c, &e); /* connects and says nothing */
        expect(&d, VMIG_ETIMEDOUT, NULL, "data channel: silent peer");
        vmig_conn_close(c);
        vmig_conn_close(ctl);
    }

    /* Packets. */
    struct {
        const char *what, *needle;
        int code;
        uint8_t type;
        uint64_t seq;
        uint32_t pass;
        const char *block;
        uint64_t off;
        int corrupt;
    } bad[] = {
        {"RAM: offset beyond the block", "offset", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "ram",
         PAGES * PG, 0},
        {"RAM: offset at the block end - 1", "offset", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "ram",
         PAGES * PG - 1, 0},
        {"RAM: huge offset (wraps)", "offset", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "ram",
         UINT64_MAX - PG + 1, 0},
        {"RAM: unaligned offset", "offset", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "ram", 100, 0},
        {"RAM: unknown block", "nope", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "nope", 0, 0},
        {"RAM: bad crc", "crc", VMIG_EPROTO, VMIG_PKT_RAM, 1, 1, "ram", 0, 1},
        {"RAM: pass 2 before SYNC 1", "pass", VMIG_EPROTO, VMIG_PKT_RAM, 1, 2, "ram", 0, 0},
        {"RAM: sequence 0", "sequence", VMIG_EPROTO, VMIG_PKT_RAM, 0, 1, "ram", 0, 0},
        {"FIN without SYNC", "FIN", VMIG_EPROTO, VMIG_PKT_FIN, 1, 0, "", 0, 0},
        {"SYNC of pass 3", "SYNC", VMIG_EPROTO, VMIG_PKT_SYNC, 1, 3, "", 0, 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dest_start(&d);
        ctl = fs_setup(&d, data, 2);
        offs[0] = bad[i].off;
        fs_packet(data[0], bad[i].type, bad[i].seq, bad[i].pass, bad[i].block, offs,
                  bad[i].type == VMIG_PKT_RAM, 0, bad[i].corrupt);
        expect(&d, bad[i].code, bad[i].needle, bad[i].what);
        fs_close(ctl, data, 2);
    }

    /* Compressed packets: an unknown codec id, garbage for every codec this
     * build decodes, and a valid payload of 3 pages announced as 2. */
    {
        static uint8_t junk[3000];
        memset(junk, 0xAB, sizeof(junk));
        dest_start(&d);
        ctl = fs_setup(&d, data, 1);
        fs_cpacket(data[0], 9, 2, junk, 100);
        expect(&d, VMIG_EPROTO, "codec", "RAM: codec id 9");
        fs_close(ctl, data, 1);
        for (uint32_t c = 1; c < VMIG_CODEC_COUNT; c++) {
            const vmig_codec_ops *ops = vmig_codec_get(c);
            if (ops->missing)
                continue;
            char what[64];
            snprintf(what, sizeof(what), "RAM: %s garbage", ops->name);
            dest_start(&d);
            ctl = fs_setup(&d, data, 1);
            fs_cpacket(data[0], c, 2, junk, sizeof(junk));
            expect(&d, VMIG_EPROTO, "packet 1", what);
            fs_close(ctl, data, 1);

            /* The real encoder's output for 3 pages, sent as 2. */
            static uint8_t pg3[3 * PG], out[4 * PG + 4096];
            for (size_t k = 0; k < sizeof(pg3); k++)
                pg3[k] = (uint8_t)("vmig compresses pages "[k % 22]);
            uint8_t *pages[3] = {pg3, pg3 + PG, pg3 + 2 * PG};
            vmig_codec_cfg cfg = {.level = 1, .max_pages = 128, .max_page_size = PG};
            void *ctx = NULL;
            size_t olen = 0;
            REQUIRE(!ops->enc_create(&cfg, &ctx, &e) &&
                        !ops->encode(ctx, pages, 3, PG, 0, out, sizeof(out), &olen, &e),
                    "%s encode: %s", ops->name, e.msg);
            ops->enc_free(ctx);
            snprintf(what, sizeof(what), "RAM: %s 3 pages sent as 2", ops->name);
            dest_start(&d);
            ctl = fs_setup(&d, data, 1);
            fs_cpacket(data[0], c, 2, out, olen);
            expect(&d, VMIG_EPROTO, "packet 1", what);
            fs_close(ctl, data, 1);
        }
    }

    /* Sequence going backwards on one channel. */
    dest_start(&d);
    ctl = fs_setup(&d, data, 1);
    offs[0] = 0;
    fs_packet(data[0], VMIG_PKT_RAM, 5, 1, "ram", offs, 1, 0, 0);
    fs_packet(data[0], VMIG_PKT_RAM, 5, 1, "ram", offs, 1, 0, 0);
    expect(&d, VMIG_EPROTO, "sequence", "RAM: sequence repeats");
    fs_close(ctl, data, 1);

    /* A device-state chunk to a destination that announced no device. */
    dest_start(&d);
    ctl = fs_setup(&d, data, 1);
    {
        uint8_t st[32] = {1, 2, 3};
        vmig_pkt_hdr h = {.type = VMIG_PKT_DEV,
                          .seq = 1,
                          .pass = 1,
                          .instance = 3,
                          .chunk = 0,
                          .payload_len = sizeof(st),
                          .payload_crc = vmig_crc32c(0, st, sizeof(st))};
        strcpy(h.block, "gpu0");
        uint8_t buf[VMIG_PKT_HDR_LEN];
        vmig_wire_pkt_encode(&h, NULL, buf);
        vmig_conn_write_all(data[0], buf, sizeof(buf), "pkt", NULL);
        vmig_conn_write_all(data[0], st, sizeof(st), "payload", NULL);
    }
    expect(&d, VMIG_EPROTO, "DEV packet 1 (device 'gpu0' instance 3, chunk 0), but no device",
           "DEV packet without devices");
    fs_close(ctl, data, 1);

    /* Stream cut in the middle of a packet's payload. */
    dest_start(&d);
    ctl = fs_setup(&d, data, 1);
    {
        vmig_pkt_hdr h = {.type = VMIG_PKT_RAM, .seq = 1, .pass = 1, .page_size = PG, .normal = 2};
        strcpy(h.block, "ram");
        uint64_t o2[2] = {0, PG};
        uint8_t buf[VMIG_PKT_HDR_LEN + 16];
        size_t n = vmig_wire_pkt_encode(&h, o2, buf);
        vmig_conn_write_all(data[0], buf, n, "pkt", NULL);
        uint8_t half[PG] = {1};
        vmig_conn_write_all(data[0], half, sizeof(half), "half", NULL);
        vmig_conn_close(data[0]);
    }
    expect(&d, VMIG_ECONN, "closed", "stream cut mid-payload");
    vmig_conn_close(ctl);

    /* END whose digest or counts do not match what arrived. */
    for (int variant = 0; variant < 2; variant++) {
        dest_start(&d);
        ctl = fs_setup(&d, data, 1);
        offs[0] = 0;
        fs_packet(data[0], VMIG_PKT_RAM, 1, 1, "ram", offs, 1, 0, 0);
        fs_packet(data[0], VMIG_PKT_SYNC, 2, 1, "", NULL, 0, 0, 0);
        fs_packet(data[0], VMIG_PKT_FIN, 3, 1, "", NULL, 0, 0, 0);
        uint8_t dg[1][16] = {{0}};
        vmig_wire_end end = {
            .nblocks = 1, .digests = dg, .packets = 1, .normal_pages = variant ? 7 : 1};
        uint8_t buf[256];
        int n = vmig_wire_end_encode(&end, buf, sizeof(buf));
        tf_ctl(ctl, VMIG_CTL_END, buf, n);
        unsigned t = tf_read_frame(ctl);
        CHECK(t == VMIG_CTL_ERROR, "END mismatch: the source should get ERROR, got %u", t);
        expect(&d, VMIG_EVERIFY, variant ? "normal" : "digest",
               variant ? "END: page counts differ" : "END: digest differs");
        fs_close(ctl, data, 1);
    }

    /* END of garbage, after the channels' FIN: refused by its decoder. */
    dest_start(&d);
    ctl = fs_setup(&d, data, 1);
    fs_packet(data[0], VMIG_PKT_SYNC, 1, 1, "", NULL, 0, 0, 0);
    fs_packet(data[0], VMIG_PKT_FIN, 2, 1, "", NULL, 0, 0, 0);
    {
        uint8_t junk[40];
        memset(junk, 0xA5, sizeof(junk));
        tf_ctl(ctl, VMIG_CTL_END, junk, sizeof(junk));
    }
    expect(&d, VMIG_EPROTO, "END", "END of garbage");
    fs_close(ctl, data, 1);

    /* The source gives up and says why. */
    dest_start(&d);
    ctl = fs_setup(&d, data, 1);
    {
        uint8_t buf[256];
        int n = vmig_wire_status_encode(VMIG_ECANCELED, "operator canceled", buf, sizeof(buf));
        tf_ctl(ctl, VMIG_CTL_ERROR, buf, n);
    }
    expect(&d, VMIG_EPEER, "operator canceled", "source sends ERROR");
    fs_close(ctl, data, 1);

    /* A data channel left in the backlog by an earlier attempt, ahead of
     * the next source's control channel: skipped, the migration works. */
    {
        vmig_conn *stale = tf_connect(d.uri, VMIG_CH_DATA, 1, 2, uuid_a);
        pthread_t t;
        dest_start(&d);
        pthread_create(&t, NULL, real_src, &d);
        pthread_join(t, NULL);
        CHECK(dest_wait(&d) == 0, "leftover data channel: the migration failed: %s", d.err.msg);
        fprintf(stderr, "  ok: %-34s -> skipped\n", "leftover data channel first");
        vmig_conn_close(stale);
    }

    /* The source side: a listener that never accepts (its backlog completes
     * the TCP handshake) must not hold the source forever. */
    {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof(sa);
        REQUIRE(fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(fd, 8) &&
                    !getsockname(fd, (struct sockaddr *)&sa, &sl),
                "listen socket");
        char uri[64];
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", ntohs(sa.sin_port));
        vmig_params prm;
        vmig_params_init(&prm);
        prm.connect_timeout_ms = 300;
        vmig_session *src;
        static uint8_t page[PG] __attribute__((aligned(4096)));
        REQUIRE(!vmig_session_create(&src, VMIG_ROLE_SOURCE, &prm, &e), "%s", e.msg);
        REQUIRE(!vmig_ram_add(src, "ram", page, PG, PG, 0, &e), "%s", e.msg);
        uint64_t t0 = tu_now_ns();
        int rc = vmig_migrate(src, uri, &e);
        double secs = (double)(tu_now_ns() - t0) / 1e9;
        CHECK(rc == VMIG_ETIMEDOUT && strstr(e.msg, "READY"), "silent destination: got %d (%s): %s",
              rc, vmig_strerror(rc), e.msg);
        CHECK(secs < 5, "silent destination: the source gave up after %.1f s", secs);
        fprintf(stderr, "  ok: %-34s -> %s (%.2f s)\n", "source: destination never answers", e.msg,
                secs);
        vmig_session_free(src);
        close(fd);
    }

    /* The source side: a destination whose READY lacks the configured codec
     * is refused before any data channel opens. */
    for (uint32_t c = 1; c < VMIG_CODEC_COUNT; c++) {
        if (vmig_codec_get(c)->missing)
            continue;
        vmig_listener *l;
        REQUIRE(!vmig_listen("tcp:127.0.0.1:0", &l, &e), "%s", e.msg);
        char uri[256];
        l->ops->uri(l, uri, sizeof(uri));
        vmig_params prm;
        vmig_params_init(&prm);
        prm.channels = 1;
        prm.compression = c;
        vmig_session *src;
        static uint8_t page[PG] __attribute__((aligned(4096)));
        REQUIRE(!vmig_session_create(&src, VMIG_ROLE_SOURCE, &prm, &e), "%s", e.msg);
        REQUIRE(!vmig_ram_add(src, "ram", page, PG, PG, 0, &e), "%s", e.msg);
        fake_dest fd = {.l = l};
        pthread_t t;
        pthread_create(&t, NULL, fake_dest_main, &fd);
        vmig_error se = {0};
        int rc = vmig_migrate(src, uri, &se);
        pthread_join(t, NULL);
        CHECK(rc == VMIG_ENOTSUP && strstr(se.msg, vmig_codec_name(c)) &&
                  strstr(se.msg, "destination"),
              "codec %s unknown to the destination: got %d: %s", vmig_codec_name(c), rc, se.msg);
        CHECK(fd.data_channels == 0, "codec %s: %d data channels were opened", vmig_codec_name(c),
              fd.data_channels);
        CHECK(fd.got_error, "codec %s: the destination was not told why", vmig_codec_name(c));
        fprintf(stderr, "  ok: %-34s -> %s\n", "source: codec the destination lacks", se.msg);
        vmig_session_free(src);
        vmig_listener_close(l);
    }

    vmig_session_free(d.s);
    return tu_result("test_e2e_reject");
}
