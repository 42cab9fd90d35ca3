/*
 * The parallel RAM-cache flush (flush.h).
 *
 * Partition: the regions' bitmap words are numbered one after the other
 * (a flat word space); cum[w] counts the dirty pages in words [0, w). Part
 * p of n starts at the first word w with cum[w] >= p * total / n, so each
 * part holds about total / n dirty pages, whatever their addresses, and
 * parts meet at word boundaries (64 pages): no two threads write one word.
 * A part may span regions, and a region several parts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#define HAVE_STREAM 1
#else
#define HAVE_STREAM 0
#endif

#include "flush.h"

struct vmig_flusher {
    uint32_t n;
    pthread_t th[VMIG_FLUSH_MAX_THREADS];
    uint32_t started;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;      /* bumped for each flush (under mu) */
    uint32_t finished; /* workers done with this generation (under mu) */
    bool quit;
    bool stream; /* copies with non-temporal stores (vmig_flusher_set_stream) */
    /* The flush at hand, set by the caller before it bumps gen. */
    const vmig_flush_region *r;
    uint32_t nr;
    uint64_t *base; /* flat index of each region's first word, nr + 1 entries */
    uint64_t *cum;  /* dirty pages before each flat word, words + 1 entries */
    size_t cum_cap, base_cap;
    uint64_t part[VMIG_FLUSH_MAX_THREADS + 1]; /* flat word boundaries */
    uint64_t pages[VMIG_FLUSH_MAX_THREADS], runs[VMIG_FLUSH_MAX_THREADS];
};

typedef struct worker_arg {
    vmig_flusher *f;
    uint32_t idx;
} worker_arg;

static uint64_t region_words(const vmig_flush_region *r)
{
    return (r->npages + 63) / 64;
}

/* The bits of word w that are pages of the region. */
static uint64_t valid_bits(const vmig_flush_region *r, uint64_t w)
{
    uint64_t last = r->npages / 64;
    if (w < last)
        return ~0ull;
    return (1ull << (r->npages % 64)) - 1; /* w == last, npages % 64 != 0 */
}

#if HAVE_STREAM
/* 64 bytes, one cache line, with non-temporal stores. */
static inline void stream_line(uint8_t *dst, const uint8_t *src)
{
    __m128i a = _mm_load_si128((const __m128i *)(const void *)src);
    __m128i b = _mm_load_si128((const __m128i *)(const void *)(src + 16));
    __m128i c = _mm_load_si128((const __m128i *)(const void *)(src + 32));
    __m128i d = _mm_load_si128((const __m128i *)(const void *)(src + 48));
    _mm_stream_si128((__m128i *)(void *)dst, a);
    _mm_stream_si128((__m128i *)(void *)(dst + 16), b);
    _mm_stream_si128((__m128i *)(void *)(dst + 32), c);
    _mm_stream_si128((__m128i *)(void *)(dst + 48), d);
}

/*
 * Copy with non-temporal stores: the pages go to RAM without first being
 * read into the cache (a normal store's read for ownership) and without
 * evicting anything. The flush writes each page once and nothing reads it
 * soon, so that cuts its memory traffic by a third; glibc's memcpy streams
 * only copies above a large threshold, never the page-sized runs of a
 * spread pattern. Runs of 16 KiB and more are copied four 4 KiB blocks at
 * a time, a line of each in turn (four read streams keep more of the
 * memory system busy than one: on this machine 7.1 against 5.7 GB/s for
 * 1 MiB runs, and as fast as glibc's own large copy for 512 MiB runs).
 * dst and src are 16-byte aligned, n a multiple of 64 (whole pages).
 */
static void stream_copy(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 4 * 4096 <= n; i += 4 * 4096)
        for (size_t l = 0; l < 4096; l += 64)
            for (size_t b = 0; b < 4 * 4096; b += 4096)
                stream_line(dst + i + b + l, src + i + b + l);
    for (; i < n; i += 64)
        stream_line(dst + i, src + i);
}
#endif

/* A run of `len` pages from page `start`: one copy. */
static void copy_run(const vmig_flush_region *r, uint64_t start, uint64_t len, bool stream)
{
    size_t ps = r->page_size;
    uint8_t *dst = r->ram + start * ps;
    const uint8_t *src = r->cache + start * ps;
#if HAVE_STREAM
    if (stream && !(((uintptr_t)dst | (uintptr_t)src) & 15)) {
        stream_copy(dst, src, len * ps);
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, len * ps);
}

/* Copy and clear the dirty pages of words [a, b) of one region. Runs are
 * merged across words, so a long dirty stretch is one memcpy. */
static void flush_words(const vmig_flush_region *r, uint64_t a, uint64_t b, bool stream,
                        uint64_t *pages, uint64_t *runs)
{
    uint64_t rs = 0, rl = 0; /* the run being built */
    for (uint64_t w = a; w < b; w++) {
        uint64_t m = r->dirty[w] & valid_bits(r, w);
        if (!m) {
            continue;
        }
        r->dirty[w] &= ~m;
        *pages += (uint64_t)__builtin_popcountll(m);
        while (m) {
            uint32_t bit = (uint32_t)__builtin_ctzll(m);
            uint32_t len;
            if (m == ~0ull) {
                len = 64;
                m = 0;
            } else {
                /* Ones from `bit` up: the high bits of m >> bit are zeros,
                 * so ~(m >> bit) has a set bit and ctz is defined. */
                len = (uint32_t)__builtin_ctzll(~(m >> bit));
                m &= len + bit >= 64 ? 0 : ~0ull << (len + bit);
            }
            uint64_t start = w * 64 + bit;
            if (rl && rs + rl == start) {
                rl += len;
            } else {
                if (rl) {
                    copy_run(r, rs, rl, stream);
                    (*runs)++;
                }
                rs = start;
                rl = len;
            }
        }
    }
    if (rl) {
        copy_run(r, rs, rl, stream);
        (*runs)++;
    }
}

/* Part p: the words of every region between its flat boundaries. */
static void flush_part(vmig_flusher *f, uint32_t p)
{
    uint64_t a = f->part[p], b = f->part[p + 1];
    uint64_t pages = 0, runs = 0;
    for (uint32_t k = 0; k < f->nr && a < b; k++) {
        uint64_t lo = f->base[k], hi = f->base[k + 1];
        if (hi <= a)
            continue;
        if (lo >= b)
            break;
        uint64_t s = a > lo ? a - lo : 0, e = (b < hi ? b : hi) - lo;
        flush_words(&f->r[k], s, e, f->stream, &pages, &runs);
    }
#if HAVE_STREAM
    /* Non-temporal stores are weakly ordered: complete them before the
     * flush is reported done (the mutex orders only normal stores). */
    if (f->stream)
        _mm_sfence();
#endif
    f->pages[p] = pages;
    f->runs[p] = runs;
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    vmig_flusher *f = wa->f;
    uint32_t idx = wa->idx;
    free(wa);
    pthread_mutex_lock(&f->mu);
    uint64_t seen = 0; /* gen starts at 0: a flush before this thread ran is still seen */
    for (;;) {
        while (f->gen == seen && !f->quit)
            pthread_cond_wait(&f->go, &f->mu);
        if (f->quit)
            break;
        seen = f->gen;
        pthread_mutex_unlock(&f->mu);
        flush_part(f, idx);
        pthread_mutex_lock(&f->mu);
        if (++f->finished == f->n - 1)
            pthread_cond_signal(&f->done);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int vmig_flusher_create(uint32_t nthreads, vmig_flusher **out, vmig_error *err)
{
    *out = NULL;
    if (nthreads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c < 1 ? 1 : c > VMIG_FLUSH_MAX_THREADS ? VMIG_FLUSH_MAX_THREADS : (uint32_t)c;
    }
    if (nthreads > VMIG_FLUSH_MAX_THREADS)
        return vmig_error_set(err, VMIG_EINVAL, "flush threads: %u is above the limit %d", nthreads,
                              VMIG_FLUSH_MAX_THREADS);
    vmig_flusher *f = calloc(1, sizeof(*f));
    if (!f)
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for the flusher");
    f->n = nthreads;
    f->stream = HAVE_STREAM;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->go, NULL);
    pthread_cond_init(&f->done, NULL);
    for (uint32_t i = 1; i < nthreads; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        char name[32];
        snprintf(name, sizeof(name), "vmig-flush%u", i);
        if (wa) {
            *wa = (worker_arg){f, i};
            if (vmig_thread_start(&f->th[i], name, worker_main, wa)) {
                free(wa);
                wa = NULL;
            }
        }
        if (!wa) {
            vmig_flusher_free(f);
            return vmig_error_set(err, VMIG_ENOMEM, "cannot start flush thread %u", i);
        }
        f->started = i;
    }
    *out = f;
    return 0;
}

void vmig_flusher_free(vmig_flusher *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->quit = true;
    pthread_cond_broadcast(&f->go);
    pthread_mutex_unlock(&f->mu);
    for (uint32_t i = 1; i <= f->started; i++)
        pthread_join(f->th[i], NULL);
    pthread_cond_destroy(&f->done);
    pthread_cond_destroy(&f->go);
    pthread_mutex_destroy(&f->mu);
    free(f->cum);
    free(f->base);
    free(f);
}

uint32_t vmig_flusher_threads(const vmig_flusher *f)
{
    return f->n;
}

bool vmig_flusher_set_stream(vmig_flusher *f, bool on)
{
    f->stream = on && HAVE_STREAM;
    return f->stream;
}

/* Room for `n` entries in *arr (capacity *cap). */
static int reserve(uint64_t **arr, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    uint64_t *a = realloc(*arr, n * sizeof(uint64_t));
    if (!a)
        return VMIG_ENOMEM;
    *arr = a;
    *cap = n;
    return 0;
}

/* First flat word whose prefix reaches `target` (cum is non-decreasing). */
static uint64_t lower_bound(const uint64_t *cum, uint64_t words, uint64_t target)
{
    uint64_t lo = 0, hi = words;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cum[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int vmig_flusher_run(vmig_flusher *f, const vmig_flush_region *r, uint32_t n, vmig_flush_stats *st,
                     vmig_error *err)
{
    uint64_t t0 = vmig_now_ns();
    uint64_t words = 0;
    for (uint32_t k = 0; k < n; k++) {
        const vmig_flush_region *g = &r[k];
        if (g->npages && (!g->ram || !g->cache || !g->dirty || !vmig_is_pow2(g->page_size) ||
                          g->npages > UINT64_MAX / 2 / g->page_size))
            return vmig_error_set(err, VMIG_EINVAL,
                                  "flush region %u: no memory, no bitmap or a bad page size %u", k,
                                  g->page_size);
        words += region_words(g);
    }
    if (reserve(&f->base, &f->base_cap, (size_t)n + 1) ||
        reserve(&f->cum, &f->cum_cap, (size_t)words + 1))
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for the flush partition");
    uint64_t w = 0, total = 0;
    f->cum[0] = 0;
    for (uint32_t k = 0; k < n; k++) {
        f->base[k] = w;
        for (uint64_t i = 0; i < region_words(&r[k]); i++, w++) {
            total += (uint64_t)__builtin_popcountll(r[k].dirty[i] & valid_bits(&r[k], i));
            f->cum[w + 1] = total;
        }
    }
    f->base[n] = w;
    f->part[0] = 0;
    for (uint32_t p = 1; p < f->n; p++)
        f->part[p] = lower_bound(f->cum, words, total * p / f->n);
    f->part[f->n] = words;
    f->r = r;
    f->nr = n;
    if (f->n > 1) {
        pthread_mutex_lock(&f->mu);
        f->finished = 0;
        f->gen++;
        pthread_cond_broadcast(&f->go);
        pthread_mutex_unlock(&f->mu);
    }
    flush_part(f, 0);
    if (f->n > 1) {
        pthread_mutex_lock(&f->mu);
        while (f->finished < f->n - 1)
            pthread_cond_wait(&f->done, &f->mu);
        pthread_mutex_unlock(&f->mu);
    }
    if (st) {
        memset(st, 0, sizeof(*st));
        st->threads = f->n;
        st->stream = f->stream;
        for (uint32_t p = 0; p < f->n; p++) {
            st->pages += f->pages[p];
            st->runs += f->runs[p];
            st->thread_pages[p] = f->pages[p];
        }
        st->ns = vmig_now_ns() - t0;
    }
    return 0;
}
