/*
 * Golden byte files: one canonical message of each kind, encoded with fixed
 * field values and compared byte for byte with tests/golden/<name>.bin, then
 * decoded from the file and checked field by field. A difference means the
 * wire format changed: that needs a new version, not new files.
 *
 * VMIG_GOLDEN_DIR names the directory (the build sets it).
 * VMIG_GOLDEN_UPDATE=1 rewrites the files instead of comparing; check the
 * new bytes by hand against docs/wire-format.md (xxd) before committing.
 */
#include <errno.h>
#include <stdlib.h>

#include "src/wire/wire.h"

#include "../testutil.h"

static const char *dir;
static int update;

static const uint8_t UUID[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

/* Fixed values of the canonical messages. */
#define HELLO_PP    32
#define HELLO_CH    4
#define END_PACKETS 1000ull
#define END_NORMAL  200000ull
#define END_ZERO    62144ull
#define ERROR_MSG   "block 'pc.ram': digest mismatch"
#define RAM_SEQ     42
#define RAM_PASS    2
/* CKPT 3 (pass 5) and its ACK. */
#define CKPT_ID      3ull
#define CKPT_PASS    5
#define CKPT_PACKETS 1500ull
#define CKPT_NORMAL  200600ull
#define CKPT_ZERO    62150ull
static const uint64_t RAM_OFFS[3] = {0x0, 0x1000, 0x200000};

/* Read a whole golden file into a heap buffer of exactly its size. */
static uint8_t *slurp(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return NULL;
    }
    uint8_t tmp[65536];
    size_t n = fread(tmp, 1, sizeof(tmp), f);
    fclose(f);
    uint8_t *p = malloc(n ? n : 1);
    REQUIRE(p, "malloc");
    memcpy(p, tmp, n);
    *len = n;
    return p;
}

/* Compare `want` with the file (or write it); returns the file's bytes. */
static uint8_t *golden(const char *name, const uint8_t *want, size_t n, size_t *len)
{
    if (update) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        bool ok = f && fwrite(want, 1, n, f) == n;
        if (f && fclose(f))
            ok = false;
        REQUIRE(ok, "write %s", path);
        fprintf(stderr, "wrote %s (%zu bytes)\n", path, n);
    }
    uint8_t *got = slurp(name, len);
    if (!got) {
        tu_failures++;
        return NULL;
    }
    if (*len != n || memcmp(got, want, n)) {
        size_t i = 0;
        while (i < n && i < *len && got[i] == want[i])
            i++;
        CHECK(0, "%s: %zu bytes on file, %zu encoded, first difference at byte %zu", name, *len, n,
              i);
        free(got);
        return NULL;
    }
    return got;
}

static void test_handshakes(void)
{
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "hs_data.bin" : "hs_control.bin";
        vmig_wire_hs h = {.kind = (uint8_t)k, .channel_id = k ? 3 : 0, .channel_count = 4};
        memcpy(h.uuid, UUID, 16);
        uint8_t b[VMIG_HS_LEN];
        vmig_wire_hs_encode(&h, b);
        size_t n;
        uint8_t *f = golden(name, b, sizeof(b), &n);
        if (!f)
            continue;
        vmig_wire_hs d;
        vmig_error e = {0};
        CHECK(n == VMIG_HS_LEN && !vmig_wire_hs_decode(f, &d, &e), "%s: %s", name, e.msg);
        CHECK(d.kind == k && d.channel_id == (k ? 3 : 0) && d.channel_count == 4 &&
                  !memcmp(d.uuid, UUID, 16),
              "%s fields", name);
        free(f);
    }
}

/* Check a control frame from a file; returns its payload (inside f). */
static const uint8_t *ctl_check(const char *name, const uint8_t *f, size_t n, unsigned want_type,
                                uint32_t *plen)
{
    unsigned type;
    vmig_error e = {0};
    REQUIRE(n >= 12, "%s: %zu bytes", name, n);
    CHECK(!vmig_wire_ctl_decode_hdr(f, &type, plen, &e), "%s: %s", name, e.msg);
    CHECK(type == want_type && *plen + 12 == n, "%s: type %u length %u", name, type, *plen);
    CHECK(!vmig_wire_ctl_check_crc(f, *plen, &e), "%s: %s", name, e.msg);
    return f + VMIG_CTL_HDR_LEN;
}

static void test_hello(const char *name, uint32_t features)
{
    vmig_wire_block bl[2] = {
        {.name = "pc.ram", .length = 1ull << 30, .page_size = 4096},
        {.name = "vga.vram", .length = 16 << 20, .page_size = 2 << 20},
    };
    vmig_wire_device dv[2] = {{.id = "cpus", .instance = 0}, {.id = "gpu", .instance = 3}};
    vmig_wire_hello h = {.packet_pages = HELLO_PP,
                         .channels = HELLO_CH,
                         .zero_detect = 2,
                         .verify = 1,
                         .features = features,
                         .nblocks = 2,
                         .blocks = bl,
                         .dev_path = VMIG_WIRE_DEV_CHANNELS,
                         .dev_chunk = 1u << 20,
                         .ndevices = 2,
                         .devices = dv};
    uint8_t b[256];
    int p = vmig_wire_hello_encode(&h, b + VMIG_CTL_HDR_LEN, sizeof(b) - 12);
    REQUIRE(p > 0, "HELLO encode");
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_HELLO, (uint32_t)p);
    size_t n;
    uint8_t *f = golden(name, b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check(name, f, n, VMIG_CTL_HELLO, &plen);
    vmig_wire_block out[4];
    vmig_wire_device dout[VMIG_WIRE_MAX_DEVICES];
    vmig_wire_hello d = {.blocks = out, .devices = dout};
    vmig_error e = {0};
    CHECK(!vmig_wire_hello_decode(pl, plen, &d, 4, &e), "%s: %s", name, e.msg);
    CHECK(d.packet_pages == HELLO_PP && d.channels == HELLO_CH && d.zero_detect == 2 &&
              d.verify == 1 && d.features == features && d.nblocks == 2,
          "%s fields", name);
    for (int i = 0; i < 2; i++)
        CHECK(!strcmp(out[i].name, bl[i].name) && out[i].length == bl[i].length &&
                  out[i].page_size == bl[i].page_size,
              "HELLO block %d", i);
    if (features & VMIG_HELLO_F_DEVICES)
        CHECK(d.ndevices == 2 && d.dev_chunk == 1u << 20 && !strcmp(dout[0].id, "cpus") &&
                  !strcmp(dout[1].id, "gpu") && dout[1].instance == 3,
              "%s devices", name);
    free(f);
}

/* DEVCHUNK: chunk 9 of device 1, the last, 32 bytes. */
static void test_devchunk(void)
{
    uint8_t b[12 + VMIG_DEVCHUNK_HDR_LEN + 32];
    vmig_wire_devchunk c = {.device = 1, .last = true, .chunk = 9};
    vmig_wire_devchunk_encode_hdr(&c, b + VMIG_CTL_HDR_LEN);
    for (int i = 0; i < 32; i++)
        b[VMIG_CTL_HDR_LEN + VMIG_DEVCHUNK_HDR_LEN + i] = (uint8_t)(0xC0 + i);
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_DEVCHUNK, VMIG_DEVCHUNK_HDR_LEN + 32);
    size_t n;
    uint8_t *f = golden("ctl_devchunk.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check("ctl_devchunk.bin", f, n, VMIG_CTL_DEVCHUNK, &plen);
    vmig_wire_devchunk d;
    vmig_error e = {0};
    CHECK(!vmig_wire_devchunk_decode(pl, plen, 2, 4096, &d, &e), "ctl_devchunk.bin: %s", e.msg);
    CHECK(d.device == 1 && d.last && d.chunk == 9 && d.len == 32 && d.data[0] == 0xC0,
          "ctl_devchunk.bin fields");
    free(f);
}

/* READY: the destination's codecs (none, zlib, zstd, deflate-page, lz4). */
static void test_ready(void)
{
    uint8_t b[12 + VMIG_READY_LEN];
    vmig_wire_ready_encode(0x1f, b + VMIG_CTL_HDR_LEN);
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_READY, VMIG_READY_LEN);
    size_t n;
    uint8_t *f = golden("ctl_ready.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen, codecs = 0;
    const uint8_t *pl = ctl_check("ctl_ready.bin", f, n, VMIG_CTL_READY, &plen);
    vmig_error e = {0};
    CHECK(!vmig_wire_ready_decode(pl, plen, &codecs, &e), "ctl_ready.bin: %s", e.msg);
    CHECK(codecs == 0x1f, "ctl_ready.bin codecs 0x%x", codecs);
    free(f);
}

/* COMMIT, HEARTBEAT: an empty frame. */
static void test_empty(const char *name, unsigned type)
{
    uint8_t b[12];
    size_t len = vmig_wire_ctl_frame(b, type, 0);
    size_t n;
    uint8_t *f = golden(name, b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    ctl_check(name, f, n, type, &plen);
    CHECK(plen == 0, "%s payload %u", name, plen);
    free(f);
}

/* DEVSTATE: the payload is the application's bytes, as they are. */
static void test_devstate(void)
{
    static const char blob[] = "device state: 16";
    uint8_t b[64];
    memcpy(b + VMIG_CTL_HDR_LEN, blob, 16);
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_DEVSTATE, 16);
    size_t n;
    uint8_t *f = golden("ctl_devstate.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check("ctl_devstate.bin", f, n, VMIG_CTL_DEVSTATE, &plen);
    CHECK(plen == 16 && !memcmp(pl, blob, 16), "DEVSTATE payload");
    free(f);
}

static void test_end(void)
{
    uint8_t dg[2][16];
    for (int i = 0; i < 32; i++)
        dg[i / 16][i % 16] = (uint8_t)i;
    vmig_wire_end e = {.nblocks = 2,
                       .digests = dg,
                       .packets = END_PACKETS,
                       .normal_pages = END_NORMAL,
                       .zero_pages = END_ZERO};
    uint8_t b[128];
    int p = vmig_wire_end_encode(&e, b + VMIG_CTL_HDR_LEN, sizeof(b) - 12);
    REQUIRE(p > 0, "END encode");
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_END, (uint32_t)p);
    size_t n;
    uint8_t *f = golden("ctl_end.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check("ctl_end.bin", f, n, VMIG_CTL_END, &plen);
    uint8_t out[2][16];
    vmig_wire_end d = {.digests = out};
    vmig_error er = {0};
    CHECK(!vmig_wire_end_decode(pl, plen, &d, 2, &er), "END: %s", er.msg);
    CHECK(d.nblocks == 2 && !memcmp(out, dg, 32) && d.packets == END_PACKETS &&
              d.normal_pages == END_NORMAL && d.zero_pages == END_ZERO,
          "END fields");
    free(f);
}

/* CKPT 3, pass 5: block 0's digest is the bytes D0..DF, block 1's E0..EF;
 * then the run's counts so far. */
static void test_ckpt(void)
{
    uint8_t dg[2][16];
    for (int i = 0; i < 32; i++)
        dg[i / 16][i % 16] = (uint8_t)(0xD0 + (i / 16) * 0x10 + i % 16);
    vmig_wire_ckpt c = {.id = CKPT_ID,
                        .pass = CKPT_PASS,
                        .end = {.nblocks = 2,
                                .digests = dg,
                                .packets = CKPT_PACKETS,
                                .normal_pages = CKPT_NORMAL,
                                .zero_pages = CKPT_ZERO}};
    uint8_t b[128];
    int p = vmig_wire_ckpt_encode(&c, b + VMIG_CTL_HDR_LEN, sizeof(b) - 12);
    REQUIRE(p > 0, "CKPT encode");
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_CKPT, (uint32_t)p);
    size_t n;
    uint8_t *f = golden("ctl_ckpt.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check("ctl_ckpt.bin", f, n, VMIG_CTL_CKPT, &plen);
    uint8_t out[2][16];
    vmig_wire_ckpt d = {.end = {.digests = out}};
    vmig_error er = {0};
    CHECK(!vmig_wire_ckpt_decode(pl, plen, &d, 2, &er), "CKPT: %s", er.msg);
    CHECK(d.id == CKPT_ID && d.pass == CKPT_PASS && d.end.nblocks == 2 && !memcmp(out, dg, 32) &&
              d.end.packets == CKPT_PACKETS && d.end.normal_pages == CKPT_NORMAL &&
              d.end.zero_pages == CKPT_ZERO,
          "CKPT fields");
    /* What was decoded encodes to the file's payload again. */
    uint8_t re[128];
    int rn = vmig_wire_ckpt_encode(&d, re, sizeof(re));
    CHECK(rn >= 0 && (uint32_t)rn == plen && !memcmp(re, pl, plen), "CKPT re-encode");
    free(f);
}

/* ACK of checkpoint 3. */
static void test_ack(void)
{
    uint8_t b[12 + VMIG_ACK_LEN];
    vmig_wire_ack_encode(CKPT_ID, b + VMIG_CTL_HDR_LEN);
    size_t len = vmig_wire_ctl_frame(b, VMIG_CTL_ACK, VMIG_ACK_LEN);
    size_t n;
    uint8_t *f = golden("ctl_ack.bin", b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check("ctl_ack.bin", f, n, VMIG_CTL_ACK, &plen);
    uint64_t id = 0;
    vmig_error e = {0};
    CHECK(!vmig_wire_ack_decode(pl, plen, &id, &e), "ctl_ack.bin: %s", e.msg);
    CHECK(id == CKPT_ID, "ctl_ack.bin id %llu", (unsigned long long)id);
    uint8_t re[VMIG_ACK_LEN];
    vmig_wire_ack_encode(id, re);
    CHECK(plen == VMIG_ACK_LEN && !memcmp(re, pl, VMIG_ACK_LEN), "ACK re-encode");
    free(f);
}

static void test_status(bool is_error)
{
    const char *name = is_error ? "ctl_error.bin" : "ctl_result_ok.bin";
    int32_t status = is_error ? VMIG_EVERIFY : 0;
    const char *msg = is_error ? ERROR_MSG : "";
    unsigned type = is_error ? VMIG_CTL_ERROR : VMIG_CTL_RESULT;
    uint8_t b[128];
    int p = vmig_wire_status_encode(status, msg, b + VMIG_CTL_HDR_LEN, sizeof(b) - 12);
    REQUIRE(p > 0, "%s encode", name);
    size_t len = vmig_wire_ctl_frame(b, type, (uint32_t)p);
    size_t n;
    uint8_t *f = golden(name, b, len, &n);
    if (!f)
        return;
    uint32_t plen;
    const uint8_t *pl = ctl_check(name, f, n, type, &plen);
    vmig_wire_status st;
    vmig_error e = {0};
    CHECK(!vmig_wire_status_decode(pl, plen, is_error, &st, &e), "%s: %s", name, e.msg);
    CHECK(st.status == status && !strcmp(st.msg, msg), "%s fields", name);
    free(f);
}

static void test_packets(void)
{
    uint8_t b[VMIG_PKT_HDR_LEN + 24];
    vmig_pkt_hdr h = {.type = VMIG_PKT_RAM,
                      .seq = RAM_SEQ,
                      .pass = RAM_PASS,
                      .page_size = 4096,
                      .normal = 2,
                      .zero = 1,
                      .block = "pc.ram"};
    size_t len = vmig_wire_pkt_encode(&h, RAM_OFFS, b);
    size_t n;
    uint8_t *f = golden("pkt_ram.bin", b, len, &n);
    if (f) {
        vmig_pkt_hdr d;
        uint64_t offs[3];
        vmig_error e = {0};
        REQUIRE(n == VMIG_PKT_HDR_LEN + 24, "pkt_ram.bin: %zu bytes", n);
        CHECK(!vmig_wire_pkt_decode_hdr(f, &d, HELLO_PP, &e), "pkt_ram.bin: %s", e.msg);
        CHECK(!vmig_wire_pkt_decode_offsets(&d, f, f + VMIG_PKT_HDR_LEN, 1ull << 30, offs, &e),
              "pkt_ram.bin: %s", e.msg);
        CHECK(d.type == VMIG_PKT_RAM && d.flags == 0 && d.seq == RAM_SEQ && d.pass == RAM_PASS &&
                  d.page_size == 4096 && d.normal == 2 && d.zero == 1 && d.payload_len == 8192 &&
                  !strcmp(d.block, "pc.ram"),
              "pkt_ram.bin fields");
        CHECK(!memcmp(offs, RAM_OFFS, sizeof(offs)), "pkt_ram.bin offsets");
        free(f);
    }
    /* The same pages compressed: the codec in the flags, the payload length
     * the codec's (deflate-page: 2 lengths + 1000 + 4096 bytes). */
    h.flags = VMIG_CODEC_DEFLATE_PAGE;
    h.payload_len = 8 + 1000 + 4096;
    len = vmig_wire_pkt_encode(&h, RAM_OFFS, b);
    f = golden("pkt_ram_deflate_page.bin", b, len, &n);
    if (f) {
        vmig_pkt_hdr d;
        uint64_t offs[3];
        vmig_error e = {0};
        REQUIRE(n == VMIG_PKT_HDR_LEN + 24, "pkt_ram_deflate_page.bin: %zu bytes", n);
        CHECK(!vmig_wire_pkt_decode_hdr(f, &d, HELLO_PP, &e), "pkt_ram_deflate_page.bin: %s",
              e.msg);
        CHECK(!vmig_wire_pkt_decode_offsets(&d, f, f + VMIG_PKT_HDR_LEN, 1ull << 30, offs, &e),
              "pkt_ram_deflate_page.bin: %s", e.msg);
        CHECK(vmig_pkt_codec(&d) == VMIG_CODEC_DEFLATE_PAGE && d.flags == 3 && d.normal == 2 &&
                  d.zero == 1 && d.payload_len == 5104,
              "pkt_ram_deflate_page.bin fields");
        free(f);
    }
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "pkt_fin.bin" : "pkt_sync.bin";
        uint8_t type = k ? VMIG_PKT_FIN : VMIG_PKT_SYNC;
        uint64_t seq = RAM_SEQ + 1 + (uint64_t)k;
        vmig_pkt_hdr m = {.type = type, .seq = seq, .pass = RAM_PASS};
        len = vmig_wire_pkt_encode(&m, NULL, b);
        f = golden(name, b, len, &n);
        if (!f)
            continue;
        vmig_pkt_hdr d;
        vmig_error e = {0};
        REQUIRE(n == VMIG_PKT_HDR_LEN, "%s: %zu bytes", name, n);
        CHECK(!vmig_wire_pkt_decode_hdr(f, &d, HELLO_PP, &e), "%s: %s", name, e.msg);
        CHECK(!vmig_wire_pkt_decode_offsets(&d, f, NULL, 0, NULL, &e), "%s: %s", name, e.msg);
        CHECK(d.type == type && d.seq == seq && d.pass == RAM_PASS && d.page_size == 0 &&
                  d.normal == 0 && d.zero == 0 && d.payload_len == 0 && d.block[0] == 0,
              "%s fields", name);
        free(f);
    }
}

/* A device-state chunk: header then its 64 payload bytes. */
static void test_dev_packet(void)
{
    uint8_t b[VMIG_PKT_HDR_LEN + 64];
    uint8_t pl[64];
    for (int i = 0; i < 64; i++)
        pl[i] = (uint8_t)(0xa0 + i);
    vmig_pkt_hdr m = {.type = VMIG_PKT_DEV,
                      .flags = VMIG_PKT_F_LAST,
                      .seq = RAM_SEQ + 3,
                      .pass = RAM_PASS,
                      .instance = 2,
                      .chunk = 5,
                      .payload_len = sizeof(pl),
                      .payload_crc = vmig_crc32c(0, pl, sizeof(pl))};
    snprintf(m.block, sizeof(m.block), "gpu0");
    size_t len = vmig_wire_pkt_encode(&m, NULL, b);
    memcpy(b + len, pl, sizeof(pl));
    size_t n;
    uint8_t *f = golden("pkt_dev.bin", b, len + sizeof(pl), &n);
    if (!f)
        return;
    vmig_pkt_hdr d;
    vmig_error e = {0};
    REQUIRE(n == VMIG_PKT_HDR_LEN + sizeof(pl), "pkt_dev.bin: %zu bytes", n);
    CHECK(!vmig_wire_pkt_decode_hdr(f, &d, HELLO_PP, &e), "pkt_dev.bin: %s", e.msg);
    CHECK(!vmig_wire_pkt_check_dev(&d, f, f + VMIG_PKT_HDR_LEN, &e), "pkt_dev.bin: %s", e.msg);
    CHECK(d.type == VMIG_PKT_DEV && d.flags == VMIG_PKT_F_LAST && d.seq == RAM_SEQ + 3 &&
              d.instance == 2 && d.chunk == 5 && d.payload_len == 64 && !strcmp(d.block, "gpu0"),
          "pkt_dev.bin fields");
    free(f);
}

int main(void)
{
    dir = getenv("VMIG_GOLDEN_DIR");
    if (!dir || !*dir)
        SKIP("VMIG_GOLDEN_DIR is not set (the build sets it to tests/golden)");
    const char *u = getenv("VMIG_GOLDEN_UPDATE");
    update = u && !strcmp(u, "1");
    test_handshakes();
    test_hello("ctl_hello.bin", 0);
    test_hello("ctl_hello_devstate.bin", VMIG_HELLO_F_DEVSTATE);
    test_hello("ctl_hello_devices.bin", VMIG_HELLO_F_DEVICES);
    test_hello("ctl_hello_colo.bin", VMIG_HELLO_F_COLO);
    test_devchunk();
    test_ready();
    test_empty("ctl_commit.bin", VMIG_CTL_COMMIT);
    test_empty("ctl_heartbeat.bin", VMIG_CTL_HEARTBEAT);
    test_devstate();
    test_end();
    test_ckpt();
    test_ack();
    test_status(false);
    test_status(true);
    test_packets();
    test_dev_packet();
    return tu_result("test_golden");
}
