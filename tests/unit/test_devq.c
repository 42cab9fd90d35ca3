/*
 * The destination's per-device chunk queue (src/devstate/devq.c): chunks
 * put in any order come out in index order, byte for byte; memory held out
 * of order stays within the limit (the chunk whose turn it is excepted);
 * a full queue does not deadlock when every producer sends its chunks in
 * index order; duplicates, chunks below the next one, after the last one,
 * a second last, a last below a held chunk, and indices beyond the limit
 * fail the queue with a sentence and wake every waiter; fail() from outside
 * wakes a blocked put and get; the table survives growth and removal in
 * every order.
 */
#include "src/devstate/devq.h"

#include <pthread.h>
#include <unistd.h>

#include "../testutil.h"

static void *chunk(uint32_t index, size_t len)
{
    uint8_t *b = malloc(len ? len : 1);
    REQUIRE(b, "malloc");
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(index * 31 + i);
    return b;
}

static bool chunk_ok(const uint8_t *b, uint32_t index, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (b[i] != (uint8_t)(index * 31 + i))
            return false;
    return true;
}

static vmig_devq *mk(uint64_t limit)
{
    vmig_devq *q;
    vmig_error e = {0};
    REQUIRE(vmig_devq_create("dev0/0", limit, &q, &e) == 0, "create: %s", e.msg);
    return q;
}

/* Shuffled puts from this thread (no waiting: large limit), then gets. */
static void test_order(void)
{
    const uint32_t N = 5000;
    vmig_devq *q = mk(UINT64_MAX / 2);
    uint32_t *perm = malloc(sizeof(uint32_t) * N);
    for (uint32_t i = 0; i < N; i++)
        perm[i] = i;
    uint64_t seed = 7;
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(tu_rand(&seed) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    vmig_error e = {0};
    for (uint32_t i = 0; i < N; i++)
        REQUIRE(vmig_devq_put(q, perm[i], chunk(perm[i], perm[i] % 97), perm[i] % 97,
                              perm[i] == N - 1, &e) == 0,
                "put %u: %s", perm[i], e.msg);
    uint64_t held, held_max;
    vmig_devq_stats(q, &held, &held_max, NULL);
    CHECK(held > 0 && held == held_max, "held %llu max %llu", (unsigned long long)held,
          (unsigned long long)held_max);
    for (uint32_t i = 0; i < N; i++) {
        void *b;
        size_t len;
        bool last;
        REQUIRE(vmig_devq_get(q, &b, &len, &last, &e) == 0, "get %u: %s", i, e.msg);
        CHECK(len == i % 97 && chunk_ok(b, i, len) && last == (i == N - 1), "chunk %u", i);
        free(b);
    }
    void *b;
    size_t len;
    bool last;
    CHECK(vmig_devq_get(q, &b, &len, &last, &e) == VMIG_ENOENT, "after the last: ENOENT");
    uint32_t taken;
    vmig_devq_stats(q, &held, NULL, &taken);
    CHECK(held == 0 && taken == N, "held %llu taken %u", (unsigned long long)held, taken);
    free(perm);
    vmig_devq_free(q);
}

/* Bad indices: each fails the queue with its own sentence. */
static void bad(const char *what, uint32_t first, bool first_last, uint32_t second,
                bool second_last, const char *want)
{
    vmig_devq *q = mk(1 << 20);
    vmig_error e = {0};
    if (first != UINT32_MAX)
        REQUIRE(vmig_devq_put(q, first, chunk(first, 10), 10, first_last, &e) == 0, "%s: %s", what,
                e.msg);
    if (first == 0) { /* take it: the next one expected is 1 */
        void *b;
        size_t len;
        bool last;
        REQUIRE(vmig_devq_get(q, &b, &len, &last, &e) == 0, "%s: get", what);
        free(b);
    }
    e = (vmig_error){0};
    int rc = vmig_devq_put(q, second, chunk(second, 10), 10, second_last, &e);
    CHECK(rc == VMIG_EPROTO && strstr(e.msg, want) && strstr(e.msg, "dev0/0"), "%s: rc %d, '%s'",
          what, rc, e.msg);
    /* The queue stays failed, for everybody. */
    void *b;
    size_t len;
    bool last;
    e = (vmig_error){0};
    CHECK(vmig_devq_get(q, &b, &len, &last, &e) == VMIG_EPROTO && strstr(e.msg, want),
          "%s: get after the failure: '%s'", what, e.msg);
    CHECK(vmig_devq_put(q, 99, chunk(99, 1), 1, false, NULL) == VMIG_EPROTO, "%s: put after", what);
    vmig_devq_free(q);
}

static void test_bad(void)
{
    bad("duplicate held", 5, false, 5, false, "chunk 5 received twice");
    bad("already taken", 0, false, 0, false, "chunk 0 received twice");
    bad("after last", 3, true, 4, false, "chunk 4 after the last chunk (3)");
    bad("second last", 3, true, 2, true, "but chunk 3 was already");
    bad("last below held", 7, false, 4, true, "chunk 4 marked last, but chunk 7 came before it");
    bad("beyond the limit", UINT32_MAX, false, VMIG_DEVQ_MAX_CHUNKS, false, "beyond the limit");
    bad("max index", UINT32_MAX, false, UINT32_MAX, false, "beyond the limit");
    /* The largest index that is allowed is allowed. */
    vmig_devq *q = mk(1 << 20);
    CHECK(vmig_devq_put(q, VMIG_DEVQ_MAX_CHUNKS - 1, chunk(1, 1), 1, true, NULL) == 0,
          "index MAX_CHUNKS - 1");
    vmig_devq_free(q); /* frees the chunk still held */
}

typedef struct producer {
    vmig_devq *q;
    uint32_t id, nprod, n; /* sends id, id + nprod, ... < n, in order */
    size_t len;
    int rc;
    uint32_t stall_us; /* between puts */
} producer;

static void *produce(void *p)
{
    producer *w = p;
    for (uint32_t i = w->id; i < w->n && !w->rc; i += w->nprod) {
        vmig_error e = {0};
        w->rc = vmig_devq_put(w->q, i, chunk(i, w->len), w->len, i == w->n - 1, &e);
        if (w->stall_us && (i / w->nprod) % 7 == 0)
            usleep(w->stall_us);
    }
    return NULL;
}

/* Four channels, a limit of a few chunks, a slow loader: every byte comes
 * out in order, nobody deadlocks, memory stays within the limit plus the
 * one chunk in its turn. */
static void test_threads(void)
{
    const uint32_t N = 4000, P = 4;
    const size_t len = 4096;
    const uint64_t limit = 3 * (len + 64);
    vmig_devq *q = mk(limit);
    pthread_t t[4];
    producer w[4];
    for (uint32_t i = 0; i < P; i++) {
        w[i] = (producer){.q = q, .id = i, .nprod = P, .n = N, .len = len, .stall_us = 50 * i};
        pthread_create(&t[i], NULL, produce, &w[i]);
    }
    vmig_error e = {0};
    for (uint32_t i = 0; i < N; i++) {
        void *b;
        size_t l;
        bool last;
        int rc = vmig_devq_get(q, &b, &l, &last, &e);
        REQUIRE(rc == 0, "get %u: %d %s", i, rc, e.msg);
        CHECK(l == len && chunk_ok(b, i, l) && last == (i == N - 1), "threaded chunk %u", i);
        free(b);
        if (i % 500 == 0)
            usleep(2000); /* a slow loader: the producers must wait */
    }
    for (uint32_t i = 0; i < P; i++) {
        pthread_join(t[i], NULL);
        CHECK(w[i].rc == 0, "producer %u: %d", i, w[i].rc);
    }
    uint64_t held_max;
    vmig_devq_stats(q, NULL, &held_max, NULL);
    CHECK(held_max <= limit + len + 64, "held at most %llu, limit %llu",
          (unsigned long long)held_max, (unsigned long long)limit);
    vmig_devq_free(q);
}

typedef struct getter {
    vmig_devq *q;
    int rc;
} getter;

static void *get_one(void *p)
{
    getter *g = p;
    void *b;
    size_t len;
    bool last;
    g->rc = vmig_devq_get(g->q, &b, &len, &last, NULL);
    free(b);
    return NULL;
}

/* fail() wakes a put blocked on the limit and a get waiting for chunk 0. */
static void test_fail_wakes(void)
{
    vmig_devq *q = mk(200);
    getter g = {.q = q};
    pthread_t tg, tp;
    pthread_create(&tg, NULL, get_one, &g);
    REQUIRE(vmig_devq_put(q, 2, chunk(2, 100), 100, false, NULL) == 0, "put 2");
    producer w = {.q = q, .id = 3, .nprod = 100, .n = 4, .len = 100};
    pthread_create(&tp, NULL, produce, &w); /* chunk 3: no room, waits */
    usleep(20000);
    vmig_devq_fail(q, VMIG_ECANCELED, "migration canceled");
    pthread_join(tg, NULL);
    pthread_join(tp, NULL);
    CHECK(g.rc == VMIG_ECANCELED && w.rc == VMIG_ECANCELED, "woken with %d / %d", g.rc, w.rc);
    vmig_devq_free(q);
}

int main(void)
{
    test_order();
    test_bad();
    test_threads();
    test_fail_wakes();
    return tu_result("test_devq");
}
