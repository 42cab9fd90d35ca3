/*
 * End-to-end: migrate several blocks of odd sizes between two sessions of
 * this process over tcp (IPv4 and IPv6) and unix sockets, with 1, 2, 4 and 8
 * channels and every zero-page and verify mode, and compare memory byte for
 * byte. Also checks that zero pages never touch fresh destination memory
 * (mincore) and that stale content in reused memory is cleared, and runs the
 * same migrations through every codec this build has and through auto.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "../testutil.h"
#include "../tu_migrate.h"

typedef struct blockdef {
    const char *name;
    uint64_t pages;
    uint32_t page_size;
    bool dest_reused; /* destination memory holds stale bytes (no VMIG_RAM_ZEROED) */
} blockdef;

static const blockdef blocks[] = {
    {"ram-low", 257, 4096, false}, /* not a multiple of the packet size */
    {"ram-high", 1000, 4096, false}, {"vram", 37, 8192, false}, /* another page size */
    {"reused", 300, 4096, true}, /* existing content on the destination */
    {"tiny", 1, 4096, false},
};
#define NBLOCKS (sizeof(blocks) / sizeof(blocks[0]))

/* Source content: a third zero pages, a third random, a third with a single
 * non-zero byte somewhere (the hardest case for zero detection). */
static uint64_t fill_source(uint8_t *m, const blockdef *b, uint64_t seed)
{
    uint64_t zeros = 0;
    for (uint64_t p = 0; p < b->pages; p++) {
        uint8_t *pg = m + p * b->page_size;
        uint64_t r = tu_rand(&seed);
        switch (r % 3) {
        case 0:
            zeros++;
            break;
        case 1:
            for (uint32_t i = 0; i < b->page_size; i += 8) {
                uint64_t v = tu_rand(&seed);
                memcpy(pg + i, &v, 8);
            }
            break;
        default:
            pg[(r >> 8) % b->page_size] = (uint8_t)(1 + (r >> 32) % 255);
        }
    }
    return zeros;
}

static int run_case_c(const char *uri_fmt, uint32_t channels, const char *zero, const char *verify,
                      const char *packet_pages, const char *compression)
{
    vmig_params p;
    vmig_params_init(&p);
    vmig_error e = {0};
    char ch[16];
    snprintf(ch, sizeof(ch), "%u", channels);
    REQUIRE(!vmig_params_set(&p, "channels", ch, &e), "%s", e.msg);
    REQUIRE(!vmig_params_set(&p, "zero-page-detection", zero, &e), "%s", e.msg);
    REQUIRE(!vmig_params_set(&p, "verify", verify, &e), "%s", e.msg);
    REQUIRE(!vmig_params_set(&p, "packet-pages", packet_pages, &e), "%s", e.msg);
    REQUIRE(!vmig_params_set(&p, "compression", compression, &e), "%s", e.msg);

    tu_side src = {0}, dst = {0};
    REQUIRE(!vmig_session_create(&src.s, VMIG_ROLE_SOURCE, &p, &e), "%s", e.msg);
    REQUIRE(!vmig_session_create(&dst.s, VMIG_ROLE_DEST, NULL, &e), "%s", e.msg);

    uint8_t *sm[NBLOCKS], *dm[NBLOCKS];
    uint64_t expect_zero = 0, total_pages = 0;
    for (size_t i = 0; i < NBLOCKS; i++) {
        const blockdef *b = &blocks[i];
        uint64_t len = b->pages * b->page_size;
        sm[i] = tu_map(len);
        dm[i] = tu_map(len);
        expect_zero += fill_source(sm[i], b, 1000 + i);
        total_pages += b->pages;
        if (b->dest_reused)
            memset(dm[i], 0xA5, len);
        REQUIRE(!vmig_ram_add(src.s, b->name, sm[i], len, b->page_size, 0, &e), "%s", e.msg);
        REQUIRE(!vmig_ram_add(dst.s, b->name, dm[i], len, b->page_size,
                              b->dest_reused ? 0 : VMIG_RAM_ZEROED, &e),
                "%s", e.msg);
    }

    char listen_uri[128], uri[256];
    snprintf(listen_uri, sizeof(listen_uri), uri_fmt, (int)getpid(), channels);
    REQUIRE(!vmig_incoming_listen(dst.s, listen_uri, &e), "listen %s: %s", listen_uri, e.msg);
    REQUIRE(!vmig_incoming_uri(dst.s, uri, sizeof(uri)), "uri");
    src.uri = uri;
    pthread_t ts, td;
    pthread_create(&td, NULL, tu_run_dst, &dst);
    pthread_create(&ts, NULL, tu_run_src, &src);
    pthread_join(ts, NULL);
    pthread_join(td, NULL);
    CHECK(src.rc == 0, "%s ch=%u zero=%s verify=%s: source failed: %s", uri, channels, zero, verify,
          src.err.msg);
    CHECK(dst.rc == 0, "%s ch=%u zero=%s verify=%s: destination failed: %s", uri, channels, zero,
          verify, dst.err.msg);

    for (size_t i = 0; i < NBLOCKS; i++) {
        const blockdef *b = &blocks[i];
        uint64_t len = b->pages * b->page_size;
        /* Zero pages must not have touched fresh destination memory. This
         * runs before the comparison, whose reads would map the kernel's
         * zero page into the holes (mincore counts those as resident). */
        /* (verify=full reads every page, which maps the zero page too.) */
        if (!b->dest_reused && strcmp(zero, "none") && strcmp(verify, "full")) {
            unsigned char *vec = malloc(len / 4096);
            REQUIRE(vec && !mincore(dm[i], len, vec), "mincore");
            for (uint64_t pg = 0; pg < b->pages; pg++) {
                bool zero_page = true;
                for (uint32_t k = 0; k < b->page_size && zero_page; k++)
                    zero_page = sm[i][pg * b->page_size + k] == 0;
                uint64_t first = pg * b->page_size / 4096;
                if (zero_page && (vec[first] & 1)) {
                    CHECK(0, "block %s: zero page %llu was faulted in on the destination", b->name,
                          (unsigned long long)pg);
                    break;
                }
            }
            free(vec);
        }
        CHECK(!memcmp(sm[i], dm[i], len), "%s ch=%u zero=%s: block %s differs", uri, channels, zero,
              b->name);
    }
    vmig_stats ss, ds;
    vmig_stats_get(src.s, &ss);
    vmig_stats_get(dst.s, &ds);
    CHECK(ss.state == VMIG_STATE_COMPLETED, "source state %s", vmig_state_name(ss.state));
    CHECK(ds.state == VMIG_STATE_COMPLETED, "destination state %s", vmig_state_name(ds.state));
    CHECK(ss.normal_pages + ss.zero_pages == total_pages, "pages %llu + %llu != %llu",
          (unsigned long long)ss.normal_pages, (unsigned long long)ss.zero_pages,
          (unsigned long long)total_pages);
    uint64_t want_zero = strcmp(zero, "none") ? expect_zero : 0;
    CHECK(ss.zero_pages == want_zero, "zero pages %llu, expected %llu",
          (unsigned long long)ss.zero_pages, (unsigned long long)want_zero);
    CHECK(ds.zero_pages == ss.zero_pages && ds.normal_pages == ss.normal_pages,
          "destination counted %llu/%llu pages", (unsigned long long)ds.normal_pages,
          (unsigned long long)ds.zero_pages);
    CHECK(ds.wire_bytes > 0 && ss.packets == ds.packets, "packets %llu vs %llu",
          (unsigned long long)ss.packets, (unsigned long long)ds.packets);
    uint64_t chan_bytes = 0;
    for (uint32_t i = 0; i < channels; i++)
        chan_bytes += ss.ch[i].bytes;
    CHECK(chan_bytes == ss.wire_bytes, "per-channel bytes %llu != total %llu",
          (unsigned long long)chan_bytes, (unsigned long long)ss.wire_bytes);

    /* Per codec: both sides agree, and the pages add up. */
    uint64_t spages = 0, dpages = 0;
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        spages += ss.codec[k].pages;
        dpages += ds.codec[k].pages;
        CHECK(ss.codec[k].packets == ds.codec[k].packets &&
                  ss.codec[k].pages == ds.codec[k].pages &&
                  ss.codec[k].out_bytes == ds.codec[k].out_bytes,
              "%s: codec %s: source %llu packets %llu pages %llu bytes, destination %llu %llu %llu",
              compression, vmig_codec_name(k), (unsigned long long)ss.codec[k].packets,
              (unsigned long long)ss.codec[k].pages, (unsigned long long)ss.codec[k].out_bytes,
              (unsigned long long)ds.codec[k].packets, (unsigned long long)ds.codec[k].pages,
              (unsigned long long)ds.codec[k].out_bytes);
    }
    CHECK(spages == ss.normal_pages && dpages == ds.normal_pages,
          "%s: codec pages %llu/%llu, normal pages %llu", compression, (unsigned long long)spages,
          (unsigned long long)dpages, (unsigned long long)ss.normal_pages);
    uint32_t fixed = VMIG_CODEC_COUNT;
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++)
        if (!strcmp(compression, vmig_codec_name(k)))
            fixed = k;
    /* auto on this host without a pacing limit: nothing is compressed (the
     * "link" is a memory copy on the CPUs a codec would use). */
    if (!strcmp(compression, "auto"))
        CHECK(ss.codec[VMIG_CODEC_NONE].pages == ss.normal_pages,
              "auto on loopback compressed %llu of %llu pages",
              (unsigned long long)(ss.normal_pages - ss.codec[VMIG_CODEC_NONE].pages),
              (unsigned long long)ss.normal_pages);
    if (fixed < VMIG_CODEC_COUNT && ss.normal_pages)
        CHECK(ss.codec[fixed].pages == ss.normal_pages, "%s: only %llu of %llu pages", compression,
              (unsigned long long)ss.codec[fixed].pages, (unsigned long long)ss.normal_pages);

    vmig_session_free(src.s);
    vmig_session_free(dst.s);
    for (size_t i = 0; i < NBLOCKS; i++) {
        munmap(sm[i], blocks[i].pages * blocks[i].page_size);
        munmap(dm[i], blocks[i].pages * blocks[i].page_size);
    }
    return 0;
}

static int run_case(const char *uri_fmt, uint32_t channels, const char *zero, const char *verify,
                    const char *packet_pages)
{
    return run_case_c(uri_fmt, channels, zero, verify, packet_pages, "none");
}

int main(void)
{
    static const uint32_t chans[] = {1, 2, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        run_case("tcp:127.0.0.1:0", chans[i], "channel", "on", "128");
        run_case("unix:/tmp/vmig-e2e-%d-%u.sock", chans[i], "channel", "on", "128");
    }
    run_case("tcp:[::1]:0", 3, "channel", "on", "128");
    run_case("tcp:127.0.0.1:0", 4, "main", "on", "128");
    run_case("tcp:127.0.0.1:0", 4, "none", "on", "128");
    run_case("tcp:127.0.0.1:0", 4, "channel", "full", "128");
    run_case("tcp:127.0.0.1:0", 4, "channel", "off", "128");
    run_case("tcp:127.0.0.1:0", 2, "channel", "on", "1");
    run_case("tcp:127.0.0.1:0", 2, "channel", "on", "1024");
    for (uint32_t k = 1; k <= VMIG_CODEC_COUNT; k++) {
        uint32_t c = k == VMIG_CODEC_COUNT ? VMIG_COMPRESSION_AUTO : k;
        vmig_error e = {0};
        if (c != VMIG_COMPRESSION_AUTO && vmig_codec_available(c, &e)) {
            fprintf(stderr, "skipping codec %s: %s\n", vmig_codec_name(c), e.msg);
            continue;
        }
        const char *name = vmig_codec_name(c);
        run_case_c("tcp:127.0.0.1:0", 3, "channel", "on", "128", name);
        run_case_c("unix:/tmp/vmig-e2e-%d-%u.sock", 2, "channel", "full", "1", name);
        run_case_c("tcp:127.0.0.1:0", 2, "main", "on", "1024", name);
        run_case_c("tcp:127.0.0.1:0", 1, "none", "on", "64", name);
    }
    return tu_result("test_e2e_loopback");
}
