/*
 * bench_zero: zero-page detection speed over memory much larger than the
 * caches, one 4 KiB page per call, single-threaded, as a migration scans
 * guest RAM.
 *
 * For each page pattern
 *   zero      every page all zero (every byte is read)
 *   first     every page's first byte non-zero (early exit after one line)
 *   last      every page's last byte only non-zero (every byte is read)
 * it times every implementation this CPU runs, vmig_is_zero() (the
 * dispatched pointer), ISA-L's isal_zero_detect() when built with ISA-L, and
 * a ceiling: one plain sequential read of the whole buffer in a single call
 * (no per-page calls, no tests), which is what one core's memory bandwidth
 * allows. Repetitions are interleaved (rep 1 of every row, then rep 2, ...),
 * the first row rotating, so that a noisy neighbour hurts every row alike;
 * the median is reported.
 *
 * Every timed run starts from the same state: the whole buffer, then a
 * separate one (--evict, 256 MiB by default) have just been read. Without
 * that, the early-exit pattern measures the caches and the order of the
 * rows: its footprint is one line per page (16 MiB for 1 GiB), which stays
 * in a 32 MiB L3 for the next row, and the run that followed a full read of
 * the buffer was up to 1.5x slower than the one that followed an early-exit
 * run, whatever the implementation.
 */
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmig_config.h"
#include "src/ram/zero.h"

#if VMIG_HAVE_ISAL
#include <isa-l/mem_routines.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define PAGE 4096u

typedef struct row {
    const char *name;
    vmig_zero_fn fn; /* NULL for the stream ceiling */
    double *secs;    /* one per repetition */
} row;

#if VMIG_HAVE_ISAL
static bool isal_is_zero(const void *buf, size_t len)
{
    return isal_zero_detect((void *)buf, len) == 0;
}
#endif

/* The ceiling: OR every byte of the buffer in one pass, four accumulators,
 * the widest vectors the CPU has (the width makes no difference once the
 * buffer is out of the caches; it keeps the loop from being the limit). */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static uint64_t stream_avx512(const uint8_t *p, size_t len)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 256 <= len; i += 256) {
        a = _mm512_or_si512(a, _mm512_load_si512((const void *)(p + i)));
        b = _mm512_or_si512(b, _mm512_load_si512((const void *)(p + i + 64)));
        c = _mm512_or_si512(c, _mm512_load_si512((const void *)(p + i + 128)));
        d = _mm512_or_si512(d, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a = _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d));
    return _mm512_test_epi64_mask(a, a) != 0;
}

__attribute__((target("avx2"))) static uint64_t stream_avx2(const uint8_t *p, size_t len)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 128 <= len; i += 128) {
        a = _mm256_or_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_or_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_or_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_or_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
    return !_mm256_testz_si256(a, a);
}
#endif

static uint64_t stream_scalar(const uint8_t *p, size_t len)
{
    uint64_t acc = 0;
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        acc |= v;
    }
    return acc != 0;
}

static uint64_t stream_read(const uint8_t *p, size_t len)
{
#if defined(__x86_64__) || defined(__i386__)
    if (vmig_cpu_features() & VMIG_CPU_AVX512BW)
        return stream_avx512(p, len);
    if (vmig_cpu_features() & VMIG_CPU_AVX2)
        return stream_avx2(p, len);
#endif
    return stream_scalar(p, len);
}

/* Seconds to scan the buffer `passes` times; *nonzero receives the count of
 * non-zero pages seen in one pass (the stream row: 1 if any byte is set). */
static double run(const row *r, const uint8_t *buf, size_t npages, int passes, size_t *nonzero)
{
    size_t nz = 0;
    uint64_t t0 = vmig_now_ns();
    for (int k = 0; k < passes; k++) {
        nz = 0;
        if (!r->fn) {
            nz = (size_t)stream_read(buf, npages * PAGE);
        } else {
            vmig_zero_fn fn = r->fn;
            for (size_t i = 0; i < npages; i++)
                nz += !fn(buf + i * PAGE, PAGE);
        }
    }
    uint64_t t1 = vmig_now_ns();
    *nonzero = nz;
    return (double)(t1 - t0) * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double tmp[n];
    memcpy(tmp, v, sizeof(tmp));
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_zero [--size MiB] [--reps N] [--thp] [--cpu N] [--evict MiB]\n"
               "Zero-page detection speed, one 4 KiB page per call, single-threaded,\n"
               "over a pre-faulted buffer much larger than the caches.\n"
               "  --size MiB  buffer size (default 1024); below 256 MiB each run scans\n"
               "              it several times, measuring the code in the caches\n"
               "  --reps N    repetitions per row, the median is reported (default 5)\n"
               "  --thp       back the buffer with transparent huge pages (MADV_HUGEPAGE)\n"
               "  --cpu N     pin the thread to CPU N (default: not pinned)\n"
               "  --evict MiB before every timed run, read the buffer then this much\n"
               "              other memory, so that every run starts with the same cold\n"
               "              caches (default 256; 0: no reads between runs)\n"
               "  --help      this text\n"
               "Rows: every implementation the CPU runs, vmig_is_zero (dispatched),\n"
               "isal (isal_zero_detect, when built with ISA-L) and 'stream', a single\n"
               "sequential read of the whole buffer: the one-core bandwidth ceiling.\n"
               "Patterns: zero pages; first byte non-zero (early exit); last byte\n"
               "non-zero (full scan). GB/s is 1e9 bytes of pages scanned per second.\n");
}

static bool parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    long size_mib = 1024, reps = 5, cpu = -1, evict_mib = 256;
    bool thp = false;
    static const struct option opts[] = {
        {"size", required_argument, NULL, 's'},
        {"reps", required_argument, NULL, 'r'},
        {"thp", no_argument, NULL, 't'},
        {"cpu", required_argument, NULL, 'c'},
        {"evict", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!parse_num(optarg, 1, 1 << 20, &size_mib)) {
                fprintf(stderr, "bench_zero: --size wants MiB in 1..1048576, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'r':
            if (!parse_num(optarg, 1, 1000, &reps)) {
                fprintf(stderr, "bench_zero: --reps wants 1..1000, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'c':
            if (!parse_num(optarg, 0, CPU_SETSIZE - 1, &cpu)) {
                fprintf(stderr, "bench_zero: --cpu wants a CPU number, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'e':
            if (!parse_num(optarg, 0, 1 << 20, &evict_mib)) {
                fprintf(stderr, "bench_zero: --evict wants MiB in 0..1048576, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            thp = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_zero: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0) {
            perror("bench_zero: sched_setaffinity");
            return 1;
        }
    }

    size_t len = (size_t)size_mib << 20, npages = len / PAGE;
    /* Small buffers are scanned several times per run so that a run lasts
     * long enough to time; passes after the first hit the caches, which is
     * what a small --size is for (the speed of the code, not of memory). */
    int passes = size_mib >= 256 ? 1 : (int)((256 + size_mib - 1) / size_mib);
    uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("bench_zero: mmap");
        return 1;
    }
    if (madvise(buf, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0 && thp)
        perror("bench_zero: madvise(MADV_HUGEPAGE), continuing without");
    memset(buf, 0, len); /* pre-fault: the scan must not measure page faults */
    size_t evict_len = (size_t)evict_mib << 20;
    uint8_t *evict = NULL;
    if (evict_len) {
        evict = mmap(NULL, evict_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (evict == MAP_FAILED) {
            perror("bench_zero: mmap (eviction buffer)");
            return 1;
        }
        memset(evict, 0x5a, evict_len);
    }
    volatile uint64_t sink = 0;

    /* The rows. */
    row rows[16];
    int nrows = 0;
    unsigned have = vmig_cpu_features();
    rows[nrows++] = (row){"stream", NULL, NULL};
    for (const vmig_zero_impl *im = vmig_zero_impls; im->name; im++)
        if ((im->need & have) == im->need)
            rows[nrows++] = (row){im->name, im->fn, NULL};
    rows[nrows++] = (row){"vmig_is_zero", vmig_is_zero, NULL};
    int isal_row = -1;
#if VMIG_HAVE_ISAL
    isal_row = nrows;
    rows[nrows++] = (row){"isal", isal_is_zero, NULL};
#endif
    for (int i = 0; i < nrows; i++) {
        rows[i].secs = calloc((size_t)reps, sizeof(double));
        if (!rows[i].secs) {
            fprintf(stderr, "bench_zero: out of memory\n");
            return 1;
        }
    }

    printf("bench_zero: %ld MiB buffer (%zu pages of 4 KiB, %s), %d pass(es) per run, "
           "%ld reps (median), %ld MiB evicted before each run, best impl %s, ISA-L %s\n",
           size_mib, npages, thp ? "THP requested" : "4 KiB mappings", passes, reps, evict_mib,
           vmig_zero_best()->name, VMIG_HAVE_ISAL ? "built" : "not built");

    static const char *const pattern_names[] = {
        "zero pages (full scan)",
        "first byte non-zero (early exit)",
        "last byte non-zero (full scan)",
    };
    int status = 0;
    for (int pat = 0; pat < 3; pat++) {
        if (pat > 0) {
            memset(buf, 0, len);
            size_t at = pat == 1 ? 0 : PAGE - 1;
            for (size_t i = 0; i < npages; i++)
                buf[i * PAGE + at] = 1;
        }
        size_t want_nz = pat == 0 ? 0 : npages;

        /* One untimed pass to settle the TLB and the CPU clock. */
        size_t nz;
        run(&rows[1], buf, npages, passes, &nz);
        for (long r = 0; r < reps; r++) {
            for (int k = 0; k < nrows; k++) {
                int i = (int)((k + r) % nrows);
                if (evict) {
                    sink += stream_read(buf, len);
                    sink += stream_read(evict, evict_len);
                }
                rows[i].secs[r] = run(&rows[i], buf, npages, passes, &nz);
                size_t want = rows[i].fn ? want_nz : (want_nz ? 1 : 0);
                if (nz != want) {
                    fprintf(stderr, "bench_zero: %s found %zu non-zero pages, expected %zu\n",
                            rows[i].name, nz, want);
                    status = 1;
                }
            }
        }

        double isal_s = isal_row >= 0 ? median(rows[isal_row].secs, (int)reps) : 0;
        printf("\n%s\n", pattern_names[pat]);
        printf("  %-14s %9s %13s %9s %9s\n", "impl", "GB/s", "Mpages/s", "ns/page", "vs isal");
        for (int i = 0; i < nrows; i++) {
            double s = median(rows[i].secs, (int)reps);
            double gbs = (double)len * passes / s * 1e-9;
            double mpps = (double)npages * passes / s * 1e-6;
            char ratio[16] = "-";
            if (isal_s > 0)
                snprintf(ratio, sizeof(ratio), "%.2fx", isal_s / s);
            printf("  %-14s %9.2f %13.2f %9.1f %9s%s\n", rows[i].name, gbs, mpps,
                   s * 1e9 / ((double)npages * passes), ratio,
                   rows[i].fn ? "" : "  (ceiling: one read of the whole buffer)");
        }
    }

    for (int i = 0; i < nrows; i++)
        free(rows[i].secs);
    munmap(buf, len);
    if (evict)
        munmap(evict, evict_len);
    (void)sink;
    return status;
}
