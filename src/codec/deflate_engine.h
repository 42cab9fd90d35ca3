/*
 * deflate-page's offload path: the device interface, its two engines and the
 * CPU deflate they fall back to (docs/design.md "Compression").
 *
 *   codec_deflate_page.c          the codec: framing, batching, fallbacks
 *        |            \
 *        | jobs        \ pages the device could not take or failed
 *        v              v
 *   engine ops      vmig_dp_sw: the CPU deflate (ISA-L igzip, else zlib)
 *    |- deflate_qpl.c    Intel IAA through QPL (built only with QPL)
 *    '- deflate_model.c  a software model of the same device for tests:
 *                        queue depth, BUSY and failure plans, counters;
 *                        it executes jobs with vmig_dp_sw
 *
 * An engine accepts one-page jobs: submit() queues a job in a slot (or says
 * the queue is busy), wait() blocks until the job of a slot is done. The codec
 * keeps at most `depth` jobs in flight, waits for them in submission order and
 * never leaves a call with a job in flight.
 *
 * Everything here sees only buffers. An engine instance belongs to one codec
 * context, hence to one channel thread.
 */
#ifndef VMIG_DEFLATE_ENGINE_H
#define VMIG_DEFLATE_ENGINE_H

#include "codec.h"

#ifdef VMIG_HAVE_QPL_STUB_CHECK
/* 'make qpl-check': a syntax-only compile without a configured build; the
 * command line gives VMIG_HAVE_ISAL and VMIG_HAVE_ZLIB, and the hardware path
 * is compiled against the declarations-only tests/stub/qpl/qpl.h. */
#define VMIG_DP_QPL 1
#else
#include "vmig_config.h"
#define VMIG_DP_QPL VMIG_HAVE_QPL
#endif

/* Times a submit that found the queue busy is retried before that page is
 * compressed (or decompressed) on the CPU instead: 1 + 3 attempts in all, as
 * QEMU's multifd-qpl does. Never a loop without end. */
#define VMIG_DP_SUBMIT_RETRIES 3

/* Most jobs an engine keeps in flight for one context (QPL: one qpl_job each). */
#define VMIG_DP_MAX_DEPTH 1024u

enum vmig_dp_op {
    VMIG_DP_COMPRESS = 0,   /* in: a page; out: one raw deflate stream, BFINAL set,
                             * 4 KiB window; fails if it does not fit out_cap */
    VMIG_DP_DECOMPRESS = 1, /* in: one raw deflate stream; out: the page */
};

/* What submit() and wait() return. */
enum vmig_dp_status {
    VMIG_DP_OK = 0,     /* submit: queued; wait: done, out_len and in_used are set */
    VMIG_DP_BUSY = 1,   /* submit only: the queue is full, nothing was queued */
    VMIG_DP_FAILED = 2, /* submit: refused, nothing queued; wait: the device failed
                         * the job (output did not fit, bad stream, device error):
                         * out may hold anything within out[0 .. out_cap) */
};

typedef struct vmig_dp_job {
    uint32_t op; /* enum vmig_dp_op */
    uint32_t in_len;
    uint32_t out_cap;
    const uint8_t *in; /* read by the device until wait() returns */
    uint8_t *out;      /* written by the device until wait() returns */
    /* Set by wait() on VMIG_DP_OK: */
    uint32_t out_len; /* bytes written to out */
    uint32_t in_used; /* input bytes consumed up to the end of the final block */
} vmig_dp_job;

typedef struct vmig_dp_engine_ops {
    const char *name; /* "qpl", "model" */
    /*
     * Open the device for one codec context that keeps at most `slots` jobs
     * in flight (1..VMIG_DP_MAX_DEPTH). `arg`: the engine's parameters (the
     * model's struct vmig_dp_model_params; NULL for QPL). Returns 0, *eng and
     * *depth (the jobs the codec may keep in flight, 1..slots); VMIG_ENOTSUP
     * with a short reason in why[0 .. whylen) when there is no usable device
     * (the codec then runs on the CPU and says why); VMIG_ENOMEM.
     */
    int (*open)(const void *arg, uint32_t slots, void **eng, uint32_t *depth, char *why,
                size_t whylen);
    /* NULL is a no-op. No job may be in flight. */
    void (*close)(void *eng);
    /* Queue `job` in `slot` (< depth, not in flight). The engine may keep the
     * pointer until wait(slot) returns. Returns an enum vmig_dp_status. */
    int (*submit)(void *eng, uint32_t slot, vmig_dp_job *job);
    /* Wait for the job of `slot` (in flight); fills out_len and in_used on
     * VMIG_DP_OK. Returns VMIG_DP_OK or VMIG_DP_FAILED. */
    int (*wait)(void *eng, uint32_t slot, vmig_dp_job *job);
} vmig_dp_engine_ops;

#if VMIG_DP_QPL
extern const vmig_dp_engine_ops vmig_dp_engine_qpl; /* deflate_qpl.c */
#endif
extern const vmig_dp_engine_ops vmig_dp_engine_model; /* deflate_model.c */

/* ---- the software model (deflate_model.c) ---- */

/*
 * What the model saw. The test owns this and points the params at it; the
 * model adds with relaxed atomics, so a test may share one between the
 * encoder and decoder contexts it drives.
 */
struct vmig_dp_model_counters {
    uint64_t opens;         /* open() calls (including planned failures) */
    uint64_t submits;       /* submit() calls */
    uint64_t busy;          /* ... of which returned VMIG_DP_BUSY */
    uint64_t queued;        /* ... of which were queued */
    uint64_t completed;     /* jobs wait() finished with VMIG_DP_OK */
    uint64_t failed;        /* jobs wait() failed (planned or output did not fit) */
    uint64_t overflow;      /* ... of which compress jobs whose output did not fit */
    uint64_t max_in_flight; /* most jobs queued at once */
};

/*
 * The model's device and its deterministic fault plan. Counting starts at 0
 * with the first submit (or queued job) of each model instance, i.e. of each
 * codec context.
 */
struct vmig_dp_model_params {
    uint32_t depth;        /* queue slots (1..VMIG_DP_MAX_DEPTH; 0 means 1): a submit
                            * while depth jobs are queued returns BUSY */
    uint32_t busy_period;  /* submit number s returns BUSY when          */
    uint32_t busy_burst;   /* busy_period && s % busy_period < busy_burst
                            * (burst == period: every submit is BUSY)   */
    uint32_t fail_every;   /* queued job number q fails at wait() when
                            * fail_every && q % fail_every == fail_every - 1 */
    const char *open_fail; /* non-NULL: open() fails with this reason, as
                            * QPL's does without an IAA device */
    struct vmig_dp_model_counters *counters; /* may be NULL */
};

/* ---- deflate-page context statistics (tests, diagnostics) ---- */

struct vmig_dp_stats {
    uint64_t pages;           /* normal pages encoded or decoded */
    uint64_t raw;             /* pages sent or received raw (length == page_size) */
    uint64_t probed_raw;      /* encode: ... of which the probe flagged (not compressed) */
    uint64_t dev_jobs;        /* pages the device did */
    uint64_t busy_retries;    /* submits retried after BUSY */
    uint64_t cpu_busy;        /* pages done on the CPU because the queue stayed busy
                               * (or refused the submit) */
    uint64_t cpu_failed;      /* pages redone after a failed device job: compress sends
                               * them raw, decompress decodes them on the CPU */
    uint64_t volatile_copies; /* encode: pages copied first (VMIG_ENC_VOLATILE) */
};

/* Copies the counters of a deflate-page encoder or decoder context. */
void vmig_codec_deflate_page_stats(void *ctx, struct vmig_dp_stats *out);

/* ---- the CPU deflate (codec_deflate_page.c) ---- */

/* One per context (or model instance); not thread-safe. NULL-safe free. */
typedef struct vmig_dp_sw vmig_dp_sw;

enum { VMIG_DP_SW_ENC = 1u, VMIG_DP_SW_DEC = 2u };

/* `what`: VMIG_DP_SW_ENC and/or VMIG_DP_SW_DEC. VMIG_ENOTSUP when neither
 * ISA-L nor zlib was built, VMIG_ENOMEM. */
int vmig_dp_sw_create(unsigned what, vmig_dp_sw **out, vmig_error *err);
void vmig_dp_sw_free(vmig_dp_sw *sw);

/*
 * Compress in[0 .. len) into one raw deflate stream (BFINAL set, distances
 * within 4 KiB) in out[0 .. cap). Returns its length (1..cap), 0 when it does
 * not fit (the caller sends the page raw), or VMIG_EIO with a sentence when
 * the library fails.
 */
int vmig_dp_sw_compress(vmig_dp_sw *sw, const uint8_t *in, uint32_t len, uint8_t *out, uint32_t cap,
                        vmig_error *err);

/*
 * Inflate one raw deflate stream (any window): 0 when in[0 .. len) decodes to
 * exactly out_len bytes and is consumed exactly; otherwise VMIG_EPROTO and
 * *why (a static phrase: "the stream is corrupt", "it ends early", ...).
 * Writes only out[0 .. out_len).
 */
int vmig_dp_sw_decompress(vmig_dp_sw *sw, const uint8_t *in, uint32_t len, uint8_t *out,
                          uint32_t out_len, const char **why);

#endif /* VMIG_DEFLATE_ENGINE_H */
