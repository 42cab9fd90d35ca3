/*
 * bench_fault: what does it cost to write into fresh (never touched)
 * destination memory, and which way of populating it is cheapest?
 *
 * A migration destination receives into memory that has never been touched;
 * every first write takes a page fault. This program measures, for the same
 * pattern a receiver sees (runs of 16 pages, every other run), the wall and
 * CPU time of:
 *   fault     one store per page (what a plain read() into the mapping does)
 *   populate  MADV_POPULATE_WRITE per run (what vmig's prefault=ahead does)
 * with 1 and 2 threads, on a MAP_SHARED file in /dev/shm (the benchmark's
 * destination) and on anonymous memory, 4 KiB pages or MADV_HUGEPAGE.
 * Each case uses memory never touched by this process; let the machine idle
 * between cold runs (--sleep) because freed memory is returned to the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define RUN_PAGES 16

typedef struct job {
    uint8_t *base;
    size_t len;
    int nthreads, id;
    bool populate;
} job;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + (double)r.ru_utime.tv_usec * 1e-6 +
           (double)r.ru_stime.tv_sec + (double)r.ru_stime.tv_usec * 1e-6;
}

static void *worker(void *p)
{
    job *j = p;
    size_t run = RUN_PAGES * 4096;
    for (size_t off = (size_t)j->id * 2 * run; off + run <= j->len;
         off += 2 * run * (size_t)j->nthreads) {
        if (j->populate) {
            if (madvise(j->base + off, run, MADV_POPULATE_WRITE) < 0) {
                perror("madvise(MADV_POPULATE_WRITE)");
                exit(1);
            }
        } else {
            for (size_t pg = 0; pg < run; pg += 4096)
                j->base[off + pg] = 1;
        }
    }
    return NULL;
}

static void one(const char *mem, bool huge, bool populate, int nthreads, size_t len)
{
    char path[64] = "";
    int fd = -1;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (!strcmp(mem, "shm")) {
        snprintf(path, sizeof(path), "/dev/shm/vmig-bench-fault-%d", (int)getpid());
        fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)len) < 0) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            exit(1);
        }
        flags = MAP_SHARED;
    }
    uint8_t *base = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    if (huge && madvise(base, len, MADV_HUGEPAGE) < 0)
        fprintf(stderr, "note: MADV_HUGEPAGE refused here: %s\n", strerror(errno));
    job jobs[8];
    pthread_t t[8];
    double w0 = now(), c0 = cpu();
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (job){base, len, nthreads, i, populate};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    double wall = now() - w0, cpus = cpu() - c0;
    double gib = (double)len / 2 / (1 << 30);
    printf("%-4s %-5s %-9s %d thread%s  %6.3f s wall  %6.3f s CPU  %5.2f us CPU/page  "
           "%5.2f GiB/s\n",
           mem, huge ? "huge" : "4k", populate ? "populate" : "fault", nthreads,
           nthreads > 1 ? "s" : " ", wall, cpus, cpus * 1e6 / (gib * 262144), gib / wall);
    fflush(stdout);
    munmap(base, len);
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
}

int main(int argc, char **argv)
{
    size_t mib = 2048;
    int sleep_s = 20;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            mib = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--sleep") && i + 1 < argc) {
            sleep_s = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--case") && i + 1 < argc) {
            only = argv[++i];
        } else {
            printf("Usage: bench_fault [--size MiB] [--sleep SECONDS] [--case NAME]\n"
                   "Touches half of SIZE MiB (default 2048) of fresh memory in runs of 16\n"
                   "pages, once per method, idling SECONDS (default 20) before each case.\n"
                   "--case runs one case only: MEM-METHOD-THREADS[-huge], e.g.\n"
                   "shm-populate-2 (a benchmark's first-touch floor), anon-fault-1.\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    size_t len = mib << 20;
    static const struct {
        const char *mem;
        bool huge, populate;
        int threads;
    } cases[] = {
        {"shm", false, false, 1}, {"shm", false, true, 1},  {"shm", false, false, 2},
        {"shm", false, true, 2},  {"anon", false, true, 2}, {"anon", true, true, 2},
    };
    printf("# first write to %zu MiB of never-touched memory (half of %zu MiB)\n", mib / 2, mib);
    bool found = !only;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s-%s-%d%s", cases[i].mem,
                 cases[i].populate ? "populate" : "fault", cases[i].threads,
                 cases[i].huge ? "-huge" : "");
        if (only && strcmp(only, name))
            continue;
        found = true;
        sleep((unsigned)sleep_s);
        one(cases[i].mem, cases[i].huge, cases[i].populate, cases[i].threads, len);
    }
    if (!found) {
        fprintf(stderr, "bench_fault: no case '%s' (see --help)\n", only);
        return 2;
    }
    return 0;
}
