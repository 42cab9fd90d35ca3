/*
 * Two migrations at once in one process, each with its own source and
 * destination sessions, must not interfere: no shared mutable state.
 * Also checks max-bandwidth pacing: a paced migration takes as long as its
 * bytes need at that rate, while the unpaced one next to it does not.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "../testutil.h"

typedef struct pair {
    const char *listen;
    uint32_t channels;
    uint64_t bytes;
    uint64_t bandwidth;
    uint64_t seed;
    double seconds;
    int src_rc, dst_rc;
    vmig_error src_err, dst_err;
    uint64_t wire_bytes;
    bool same;
} pair;

typedef struct side {
    vmig_session *s;
    const char *uri;
    int *rc;
    vmig_error *err;
} side;

static void *dst_main(void *p)
{
    side *x = p;
    *x->rc = vmig_incoming_run(x->s, x->err);
    return NULL;
}

static void *pair_main(void *arg)
{
    pair *P = arg;
    vmig_params p;
    vmig_params_init(&p);
    p.channels = P->channels;
    p.max_bandwidth = P->bandwidth;
    vmig_error e = {0};
    vmig_session *src, *dst;
    REQUIRE(!vmig_session_create(&src, VMIG_ROLE_SOURCE, &p, &e), "%s", e.msg);
    REQUIRE(!vmig_session_create(&dst, VMIG_ROLE_DEST, NULL, &e), "%s", e.msg);
    uint8_t *sm = mmap(NULL, P->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *dm = mmap(NULL, P->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(sm != MAP_FAILED && dm != MAP_FAILED, "mmap");
    uint64_t st = P->seed;
    for (uint64_t i = 0; i < P->bytes; i += 8) {
        uint64_t v = tu_rand(&st);
        memcpy(sm + i, &v, 8);
    }
    REQUIRE(!vmig_ram_add(src, "ram", sm, P->bytes, 4096, 0, &e), "%s", e.msg);
    REQUIRE(!vmig_ram_add(dst, "ram", dm, P->bytes, 4096, VMIG_RAM_ZEROED, &e), "%s", e.msg);
    REQUIRE(!vmig_incoming_listen(dst, P->listen, &e), "%s", e.msg);
    char uri[256];
    vmig_incoming_uri(dst, uri, sizeof(uri));
    side d = {dst, uri, &P->dst_rc, &P->dst_err};
    pthread_t t;
    pthread_create(&t, NULL, dst_main, &d);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    P->src_rc = vmig_migrate(src, uri, &P->src_err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    P->seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    vmig_stats s;
    vmig_stats_get(src, &s);
    P->wire_bytes = s.wire_bytes;
    P->same = !memcmp(sm, dm, P->bytes);
    vmig_session_free(src);
    vmig_session_free(dst);
    munmap(sm, P->bytes);
    munmap(dm, P->bytes);
    return NULL;
}

int main(void)
{
    pair pairs[2] = {
        {.listen = "tcp:127.0.0.1:0", .channels = 4, .bytes = 64 << 20, .seed = 1},
        /* 24 MiB at 16 MiB/s: about 1.5 s. */
        {.listen = "tcp:127.0.0.1:0",
         .channels = 3,
         .bytes = 24 << 20,
         .bandwidth = 16 << 20,
         .seed = 2},
    };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, pair_main, &pairs[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(pairs[i].src_rc == 0, "pair %d source: %s", i, pairs[i].src_err.msg);
        CHECK(pairs[i].dst_rc == 0, "pair %d destination: %s", i, pairs[i].dst_err.msg);
        CHECK(pairs[i].same, "pair %d: memory differs", i);
    }
    double expect = (double)pairs[1].wire_bytes / (double)pairs[1].bandwidth;
    fprintf(stderr,
            "paced: %.3f s for %llu wire bytes at %llu B/s (expected %.3f s); "
            "unpaced: %.3f s\n",
            pairs[1].seconds, (unsigned long long)pairs[1].wire_bytes,
            (unsigned long long)pairs[1].bandwidth, expect, pairs[0].seconds);
    /* The bucket may bank 10 ms of credit; setup and verify add a little. */
    CHECK(pairs[1].seconds >= expect - 0.02, "paced migration too fast: %.3f s < %.3f s",
          pairs[1].seconds, expect);
    CHECK(pairs[1].seconds <= expect * 1.3 + 0.3, "paced migration too slow: %.3f s vs %.3f s",
          pairs[1].seconds, expect);
    return tu_result("test_e2e_two_sessions");
}
