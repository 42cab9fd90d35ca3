/*
 * The userfaultfd dirty-page tracker, for each kind this kernel supports
 * (the others are skipped, with the reason) and each kind of memory:
 * anonymous private, anonymous shared, memfd (shmem, as /dev/shm files):
 *   - exact bitmaps after writing chosen pages: populated ones, never
 *     touched holes, pages read (zero page, page cache) before start,
 *     pages populated with MADV_POPULATE_READ after start, memfd pages
 *     that exist in the page cache but were never mapped; reads alone
 *     are not writes; pages written before start are not reported;
 *     re-dirtying after a sync is reported again, the rest is not; the
 *     bitmap is OR-ed into and *ndirty counts the bits turned on;
 *   - a write made by the kernel (read(2) from a pipe into tracked memory);
 *   - MADV_DONTNEED while tracked (what each kind does, see test_dontneed);
 *   - block pages of 8 KiB and 2 MiB (THP-backed where THP is on):
 *     a block is dirty when any of its 4 KiB pages was written;
 *   - writer threads writing random pages while the main thread syncs:
 *     every write made after sync e returned is reported by a sync after
 *     e (the lost-update race of the synchronous handler would break
 *     this), never-written pages are never reported, and the memory holds
 *     exactly what the writers wrote; then stop while they still write:
 *     nobody hangs, nothing is lost;
 *   - stop leaves the memory writable and its content intact;
 *   - two trackers at once (also one of each kind), and errors: unaligned
 *     host, length not a multiple, bad page sizes, unmapped range, a
 *     region added twice (to the same tracker, and to a second one: the
 *     kernel's EBUSY), calls in the wrong state.
 * With -v: the cost of a write fault and of a sync, per kind.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "src/ram/dirty.h"

#include "../testutil.h"

#define PG 4096u

static bool verbose;

/* ---- memory of each kind, at a chosen alignment ---- */

enum mkind { M_ANON_PRIVATE, M_ANON_SHARED, M_MEMFD, M_KINDS };
static const char *const mkind_names[] = {"anonymous private", "anonymous shared", "memfd"};

typedef struct mem {
    enum mkind kind;
    uint8_t *p;
    size_t len;
    int fd;          /* memfd, else -1 */
    uint8_t *shadow; /* what the memory must hold */
} mem;

static mem mem_map(enum mkind kind, size_t len, size_t align)
{
    mem m = {.kind = kind, .len = len, .fd = -1};
    size_t resv = len + align;
    uint8_t *r = mmap(NULL, resv, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(r != MAP_FAILED, "reserve %zu bytes", resv);
    uint8_t *p = (uint8_t *)(((uintptr_t)r + align - 1) & ~(uintptr_t)(align - 1));
    if (p > r)
        munmap(r, (size_t)(p - r));
    if (r + resv > p + len)
        munmap(p + len, (size_t)(r + resv - (p + len)));
    int flags = MAP_FIXED;
    if (kind == M_ANON_PRIVATE)
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    else if (kind == M_ANON_SHARED)
        flags |= MAP_SHARED | MAP_ANONYMOUS;
    else {
        m.fd = memfd_create("vmig-test-dirty", MFD_CLOEXEC);
        REQUIRE(m.fd >= 0, "memfd_create: %s", strerror(errno));
        REQUIRE(ftruncate(m.fd, (off_t)len) == 0, "ftruncate");
        flags |= MAP_SHARED;
    }
    m.p = mmap(p, len, PROT_READ | PROT_WRITE, flags, m.fd, 0);
    REQUIRE(m.p == p, "mmap %s %zu bytes: %s", mkind_names[kind], len, strerror(errno));
    m.shadow = calloc(1, len);
    REQUIRE(m.shadow, "shadow");
    return m;
}

static void mem_unmap(mem *m)
{
    munmap(m->p, m->len);
    if (m->fd >= 0)
        close(m->fd);
    free(m->shadow);
}

/* Write one byte into 4 KiB page `page`, and into the shadow. */
static void poke(mem *m, uint64_t page, uint8_t v)
{
    size_t off = page * PG + (size_t)(v * 37u + page) % PG;
    m->p[off] = v;
    m->shadow[off] = v;
}

static uint8_t peek(const mem *m, uint64_t page)
{
    return *(volatile const uint8_t *)(m->p + page * PG + 100);
}

static void check_content(const mem *m, const char *what)
{
    for (size_t off = 0; off < m->len; off += PG)
        if (memcmp(m->p + off, m->shadow + off, PG)) {
            CHECK(0, "%s: %s: page %zu does not hold what was written", what, mkind_names[m->kind],
                  off / PG);
            return;
        }
}

/* ---- bitmaps ---- */

static uint64_t *bm_new(uint64_t npages)
{
    uint64_t *b = calloc((npages + 63) / 64 + 1, sizeof(uint64_t));
    REQUIRE(b, "bitmap");
    return b;
}

static bool bm_test(const uint64_t *b, uint64_t i)
{
    return b[i / 64] >> (i % 64) & 1;
}

/* `got` must hold exactly the listed bits (a list ending with UINT32_MAX). */
static void bm_expect(const uint64_t *got, uint64_t npages, const uint32_t *want, const char *what)
{
    uint64_t *w = bm_new(npages);
    for (const uint32_t *p = want; *p != UINT32_MAX; p++)
        w[*p / 64] |= 1ull << (*p % 64);
    int shown = 0;
    for (uint64_t i = 0; i < npages; i++)
        if (bm_test(got, i) != bm_test(w, i) && shown++ < 8)
            CHECK(0, "%s: page %llu %s", what, (unsigned long long)i,
                  bm_test(w, i) ? "written but not reported" : "reported but not written");
    free(w);
}

#define END UINT32_MAX

typedef struct ctx {
    enum vmig_tracker_kind kind;
    const char *kname;
} ctx;

static vmig_tracker *tracker_new(const ctx *c)
{
    vmig_tracker *t = NULL;
    vmig_error err = {0};
    int rc = vmig_tracker_create(&t, c->kind, &err);
    REQUIRE(rc == 0 && t, "%s: create: %s", c->kname, err.msg);
    return t;
}

static int add_region(vmig_tracker *t, const ctx *c, void *host, uint64_t len, uint32_t ps)
{
    vmig_error err = {0};
    int i = vmig_tracker_add(t, host, len, ps, &err);
    REQUIRE(i >= 0, "%s: add %p +0x%llx page %u: %s", c->kname, host, (unsigned long long)len, ps,
            err.msg);
    return i;
}

static void start(vmig_tracker *t, const ctx *c)
{
    vmig_error err = {0};
    int rc = vmig_tracker_start(t, &err);
    REQUIRE(rc == 0, "%s: start: %s", c->kname, err.msg);
}

/* Sync region i into a cleared bitmap, check it against `want`. */
static void sync_expect(vmig_tracker *t, const ctx *c, const mem *m, int i, uint64_t npages,
                        const uint32_t *want, const char *step)
{
    char what[160];
    snprintf(what, sizeof(what), "%s, %s: %s", c->kname, mkind_names[m->kind], step);
    uint64_t *b = bm_new(npages);
    uint64_t nd = 12345;
    vmig_error err = {0};
    int rc = vmig_tracker_sync(t, (uint32_t)i, b, &nd, &err);
    CHECK(rc == 0, "%s: sync: %s", what, err.msg);
    uint64_t n = 0;
    for (const uint32_t *p = want; *p != END; p++)
        n++;
    bm_expect(b, npages, want, what);
    CHECK(nd == n, "%s: ndirty %llu, expected %llu", what, (unsigned long long)nd,
          (unsigned long long)n);
    free(b);
}

/* ---- exact bitmaps on 4 KiB pages ---- */

static void test_exact(const ctx *c, enum mkind mk)
{
    const uint64_t N = 64;
    mem m = mem_map(mk, N * PG, PG);
    const char *mn = mkind_names[mk];

    /* Before start: 0..15 written, 16..23 read (zero page or page cache),
     * 24..27 written through the file descriptor only (memfd: page cache,
     * not mapped; otherwise left as holes), 28..63 holes. */
    for (uint64_t p = 0; p < 16; p++)
        poke(&m, p, (uint8_t)(p + 1));
    for (uint64_t p = 16; p < 24; p++)
        (void)peek(&m, p);
    if (mk == M_MEMFD)
        for (uint64_t p = 24; p < 28; p++) {
            uint8_t v = (uint8_t)(0xa0 + p);
            REQUIRE(pwrite(m.fd, &v, 1, (off_t)(p * PG + 7)) == 1, "pwrite");
            m.shadow[p * PG + 7] = v;
        }

    vmig_tracker *t = tracker_new(c);
    int i = add_region(t, c, m.p, m.len, PG);
    CHECK(i == 0, "first region index %d", i);
    start(t, c);

    static const uint32_t none[] = {END};
    sync_expect(t, c, &m, i, N, none, "nothing written since start");

    /* Reads alone, also of holes, and MADV_POPULATE_READ after start. */
    (void)peek(&m, 0);
    (void)peek(&m, 20);
    (void)peek(&m, 30);
    (void)peek(&m, 25);
    CHECK(madvise(m.p + 40 * PG, 4 * PG, MADV_POPULATE_READ) == 0, "%s: MADV_POPULATE_READ: %s", mn,
          strerror(errno));
    sync_expect(t, c, &m, i, N, none, "reads only");

    /* Populated, read-before-start, fd-written/hole, hole that was read,
     * never-touched hole, populated after start, last page. */
    static const uint32_t w1[] = {1, 5, 16, 17, 24, 25, 30, 33, 40, 42, 63, END};
    for (const uint32_t *p = w1; *p != END; p++)
        poke(&m, *p, (uint8_t)(*p + 0x40));
    sync_expect(t, c, &m, i, N, w1, "first writes");
    sync_expect(t, c, &m, i, N, none, "sync right after a sync");

    static const uint32_t w2[] = {1, 33, 41, 50, END};
    for (const uint32_t *p = w2; *p != END; p++)
        poke(&m, *p, (uint8_t)(*p + 0x80));
    poke(&m, 50, 0x33); /* twice: still one bit */
    sync_expect(t, c, &m, i, N, w2, "re-dirtied pages and new ones");

    /* OR semantics: bit 2 is set already; only bit 3 is new. */
    poke(&m, 2, 0x11);
    poke(&m, 3, 0x12);
    uint64_t b = 1ull << 2 | 1ull << 60, nd = 0;
    vmig_error err = {0};
    CHECK(vmig_tracker_sync(t, 0, &b, &nd, &err) == 0, "sync: %s", err.msg);
    CHECK(b == (1ull << 2 | 1ull << 3 | 1ull << 60) && nd == 1,
          "%s, %s: OR into a bitmap: 0x%llx, ndirty %llu", c->kname, mn, (unsigned long long)b,
          (unsigned long long)nd);
    CHECK(vmig_tracker_sync(t, 0, &b, NULL, &err) == 0, "sync with ndirty NULL: %s", err.msg);

    /* A write by the kernel: read(2) from a pipe into a hole and into a
     * populated page. The sync kind's handler serves this fault too. */
    int pfd[2];
    REQUIRE(pipe(pfd) == 0, "pipe");
    const char msg[] = "kernel-write";
    for (int k = 0; k < 2; k++) {
        uint64_t page = k == 0 ? 55 : 6;
        REQUIRE(write(pfd[1], msg, sizeof(msg)) == (ssize_t)sizeof(msg), "write pipe");
        ssize_t n = read(pfd[0], m.p + page * PG + 1000, sizeof(msg));
        CHECK(n == (ssize_t)sizeof(msg), "%s, %s: read(2) into tracked page %llu: %s", c->kname, mn,
              (unsigned long long)page, n < 0 ? strerror(errno) : "short");
        memcpy(m.shadow + page * PG + 1000, msg, sizeof(msg));
    }
    close(pfd[0]);
    close(pfd[1]);
    static const uint32_t wk[] = {6, 55, END};
    sync_expect(t, c, &m, i, N, wk, "written by read(2)");

    uint64_t faults = 0, sync_ns = 0;
    vmig_tracker_stats(t, &faults, &sync_ns);
    if (c->kind == VMIG_TRACKER_WP_SYNC)
        CHECK(faults >= 19, "%s: %llu faults handled, expected one per written page at least", mn,
              (unsigned long long)faults);
    else
        CHECK(faults == 0, "async: %llu faults", (unsigned long long)faults);
    CHECK(sync_ns > 0, "sync time measured");

    /* Stop: writable, nothing lost, and syncs refused. */
    vmig_tracker_stop(t);
    vmig_tracker_stop(t);
    for (uint64_t p = 0; p < N; p += 3)
        poke(&m, p, (uint8_t)(0xc0 + p));
    check_content(&m, c->kname);
    err = (vmig_error){0};
    CHECK(vmig_tracker_sync(t, 0, &b, &nd, &err) == VMIG_ESTATE, "sync after stop");
    err = (vmig_error){0};
    CHECK(vmig_tracker_start(t, &err) == VMIG_ESTATE, "start after stop");
    vmig_tracker_free(t);
    mem_unmap(&m);
}

/* ---- pages dropped while tracked ---- */

/*
 * MADV_DONTNEED while tracking. Anonymous private memory loses its content
 * (reads zero after) and, with the pages, the kernel's protection: WP_ASYNC
 * then reports the dropped pages as written (their content did change) and
 * protects them again, so nothing is lost; WP_SYNC cannot see them and
 * later writes there are lost (documented in dirty.h, shown with -v). Shmem
 * keeps content and protection: only the written page is reported.
 */
static void test_dontneed(const ctx *c, enum mkind mk)
{
    const uint64_t N = 16;
    mem m = mem_map(mk, N * PG, PG);
    for (uint64_t p = 0; p < N; p++)
        poke(&m, p, 1);
    vmig_tracker *t = tracker_new(c);
    int i = add_region(t, c, m.p, m.len, PG);
    start(t, c);
    poke(&m, 3, 2);
    REQUIRE(madvise(m.p, 8 * PG, MADV_DONTNEED) == 0, "MADV_DONTNEED");
    if (mk == M_ANON_PRIVATE)
        memset(m.shadow, 0, 8 * PG);
    uint64_t b = 0, nd = 0;
    vmig_error err = {0};
    CHECK(vmig_tracker_sync(t, (uint32_t)i, &b, &nd, &err) == 0, "sync: %s", err.msg);
    bool lossy = c->kind == VMIG_TRACKER_WP_SYNC && mk == M_ANON_PRIVATE;
    if (c->kind == VMIG_TRACKER_WP_ASYNC && mk == M_ANON_PRIVATE)
        CHECK(b == 0xff, "%s, %s: dropped pages 0..7 reported: 0x%llx", c->kname, mkind_names[mk],
              (unsigned long long)b);
    else
        CHECK(b == 1u << 3, "%s, %s: after MADV_DONTNEED: 0x%llx", c->kname, mkind_names[mk],
              (unsigned long long)b);
    poke(&m, 4, 3); /* dropped but never written since start */
    poke(&m, 3, 3);
    b = 0;
    CHECK(vmig_tracker_sync(t, (uint32_t)i, &b, &nd, &err) == 0, "sync: %s", err.msg);
    if (!lossy)
        CHECK(b == (1u << 3 | 1u << 4), "%s, %s: writes after MADV_DONTNEED: 0x%llx", c->kname,
              mkind_names[mk], (unsigned long long)b);
    else if (verbose)
        fprintf(stderr, "  %s, %s: writes to pages 3, 4 after MADV_DONTNEED reported as 0x%llx\n",
                c->kname, mkind_names[mk], (unsigned long long)b);
    vmig_tracker_free(t);
    check_content(&m, "MADV_DONTNEED");
    mem_unmap(&m);
}

/* ---- block pages larger than 4 KiB ---- */

static void test_blocks(const ctx *c, enum mkind mk)
{
    /* 8 KiB blocks: 16 of them. */
    mem m = mem_map(mk, 16 * 8192, PG);
    vmig_tracker *t = tracker_new(c);
    int i = add_region(t, c, m.p, m.len, 8192);
    for (uint64_t p = 0; p < 8; p++)
        poke(&m, p, 1);
    start(t, c);
    poke(&m, 3, 2);  /* block 1, second half */
    poke(&m, 4, 3);  /* block 2, first half */
    poke(&m, 5, 4);  /* block 2 again */
    poke(&m, 31, 5); /* block 15 (a hole) */
    static const uint32_t w8[] = {1, 2, 15, END};
    sync_expect(t, c, &m, i, 16, w8, "8 KiB blocks");
    poke(&m, 2, 6);
    static const uint32_t w8b[] = {1, END};
    sync_expect(t, c, &m, i, 16, w8b, "8 KiB blocks, again");
    vmig_tracker_free(t);
    check_content(&m, "8 KiB blocks");
    mem_unmap(&m);

    /* 2 MiB blocks on 2 MiB-aligned memory, THP-backed where the kernel
     * gives huge pages (anonymous private, MADV_HUGEPAGE): blocks 0 and 1
     * populated before start, 2 and 3 holes. Also a second region of the
     * same memory kind tracked at 4 KiB over a huge page. */
    const size_t H = 2u << 20;
    m = mem_map(mk, 4 * H, H);
    mem m4 = mem_map(mk, H, H);
    if (mk == M_ANON_PRIVATE) {
        madvise(m.p, m.len, MADV_HUGEPAGE);
        madvise(m4.p, m4.len, MADV_HUGEPAGE);
    }
    memset(m.p, 0x5a, 2 * H);
    memset(m.shadow, 0x5a, 2 * H);
    memset(m4.p, 0x6b, H);
    memset(m4.shadow, 0x6b, H);
    t = tracker_new(c);
    i = add_region(t, c, m.p, m.len, (uint32_t)H);
    int i4 = add_region(t, c, m4.p, m4.len, PG);
    start(t, c);
    poke(&m, 7, 1);              /* block 0 */
    poke(&m, 4 * H / PG - 1, 2); /* block 3, last 4 KiB page */
    static const uint32_t w2m[] = {0, 3, END};
    sync_expect(t, c, &m, i, 4, w2m, "2 MiB blocks");
    poke(&m, H / PG + 100, 3); /* block 1 */
    static const uint32_t w2mb[] = {1, END};
    sync_expect(t, c, &m, i, 4, w2mb, "2 MiB blocks, again");
    poke(&m4, 77, 4);
    static const uint32_t w4[] = {77, END};
    sync_expect(t, c, &m4, i4, H / PG, w4, "4 KiB pages over a (huge) populated 2 MiB");
    vmig_tracker_free(t);
    check_content(&m, "2 MiB blocks");
    check_content(&m4, "4 KiB over 2 MiB");
    mem_unmap(&m);
    mem_unmap(&m4);
}

/* ---- writers against syncs ---- */

#define W_THREADS 4
#define W_PAGES   4096 /* region: 16 MiB */
#define W_TOUCHED 3072 /* writers stay below: the rest must never be reported */
#define W_MILLIS  300

typedef struct wshared {
    mem *m;
    uint32_t epoch; /* syncs completed; atomic */
    uint32_t stop;  /* atomic */
} wshared;

typedef struct writer {
    wshared *s;
    pthread_t th;
    unsigned id;
    uint64_t seed;
    uint64_t writes;
    uint32_t *seen; /* per page: 1 + the epoch read before the page's last write; 0 never */
} writer;

/* Writer `id` owns the pages p with p % W_THREADS == id, so the shadow of
 * each page has one writer. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    mem *m = w->s->m;
    while (!__atomic_load_n(&w->s->stop, __ATOMIC_RELAXED)) {
        uint64_t r = tu_rand(&w->seed);
        uint64_t page = (r % (W_TOUCHED / W_THREADS)) * W_THREADS + w->id;
        size_t off = page * PG + (size_t)(r >> 32) % (PG - 8);
        uint32_t e = __atomic_load_n(&w->s->epoch, __ATOMIC_ACQUIRE);
        uint64_t v = r ^ w->writes;
        memcpy(m->p + off, &v, sizeof(v));
        memcpy(m->shadow + off, &v, sizeof(v));
        w->seen[page] = e + 1;
        __atomic_store_n(&w->writes, w->writes + 1, __ATOMIC_RELAXED); /* main polls it */
    }
    return NULL;
}

static void writers_start(writer *ws, wshared *s, uint64_t seed)
{
    __atomic_store_n(&s->stop, 0, __ATOMIC_RELAXED);
    for (unsigned k = 0; k < W_THREADS; k++) {
        ws[k].s = s;
        ws[k].id = k;
        ws[k].seed = seed + k;
        ws[k].writes = 0;
        if (!ws[k].seen)
            ws[k].seen = calloc(W_PAGES, sizeof(uint32_t));
        REQUIRE(ws[k].seen, "seen");
        REQUIRE(pthread_create(&ws[k].th, NULL, writer_main, &ws[k]) == 0, "writer thread");
    }
}

/* Wait until every writer has made `n` more writes. */
static void writers_wait(writer *ws, uint64_t n)
{
    for (unsigned k = 0; k < W_THREADS; k++) {
        uint64_t goal = __atomic_load_n(&ws[k].writes, __ATOMIC_RELAXED) + n;
        while (__atomic_load_n(&ws[k].writes, __ATOMIC_RELAXED) < goal)
            usleep(1000);
    }
}

static uint64_t writers_join(writer *ws, wshared *s)
{
    uint64_t writes = 0;
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
    for (unsigned k = 0; k < W_THREADS; k++) {
        pthread_join(ws[k].th, NULL);
        writes += ws[k].writes;
    }
    return writes;
}

static void test_writers(const ctx *c, enum mkind mk)
{
    mem m = mem_map(mk, (size_t)W_PAGES * PG, PG);
    const char *mn = mkind_names[mk];
    for (uint64_t p = 0; p < W_PAGES; p += 2) /* half populated, half holes */
        poke(&m, p, 0x77);
    vmig_tracker *t = tracker_new(c);
    int ri = add_region(t, c, m.p, m.len, PG);
    start(t, c);

    wshared s = {.m = &m};
    writer ws[W_THREADS] = {0};
    uint32_t *last = calloc(W_PAGES, sizeof(uint32_t)); /* last sync that reported the page */
    uint64_t *b = bm_new(W_PAGES);
    REQUIRE(last, "last");
    writers_start(ws, &s, 0x5eed + (uint64_t)mk * 16 + (uint64_t)c->kind);

    uint32_t nsync = 0;
    uint64_t reported = 0, t_end = tu_now_ns() + W_MILLIS * 1000000ull;
    bool stopping = false;
    for (;;) {
        if (!stopping && tu_now_ns() >= t_end) {
            writers_join(ws, &s); /* then one final sync covers the rest */
            stopping = true;
        }
        memset(b, 0, (W_PAGES / 64) * sizeof(uint64_t));
        uint64_t nd = 0;
        vmig_error err = {0};
        int rc = vmig_tracker_sync(t, (uint32_t)ri, b, &nd, &err);
        REQUIRE(rc == 0, "%s, %s: sync under writers: %s", c->kname, mn, err.msg);
        nsync++;
        reported += nd;
        for (uint64_t p = 0; p < W_PAGES; p++)
            if (bm_test(b, p))
                last[p] = nsync;
        __atomic_store_n(&s.epoch, nsync, __ATOMIC_RELEASE);
        if (stopping)
            break;
    }

    uint64_t writes = 0;
    int missed = 0, extra = 0;
    for (unsigned k = 0; k < W_THREADS; k++)
        writes += ws[k].writes;
    for (uint64_t p = 0; p < W_PAGES; p++) {
        uint32_t need = 0;
        for (unsigned k = 0; k < W_THREADS; k++)
            need = VMIG_MAX(need, ws[k].seen[p]);
        if (p >= W_TOUCHED && last[p] && extra++ < 4)
            CHECK(0, "%s, %s: page %llu never written but reported by sync %u", c->kname, mn,
                  (unsigned long long)p, last[p]);
        if (need && last[p] < need && missed++ < 4)
            CHECK(0,
                  "%s, %s: page %llu written after sync %u returned, last reported by sync %u "
                  "(a lost write)",
                  c->kname, mn, (unsigned long long)p, need - 1, last[p]);
    }
    check_content(&m, "under writers");
    uint64_t faults = 0, sync_ns = 0;
    vmig_tracker_stats(t, &faults, &sync_ns);
    if (verbose)
        fprintf(stderr,
                "  %s, %s: %llu writes by %d threads, %u syncs (%.1f us each), %llu pages "
                "reported, %llu faults handled\n",
                c->kname, mn, (unsigned long long)writes, W_THREADS, nsync, sync_ns / 1e3 / nsync,
                (unsigned long long)reported, (unsigned long long)faults);

    /* Stop while the writers write: none may hang (the alarm would fire),
     * every one goes on writing after, nothing is lost. */
    writers_start(ws, &s, 0xabc + (uint64_t)mk);
    writers_wait(ws, 2000);
    vmig_tracker_stop(t);
    writers_wait(ws, 2000);
    writers_join(ws, &s);
    check_content(&m, "across stop");

    for (unsigned k = 0; k < W_THREADS; k++)
        free(ws[k].seen);
    free(last);
    free(b);
    vmig_tracker_free(t);
    mem_unmap(&m);
}

/* ---- two trackers, errors ---- */

static void test_two(const ctx *c1, const ctx *c2)
{
    const uint64_t N = 32;
    mem a = mem_map(M_ANON_PRIVATE, N * PG, PG), b = mem_map(M_MEMFD, N * PG, PG);
    vmig_tracker *ta = tracker_new(c1), *tb = tracker_new(c2);
    int ia = add_region(ta, c1, a.p, a.len, PG);

    /* The same range in a second tracker: the kernel says EBUSY. */
    vmig_error err = {0};
    int rc = vmig_tracker_add(tb, a.p, a.len, PG, &err);
    CHECK(rc == VMIG_EEXIST && strstr(err.msg, "another userfaultfd"),
          "%s then %s: same region twice: %d (%s)", c1->kname, c2->kname, rc, err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(tb, a.p + 4 * PG, 4 * PG, PG, &err);
    CHECK(rc == VMIG_EEXIST, "part of a tracked region in a second tracker: %d (%s)", rc, err.msg);
    int ib = add_region(tb, c2, b.p, b.len, PG);
    CHECK(ib == 0, "second tracker's first region %d", ib);
    if (verbose)
        fprintf(stderr, "  message: %s\n", err.msg);

    start(ta, c1);
    start(tb, c2);
    poke(&a, 1, 1);
    poke(&a, 2, 1);
    poke(&b, 3, 1);
    poke(&b, 31, 1);
    static const uint32_t wa[] = {1, 2, END}, wb[] = {3, 31, END};
    sync_expect(ta, c1, &a, ia, N, wa, "tracker A of two");
    sync_expect(tb, c2, &b, ib, N, wb, "tracker B of two");
    vmig_tracker_free(ta); /* B keeps tracking */
    poke(&a, 5, 2);
    poke(&b, 4, 2);
    static const uint32_t wb2[] = {4, END};
    sync_expect(tb, c2, &b, ib, N, wb2, "tracker B after A was freed");
    vmig_tracker_free(tb);
    check_content(&a, "two trackers");
    check_content(&b, "two trackers");
    mem_unmap(&a);
    mem_unmap(&b);
}

static void test_errors(const ctx *c)
{
    mem m = mem_map(M_ANON_PRIVATE, 64 * PG, PG);
    vmig_tracker *t = tracker_new(c);
    vmig_error err = {0};
    int rc;

    rc = vmig_tracker_add(t, m.p + 1, 8 * PG, PG, &err);
    CHECK(rc == VMIG_EINVAL && strstr(err.msg, "aligned"), "unaligned host: %d (%s)", rc, err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, 3 * PG, 8192, &err);
    CHECK(rc == VMIG_EINVAL && strstr(err.msg, "multiple"), "length not a multiple: %d (%s)", rc,
          err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, 0, PG, &err);
    CHECK(rc == VMIG_EINVAL, "length 0: %d (%s)", rc, err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, 6 * PG, 6 * PG, &err);
    CHECK(rc == VMIG_EINVAL && strstr(err.msg, "power of two"), "page size 24 KiB: %d (%s)", rc,
          err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, 8 * PG, 2048, &err);
    CHECK(rc == VMIG_EINVAL, "page size 2048: %d (%s)", rc, err.msg);

    /* Not mapped: a hole punched into the middle of a range. */
    uint8_t *hole = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(hole != MAP_FAILED, "mmap");
    munmap(hole + PG, PG);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, hole, 3 * PG, PG, &err);
    CHECK(rc == VMIG_EINVAL && strstr(err.msg, "mapped"), "range not mapped: %d (%s)", rc, err.msg);
    munmap(hole, 3 * PG);

    int i0 = add_region(t, c, m.p, 32 * PG, PG);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, 32 * PG, PG, &err);
    CHECK(rc == VMIG_EEXIST && strstr(err.msg, "overlaps"), "same region twice: %d (%s)", rc,
          err.msg);
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p + 31 * PG, 2 * PG, PG, &err);
    CHECK(rc == VMIG_EEXIST, "overlapping region: %d (%s)", rc, err.msg);
    int i1 = add_region(t, c, m.p + 32 * PG, 32 * PG, 8192);
    CHECK(i0 == 0 && i1 == 1, "indices %d %d", i0, i1);

    uint64_t bm[1] = {0};
    err = (vmig_error){0};
    CHECK(vmig_tracker_sync(t, 0, bm, NULL, &err) == VMIG_ESTATE, "sync before start: %s", err.msg);
    start(t, c);
    err = (vmig_error){0};
    CHECK(vmig_tracker_start(t, &err) == VMIG_ESTATE, "start twice");
    err = (vmig_error){0};
    rc = vmig_tracker_add(t, m.p, PG, PG, &err);
    CHECK(rc == VMIG_ESTATE, "add after start: %d (%s)", rc, err.msg);
    err = (vmig_error){0};
    CHECK(vmig_tracker_sync(t, 2, bm, NULL, &err) == VMIG_EINVAL, "sync of region 2 of 2: %s",
          err.msg);
    poke(&m, 33, 1); /* block 0 of region 1 */
    poke(&m, 63, 1); /* block 15 of region 1 */
    err = (vmig_error){0};
    CHECK(vmig_tracker_sync(t, 1, bm, NULL, &err) == 0 && bm[0] == (1ull | 1ull << 15),
          "second region, 8 KiB: 0x%llx (%s)", (unsigned long long)bm[0], err.msg);
    vmig_tracker_free(t);
    vmig_tracker_free(NULL);
    mem_unmap(&m);
}

/* ---- costs (verbose only) ---- */

static void measure(const ctx *c)
{
    const uint64_t N = 16384; /* 64 MiB */
    mem m = mem_map(M_ANON_PRIVATE, N * PG, PG);
    memset(m.p, 1, m.len);
    vmig_tracker *t = tracker_new(c);
    add_region(t, c, m.p, m.len, PG);
    start(t, c);
    uint64_t *b = bm_new(N), nd;
    uint64_t t0 = tu_now_ns();
    for (uint64_t p = 0; p < N; p++)
        m.p[p * PG] = 2;
    uint64_t t1 = tu_now_ns();
    vmig_tracker_sync(t, 0, b, &nd, NULL);
    uint64_t t2 = tu_now_ns();
    memset(b, 0, (N / 64) * 8);
    vmig_tracker_sync(t, 0, b, &nd, NULL);
    uint64_t t3 = tu_now_ns();
    uint64_t seed = 42;
    for (uint64_t k = 0; k < N / 10; k++)
        m.p[(tu_rand(&seed) % N) * PG] = 3;
    memset(b, 0, (N / 64) * 8);
    uint64_t t4 = tu_now_ns();
    vmig_tracker_sync(t, 0, b, &nd, NULL);
    uint64_t t5 = tu_now_ns();
    fprintf(stderr,
            "  %s, 64 MiB: first write to a protected page %.2f us; sync: all dirty %.2f ms, "
            "none %.3f ms, ~10%% random (%llu pages) %.3f ms\n",
            c->kname, (t1 - t0) / 1e3 / N, (t2 - t1) / 1e6, (t3 - t2) / 1e6, (unsigned long long)nd,
            (t5 - t4) / 1e6);
    free(b);
    vmig_tracker_free(t);
    mem_unmap(&m);
}

int main(int argc, char **argv)
{
    verbose = argc > 1 && !strcmp(argv[1], "-v");
    alarm(120); /* a lost wake-up hangs a writer: fail instead of waiting forever */

    ctx kinds[2] = {{VMIG_TRACKER_WP_ASYNC, "async"}, {VMIG_TRACKER_WP_SYNC, "sync"}};
    ctx ok[2];
    int nok = 0;
    for (int k = 0; k < 2; k++) {
        vmig_error err = {0};
        int rc = vmig_tracker_probe(kinds[k].kind, &err);
        if (rc) {
            fprintf(stderr, "%s: skipped: %s\n", kinds[k].kname, err.msg);
            CHECK(err.msg[0], "probe failure comes with a sentence");
            continue;
        }
        ok[nok++] = kinds[k];
    }
    vmig_error err = {0};
    if (nok == 0) {
        CHECK(vmig_tracker_probe(VMIG_TRACKER_AUTO, &err) != 0, "AUTO probes OK, no kind does");
        SKIP("no userfaultfd write-protect tracker works here: %s", err.msg);
    }
    CHECK(vmig_tracker_probe(VMIG_TRACKER_AUTO, &err) == 0, "AUTO probe: %s", err.msg);
    vmig_tracker *a = NULL;
    CHECK(vmig_tracker_create(&a, VMIG_TRACKER_AUTO, &err) == 0, "AUTO create: %s", err.msg);
    if (a) {
        CHECK(vmig_tracker_kind_of(a) == ok[0].kind, "AUTO picked kind %d",
              (int)vmig_tracker_kind_of(a));
        fprintf(stderr, "AUTO: %s\n", vmig_tracker_name(a));
        vmig_tracker_free(a);
    }

    for (int k = 0; k < nok; k++) {
        const ctx *c = &ok[k];
        vmig_tracker *t = tracker_new(c);
        CHECK(vmig_tracker_kind_of(t) == c->kind, "kind_of");
        CHECK(strstr(vmig_tracker_name(t), c->kind == VMIG_TRACKER_WP_ASYNC
                                               ? "asynchronous (PAGEMAP_SCAN)"
                                               : "synchronous (fault handler thread)"),
              "name: %s", vmig_tracker_name(t));
        vmig_tracker_free(t);

        int before = tu_failures;
        uint64_t t0 = tu_now_ns();
        for (int mk = 0; mk < M_KINDS; mk++) {
            test_exact(c, (enum mkind)mk);
            test_blocks(c, (enum mkind)mk);
            test_dontneed(c, (enum mkind)mk);
            test_writers(c, (enum mkind)mk);
        }
        test_errors(c);
        test_two(c, c);
        if (verbose)
            measure(c);
        fprintf(stderr, "%s: %s (%.2f s)\n", c->kname, tu_failures == before ? "ok" : "FAILED",
                (tu_now_ns() - t0) / 1e9);
    }
    if (nok == 2) {
        test_two(&ok[0], &ok[1]);
        test_two(&ok[1], &ok[0]);
    }
    return tu_result("test_dirty");
}
