/*
 * The channel side of zero-page offload (src/accel/accel.c) over the cpu
 * and dsa-model backends: every answer equals the CPU's, every page is
 * answered exactly once (device + CPU + untouched = pages), and the
 * counters say who answered. Cases: pipelined start/finish, a device far
 * behind (the CPU takes the whole batch from its tail and the batch is
 * reclaimed later), page faults on never-touched pages (zero without
 * reading, and the pages stay unmapped) and on evicted file pages (checked
 * on the CPU), injected faults, a full queue (retries, then the CPU), a
 * device that dies mid-run (CPU for the rest, one failure sentence),
 * reordered completion, a finish whose packet does not match the one
 * started, a page size the engine was not opened for, four channel threads
 * on one queue, option parsing, and the dsa backend on a machine without
 * DSA.
 */
#include "src/accel/accel.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "src/ram/vma.h"
#include "src/ram/zero.h"

#include "../testutil.h"

#define PAGE 4096u
#define NP   128u

static bool cpu_zero(const void *buf, size_t len)
{
    return vmig_is_zero(buf, len);
}

static vmig_accel *open_engine(const char *backend, const char *path)
{
    vmig_accel_conf conf = {
        .path = path, .channels = 4, .max_jobs = NP, .len = PAGE, .cpu = cpu_zero};
    vmig_accel *a = NULL;
    vmig_error e = {0};
    int rc = vmig_accel_open(vmig_accel_find(backend), &conf, &a, &e);
    if (rc == VMIG_ENOTSUP)
        SKIP("%s: %s", backend, e.msg);
    REQUIRE(rc == 0, "open %s '%s': %s", backend, path ? path : "", e.msg);
    return a;
}

static vmig_accel_chan *chan(vmig_accel *a, uint32_t id)
{
    vmig_accel_chan *c = NULL;
    vmig_error e = {0};
    REQUIRE(vmig_accel_chan_create(a, id, &c, &e) == 0, "chan: %s", e.msg);
    return c;
}

/* Page i of m: zero or one non-zero byte at its start, middle or end. */
static void fill(uint8_t *m, uint32_t n, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t r = tu_rand(&seed);
        uint8_t *pg = m + (size_t)i * PAGE;
        memset(pg, 0, PAGE);
        uint32_t at[3] = {0, PAGE / 2, PAGE - 1};
        if (r % 4)
            pg[at[r % 3]] = (uint8_t)(1 + (r >> 8) % 255);
    }
}

static void bufs_of(const uint8_t *m, uint32_t n, const void **bufs)
{
    for (uint32_t i = 0; i < n; i++)
        bufs[i] = m + (size_t)i * PAGE;
}

/* zero[] against the CPU's answer; returns the zero pages. */
static uint32_t check_answers(const void **bufs, uint32_t n, const uint8_t *zero, const char *what)
{
    uint32_t z = 0, bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool want = vmig_is_zero(bufs[i], PAGE);
        z += want;
        if (zero[i] != want && bad++ < 3)
            CHECK(0, "%s: page %u answered %s", what, i, zero[i] ? "zero" : "non-zero");
    }
    return z;
}

static uint64_t answered(const vmig_accel_counters *k)
{
    return k->dev_pages + k->cpu_pages + k->untouched;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* One packet through start + finish, or finish alone. A channel starts a
 * packet one send ahead; `wait_us` stands for that send (0: the device and
 * the CPU race for the batch). */
static void one(vmig_accel_chan *c, uint64_t tag, const void **bufs, uint32_t n, bool start,
                long wait_us, bool uz, uint8_t *zero, const char *what)
{
    memset(zero, 0xEE, n);
    if (start)
        vmig_accel_chan_start(c, tag, bufs, n, PAGE, uz);
    if (wait_us)
        sleep_us(wait_us);
    vmig_accel_chan_finish(c, tag, bufs, n, PAGE, uz, zero);
    check_answers(bufs, n, zero, what);
}

static void test_cpu(uint8_t *m)
{
    vmig_accel *a = open_engine("cpu", NULL);
    CHECK(vmig_accel_inline(a), "cpu is inline");
    vmig_accel_chan *c = chan(a, 0);
    const void *bufs[NP];
    uint8_t zero[NP];
    for (uint32_t t = 0; t < 20; t++) {
        fill(m, NP, t);
        bufs_of(m, NP, bufs);
        one(c, t, bufs, NP - t, true, 0, false, zero, "cpu");
    }
    vmig_accel_counters k;
    vmig_accel_counters_get(a, &k);
    uint64_t pages = 0;
    for (uint32_t t = 0; t < 20; t++)
        pages += NP - t;
    CHECK(k.cpu_pages == pages && k.dev_pages == 0 && k.batches == 0,
          "cpu: %llu device-path pages, %llu cpu, %llu batches", (unsigned long long)k.dev_pages,
          (unsigned long long)k.cpu_pages, (unsigned long long)k.batches);
    vmig_accel_chan_free(c);
    vmig_accel_close(a);
}

/* Pipelined as a channel does it: start(t + 1), finish(t), send(t). (Back
 * to back, with nothing to send, hot pages and a model thread that must be
 * woken, the CPU wins most races: that is the hybrid path, tested below.) */
static void test_model_pipeline(uint8_t *m)
{
    vmig_accel *a = open_engine("dsa-model", "model:depth=16");
    CHECK(!vmig_accel_inline(a), "model is not inline");
    vmig_accel_chan *c = chan(a, 0);
    const void *bufs[2][NP];
    uint8_t zero[NP];
    const uint32_t T = 200;
    fill(m, 2 * NP, 7);
    bufs_of(m, NP, bufs[0]);
    bufs_of(m + (size_t)NP * PAGE, NP, bufs[1]);
    vmig_accel_chan_start(c, 0, bufs[0], NP, PAGE, false);
    for (uint32_t t = 0; t < T; t++) {
        vmig_accel_chan_start(c, t + 1, bufs[(t + 1) % 2], NP, PAGE, false);
        memset(zero, 0xEE, NP);
        vmig_accel_chan_finish(c, t, bufs[t % 2], NP, PAGE, false, zero);
        check_answers(bufs[t % 2], NP, zero, "pipeline");
        sleep_us(200); /* the send of packet t: 512 KiB at 2.5 GB/s */
    }
    vmig_accel_chan_finish(c, T, bufs[T % 2], NP, PAGE, false, zero);
    vmig_accel_counters k;
    vmig_accel_counters_get(a, &k);
    CHECK(answered(&k) == (uint64_t)(T + 1) * NP, "pipeline: %llu answers for %u pages",
          (unsigned long long)answered(&k), (T + 1) * NP);
    /* How many the channel hands over depends on how often the model was
     * in time (pacing), not on the test: some, answered right. */
    CHECK(k.batches > 0 && k.dev_pages > 0 && k.faults == 0,
          "pipeline: %llu batches, %llu device pages, %llu faults", (unsigned long long)k.batches,
          (unsigned long long)k.dev_pages, (unsigned long long)k.faults);
    vmig_accel_chan_free(c);
    vmig_accel_close(a);
}

/* 20 ms per descriptor: finish() cannot wait, the CPU answers everything
 * from the tail; the batch is late, reclaimed by a later start once done. */
static void test_hybrid_late(uint8_t *m)
{
    vmig_accel *a = open_engine("dsa-model", "model:latency=20ms");
    vmig_accel_chan *c = chan(a, 0);
    const void *bufs[NP];
    uint8_t zero[NP];
    fill(m, NP, 3);
    bufs_of(m, NP, bufs);
    for (uint32_t t = 0; t < 3; t++)
        one(c, t, bufs, NP, true, 0, false, zero, "late");
    vmig_accel_counters k;
    vmig_accel_counters_get(a, &k);
    /* The first batch is late; while it runs, the device is behind and the
     * next packets are not even submitted (they would queue behind it). */
    CHECK(k.tail_pages == NP && k.cpu_pages == 3 * NP && k.late == 1 && k.dev_pages == 0 &&
              k.fallbacks == 2 && k.batches == 1,
          "late: tail %llu cpu %llu late %llu device %llu fallbacks %llu batches %llu",
          (unsigned long long)k.tail_pages, (unsigned long long)k.cpu_pages,
          (unsigned long long)k.late, (unsigned long long)k.dev_pages,
          (unsigned long long)k.fallbacks, (unsigned long long)k.batches);
    /* Once it is done (20 ms), the device is used again. */
    sleep_us(30000);
    one(c, 3, bufs, NP, true, 30000, false, zero, "caught up");
    vmig_accel_counters_get(a, &k);
    CHECK(k.batches == 2 && k.dev_pages == NP, "after catching up: %llu batches, %llu device pages",
          (unsigned long long)k.batches, (unsigned long long)k.dev_pages);
    for (uint32_t t = 4; t < 4 + 2 * VMIG_ACCEL_SLOTS; t++)
        one(c, t, bufs, NP, true, 0, false, zero, "late again");
    vmig_accel_counters_get(a, &k);
    CHECK(answered(&k) == (4 + 2 * VMIG_ACCEL_SLOTS) * NP, "late: %llu answers",
          (unsigned long long)answered(&k));
    uint64_t t0 = tu_now_ns();
    vmig_accel_chan_free(c); /* waits for the late batches */
    CHECK(tu_now_ns() - t0 < 900000000u, "chan_free waited %.3f s",
          (double)(tu_now_ns() - t0) / 1e9);
    CHECK(!vmig_accel_failure(a), "late batches are no failure: %s", vmig_accel_failure(a));
    vmig_accel_close(a);
}

/* Never-touched anonymous pages: pages `stride` apart, a third touched. */
static void untouched_case(vmig_accel *a, vmig_accel_chan *c, uint32_t stride, bool start_uz,
                           const char *what, vmig_accel_counters *d)
{
    size_t len = (size_t)NP * stride * PAGE;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED, "mmap");
    CHECK(vmig_vma_private_anon(m, len), "anonymous memory not recognised");
    const void *bufs[NP];
    uint8_t zero[NP];
    for (uint32_t i = 0; i < NP; i++) {
        bufs[i] = m + (size_t)i * stride * PAGE;
        if (i % 3 == 0) /* touched: non-zero or zero */
            m[(size_t)i * stride * PAGE + 5] = (uint8_t)(i % 2);
    }
    vmig_accel_counters k0, k;
    vmig_accel_counters_get(a, &k0);
    /* Not through one(): its check reads (maps) the pages; mincore first. */
    memset(zero, 0xEE, NP);
    vmig_accel_chan_start(c, 1, bufs, NP, PAGE, start_uz);
    sleep_us(20000);
    vmig_accel_chan_finish(c, 1, bufs, NP, PAGE, true, zero);
    vmig_accel_counters_get(a, &k);
    uint64_t *kv = (uint64_t *)&k, *k0v = (uint64_t *)&k0, *dv = (uint64_t *)d;
    for (size_t i = 0; i < sizeof(k) / 8; i++)
        dv[i] = kv[i] - k0v[i];
    uint32_t mapped = 0, untouched = 0;
    for (uint32_t i = 0; i < NP; i++) {
        unsigned char v = 0;
        REQUIRE(mincore((void *)bufs[i], PAGE, &v) == 0, "mincore");
        mapped += (v & 1) && i % 3;
        untouched += i % 3 != 0;
    }
    CHECK(d->untouched == untouched && mapped == 0 && d->tail_pages == 0,
          "%s: %llu answered untouched of %u, %u mapped, %llu tail", what,
          (unsigned long long)d->untouched, untouched, mapped, (unsigned long long)d->tail_pages);
    CHECK(answered(d) == NP, "%s: %llu answers", what, (unsigned long long)answered(d));
    check_answers(bufs, NP, zero, what);
    munmap(m, len);
}

static void test_untouched(void)
{
    vmig_accel *a = open_engine("dsa-model", NULL);
    vmig_accel_chan *c = chan(a, 0);
    vmig_accel_counters d;
    /* Contiguous pages: found in pagemap before submission, not given to
     * the device at all (no faults). */
    untouched_case(a, c, 1, true, "pre-checked", &d);
    CHECK(d.faults == 0 && d.dev_pages == NP / 3 + 1, "pre-checked: %llu faults, %llu device",
          (unsigned long long)d.faults, (unsigned long long)d.dev_pages);
    /* Pages 8 apart: too sparse for one pagemap read; the device faults on
     * the untouched ones and pagemap answers them then. */
    untouched_case(a, c, 8, true, "sparse", &d);
    CHECK(d.faults == NP - (NP / 3 + 1), "sparse: %llu faults", (unsigned long long)d.faults);
    /* Started without the promise, finished with it: the device faults. */
    untouched_case(a, c, 1, false, "fault path", &d);
    CHECK(d.faults == NP - (NP / 3 + 1), "fault path: %llu faults", (unsigned long long)d.faults);

    /* No promise at all: the CPU reads the faulted pages (mapping them). */
    size_t len = (size_t)NP * PAGE;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED, "mmap");
    const void *bufs[NP];
    uint8_t zero[NP];
    bufs_of(m, NP, bufs);
    vmig_accel_counters k0, k;
    vmig_accel_counters_get(a, &k0);
    one(c, 2, bufs, NP, true, 20000, false, zero, "untouched, no promise");
    vmig_accel_counters_get(a, &k);
    CHECK(k.untouched == k0.untouched, "untouched without the promise");
    CHECK(k.cpu_pages - k0.cpu_pages == NP && k.faults - k0.faults == NP,
          "no promise: %llu of %u on the CPU, %llu faults",
          (unsigned long long)(k.cpu_pages - k0.cpu_pages), NP,
          (unsigned long long)(k.faults - k0.faults));
    for (uint32_t i = 0; i < NP; i++)
        CHECK(zero[i] == 1, "fresh page %u not zero", i);
    munmap(m, len);
    vmig_accel_chan_free(c);
    vmig_accel_close(a);
}

/* Evicted file pages (not resident, data on disk): faults, checked on the
 * CPU, answered right; the mapping is not private anonymous. */
static void test_evicted(void)
{
    char dir[] = "/var/tmp/vmig-accel.XXXXXX";
    if (!mkdtemp(dir))
        SKIP("mkdtemp in /var/tmp failed");
    char path[64];
    snprintf(path, sizeof(path), "%s/img", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0, "open %s", path);
    uint8_t *pg = calloc(NP, PAGE);
    REQUIRE(pg, "calloc");
    fill(pg, NP, 11);
    REQUIRE(write(fd, pg, (size_t)NP * PAGE) == (ssize_t)(NP * PAGE), "write");
    fsync(fd);
    uint8_t *m = mmap(NULL, (size_t)NP * PAGE, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(m != MAP_FAILED, "mmap file");
    CHECK(!vmig_vma_private_anon(m, (size_t)NP * PAGE), "a file mapping taken as anonymous");
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    unsigned char vec[NP];
    REQUIRE(mincore(m, (size_t)NP * PAGE, vec) == 0, "mincore");
    uint32_t resident = 0;
    for (uint32_t i = 0; i < NP; i++)
        resident += vec[i] & 1;
    if (resident == NP) {
        fprintf(stderr, "note: the page cache kept the file: eviction case not exercised\n");
    } else {
        const void *bufs[NP];
        uint8_t zero[NP];
        bufs_of(m, NP, bufs);
        vmig_accel *a = open_engine("dsa-model", NULL);
        vmig_accel_chan *c = chan(a, 0);
        /* The source promises untouched-is-zero only for private
         * anonymous blocks (vma.h); a file mapping gets no promise. */
        one(c, 1, bufs, NP, true, 20000, false, zero, "evicted");
        vmig_accel_counters k;
        vmig_accel_counters_get(a, &k);
        CHECK(k.faults + k.tail_pages >= NP - resident, "evicted: %llu faults for %u pages",
              (unsigned long long)k.faults, NP - resident);
        CHECK(k.untouched == 0, "evicted pages answered as untouched");
        vmig_accel_chan_free(c);
        vmig_accel_close(a);
    }
    munmap(m, (size_t)NP * PAGE);
    close(fd);
    unlink(path);
    rmdir(dir);
    free(pg);
}

static void run_many(const char *path, uint8_t *m, uint32_t packets, vmig_accel_counters *k,
                     const char *what)
{
    vmig_accel *a = open_engine("dsa-model", path);
    vmig_accel_chan *c = chan(a, 0);
    const void *bufs[NP];
    uint8_t zero[NP];
    for (uint32_t t = 0; t < packets; t++) {
        fill(m, NP, 100 + t);
        bufs_of(m, NP, bufs);
        one(c, t, bufs, NP, t % 2 == 0, t % 2 == 0 ? 2000 : 0, false, zero, what);
    }
    vmig_accel_counters_get(a, k);
    CHECK(answered(k) == (uint64_t)packets * NP, "%s: %llu answers for %u pages", what,
          (unsigned long long)answered(k), packets * NP);
    vmig_accel_chan_free(c);
    if (strstr(path, "error-after"))
        CHECK(vmig_accel_failure(a) && strstr(vmig_accel_failure(a), "on the CPU for the rest"),
              "%s: failure sentence: %s", what,
              vmig_accel_failure(a) ? vmig_accel_failure(a) : "(none)");
    else
        CHECK(!vmig_accel_failure(a), "%s: unexpected failure: %s", what, vmig_accel_failure(a));
    vmig_accel_close(a);
}

static void test_injected(uint8_t *m)
{
    vmig_accel_counters k;
    run_many("model:fault-every=5", m, 20, &k, "fault-every");
    CHECK(k.faults > 0, "fault-every=5: %llu faults", (unsigned long long)k.faults);
    CHECK(k.untouched == 0, "injected faults on resident pages are no untouched pages");

    run_many("model:full-every=2", m, 40, &k, "full-every=2");
    CHECK(k.retries >= 3, "full-every=2: %llu retries", (unsigned long long)k.retries);

    run_many("model:full-every=1", m, 10, &k, "full-every=1");
    /* start() tries, and finish() tries again when start() gave up. */
    CHECK(k.batches == 0 && k.fallbacks == 10 && k.retries == 15 * VMIG_ACCEL_MAX_RETRY,
          "always full: %llu batches, %llu fallbacks, %llu retries", (unsigned long long)k.batches,
          (unsigned long long)k.fallbacks, (unsigned long long)k.retries);

    run_many("model:error-after=300", m, 20, &k, "error-after");
    CHECK(k.dev_pages > 0 && k.dev_pages <= 300 && k.fallbacks >= 15,
          "died after 300 jobs: %llu device pages, %llu fallbacks", (unsigned long long)k.dev_pages,
          (unsigned long long)k.fallbacks);

    run_many("model:reorder=1", m, 20, &k, "reorder");
    run_many("model:reorder:fault-every=3:depth=2", m, 20, &k, "reorder+faults+depth 2");
}

/* A finish for another packet than the one started under its tag, and a
 * page size the engine was not opened for: CPU answers, nothing wrong. */
static void test_mismatch(uint8_t *m)
{
    vmig_accel *a = open_engine("dsa-model", NULL);
    vmig_accel_chan *c = chan(a, 0);
    const void *bufs[NP];
    uint8_t zero[NP];
    fill(m, NP, 9);
    bufs_of(m, NP, bufs);
    vmig_accel_chan_start(c, 5, bufs, NP, PAGE, false);
    vmig_accel_chan_finish(c, 5, bufs, NP / 2, PAGE, false, zero);
    check_answers(bufs, NP / 2, zero, "other packet under the tag");
    vmig_accel_chan_start(c, 6, bufs, NP / 2, 2 * PAGE, false); /* not this engine's size */
    vmig_accel_chan_finish(c, 6, bufs, NP / 2, 2 * PAGE, false, zero);
    for (uint32_t i = 0; i < NP / 2; i++)
        CHECK(zero[i] == vmig_is_zero(bufs[i], 2 * PAGE), "8 KiB page %u", i);
    vmig_accel_chan_free(c);
    vmig_accel_close(a);
}

typedef struct worker {
    vmig_accel *a;
    uint32_t id;
    uint8_t *m; /* 2 * NP pages of its own */
} worker;

static void *work(void *p)
{
    worker *w = p;
    vmig_accel_chan *c = chan(w->a, w->id);
    const void *bufs[2][NP];
    uint8_t zero[NP];
    fill(w->m, 2 * NP, w->id);
    bufs_of(w->m, NP, bufs[0]);
    bufs_of(w->m + (size_t)NP * PAGE, NP, bufs[1]);
    for (uint32_t t = 0; t < 100; t++) {
        vmig_accel_chan_start(c, t + 1, bufs[(t + 1) % 2], NP, PAGE, false);
        vmig_accel_chan_finish(c, t, bufs[t % 2], NP, PAGE, false, zero);
        check_answers(bufs[t % 2], NP, zero, "threads");
    }
    vmig_accel_chan_finish(c, 100, bufs[0], NP, PAGE, false, zero);
    vmig_accel_chan_free(c);
    return NULL;
}

static void test_threads(uint8_t *m)
{
    vmig_accel *a = open_engine("dsa-model", "model:depth=4 model:depth=4"); /* two queues */
    pthread_t t[4];
    worker w[4];
    for (uint32_t i = 0; i < 4; i++) {
        w[i] = (worker){.a = a, .id = i, .m = m + (size_t)i * 2 * NP * PAGE};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (uint32_t i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    vmig_accel_counters k;
    vmig_accel_counters_get(a, &k);
    CHECK(answered(&k) == 4u * 101 * NP, "threads: %llu answers", (unsigned long long)answered(&k));
    char d[160];
    vmig_accel_describe(a, d, sizeof(d));
    CHECK(strstr(d, "2 queues") != NULL, "description: %s", d);
    vmig_accel_close(a);
}

static void test_options(void)
{
    const char *bad[] = {"model:depth=0",     "model:latency=5s", "model:bogus=1",
                         "model:max-batch=1", "modelx",           "dsa:/dev/dsa/wq0.0",
                         "model:depth=-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vmig_accel_conf conf = {.path = bad[i], .max_jobs = NP, .len = PAGE, .cpu = cpu_zero};
        vmig_accel *a = NULL;
        vmig_error e = {0};
        int rc = vmig_accel_open(vmig_accel_find("dsa-model"), &conf, &a, &e);
        CHECK(rc == VMIG_EINVAL && !a && strstr(e.msg, bad[i]), "'%s': rc %d, '%s'", bad[i], rc,
              e.msg);
    }
    vmig_accel_conf conf = {
        .path = "model:max-batch=64", .max_jobs = NP, .len = PAGE, .cpu = cpu_zero};
    vmig_accel *a = NULL;
    vmig_error e = {0};
    CHECK(vmig_accel_open(vmig_accel_find("dsa-model"), &conf, &a, &e) == VMIG_EINVAL &&
              strstr(e.msg, "max batch of 64"),
          "packet larger than max batch: %s", e.msg);
    CHECK(vmig_accel_find("nope") == NULL && vmig_accel_find("cpu"), "registry");

    /* The hardware backend: on a machine without DSA it refuses with a
     * reason (a machine with DSA runs test_dsa_hw instead). */
    conf.path = NULL;
    e = (vmig_error){0};
    int rc = vmig_accel_open(vmig_accel_find("dsa"), &conf, &a, &e);
    if (rc == 0) {
        fprintf(stderr, "note: this machine has a DSA work queue\n");
        vmig_accel_close(a);
    } else {
        CHECK(rc == VMIG_ENOTSUP && strstr(e.msg, "DSA"), "dsa without a device: %d '%s'", rc,
              e.msg);
    }
}

int main(void)
{
    uint8_t *m = aligned_alloc(PAGE, (size_t)8 * NP * PAGE);
    REQUIRE(m, "alloc");
    memset(m, 0, (size_t)8 * NP * PAGE);
    test_cpu(m);
    vmig_accel *probe = open_engine("dsa-model", NULL); /* skips when not built */
    vmig_accel_close(probe);
    test_model_pipeline(m);
    test_hybrid_late(m);
    test_untouched();
    test_evicted();
    test_injected(m);
    test_mismatch(m);
    test_threads(m);
    test_options();
    free(m);
    return tu_result("test_accel");
}
