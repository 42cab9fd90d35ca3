/*
 * The COLO secondary's RAM-cache flush (src/colo/flush.c): 1 GiB of dirty
 * pages copied from the cache into RAM, one thread against N, for a
 * clustered pattern (the dirty pages fill one stretch of the block: split
 * by address, one thread would get them all) and a spread one (every other
 * page: a copy per page, no runs to merge).
 *
 *   RAM and cache: --block MiB each (default 2048), written before the
 *   runs (warm memory: fresh memory costs a page fault per page here);
 *   dirty: --dirty MiB of it (default 1024). The thread counts alternate
 *   (1, N, N, 1, ...); medians of --reps. The reference is the
 *   single-threaded flush of the same pattern in the same run; the speed-up
 *   is its median over N threads' median.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "src/colo/flush.h"

/* The machine's ceiling: the same bytes copied as one plain memcpy, on one
 * thread and split in halves over N threads (no bitmap, no runs). */
typedef struct plain_arg {
    uint8_t *dst;
    const uint8_t *src;
    size_t len;
} plain_arg;

static void *plain_copy(void *p)
{
    plain_arg *a = p;
    memcpy(a->dst, a->src, a->len);
    return NULL;
}

static uint64_t plain_run(uint8_t *dst, const uint8_t *src, size_t len, uint32_t n)
{
    pthread_t th[VMIG_FLUSH_MAX_THREADS];
    plain_arg a[VMIG_FLUSH_MAX_THREADS];
    uint64_t t0 = vmig_now_ns();
    for (uint32_t i = 0; i < n; i++) {
        size_t part = len / n / 4096 * 4096, off = (size_t)i * part;
        a[i] = (plain_arg){dst + off, src + off, i == n - 1 ? len - off : part};
        if (i)
            pthread_create(&th[i], NULL, plain_copy, &a[i]);
    }
    plain_copy(&a[0]);
    for (uint32_t i = 1; i < n; i++)
        pthread_join(th[i], NULL);
    return vmig_now_ns() - t0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The pattern's bits: clustered = pages [npages/4, npages/4 + ndirty);
 * spread = every (npages / ndirty)-th page. */
static void mark(uint64_t *bm, uint64_t npages, uint64_t ndirty, int spread)
{
    memset(bm, 0, (npages + 63) / 64 * 8);
    if (spread) {
        uint64_t step = npages / ndirty;
        for (uint64_t i = 0, p = 0; i < ndirty; i++, p += step)
            bm[p / 64] |= 1ull << (p % 64);
    } else {
        for (uint64_t p = npages / 4; p < npages / 4 + ndirty; p++)
            bm[p / 64] |= 1ull << (p % 64);
    }
}

int main(int argc, char **argv)
{
    uint64_t block_mib = 2048, dirty_mib = 1024;
    int reps = 5;
    uint32_t threads = 2;
    int copy_from = 0, copy_to = 1; /* 0 non-temporal stores, 1 memcpy */
    static const struct option opts[] = {{"block", required_argument, NULL, 'b'},
                                         {"dirty", required_argument, NULL, 'd'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"copy", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long v = optarg ? strtol(optarg, NULL, 10) : 0;
        if (c == 'b' && v >= 2 && v <= 8192)
            block_mib = (uint64_t)v;
        else if (c == 'd' && v >= 1 && v <= 8192)
            dirty_mib = (uint64_t)v;
        else if (c == 'r' && v >= 1 && v <= 99)
            reps = (int)v;
        else if (c == 't' && v >= 2 && v <= VMIG_FLUSH_MAX_THREADS)
            threads = (uint32_t)v;
        else if (c == 'c' && !strcmp(optarg, "stream"))
            copy_from = copy_to = 0;
        else if (c == 'c' && !strcmp(optarg, "memcpy"))
            copy_from = copy_to = 1;
        else if (c == 'c' && !strcmp(optarg, "both"))
            copy_from = 0, copy_to = 1;
        else {
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: bench_flush [--block MiB] [--dirty MiB] [--reps N] [--threads N]\n"
                    "  --block MiB    RAM and cache, each (default 2048, 2..8192)\n"
                    "  --dirty MiB    dirty pages to flush (default 1024, at most half the block)\n"
                    "  --reps N       runs per thread count and pattern, median (default 5)\n"
                    "  --threads N    the parallel flush's threads (default 2)\n"
                    "  --copy MODE    stream (non-temporal stores, the default of the flush),\n"
                    "                 memcpy, or both (default)\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (dirty_mib * 2 > block_mib) {
        fprintf(stderr, "bench_flush: --dirty must be at most half of --block\n");
        return 2;
    }
    uint64_t bytes = block_mib << 20, npages = bytes / 4096, ndirty = (dirty_mib << 20) / 4096;
    uint8_t *ram = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *cache = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *bm = malloc((npages + 63) / 64 * 8);
    if (ram == MAP_FAILED || cache == MAP_FAILED || !bm) {
        fprintf(stderr, "bench_flush: cannot map 2 x %llu MiB\n", (unsigned long long)block_mib);
        return 1;
    }
    memset(ram, 0x11, bytes);
    memset(cache, 0x22, bytes);
    uint64_t stream_par[2] = {1, 1};
    vmig_flusher *one, *par;
    vmig_error e = {0};
    if (vmig_flusher_create(1, &one, &e) || vmig_flusher_create(threads, &par, &e)) {
        fprintf(stderr, "bench_flush: %s\n", e.msg);
        return 1;
    }
    vmig_flush_region r = {
        .ram = ram, .cache = cache, .dirty = bm, .npages = npages, .page_size = 4096};
    printf("flush of %llu MiB dirty in a %llu MiB block, 1 thread against %u, medians of %d\n",
           (unsigned long long)dirty_mib, (unsigned long long)block_mib, threads, reps);
    int worst = 0;
    double worst_speedup = 1e9;
    uint64_t single_memcpy[2] = {0, 0};
    for (int mode = copy_from; mode <= copy_to; mode++) {
        bool stream = mode == 0;
        if (vmig_flusher_set_stream(one, stream) != stream ||
            vmig_flusher_set_stream(par, stream) != stream) {
            printf("(no non-temporal stores on this CPU: memcpy only)\n");
            continue;
        }
        printf("copy: %s\n", stream ? "non-temporal stores (the default)" : "memcpy");
        for (int spread = 0; spread < 2; spread++) {
            uint64_t t1[99], tn[99], runs = 0;
            for (int i = 0; i < 2 * reps; i++) {
                /* 1, N, N, 1, 1, N, ...: neither side always goes first. */
                bool use_par = (i % 4 == 1 || i % 4 == 2);
                mark(bm, npages, ndirty, spread);
                vmig_flush_stats st;
                if (vmig_flusher_run(use_par ? par : one, &r, 1, &st, &e)) {
                    fprintf(stderr, "bench_flush: %s\n", e.msg);
                    return 1;
                }
                if (st.pages != ndirty) {
                    fprintf(stderr, "bench_flush: %llu pages flushed, %llu dirty\n",
                            (unsigned long long)st.pages, (unsigned long long)ndirty);
                    return 1;
                }
                runs = st.runs;
                (use_par ? tn : t1)[i / 2] = st.ns;
            }
            uint64_t m1 = median(t1, reps), mn = median(tn, reps);
            double sp = (double)m1 / (double)mn;
            printf("%-9s  1 thread %7.1f ms (%5.2f GB/s)   %u threads %7.1f ms (%5.2f GB/s)   "
                   "speed-up %.2fx   (%llu runs)\n",
                   spread ? "spread" : "clustered", (double)m1 / 1e6,
                   (double)(dirty_mib << 20) / (double)m1, threads, (double)mn / 1e6,
                   (double)(dirty_mib << 20) / (double)mn, sp, (unsigned long long)runs);
            if (!stream)
                single_memcpy[spread] = m1;
            if (stream && sp < worst_speedup) {
                worst_speedup = sp;
                worst = spread;
            }
            if (!stream && single_memcpy[spread] && copy_from == 0)
                printf(
                    "           %u threads with non-temporal stores against 1 thread with memcpy: "
                    "%.2fx\n",
                    threads, (double)m1 / (double)stream_par[spread]);
            if (stream)
                stream_par[spread] = mn;
        }
    }
    if (worst_speedup < 1e9)
        printf("lowest speed-up (the default copy): %.2fx (%s)\n", worst_speedup,
               worst ? "spread" : "clustered");
    uint64_t p1[99], pn[99];
    for (int i = 0; i < 2 * reps; i++) {
        bool use_par = (i % 4 == 1 || i % 4 == 2);
        (use_par ? pn : p1)[i / 2] = plain_run(ram, cache, dirty_mib << 20, use_par ? threads : 1);
    }
    uint64_t q1 = median(p1, reps), qn = median(pn, reps);
    printf("ceiling    plain memcpy of %llu MiB: 1 thread %.1f ms, %u threads %.1f ms: %.2fx\n",
           (unsigned long long)dirty_mib, (double)q1 / 1e6, threads, (double)qn / 1e6,
           (double)q1 / (double)qn);
    vmig_flusher_free(one);
    vmig_flusher_free(par);
    return 0;
}
