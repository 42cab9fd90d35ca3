/*
 * bench_codec: single-threaded throughput of every built page codec on the
 * standard content mix, as one channel thread of a migration runs it.
 *
 * For each content kind
 *   text      English-like text pages of the mix (zstd -1 about 3x)
 *   random    random pages of the mix (nothing shrinks them)
 *   mix       the normal pages of the standard 50/25/25 image in plan order,
 *             zero pages removed as the core removes them (so half text, half
 *             random, in runs of 1..31 pages)
 * a working set of --size MiB is cut into packets of --packet pages. Each run
 * encodes every packet with one fresh encoder context (stream codecs carry
 * their state from packet to packet, as on a channel), then decodes them in
 * order with one fresh decoder context into a separate buffer; the first run
 * checks the decoded bytes. Context creation is not timed. The reference is a
 * plain memcpy of the same packets in the same run. Runs are interleaved (run
 * 1 of every row, then run 2, ...) so that a noisy neighbour hurts every row
 * alike; --stat picks the median (default) or the best run.
 *
 * Figures: encode MB/s of input (1e6 bytes of pages per second), decode MB/s
 * of output, ratio = payload bytes / page bytes, and both speeds as a
 * fraction of memcpy's. Extra rows: deflate-page's cost on random pages as a
 * fraction of its cost on text pages (the incompressibility probe's goal:
 * under 10%), the cost of VMIG_ENC_VOLATILE for zstd, lz4 and deflate-page
 * (encode with the flag against without, on the mix), and with ISA-L a
 * breakdown of deflate-page's software compressor: ISA-L variants on the
 * text pages, called directly, to show where the time goes.
 */
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "vmig_config.h"
#include "mix.h"
#include "src/codec/codec.h"

#if VMIG_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define PS 4096u

enum { K_TEXT, K_RANDOM, K_MIX, NKINDS };
static const char *const kind_names[NKINDS] = {"text", "random", "mix"};

/* Goals of the deflate-page issue, checked and reported (never enforced). */
#define GOAL_DP_TEXT_MBPS   1000.0
#define GOAL_DP_RANDOM_COST 0.10

typedef struct opts {
    long size_mib, runs, packet, cpu;
    bool json, best, detail;
} opts;

typedef struct samples {
    double *v; /* seconds, one per run */
} samples;

typedef struct row {
    const vmig_codec_ops *ops;
    uint32_t level;
    unsigned flags; /* VMIG_ENC_VOLATILE for the volatile rows */
    int kind;
    samples enc, dec;
    uint64_t out_bytes;
    uint64_t raw_pages; /* deflate-page: pages sent raw (from the length tables) */
    char desc[96];      /* deflate-page's describe(), "" for the others */
    bool verified;
} row;

/* ------------------------------------------------------------------ utils */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pick(const samples *s, long n, bool best)
{
    double tmp[n];
    memcpy(tmp, s->v, sizeof(tmp));
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    if (best)
        return tmp[0];
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

/* The encode time of the row without VMIG_ENC_VOLATILE (among the first
 * `nplain` rows) that a VOLATILE row is compared with; 0 if none. */
static double plain_enc(const row *rows, int nplain, const row *r, long runs, bool best)
{
    for (int j = 0; j < nplain; j++)
        if (rows[j].ops == r->ops && rows[j].kind == r->kind)
            return pick(&rows[j].enc, runs, best);
    return 0;
}

static void *xmap(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("bench_codec: mmap");
        exit(1);
    }
    memset(p, 0, len); /* pre-fault: the runs must not measure page faults */
    return p;
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

/* Fills npages pages of kind k at buf. */
static void fill_kind(int k, uint8_t *buf, uint64_t npages)
{
    if (k != K_MIX) {
        enum vmig_mix_class c = k == K_TEXT ? VMIG_MIX_TEXT : VMIG_MIX_RANDOM;
        for (uint64_t i = 0; i < npages; i++)
            vmig_mix_page_fill(1, c, i, buf + i * PS);
        return;
    }
    struct vmig_mix_params p;
    vmig_mix_params_default(&p);
    struct vmig_mix_plan *plan = NULL;
    /* Half of the standard image is zero pages: plan twice the pages (plus
     * margin for rounding) and keep the normal ones in order. */
    uint64_t planned = 2 * npages + 64;
    if (vmig_mix_plan_create(&p, planned, &plan)) {
        fprintf(stderr, "bench_codec: cannot plan the mix\n");
        exit(1);
    }
    uint64_t got = 0;
    for (uint64_t i = 0; i < planned && got < npages; i++) {
        enum vmig_mix_class c = vmig_mix_plan_class(plan, i);
        if (c != VMIG_MIX_ZERO)
            vmig_mix_page_fill(p.seed, c, i, buf + got++ * PS);
    }
    vmig_mix_plan_free(plan);
    if (got < npages) {
        fprintf(stderr, "bench_codec: the mix plan ran short\n");
        exit(1);
    }
}

/* ------------------------------------------------------------------ runs */

typedef struct world {
    uint64_t npages, npackets;
    uint32_t packet;
    uint8_t *src, *dst;
    uint8_t *payload; /* npackets * slot */
    size_t slot;      /* bytes reserved per packet's payload */
    size_t *plen;     /* [npackets] */
    uint8_t **pages;  /* [packet] */
} world;

static uint32_t packet_pages(const world *w, uint64_t p)
{
    uint64_t left = w->npages - p * w->packet;
    return (uint32_t)(left < w->packet ? left : w->packet);
}

static double time_memcpy(world *w)
{
    uint64_t t0 = vmig_now_ns();
    for (uint64_t p = 0; p < w->npackets; p++) {
        size_t off = (size_t)(p * w->packet) * PS;
        memcpy(w->dst + off, w->src + off, (size_t)packet_pages(w, p) * PS);
    }
    return (double)(vmig_now_ns() - t0) * 1e-9;
}

/* One run of a row: encode then decode the whole working set. */
static int run_row(world *w, row *r, long run, bool check)
{
    vmig_codec_cfg cfg = {.level = r->level,
                          .max_pages = w->packet,
                          .max_page_size = PS,
                          .deflate_path = VMIG_DEFLATE_PATH_AUTO};
    vmig_error err = {0};
    void *enc = NULL, *dec = NULL;
    if (r->ops->enc_create(&cfg, &enc, &err)) {
        fprintf(stderr, "bench_codec: %s: %s\n", r->ops->name, err.msg);
        return -1;
    }
    if (!r->desc[0] && r->ops->describe && r->ops->describe(enc))
        snprintf(r->desc, sizeof(r->desc), "%s", r->ops->describe(enc));
    uint64_t out = 0, t0 = vmig_now_ns();
    for (uint64_t p = 0; p < w->npackets; p++) {
        uint32_t n = packet_pages(w, p);
        for (uint32_t i = 0; i < n; i++)
            w->pages[i] = w->src + (size_t)(p * w->packet + i) * PS;
        size_t len = 0;
        if (r->ops->encode(enc, w->pages, n, PS, r->flags, w->payload + p * w->slot, w->slot, &len,
                           &err)) {
            fprintf(stderr, "bench_codec: %s encode: %s\n", r->ops->name, err.msg);
            r->ops->enc_free(enc);
            return -1;
        }
        w->plen[p] = len;
        out += len;
    }
    r->enc.v[run] = (double)(vmig_now_ns() - t0) * 1e-9;
    r->ops->enc_free(enc);
    r->out_bytes = out;

    if (r->ops->id == VMIG_CODEC_DEFLATE_PAGE && check) {
        uint64_t raw = 0;
        for (uint64_t p = 0; p < w->npackets; p++)
            for (uint32_t i = 0; i < packet_pages(w, p); i++)
                raw += vmig_get_be32(w->payload + p * w->slot + 4ull * i) == PS;
        r->raw_pages = raw;
    }

    if (r->ops->dec_create(&cfg, &dec, &err)) {
        fprintf(stderr, "bench_codec: %s: %s\n", r->ops->name, err.msg);
        return -1;
    }
    if (check)
        memset(w->dst, 0xa5, (size_t)w->npages * PS);
    t0 = vmig_now_ns();
    for (uint64_t p = 0; p < w->npackets; p++) {
        uint32_t n = packet_pages(w, p);
        for (uint32_t i = 0; i < n; i++)
            w->pages[i] = w->dst + (size_t)(p * w->packet + i) * PS;
        if (r->ops->decode(dec, w->payload + p * w->slot, w->plen[p], w->pages, n, PS, &err)) {
            fprintf(stderr, "bench_codec: %s decode of packet %llu: %s\n", r->ops->name,
                    (unsigned long long)p, err.msg);
            r->ops->dec_free(dec);
            return -1;
        }
    }
    r->dec.v[run] = (double)(vmig_now_ns() - t0) * 1e-9;
    r->ops->dec_free(dec);
    if (check) {
        if (memcmp(w->src, w->dst, (size_t)w->npages * PS)) {
            fprintf(stderr, "bench_codec: %s on %s: decoded pages differ\n", r->ops->name,
                    kind_names[r->kind]);
            return -1;
        }
        r->verified = true;
    }
    return 0;
}

/* ------------------------------------------------------------------ ISA-L */

#if VMIG_HAVE_ISAL
typedef struct isal_variant {
    const char *name;
    int level;
    uint32_t level_buf; /* bytes; 0: none (ISA-L's internal buffer) */
    int hist_bits;
    int flush;
    int huff; /* -1: ISA-L's choice; else IGZIP_HUFFTABLE_* (level 0 only) */
    bool stateful;
    uint32_t chunk; /* input bytes per call (PS: per page) */
    samples s;
    uint64_t out;
} isal_variant;

static double isal_run(isal_variant *v, const uint8_t *src, uint64_t npages, uint8_t *lb,
                       struct isal_zstream *z, uint8_t *out, size_t out_cap)
{
    uint64_t total = npages * PS, o = 0;
    uint64_t t0 = vmig_now_ns();
    for (uint64_t off = 0; off < total; off += v->chunk) {
        uint32_t len = (uint32_t)(total - off < v->chunk ? total - off : v->chunk);
        if (v->stateful)
            isal_deflate_init(z);
        else
            isal_deflate_stateless_init(z);
        z->level = (uint32_t)v->level;
        z->level_buf = v->level_buf ? lb : NULL;
        z->level_buf_size = v->level_buf;
        z->hist_bits = (uint16_t)v->hist_bits;
        z->flush = (uint16_t)v->flush;
        z->end_of_stream = 1;
        z->gzip_flag = IGZIP_DEFLATE;
        if (v->huff >= 0)
            isal_deflate_set_hufftables(z, NULL, v->huff);
        z->next_in = (uint8_t *)src + off;
        z->avail_in = len;
        z->next_out = out;
        /* Per page: the codec's cap (page_size - 1); bigger calls: room. */
        z->avail_out = v->chunk == PS ? PS - 1 : (uint32_t)out_cap;
        int rc = v->stateful ? isal_deflate(z) : isal_deflate_stateless(z);
        bool done = v->stateful
                        ? rc == COMP_OK && z->avail_in == 0 && z->internal_state.state == ZSTATE_END
                        : rc == COMP_OK;
        o += done ? z->total_out : len;
    }
    v->out = o;
    return (double)(vmig_now_ns() - t0) * 1e-9;
}
#endif

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_codec [--size MiB] [--runs N] [--packet N] [--stat median|best]\n"
            "                   [--cpu N] [--no-detail] [--json] [--help]\n"
            "\n"
            "Single-threaded throughput of every page codec this build has (none, zlib -1,\n"
            "zstd -1, deflate-page, lz4), as one migration channel runs it: packets of\n"
            "--packet 4 KiB pages, one encoder context for the whole working set (stream\n"
            "codecs keep their state across packets), then one decoder context. The\n"
            "decoded pages are checked against the originals on the first run.\n"
            "\n"
            "Content (the standard mix of bench/mix.h, seed 1):\n"
            "  text     English-like text pages\n"
            "  random   random pages\n"
            "  mix      the normal pages of the 50/25/25 image in plan order (zero pages\n"
            "           removed, as the core does before a codec sees a packet)\n"
            "\n"
            "Options:\n"
            "  --size MiB     working set per content kind (default 64)\n"
            "  --runs N       runs per row, interleaved across rows (default 3)\n"
            "  --packet N     pages per packet, 1..1024 (default 128, vmig's default)\n"
            "  --stat S       'median' (default) or 'best' of the runs\n"
            "  --cpu N        pin the thread to CPU N (default: not pinned)\n"
            "  --no-detail    skip the ISA-L breakdown of deflate-page's software path\n"
            "  --json         one JSON object on stdout instead of the tables\n"
            "  --help         this text\n"
            "\n"
            "Columns: enc MB/s = 1e6 bytes of pages compressed per second; dec MB/s =\n"
            "1e6 bytes of pages produced per second; 'x memcpy' = that speed divided by\n"
            "a plain memcpy of the same packets in the same run; ratio = payload bytes /\n"
            "page bytes (1.000 for none; above 1 is expansion).\n"
            "\n"
            "Extra rows: deflate-page's encode cost on random pages as a fraction of its\n"
            "cost on text pages (goal: under %.0f%%), the cost of VMIG_ENC_VOLATILE for\n"
            "zstd, lz4 and deflate-page on the mix (encode with the flag vs without), and,\n"
            "with ISA-L, deflate-page's software compressor taken apart: ISA-L variants\n"
            "(level, level buffer, window, flush, stateful, call size, Huffman table) on\n"
            "the text pages. deflate-page's goal on text pages is %.0f MB/s of input per\n"
            "core; the tables say whether this machine met it.\n"
            "\n"
            "Exit status: 0, or 1 when a codec failed or decoded wrong bytes, 2 for bad\n"
            "usage.\n",
            GOAL_DP_RANDOM_COST * 100, GOAL_DP_TEXT_MBPS);
}

int main(int argc, char **argv)
{
    opts o = {.size_mib = 64, .runs = 3, .packet = 128, .cpu = -1, .detail = true};
    static const struct option lopts[] = {
        {"size", required_argument, NULL, 's'},
        {"runs", required_argument, NULL, 'r'},
        {"packet", required_argument, NULL, 'p'},
        {"stat", required_argument, NULL, 'S'},
        {"cpu", required_argument, NULL, 'c'},
        {"no-detail", no_argument, NULL, 'D'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (!parse_num(optarg, 1, 1 << 16, &o.size_mib)) {
                fprintf(stderr, "bench_codec: --size wants MiB in 1..65536, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'r':
            if (!parse_num(optarg, 1, 1000, &o.runs)) {
                fprintf(stderr, "bench_codec: --runs wants 1..1000, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'p':
            if (!parse_num(optarg, 1, 1024, &o.packet)) {
                fprintf(stderr, "bench_codec: --packet wants 1..1024, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'S':
            if (strcmp(optarg, "median") && strcmp(optarg, "best")) {
                fprintf(stderr, "bench_codec: --stat wants median or best, got '%s'\n", optarg);
                return 2;
            }
            o.best = !strcmp(optarg, "best");
            break;
        case 'c':
            if (!parse_num(optarg, 0, CPU_SETSIZE - 1, &o.cpu)) {
                fprintf(stderr, "bench_codec: --cpu wants a CPU number, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'D':
            o.detail = false;
            break;
        case 'j':
            o.json = true;
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
        fprintf(stderr, "bench_codec: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)o.cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0) {
            perror("bench_codec: sched_setaffinity");
            return 1;
        }
    }

    /* The rows: every built codec on every kind, then the volatile rows. */
    static const uint32_t codec_order[] = {VMIG_CODEC_NONE, VMIG_CODEC_ZLIB, VMIG_CODEC_ZSTD,
                                           VMIG_CODEC_DEFLATE_PAGE, VMIG_CODEC_LZ4};
    row rows[64];
    int nrows = 0;
    const char *skipped[VMIG_CODEC_COUNT] = {0};
    for (int k = 0; k < NKINDS; k++)
        for (unsigned c = 0; c < VMIG_ARRAY_SIZE(codec_order); c++) {
            const vmig_codec_ops *ops = vmig_codec_get(codec_order[c]);
            if (ops->missing) {
                skipped[ops->id] = ops->missing;
                continue;
            }
            rows[nrows++] = (row){.ops = ops, .level = 1, .kind = k};
        }
    int first_volatile = nrows;
    static const uint32_t vol_codecs[] = {VMIG_CODEC_ZSTD, VMIG_CODEC_DEFLATE_PAGE, VMIG_CODEC_LZ4};
    for (unsigned c = 0; c < VMIG_ARRAY_SIZE(vol_codecs); c++) {
        const vmig_codec_ops *ops = vmig_codec_get(vol_codecs[c]);
        if (!ops->missing)
            rows[nrows++] =
                (row){.ops = ops, .level = 1, .kind = K_MIX, .flags = VMIG_ENC_VOLATILE};
    }
    for (int i = 0; i < nrows; i++) {
        rows[i].enc.v = calloc((size_t)o.runs, sizeof(double));
        rows[i].dec.v = calloc((size_t)o.runs, sizeof(double));
        if (!rows[i].enc.v || !rows[i].dec.v) {
            fprintf(stderr, "bench_codec: out of memory\n");
            return 1;
        }
    }

    world w = {.packet = (uint32_t)o.packet};
    w.npages = ((uint64_t)o.size_mib << 20) / PS;
    w.npackets = (w.npages + w.packet - 1) / w.packet;
    w.slot = 0;
    for (unsigned c = 0; c < VMIG_ARRAY_SIZE(codec_order); c++) {
        const vmig_codec_ops *ops = vmig_codec_get(codec_order[c]);
        if (!ops->missing && ops->bound(w.packet, PS) > w.slot)
            w.slot = ops->bound(w.packet, PS);
    }
    w.slot = (w.slot + 63) & ~(size_t)63;
    w.src = xmap((size_t)w.npages * PS);
    w.dst = xmap((size_t)w.npages * PS);
    w.payload = xmap(w.slot * w.npackets);
    w.plen = calloc(w.npackets, sizeof(*w.plen));
    w.pages = calloc(w.packet, sizeof(*w.pages));
    samples mc[NKINDS];
    for (int k = 0; k < NKINDS; k++)
        mc[k].v = calloc((size_t)o.runs, sizeof(double));
    if (!w.plen || !w.pages || !mc[0].v || !mc[1].v || !mc[2].v) {
        fprintf(stderr, "bench_codec: out of memory\n");
        return 1;
    }

    int status = 0;
    const double bytes = (double)w.npages * PS;
    for (int k = 0; k < NKINDS; k++) {
        fill_kind(k, w.src, w.npages);
        time_memcpy(&w); /* settle the TLB and the clock */
        int kr[64], nk = 0;
        for (int i = 0; i < nrows; i++)
            if (rows[i].kind == k)
                kr[nk++] = i;
        for (long r = 0; r < o.runs; r++) {
            mc[k].v[r] = time_memcpy(&w);
            for (int j = 0; j < nk; j++) {
                row *rw = &rows[kr[(j + r) % nk]];
                if (run_row(&w, rw, r, r == 0))
                    status = 1;
            }
        }
    }

#if VMIG_HAVE_ISAL
    /* deflate-page's software compressor taken apart, on the text pages. */
    isal_variant iv[] = {
        {"level 1, per page, hist_bits 12, level_buf DEFAULT (the codec)", 1, ISAL_DEF_LVL1_DEFAULT,
         12, NO_FLUSH, -1, false, PS},
        {"level 1, per page, level_buf SMALL", 1, ISAL_DEF_LVL1_SMALL, 12, NO_FLUSH, -1, false, PS},
        {"level 1, per page, level_buf MIN", 1, ISAL_DEF_LVL1_MIN, 12, NO_FLUSH, -1, false, PS},
        {"level 1, per page, hist_bits 15", 1, ISAL_DEF_LVL1_DEFAULT, 15, NO_FLUSH, -1, false, PS},
        {"level 1, per page, FULL_FLUSH", 1, ISAL_DEF_LVL1_DEFAULT, 12, FULL_FLUSH, -1, false, PS},
        {"level 1, per page, stateful isal_deflate", 1, ISAL_DEF_LVL1_DEFAULT, 12, NO_FLUSH, -1,
         true, PS},
        {"level 1, 1 MiB per call (no per-page cost; not the format)", 1, ISAL_DEF_LVL1_DEFAULT, 12,
         NO_FLUSH, -1, false, 1u << 20},
        {"level 0, per page, ISA-L's default Huffman table", 0, 0, 12, NO_FLUSH,
         IGZIP_HUFFTABLE_DEFAULT, false, PS},
        {"level 0, per page, deflate's static Huffman table", 0, 0, 12, NO_FLUSH,
         IGZIP_HUFFTABLE_STATIC, false, PS},
    };
    int niv = o.detail ? (int)VMIG_ARRAY_SIZE(iv) : 0;
    uint8_t *lb = NULL, *zout = NULL;
    struct isal_zstream *zs = NULL;
    size_t zcap = (2u << 20);
    if (niv) {
        lb = malloc(ISAL_DEF_LVL1_DEFAULT);
        zout = malloc(zcap);
        zs = malloc(sizeof(*zs));
        for (int i = 0; i < niv; i++)
            iv[i].s.v = calloc((size_t)o.runs, sizeof(double));
        if (!lb || !zout || !zs) {
            fprintf(stderr, "bench_codec: out of memory\n");
            return 1;
        }
        fill_kind(K_TEXT, w.src, w.npages);
        for (long r = 0; r < o.runs; r++)
            for (int j = 0; j < niv; j++) {
                isal_variant *v = &iv[(j + r) % niv];
                v->s.v[r] = isal_run(v, w.src, w.npages, lb, zs, zout, zcap);
            }
    }
#endif

    /* ---- figures ---- */
    double mcs[NKINDS];
    for (int k = 0; k < NKINDS; k++)
        mcs[k] = pick(&mc[k], o.runs, o.best);
    double dp_text = 0, dp_random = 0;
    const char *dp_desc = NULL;
    for (int i = 0; i < first_volatile; i++)
        if (rows[i].ops->id == VMIG_CODEC_DEFLATE_PAGE) {
            double s = pick(&rows[i].enc, o.runs, o.best);
            if (rows[i].kind == K_TEXT)
                dp_text = s, dp_desc = rows[i].desc;
            if (rows[i].kind == K_RANDOM)
                dp_random = s;
        }
    const char *stat = o.best ? "best" : "median";

    if (o.json) {
        printf("{\"bench\":\"codec\",\"size_mib\":%ld,\"page_size\":%u,\"packet_pages\":%ld,"
               "\"runs\":%ld,\"stat\":\"%s\",\"cpu\":%ld,\"status\":%d,",
               o.size_mib, PS, o.packet, o.runs, stat, o.cpu, status);
        printf("\"deflate_page_path\":\"%s\",", dp_desc ? dp_desc : "");
        printf("\"not_built\":{");
        bool first = true;
        for (int c = 0; c < VMIG_CODEC_COUNT; c++)
            if (skipped[c]) {
                printf("%s\"%s\":\"%s\"", first ? "" : ",", vmig_codec_get((uint32_t)c)->name,
                       skipped[c]);
                first = false;
            }
        printf("},\"memcpy_mbps\":{");
        for (int k = 0; k < NKINDS; k++)
            printf("%s\"%s\":%.1f", k ? "," : "", kind_names[k], bytes / mcs[k] * 1e-6);
        printf("},\"rows\":[");
        for (int i = 0; i < first_volatile; i++) {
            row *r = &rows[i];
            double e = pick(&r->enc, o.runs, o.best), d = pick(&r->dec, o.runs, o.best);
            printf("%s{\"codec\":\"%s\",\"level\":%u,\"content\":\"%s\",\"enc_mbps\":%.1f,"
                   "\"enc_vs_memcpy\":%.4f,\"dec_mbps\":%.1f,\"dec_vs_memcpy\":%.4f,"
                   "\"ratio\":%.4f,\"enc_mbps_best\":%.1f,\"dec_mbps_best\":%.1f",
                   i ? "," : "", r->ops->name, r->level, kind_names[r->kind], bytes / e * 1e-6,
                   mcs[r->kind] / e, bytes / d * 1e-6, mcs[r->kind] / d, r->out_bytes / bytes,
                   bytes / pick(&r->enc, o.runs, true) * 1e-6,
                   bytes / pick(&r->dec, o.runs, true) * 1e-6);
            if (r->ops->id == VMIG_CODEC_DEFLATE_PAGE)
                printf(",\"raw_pages\":%llu", (unsigned long long)r->raw_pages);
            printf(",\"verified\":%s}", r->verified ? "true" : "false");
        }
        printf("],\"volatile\":[");
        for (int i = first_volatile; i < nrows; i++) {
            row *r = &rows[i];
            double base = plain_enc(rows, first_volatile, r, o.runs, o.best);
            double e = pick(&r->enc, o.runs, o.best);
            printf("%s{\"codec\":\"%s\",\"content\":\"%s\",\"enc_mbps\":%.1f,"
                   "\"enc_mbps_volatile\":%.1f,\"cost\":%.4f}",
                   i > first_volatile ? "," : "", r->ops->name, kind_names[r->kind],
                   bytes / base * 1e-6, bytes / e * 1e-6, e / base - 1);
        }
        printf("]");
        if (dp_text > 0)
            printf(
                ",\"deflate_page\":{\"text_enc_mbps\":%.1f,\"random_enc_mbps\":%.1f,"
                "\"random_text_cost\":%.4f,\"goal_text_enc_mbps\":%.0f,\"text_goal_met\":%s,"
                "\"goal_random_text_cost\":%.2f,\"random_goal_met\":%s}",
                bytes / dp_text * 1e-6, bytes / dp_random * 1e-6, dp_random / dp_text,
                GOAL_DP_TEXT_MBPS, bytes / dp_text * 1e-6 >= GOAL_DP_TEXT_MBPS ? "true" : "false",
                GOAL_DP_RANDOM_COST, dp_random / dp_text < GOAL_DP_RANDOM_COST ? "true" : "false");
#if VMIG_HAVE_ISAL
        printf(",\"isal_detail\":[");
        for (int i = 0; i < niv; i++) {
            double s = pick(&iv[i].s, o.runs, o.best);
            printf("%s{\"variant\":\"%s\",\"mbps\":%.1f,\"ratio\":%.4f}", i ? "," : "", iv[i].name,
                   bytes / s * 1e-6, iv[i].out / bytes);
        }
        printf("]");
#endif
        printf("}\n");
    } else {
        printf("bench_codec: %ld MiB per content (%llu pages of %u bytes), packets of %ld pages, "
               "%ld runs (%s), one thread, %s\n",
               o.size_mib, (unsigned long long)w.npages, PS, o.packet, o.runs, stat,
               o.cpu >= 0 ? "pinned" : "not pinned");
        if (dp_desc)
            printf("deflate-page runs: %s\n", dp_desc);
        for (int c = 0; c < VMIG_CODEC_COUNT; c++)
            if (skipped[c])
                printf("%s: %s\n", vmig_codec_get((uint32_t)c)->name, skipped[c]);
        for (int k = 0; k < NKINDS; k++) {
            printf("\n%s pages: memcpy %.0f MB/s\n", kind_names[k], bytes / mcs[k] * 1e-6);
            printf("  %-13s %5s %10s %9s %10s %9s %8s\n", "codec", "level", "enc MB/s", "x memcpy",
                   "dec MB/s", "x memcpy", "ratio");
            for (int i = 0; i < first_volatile; i++) {
                row *r = &rows[i];
                if (r->kind != k)
                    continue;
                double e = pick(&r->enc, o.runs, o.best), d = pick(&r->dec, o.runs, o.best);
                char lvl[8] = "-";
                if (r->ops->id == VMIG_CODEC_ZLIB || r->ops->id == VMIG_CODEC_ZSTD)
                    snprintf(lvl, sizeof(lvl), "%u", r->level);
                printf("  %-13s %5s %10.0f %9.3f %10.0f %9.3f %8.3f", r->ops->name, lvl,
                       bytes / e * 1e-6, mcs[k] / e, bytes / d * 1e-6, mcs[k] / d,
                       r->out_bytes / bytes);
                if (r->ops->id == VMIG_CODEC_DEFLATE_PAGE)
                    printf("  (%.0f%% pages raw)", 100.0 * r->raw_pages / (double)w.npages);
                printf("\n");
            }
        }
        if (dp_text > 0) {
            double tm = bytes / dp_text * 1e-6, cost = dp_random / dp_text;
            printf("\ndeflate-page: text %.0f MB/s per core (goal %.0f: %s); random pages "
                   "%.0f MB/s, random/text cost %.1f%% (goal < %.0f%%: %s)\n",
                   tm, GOAL_DP_TEXT_MBPS, tm >= GOAL_DP_TEXT_MBPS ? "met" : "NOT met",
                   bytes / dp_random * 1e-6, 100 * cost, 100 * GOAL_DP_RANDOM_COST,
                   cost < GOAL_DP_RANDOM_COST ? "met" : "NOT met");
        }
        if (nrows > first_volatile) {
            printf("\nVMIG_ENC_VOLATILE on the mix (encode with the flag against without)\n");
            printf("  %-13s %12s %12s %8s\n", "codec", "enc MB/s", "volatile", "cost");
            for (int i = first_volatile; i < nrows; i++) {
                row *r = &rows[i];
                double base = plain_enc(rows, first_volatile, r, o.runs, o.best);
                double e = pick(&r->enc, o.runs, o.best);
                printf("  %-13s %12.0f %12.0f %+7.1f%%\n", r->ops->name, bytes / base * 1e-6,
                       bytes / e * 1e-6, 100 * (e / base - 1));
            }
        }
#if VMIG_HAVE_ISAL
        if (niv) {
            printf("\ndeflate-page's software path taken apart: ISA-L on the text pages, "
                   "called directly\n");
            printf("  %-62s %9s %7s\n", "variant", "MB/s", "ratio");
            for (int i = 0; i < niv; i++) {
                double s = pick(&iv[i].s, o.runs, o.best);
                printf("  %-62s %9.0f %7.3f\n", iv[i].name, bytes / s * 1e-6, iv[i].out / bytes);
            }
        }
#endif
    }

    for (int i = 0; i < nrows; i++) {
        free(rows[i].enc.v);
        free(rows[i].dec.v);
    }
    for (int k = 0; k < NKINDS; k++)
        free(mc[k].v);
#if VMIG_HAVE_ISAL
    for (int i = 0; i < niv; i++)
        free(iv[i].s.v);
    free(lb);
    free(zout);
    free(zs);
#endif
    free(w.plen);
    free(w.pages);
    munmap(w.src, (size_t)w.npages * PS);
    munmap(w.dst, (size_t)w.npages * PS);
    munmap(w.payload, w.slot * w.npackets);
    return status;
}
