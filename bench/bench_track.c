/*
 * bench_track: what the built-in dirty tracker costs the VM. Writer threads
 * (bench/live.h) dirty a hot set while the tracker is synced every
 * --sync-ms, as a migration does between passes; the writers' throughput
 * and CPU with tracking off are the reference, measured in the same run.
 *
 *   bench_track [--size 512M] [--writers 2] [--seconds 2] [--sync-ms 100]
 *               [--rate BYTES_PER_S] [--runs 3]
 *
 * --rate 0 (default): writers as fast as they can, so every first write to
 * a page after a sync pays the tracker's fault; the ratio is the worst
 * case. With a rate (e.g. 100000000), the rate holds and the figure is the
 * CPU the writers spend per MB dirtied.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "live.h"
#include "ram/dirty.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

typedef struct result {
    double writes_per_s, mbps, cpu_per_gb, syncs_ms;
    uint64_t dirty_per_sync;
} result;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* mode: 0 off, 1 async, 2 sync */
static int run(int mode, uint64_t size, unsigned writers, double seconds, unsigned sync_ms,
               uint64_t rate, result *r)
{
    uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    memset(mem, 1, size); /* a VM's RAM is populated */
    vmig_tracker *t = NULL;
    vmig_error e = {0};
    uint64_t npages = size / 4096;
    uint64_t *bm = calloc((npages + 63) / 64, 8);
    if (!bm)
        return -ENOMEM;
    if (mode) {
        if (vmig_tracker_create(&t, mode == 1 ? VMIG_TRACKER_WP_ASYNC : VMIG_TRACKER_WP_SYNC, &e) ||
            vmig_tracker_add(t, mem, size, 4096, &e) < 0 || vmig_tracker_start(t, &e)) {
            fprintf(stderr, "bench_track: %s\n", e.msg);
            vmig_tracker_free(t);
            munmap(mem, size);
            free(bm);
            return -ENOTSUP;
        }
    }
    struct vmig_live_params lp;
    vmig_live_params_default(&lp);
    lp.writers = writers;
    lp.rate = rate;
    vmig_live *l;
    int rc = vmig_live_create(&l, mem, size, &lp, true);
    if (rc)
        return rc;
    struct vmig_live_stats s0, s1;
    vmig_live_stats(l, &s0);
    double c0 = cpu_s(), t0 = now_s(), sync_total = 0;
    uint64_t dirty = 0, syncs = 0;
    vmig_live_resume(l);
    while (now_s() - t0 < seconds) {
        struct timespec ts = {0, (long)sync_ms * 1000000L};
        nanosleep(&ts, NULL);
        if (t) {
            double a = now_s();
            memset(bm, 0, (npages + 63) / 64 * 8);
            uint64_t n = 0;
            if (vmig_tracker_sync(t, 0, bm, &n, &e)) {
                fprintf(stderr, "bench_track: %s\n", e.msg);
                break;
            }
            sync_total += now_s() - a;
            dirty += n;
            syncs++;
        }
    }
    vmig_live_pause(l);
    double c1 = cpu_s();
    vmig_live_stats(l, &s1);
    /* The migration thread's sync time is in the process CPU too; the
     * writers' share is what is left. */
    double wsecs = (double)(s1.run_ns - s0.run_ns) / 1e9;
    r->writes_per_s = wsecs > 0 ? (double)(s1.writes - s0.writes) / wsecs : 0;
    r->mbps = wsecs > 0 ? (double)(s1.bytes - s0.bytes) / wsecs / 1e6 : 0;
    r->cpu_per_gb = (c1 - c0 - sync_total) / ((double)(s1.bytes - s0.bytes) / 1e9);
    r->syncs_ms = syncs ? sync_total / (double)syncs * 1e3 : 0;
    r->dirty_per_sync = syncs ? dirty / syncs : 0;
    vmig_live_free(l);
    vmig_tracker_free(t);
    munmap(mem, size);
    free(bm);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t size = 512ull << 20, rate = 0;
    unsigned writers = 2, sync_ms = 100, runs = 3;
    double seconds = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_track: %s needs a value (see the comment at the top)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--size") && vmig_parse_size(v, &size)) {
            fprintf(stderr, "bench_track: bad --size '%s'\n", v);
            return 2;
        } else if (!strcmp(a, "--size"))
            continue;
        else if (!strcmp(a, "--writers"))
            writers = (unsigned)atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--sync-ms"))
            sync_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--rate"))
            rate = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--runs"))
            runs = (unsigned)atoi(v);
        else {
            fprintf(stderr, "bench_track: unknown option %s\n", a);
            return 2;
        }
    }
    if (!size || size % 4096 || !writers || !sync_ms || !runs || runs > 15) {
        fprintf(stderr, "bench_track: bad arguments\n");
        return 2;
    }
    static const char *const names[] = {"off", "wp-async", "wp-sync"};
    printf("bench_track: %u writers, %llu MiB hot set, rate %s, a sync every %u ms, %u runs of "
           "%.1f s (medians)\n",
           writers, (unsigned long long)(size >> 20), rate ? "limited" : "unlimited", sync_ms, runs,
           seconds);
    printf("%-9s %14s %10s %12s %12s %14s %10s\n", "tracker", "writes/s", "vs off", "MB/s",
           "CPU s/GB", "pages/sync", "sync ms");
    double ref = 0;
    for (int m = 0; m < 3; m++) {
        double w[15], mb[15], cpu[15], sy[15], dp[15];
        unsigned ok = 0;
        for (unsigned k = 0; k < runs; k++) {
            result r;
            int rc = run(m, size, writers, seconds, sync_ms, rate, &r);
            if (rc == -ENOTSUP)
                break;
            if (rc) {
                fprintf(stderr, "bench_track: %s\n", strerror(-rc));
                return 1;
            }
            w[ok] = r.writes_per_s;
            mb[ok] = r.mbps;
            cpu[ok] = r.cpu_per_gb;
            sy[ok] = r.syncs_ms;
            dp[ok] = (double)r.dirty_per_sync;
            ok++;
        }
        if (!ok) {
            printf("%-9s not available here\n", names[m]);
            continue;
        }
        qsort(w, ok, sizeof(double), cmp_double);
        qsort(mb, ok, sizeof(double), cmp_double);
        qsort(cpu, ok, sizeof(double), cmp_double);
        qsort(sy, ok, sizeof(double), cmp_double);
        qsort(dp, ok, sizeof(double), cmp_double);
        double med = w[ok / 2];
        if (m == 0)
            ref = med;
        printf("%-9s %14.0f %9.3fx %12.1f %12.3f %14.0f %10.2f\n", names[m], med,
               ref ? med / ref : 0, mb[ok / 2], cpu[ok / 2], dp[ok / 2], sy[ok / 2]);
    }
    return 0;
}
