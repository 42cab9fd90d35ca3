/*
 * The synthetic live workload: parameters are validated; the dirty rate is
 * held and throttling scales it; pause really stops every writer (counters
 * and memory frozen) and resume restarts them; the checks accept an image
 * that is "original + last stamps" and name the page of every kind of
 * corruption; redirty_pct = 100 confines the writers to their working sets;
 * pages are partitioned among writers; two workloads run side by side.
 *
 * Rates are measured over the workload's own running time (run_ns), not over
 * wall time, and the tolerances are wide enough for a loaded 2-core machine.
 */
#include "live.h"
#include "mix.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "../testutil.h"

#define PG  VMIG_LIVE_PAGE_SIZE
#define MiB (1024ull * 1024)
#define MB  1000000ull

/* A call that must return 0 (evaluated once). */
#define MUST(call)                                                                                 \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        REQUIRE(rc_ == 0, "%s returned %d", #call, rc_);                                           \
    } while (0)

static uint8_t *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED, "mmap %zu bytes", len);
    return p;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static uint64_t stamp_at(const uint8_t *mem, uint64_t page)
{
    uint64_t v;
    memcpy(&v, mem + page * PG, sizeof(v));
    return v;
}

/* Dirty rates (MB/s over run_ns) of n workloads, measured in one window. */
static void measure(vmig_live **l, size_t n, unsigned ms, double *mbps)
{
    struct vmig_live_stats a[4], b[4];
    for (size_t i = 0; i < n; i++)
        vmig_live_stats(l[i], &a[i]);
    sleep_ms(ms);
    for (size_t i = 0; i < n; i++)
        vmig_live_stats(l[i], &b[i]);
    for (size_t i = 0; i < n; i++) {
        uint64_t ns = b[i].run_ns - a[i].run_ns;
        mbps[i] = ns ? (double)(b[i].bytes - a[i].bytes) * 1e3 / (double)ns : 0.0;
    }
}

static double measure1(vmig_live *l, unsigned ms)
{
    double r;
    measure(&l, 1, ms, &r);
    return r;
}

static bool within(double v, double target, double tol)
{
    return v >= target * (1 - tol) && v <= target * (1 + tol);
}

/* A window in which a loaded machine starved the writers says nothing
 * about the rate they hold: measure again, up to three windows, and keep
 * the one closest to the target. */
static double measure_near(vmig_live *l, unsigned ms, double target, double tol)
{
    double best = 0;
    for (int k = 0; k < 3; k++) {
        double r = measure1(l, ms);
        if (k == 0 || fabs(r - target) < fabs(best - target))
            best = r;
        if (within(best, target, tol))
            break;
    }
    return best;
}

static void test_params(void)
{
    struct vmig_live_params p, d;
    vmig_live_params_default(&d);
    CHECK(d.writers == 2 && d.rate == 0 && d.hot_off == 0 && d.hot_len == 0 && d.redirty_pct == 0 &&
              d.seed == 1,
          "defaults");

    uint8_t *mem = map(16 * PG);
    struct {
        const char *what;
        uint64_t len;
        struct vmig_live_params p;
    } bad[] = {
        {"0 writers", 16 * PG, {.writers = 0}},
        {"65 writers", 16 * PG, {.writers = 65}},
        {"unaligned hot_off", 16 * PG, {.writers = 2, .hot_off = 100}},
        {"unaligned hot_len", 16 * PG, {.writers = 2, .hot_len = PG + 1}},
        {"hot_off at the end", 16 * PG, {.writers = 2, .hot_off = 16 * PG}},
        {"hot set beyond the end", 16 * PG, {.writers = 2, .hot_off = 8 * PG, .hot_len = 9 * PG}},
        {"hot_len wrapping", 16 * PG, {.writers = 2, .hot_off = PG, .hot_len = (uint64_t)-PG}},
        {"fewer hot pages than writers", 16 * PG, {.writers = 3, .hot_off = 14 * PG}},
        {"redirty 101", 16 * PG, {.writers = 2, .redirty_pct = 101}},
        {"length 0", 0, {.writers = 2}},
        {"length not in pages", 16 * PG - 1, {.writers = 2}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vmig_live *l = (vmig_live *)&p; /* must be overwritten */
        int rc = vmig_live_create(&l, mem, bad[i].len, &bad[i].p, false);
        CHECK(rc == -EINVAL && l == NULL, "%s rejected: rc %d", bad[i].what, rc);
        vmig_live_free(rc == 0 ? l : NULL);
    }
    vmig_live *l = (vmig_live *)&p;
    CHECK(vmig_live_create(&l, NULL, 16 * PG, &d, false) == -EINVAL && l == NULL, "mem NULL");
    vmig_live_free(NULL);

    /* edge cases that are valid: hot set of exactly `writers` pages, the
     * last page alone, p NULL (defaults), 64 writers */
    p = d;
    p.hot_off = 14 * PG;
    MUST(vmig_live_create(&l, mem, 16 * PG, &p, true));
    vmig_live_free(l);
    p = d;
    p.writers = 1;
    p.hot_off = 15 * PG;
    p.hot_len = PG;
    MUST(vmig_live_create(&l, mem, 16 * PG, &p, true));
    vmig_live_free(l);
    MUST(vmig_live_create(&l, mem, 16 * PG, NULL, true));
    struct vmig_live_stats st;
    vmig_live_stats(l, &st);
    CHECK(st.writers == 2 && st.writes == 0 && st.paused && st.run_ns == 0,
          "p NULL: 2 writers, paused, nothing done (writers %u writes %llu run_ns %llu)",
          st.writers, (unsigned long long)st.writes, (unsigned long long)st.run_ns);
    vmig_live_free(l);
    munmap(mem, 16 * PG);
}

static void test_rate(void)
{
    const size_t len = 64 * MiB;
    uint8_t *mem = map(len);
    struct vmig_live_params p;
    vmig_live_params_default(&p);
    p.rate = 50 * MB;
    vmig_live *l;
    MUST(vmig_live_create(&l, mem, len, &p, false));
    sleep_ms(50);
    struct vmig_live_stats a, b;
    vmig_live_stats(l, &a);
    sleep_ms(500);
    vmig_live_stats(l, &b);
    double r = (double)(b.bytes - a.bytes) * 1e3 / (double)(b.run_ns - a.run_ns);
    fprintf(stderr, "  rate 50 MB/s: %.1f MB/s over %.0f ms (average since start %.1f)\n", r,
            (double)(b.run_ns - a.run_ns) / 1e6, b.mbps);
    CHECK(within(r, 50, 0.10), "50 MB/s held within 10%%: %.1f MB/s", r);
    CHECK(within(b.mbps, 50, 0.15), "average since start %.1f MB/s", b.mbps);
    CHECK(b.bytes == b.writes * PG && b.writes == b.writer_writes[0] + b.writer_writes[1],
          "bytes = writes * 4096 = sum over writers");
    uint64_t w0 = b.writer_writes[0] - a.writer_writes[0],
             w1 = b.writer_writes[1] - a.writer_writes[1];
    CHECK(w0 > 0 && w1 > 0 && within((double)w0 / (double)w1, 1.0, 0.2),
          "rate split evenly: %llu / %llu writes", (unsigned long long)w0, (unsigned long long)w1);
    CHECK(!b.paused && b.throttle_pct == 0, "running, unthrottled");
    vmig_live_free(l);

    p.rate = 0;
    MUST(vmig_live_create(&l, mem, len, &p, false));
    sleep_ms(20);
    double fast = measure1(l, 200);
    fprintf(stderr, "  unlimited: %.0f MB/s (%.2f M writes/s)\n", fast, fast * 1e6 / PG / 1e6);
    CHECK(fast > 4 * 50, "unlimited runs much faster than 50 MB/s: %.0f MB/s", fast);
    vmig_live_free(l);
    munmap(mem, len);
}

static void test_throttle(void)
{
    const size_t len = 64 * MiB;
    const double target = 200;
    uint8_t *mem = map(len);
    struct vmig_live_params p;
    vmig_live_params_default(&p);
    p.rate = 200 * MB;
    vmig_live *l;
    MUST(vmig_live_create(&l, mem, len, &p, false));
    sleep_ms(30);
    double base = measure_near(l, 300, target, 0.10);
    vmig_live_throttle(l, 50);
    sleep_ms(25); /* more than one period */
    double r50 = measure_near(l, 400, target * 0.5, 0.15);
    struct vmig_live_stats st;
    vmig_live_stats(l, &st);
    CHECK(st.throttle_pct == 50, "throttle_pct %u", st.throttle_pct);
    vmig_live_throttle(l, 90);
    sleep_ms(25);
    double r90 = measure_near(l, 400, target * 0.1, 0.30);
    vmig_live_throttle(l, 0);
    sleep_ms(25);
    double back = measure_near(l, 300, target, 0.15);
    fprintf(stderr, "  throttle at 200 MB/s: 0%% %.1f, 50%% %.1f, 90%% %.1f, 0%% again %.1f MB/s\n",
            base, r50, r90, back);
    CHECK(within(base, target, 0.10), "unthrottled %.1f MB/s", base);
    CHECK(within(r50, target * 0.5, 0.15), "throttle 50%% halves the rate: %.1f MB/s", r50);
    CHECK(within(r90, target * 0.1, 0.30), "throttle 90%% cuts it to a tenth: %.1f MB/s", r90);
    CHECK(within(back, target, 0.15), "throttle 0 restores it: %.1f MB/s", back);
    vmig_live_throttle(l, 150);
    vmig_live_stats(l, &st);
    CHECK(st.throttle_pct == 99, "throttle 150 is taken as 99: %u", st.throttle_pct);
    vmig_live_free(l); /* while throttled: the writers notice stop within 1 ms */
    munmap(mem, len);
}

static void test_pause(void)
{
    const size_t len = 8 * MiB;
    uint8_t *mem = map(len), *snap = map(len), *zero = map(len);
    struct vmig_live_params p;
    vmig_live_params_default(&p);
    vmig_live *l;
    char msg[256];
    MUST(vmig_live_create(&l, mem, len, &p, false));
    struct vmig_live_stats a, b, c;
    /* until every writer has run (a loaded machine may take a while) */
    for (int i = 0; i < 200; i++) {
        sleep_ms(10);
        vmig_live_stats(l, &a);
        bool all = true;
        for (unsigned w = 0; w < a.writers; w++)
            all = all && a.writer_writes[w] > 0;
        if (all && i >= 1)
            break;
    }
    vmig_live_pause(l);
    vmig_live_stats(l, &a);
    memcpy(snap, mem, len);
    sleep_ms(100);
    vmig_live_stats(l, &b);
    CHECK(a.writes > 0 && a.paused, "writes %llu before the pause, paused %d",
          (unsigned long long)a.writes, a.paused);
    CHECK(b.writes == a.writes && b.run_ns == a.run_ns && b.paused,
          "paused 100 ms: writes %llu -> %llu, run_ns %llu -> %llu", (unsigned long long)a.writes,
          (unsigned long long)b.writes, (unsigned long long)a.run_ns, (unsigned long long)b.run_ns);
    CHECK(memcmp(snap, mem, len) == 0, "memory unchanged while paused");
    for (unsigned i = 0; i < b.writers; i++)
        CHECK(b.writer_writes[i] > 0, "writer %u wrote before the pause", i);
    int rc = vmig_live_check(l, zero, msg, sizeof(msg));
    CHECK(rc == 0 && msg[0] == 0, "check while paused: %d %s", rc, msg);
    vmig_live_pause(l); /* twice: harmless */
    vmig_live_stats(l, &c);
    CHECK(c.writes == a.writes && c.paused, "second pause changes nothing");

    vmig_live_resume(l);
    sleep_ms(30);
    vmig_live_stats(l, &c);
    CHECK(c.writes > b.writes && !c.paused && c.run_ns > b.run_ns,
          "resume restarts: writes %llu -> %llu", (unsigned long long)b.writes,
          (unsigned long long)c.writes);
    rc = vmig_live_check(l, zero, msg, sizeof(msg));
    CHECK(rc == -EBUSY && strstr(msg, "pause"), "check while running refused: %d %s", rc, msg);
    vmig_live_resume(l); /* not paused: harmless */
    vmig_live_pause(l);  /* the image may be read only while paused */
    CHECK(memcmp(snap, mem, len) != 0, "memory changed after resume");
    vmig_live_resume(l);
    /* pause and resume in quick succession never lose the handshake */
    for (int i = 0; i < 100; i++) {
        vmig_live_pause(l);
        vmig_live_stats(l, &a);
        memcpy(snap, mem, 64 * PG);
        rc = vmig_live_check(l, NULL, msg, sizeof(msg)); /* stamps only: quick */
        vmig_live_stats(l, &b);
        if (rc != 0 || a.writes != b.writes || memcmp(snap, mem, 64 * PG) != 0) {
            CHECK(0, "round %d: check %d (%s), writes %llu -> %llu", i, rc, msg,
                  (unsigned long long)a.writes, (unsigned long long)b.writes);
            break;
        }
        vmig_live_resume(l);
    }
    vmig_live_pause(l);
    vmig_live_free(l); /* while paused */

    /* start_paused: nothing is written until resume */
    memset(mem, 0, len);
    MUST(vmig_live_create(&l, mem, len, &p, true));
    sleep_ms(50);
    vmig_live_stats(l, &a);
    CHECK(a.writes == 0 && a.paused && a.run_ns == 0 && memcmp(mem, zero, len) == 0,
          "start_paused: no writes (%llu), paused %d", (unsigned long long)a.writes, a.paused);
    vmig_live_resume(l);
    sleep_ms(20);
    vmig_live_stats(l, &a);
    CHECK(a.writes > 0 && !a.paused, "start_paused then resume: %llu writes",
          (unsigned long long)a.writes);
    vmig_live_free(l); /* while running */
    munmap(zero, len);
    munmap(snap, len);
    munmap(mem, len);
}

static void test_check(void)
{
    const size_t len = 4 * MiB; /* 1024 pages, hot set pages 256..767 */
    const uint64_t hot_first = 256, hot_end = 768;
    uint8_t *mem = map(len), *orig = map(len), *copy = map(len);
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    MUST(vmig_mix_fill(&mp, orig, len, 1, VMIG_MIX_WRITE_ZEROS));
    memcpy(mem, orig, len);

    struct vmig_live_params p;
    vmig_live_params_default(&p);
    p.hot_off = hot_first * PG;
    p.hot_len = (hot_end - hot_first) * PG;
    vmig_live *l;
    char msg[256];
    MUST(vmig_live_create(&l, mem, len, &p, true));
    int rc = vmig_live_check(l, orig, msg, sizeof(msg));
    CHECK(rc == 0, "untouched image: %d %s", rc, msg);
    /* run the writers until they have stamped something (10 ms at a time:
     * a loaded machine may not schedule them within the first window) */
    uint64_t sp = UINT64_MAX, stamped = 0;
    for (int tries = 0; tries < 300 && sp == UINT64_MAX; tries++) {
        vmig_live_resume(l);
        sleep_ms(10);
        vmig_live_pause(l);
        for (uint64_t pg = 0; pg < len / PG && sp == UINT64_MAX; pg++)
            if (memcmp(mem + pg * PG, orig + pg * PG, 8) != 0)
                sp = pg;
    }
    sp = UINT64_MAX;

    rc = vmig_live_check(l, orig, msg, sizeof(msg));
    CHECK(rc == 0 && msg[0] == 0, "stamped image passes: %d %s", rc, msg);
    /* a stamped page (in the hot set, first 8 bytes changed) */
    for (uint64_t pg = 0; pg < len / PG; pg++) {
        if (memcmp(mem + pg * PG, orig + pg * PG, 8) != 0) {
            CHECK(pg >= hot_first && pg < hot_end, "page %llu outside the hot set was written",
                  (unsigned long long)pg);
            if (sp == UINT64_MAX)
                sp = pg;
            stamped++;
        }
    }
    REQUIRE(sp != UINT64_MAX, "no stamped page");
    fprintf(stderr, "  %llu of %llu hot pages stamped\n", (unsigned long long)stamped,
            (unsigned long long)(hot_end - hot_first));
    char want[48];

    /* one byte of a stamped page's body */
    mem[sp * PG + 100] ^= 0x40;
    rc = vmig_live_check(l, orig, msg, sizeof(msg));
    snprintf(want, sizeof(want), "image page %llu ", (unsigned long long)sp);
    CHECK(rc == -EIO && strstr(msg, want) && strstr(msg, "byte 100"), "corrupt stamped page: %d %s",
          rc, msg);
    fprintf(stderr, "  %s\n", msg);
    CHECK(vmig_live_check(l, orig, NULL, 0) == -EIO, "no message buffer: still -EIO");
    CHECK(vmig_live_check(l, NULL, msg, sizeof(msg)) == 0, "orig NULL: only stamps checked: %s",
          msg);
    mem[sp * PG + 100] ^= 0x40;

    /* one byte of a page never written (the last page, outside the hot set) */
    uint64_t up = len / PG - 1;
    mem[up * PG + 4095] ^= 1;
    rc = vmig_live_check(l, orig, msg, sizeof(msg));
    snprintf(want, sizeof(want), "image page %llu ", (unsigned long long)up);
    CHECK(rc == -EIO && strstr(msg, want) && strstr(msg, "never written") &&
              strstr(msg, "byte 4095"),
          "corrupt unstamped page: %d %s", rc, msg);
    fprintf(stderr, "  %s\n", msg);
    CHECK(vmig_live_check(l, NULL, msg, sizeof(msg)) == 0, "orig NULL ignores unstamped pages");
    mem[up * PG + 4095] ^= 1;

    /* a stamp that differs: an older one of the same writer, then garbage */
    uint64_t v = stamp_at(mem, sp), older = v - 1, junk = 0x0123456789abcdefull;
    REQUIRE((v & 0xFFFFFFFFFFFFull) > 1, "stamp %llx has a counter above 1", (unsigned long long)v);
    memcpy(mem + sp * PG, &older, 8);
    rc = vmig_live_check(l, orig, msg, sizeof(msg));
    snprintf(want, sizeof(want), "image page %llu ", (unsigned long long)sp);
    CHECK(rc == -EIO && strstr(msg, want) && strstr(msg, "older stamp"), "stale stamp: %d %s", rc,
          msg);
    fprintf(stderr, "  %s\n", msg);
    memcpy(mem + sp * PG, &junk, 8);
    rc = vmig_live_check(l, NULL, msg, sizeof(msg));
    CHECK(rc == -EIO && strstr(msg, want) && strstr(msg, "0x0123456789abcdef"),
          "wrong stamp, orig NULL: %d %s", rc, msg);
    memcpy(mem + sp * PG, &v, 8);
    CHECK(vmig_live_check(l, orig, msg, sizeof(msg)) == 0, "restored: %s", msg);

    /* check_copy: a copy taken while paused passes, a corrupted one fails */
    memcpy(copy, mem, len);
    rc = vmig_live_check_copy(l, orig, copy, msg, sizeof(msg));
    CHECK(rc == 0, "copy passes: %d %s", rc, msg);
    copy[(hot_first - 1) * PG + 8] ^= 0x80; /* just below the hot set */
    rc = vmig_live_check_copy(l, orig, copy, msg, sizeof(msg));
    snprintf(want, sizeof(want), "copy page %llu ", (unsigned long long)(hot_first - 1));
    CHECK(rc == -EIO && strstr(msg, want), "corrupt copy: %d %s", rc, msg);
    copy[(hot_first - 1) * PG + 8] ^= 0x80;

    /* the copy goes stale once the writers run again: a missed re-dirty */
    vmig_live_resume(l);
    rc = vmig_live_check_copy(l, orig, copy, msg, sizeof(msg));
    CHECK(rc == -EBUSY, "check_copy while running refused: %d", rc);
    /* let the writers make progress: on a loaded machine 10 ms may see none */
    struct vmig_live_stats st0, st1;
    vmig_live_stats(l, &st0);
    for (int i = 0; i < 500; i++) {
        sleep_ms(10);
        vmig_live_stats(l, &st1);
        if (st1.writes >= st0.writes + 128)
            break;
    }
    vmig_live_pause(l);
    vmig_live_stats(l, &st1);
    REQUIRE(st1.writes > st0.writes, "the writers wrote after the resume (%llu)",
            (unsigned long long)(st1.writes - st0.writes));
    rc = vmig_live_check_copy(l, orig, copy, msg, sizeof(msg));
    CHECK(rc == -EIO && strstr(msg, "copy page"), "stale copy fails: %d %s", rc, msg);
    fprintf(stderr, "  %s\n", msg);
    CHECK(vmig_live_check(l, orig, msg, sizeof(msg)) == 0, "image still passes: %s", msg);
    vmig_live_free(l);
    munmap(copy, len);
    munmap(orig, len);
    munmap(mem, len);
}

static uint64_t stamped_pages(const uint8_t *mem, size_t len)
{
    uint64_t n = 0;
    for (uint64_t pg = 0; pg < len / PG; pg++)
        n += stamp_at(mem, pg) != 0;
    return n;
}

static void test_redirty(void)
{
    const size_t len = 64 * MiB; /* 16384 pages */
    uint8_t *mem = map(len), *zero = map(len);
    struct vmig_live_params p;
    vmig_live_params_default(&p);
    p.redirty_pct = 100;
    vmig_live *l;
    char msg[256];
    MUST(vmig_live_create(&l, mem, len, &p, false));
    sleep_ms(100);
    vmig_live_pause(l);
    struct vmig_live_stats st;
    vmig_live_stats(l, &st);
    uint64_t distinct = stamped_pages(mem, len);
    fprintf(stderr, "  redirty 100%%: %llu writes touched %llu pages\n",
            (unsigned long long)st.writes, (unsigned long long)distinct);
    CHECK(distinct >= 2 && distinct <= 2 * VMIG_LIVE_RING, "redirty 100%%: %llu distinct pages",
          (unsigned long long)distinct);
    CHECK(st.writes > 100 * distinct, "many writes (%llu) over few pages",
          (unsigned long long)st.writes);
    int rc = vmig_live_check(l, zero, msg, sizeof(msg));
    CHECK(rc == 0, "check: %d %s", rc, msg);
    vmig_live_free(l);

    /* without redirtying the writes spread over the image */
    memset(mem, 0, len);
    p.redirty_pct = 0;
    MUST(vmig_live_create(&l, mem, len, &p, false));
    sleep_ms(100);
    vmig_live_pause(l);
    uint64_t spread = stamped_pages(mem, len);
    CHECK(spread > 20 * distinct, "redirty 0%%: %llu distinct pages", (unsigned long long)spread);
    vmig_live_free(l);
    munmap(zero, len);
    munmap(mem, len);
}

/* Every stamp is in its owner's share: writer = hot index % W, counter >= 1. */
static void check_partition(unsigned writers, uint64_t hot_first, uint64_t hot_pages,
                            uint64_t npages, uint64_t rate, uint64_t min_writes)
{
    const size_t len = npages * PG;
    uint8_t *mem = map(len), *zero = map(len);
    struct vmig_live_params p;
    vmig_live_params_default(&p);
    p.writers = writers;
    p.hot_off = hot_first * PG;
    p.hot_len = hot_pages * PG;
    p.seed = 7;
    p.rate = rate;
    vmig_live *l;
    char msg[256];
    MUST(vmig_live_create(&l, mem, len, &p, false));
    /* run until every writer has written min_writes pages, at most 5 s */
    struct vmig_live_stats st;
    uint64_t t0 = tu_now_ns();
    for (;;) {
        sleep_ms(10);
        vmig_live_stats(l, &st);
        unsigned idle = 0;
        for (unsigned i = 0; i < writers; i++)
            idle += st.writer_writes[i] < min_writes;
        if (!idle || tu_now_ns() - t0 > 5000000000ull)
            break;
    }
    vmig_live_pause(l);
    vmig_live_stats(l, &st);
    for (unsigned i = 0; i < writers; i++) {
        if (st.writer_writes[i] == 0) {
            CHECK(0, "%u writers: writer %u never wrote", writers, i);
            break;
        }
    }
    uint64_t bad = 0, outside = 0, seen = 0;
    for (uint64_t pg = 0; pg < npages; pg++) {
        uint64_t v = stamp_at(mem, pg);
        if (!v)
            continue;
        if (pg < hot_first || pg >= hot_first + hot_pages) {
            outside++;
            continue;
        }
        seen++;
        uint64_t who = (v >> 48) - 1, n = v & 0xFFFFFFFFFFFFull;
        if (who != (pg - hot_first) % writers || n == 0) {
            if (bad++ == 0)
                fprintf(stderr, "  page %llu (hot index %llu) has stamp %016llx\n",
                        (unsigned long long)pg, (unsigned long long)(pg - hot_first),
                        (unsigned long long)v);
        }
    }
    CHECK(bad == 0 && outside == 0,
          "%u writers: %llu pages stamped by a writer not owning them, %llu outside the hot set",
          writers, (unsigned long long)bad, (unsigned long long)outside);
    CHECK(seen > hot_pages / 2, "%u writers: %llu of %llu hot pages stamped", writers,
          (unsigned long long)seen, (unsigned long long)hot_pages);
    int rc = vmig_live_check(l, zero, msg, sizeof(msg));
    CHECK(rc == 0, "check: %d %s", rc, msg);
    vmig_live_free(l);
    munmap(zero, len);
    munmap(mem, len);
}

static void test_partition(void)
{
    check_partition(3, 5, 301, 1024, 0, 1000);
    check_partition(1, 0, 1024, 1024, 0, 1000);
    /* 64 writers: rate-limited (200 writes/s each), since 64 busy threads
     * would starve everything else on a small machine */
    check_partition(64, 10, 64, 100, 64ull * PG * 200, 1); /* one page per writer */
    check_partition(64, 0, 1000, 1000, 64ull * PG * 200, 20);
}

static void test_two(void)
{
    const size_t len = 16 * MiB;
    uint8_t *mem[2] = {map(len), map(len)}, *zero = map(len);
    const double target[2] = {20, 80};
    vmig_live *l[2];
    for (int i = 0; i < 2; i++) {
        struct vmig_live_params p;
        vmig_live_params_default(&p);
        p.rate = (uint64_t)target[i] * MB;
        p.seed = (uint64_t)i + 1;
        MUST(vmig_live_create(&l[i], mem[i], len, &p, false));
    }
    sleep_ms(30);
    double r[2];
    measure(l, 2, 500, r);
    fprintf(stderr, "  two workloads: %.1f MB/s (target 20), %.1f MB/s (target 80)\n", r[0], r[1]);
    char msg[256];
    for (int i = 0; i < 2; i++) {
        CHECK(within(r[i], target[i], 0.15), "workload %d: %.1f MB/s, target %.0f", i, r[i],
              target[i]);
        vmig_live_pause(l[i]);
        int rc = vmig_live_check(l[i], zero, msg, sizeof(msg));
        CHECK(rc == 0, "workload %d check: %d %s", i, rc, msg);
    }
    int rc = vmig_live_check_copy(l[0], zero, mem[1], msg, sizeof(msg));
    CHECK(rc == -EIO, "one workload's image fails the other's stamps: %d", rc);
    struct vmig_live_stats a;
    vmig_live_stats(l[0], &a);
    vmig_live_free(l[1]);
    vmig_live_resume(l[0]);
    sleep_ms(20);
    vmig_live_pause(l[0]);
    struct vmig_live_stats b;
    vmig_live_stats(l[0], &b);
    CHECK(b.writes > a.writes, "workload 0 runs on after workload 1 is freed");
    rc = vmig_live_check(l[0], zero, msg, sizeof(msg));
    CHECK(rc == 0, "workload 0 check: %d %s", rc, msg);
    vmig_live_free(l[0]);
    munmap(zero, len);
    munmap(mem[1], len);
    munmap(mem[0], len);
}

/* Runs one test and says how long it took (the sanitizers slow some down). */
#define RUN(test)                                                                                  \
    do {                                                                                           \
        uint64_t t_ = tu_now_ns();                                                                 \
        test();                                                                                    \
        fprintf(stderr, "%s: %.2f s\n", #test, (double)(tu_now_ns() - t_) / 1e9);                  \
    } while (0)

int main(void)
{
    RUN(test_params);
    RUN(test_rate);
    RUN(test_throttle);
    RUN(test_pause);
    RUN(test_check);
    RUN(test_redirty);
    RUN(test_partition);
    RUN(test_two);
    return tu_result("test_live");
}
