/*
 * The standard content mix: a deterministic memory image that every vmig
 * benchmark, the 'vmig bench' command, the plain reference pair and the tests
 * share, so that numbers are comparable across runs and tools.
 *
 * The image is a sequence of 4 KiB pages grouped in runs. Runs are planned
 * sequentially from one 64-bit seed:
 *
 *   budget[c]  = pages of class c, fixed by the percentages (each within one
 *                page of pct[c] * npages / 100, the three summing to npages)
 *   repeat until every budget is spent:
 *     class    = drawn in proportion to what REMAINS of each budget
 *     length   = uniform 1..31 pages, capped to what remains of that class
 *
 *   page index:  0    3         9  10        17 ...
 *                |ZZZ|TTTTTT|R|ZZZZZZZ|RRR ...      Z zero, T text, R random
 *
 * Page content depends only on (seed, page index, class), never on the plan
 * of other pages or on the number of threads:
 *   zero    all zero bytes
 *   text    English-like words, punctuation, newlines and decimal numbers from
 *           a fixed vocabulary (zstd -1 compresses it about 3x); never all zero
 *   random  xoshiro256** output; never all zero
 *
 * Dependencies: libc and pthreads only (this is a data generator, not part of
 * libvmig). Errors are returned as negative errno values (-EINVAL, -ENOMEM).
 * No global state: two plans may be used from any number of threads at once.
 */
#ifndef VMIG_BENCH_MIX_H
#define VMIG_BENCH_MIX_H

#include <stddef.h>
#include <stdint.h>

#define VMIG_MIX_PAGE_SIZE 4096u /* the only supported page size */
#define VMIG_MIX_RUN_MAX   31u   /* run lengths are uniform in 1..VMIG_MIX_RUN_MAX */

enum vmig_mix_class {
    VMIG_MIX_ZERO = 0,
    VMIG_MIX_TEXT = 1,
    VMIG_MIX_RANDOM = 2,
};
#define VMIG_MIX_NCLASSES 3

/* Flags for the fill functions. */
#define VMIG_MIX_WRITE_ZEROS                                                                       \
    1u /* also write zero pages; without it they are left untouched                                \
          (for buffers already known to be zero, e.g. fresh mmap) */

struct vmig_mix_params {
    uint64_t seed;                   /* default 1 */
    unsigned pct[VMIG_MIX_NCLASSES]; /* percent of pages per class, indexed by
                                        enum vmig_mix_class; default 50/25/25 */
    unsigned page_size;              /* must be VMIG_MIX_PAGE_SIZE */
};

/* One planned run: pages [first_page, first_page + npages) of one class. */
struct vmig_mix_run {
    uint64_t first_page;
    uint32_t npages; /* 1..VMIG_MIX_RUN_MAX */
    uint32_t cls;    /* enum vmig_mix_class */
};

/* The run plan of one image (opaque; immutable once created, so it may be
 * shared by any number of threads). */
struct vmig_mix_plan;

/* Sets *p to the defaults: seed 1, 50 % zero, 25 % text, 25 % random, 4 KiB. */
void vmig_mix_params_default(struct vmig_mix_params *p);

/*
 * Checks p. Returns NULL when it is valid; otherwise a sentence naming what is
 * wrong ("mix percentages 50+25+30 sum to 105, not 100"), written to msg
 * (msglen bytes, NUL-terminated) and returned; when msg is NULL or msglen is 0
 * a fixed sentence without the values is returned instead.
 */
const char *vmig_mix_params_check(const struct vmig_mix_params *p, char *msg, size_t msglen);

/*
 * Parses "Z/T/R" (e.g. "50/25/25": zero, text, random percentages) into
 * p->pct. Returns 0, or -EINVAL (p unchanged) if the text is malformed or the
 * values do not sum to 100.
 */
int vmig_mix_params_parse_pct(struct vmig_mix_params *p, const char *text);

/* Short name of a class: "zero", "text", "random" ("?" if out of range). */
const char *vmig_mix_class_name(enum vmig_mix_class c);

/*
 * Page budgets of an image of npages pages: counts[c] is the number of pages
 * of class c (cumulative rounding, so each is within one page of the exact
 * share and they sum to npages). Equals what a plan of that size contains.
 * p must be valid.
 */
void vmig_mix_counts(const struct vmig_mix_params *p, uint64_t npages,
                     uint64_t counts[VMIG_MIX_NCLASSES]);

/*
 * Plans the runs of an image of npages pages (cheap: about npages / 16 runs,
 * 16 bytes each). Returns 0 and *out, or -EINVAL (invalid p) or -ENOMEM.
 * npages may be 0. Free with vmig_mix_plan_free().
 */
int vmig_mix_plan_create(const struct vmig_mix_params *p, uint64_t npages,
                         struct vmig_mix_plan **out);

/* Frees a plan; NULL is a no-op. */
void vmig_mix_plan_free(struct vmig_mix_plan *plan);

/* Number of pages of the planned image. */
uint64_t vmig_mix_plan_pages(const struct vmig_mix_plan *plan);

/* The runs in page order (*nruns of them; they tile [0, npages) exactly). */
const struct vmig_mix_run *vmig_mix_plan_runs(const struct vmig_mix_plan *plan, size_t *nruns);

/* Class of page `page` (< vmig_mix_plan_pages()); O(log runs). */
enum vmig_mix_class vmig_mix_plan_class(const struct vmig_mix_plan *plan, uint64_t page);

/* Pages per class in the plan (always equal to vmig_mix_counts()). */
void vmig_mix_plan_counts(const struct vmig_mix_plan *plan, uint64_t counts[VMIG_MIX_NCLASSES]);

/*
 * Fills buf with pages [first_page, first_page + npages) of the planned image
 * (buf receives page first_page at offset 0; npages * 4096 bytes), using
 * nthreads threads (0: one per online CPU; capped so each has at least 256
 * pages; the caller's thread is one of them). Zero pages are written only
 * with VMIG_MIX_WRITE_ZEROS. The bytes do not depend on nthreads or on how the
 * image is cut into windows, so a receiver can regenerate any part of it to
 * compare. Returns 0, or -EINVAL (range beyond the plan, unknown flags). A
 * thread that cannot be created only costs speed: the others do its share.
 */
int vmig_mix_plan_fill(const struct vmig_mix_plan *plan, void *buf, uint64_t first_page,
                       uint64_t npages, unsigned nthreads, unsigned flags);

/*
 * One-shot: plans an image of len bytes (a multiple of 4096) with p and fills
 * buf with it as vmig_mix_plan_fill() does. Returns 0, -EINVAL or -ENOMEM.
 */
int vmig_mix_fill(const struct vmig_mix_params *p, void *buf, size_t len, unsigned nthreads,
                  unsigned flags);

/*
 * Writes the 4096 bytes page `page` has in any image with seed `seed` when it
 * is of class c (zero pages are written as zeros). Single-threaded; the
 * building block of the fill functions.
 */
void vmig_mix_page_fill(uint64_t seed, enum vmig_mix_class c, uint64_t page, void *dst);

#endif
