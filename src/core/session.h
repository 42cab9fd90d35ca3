/*
 * Session internals shared by the source (source.c) and destination
 * (dest.c) sides. Only core/ sees this header.
 *
 * Threads of a source session:
 *   caller   vmig_migrate(): control channel, producer (walks the blocks and
 *            fills packet descriptors), digests, waits for RESULT
 *   chan[i]  one per data channel: takes descriptors from its queue,
 *            classifies zero pages, hashes, writes header + pages (writev)
 * Threads of a destination session:
 *   caller   vmig_incoming_run(): accepts channels, control channel, verdict
 *   chan[i]  one per data channel: reads packets straight into the blocks
 */
#ifndef VMIG_SESSION_H
#define VMIG_SESSION_H

#include <pthread.h>
#include <time.h>

#include "../accel/accel.h"
#include "../base/base.h"
#include "../codec/codec.h"
#include "../devstate/devq.h"
#include "../ram/zero.h"
#include "../transport/tls.h"
#include "../transport/transport.h"
#include "../wire/wire.h"
#include "adapt.h"

typedef struct vmig_block {
    char name[VMIG_BLOCK_NAME_MAX + 1];
    uint8_t *host;
    uint64_t length;
    uint32_t page_size;
    uint32_t page_shift;
    unsigned flags; /* VMIG_RAM_* */
    uint64_t npages;
    /* Verify: per-page content hash, written by the channel thread that
     * sent (source) or received (destination) the page. */
    uint64_t *page_hash;
    /* Destination: pages written at least once (atomic bit operations). */
    uint64_t *received;
    /* Destination, prefault=ahead: pages that need no population, because
     * they were resident when the run started (mincore) or were populated
     * since. Only the channel thread that receives a page touches its bit,
     * but neighbours share words, hence atomics. */
    uint64_t *resident;
    /* Source, live: pages dirtied since the previous sync (one bit each). */
    uint64_t *dirty;
    uint64_t *dirty_new;  /* scratch of each sync */
    uint64_t *carry;      /* pages a rate probe collected, for the next pass */
    uint32_t track_idx;   /* region index in the built-in tracker */
    uint64_t zero_hash;   /* vmig_zero_page_hash(page_size) */
    uint32_t hello_index; /* destination: position in the source's HELLO */
    bool anon_private;    /* source: private anonymous memory (vma.h), for accel */
    /* Secondary of continuous checkpoints: the RAM cache (same layout as
     * host, populated only where checkpoints wrote) and the pages the
     * checkpoint being received wrote into it (atomic bit operations). */
    uint8_t *cache;
    uint64_t *ckpt_dirty;
} vmig_block;

/* A registered device (vmig_device_register) and its state in a run. */
typedef struct vmig_dev {
    char id[VMIG_DEVICE_ID_MAX + 1];
    uint32_t instance;
    vmig_device_ops ops;
    void *opaque;
    /* Source: the next chunk index; save_iterate's last estimate. */
    uint32_t next_chunk;
    bool iter_known;
    uint64_t iter_remaining;
    /* Destination: the queue of arriving chunks and the load thread
     * that drains it; its result (0, or the code that failed the run). */
    vmig_devq *q;
    pthread_t loader;
    bool loader_started;
    bool got_last; /* devstate-path=control: the last chunk was loaded */
    int load_rc;
    /* Secondary of continuous checkpoints: the chunks of the checkpoint
     * being received, by index, loaded only at its commit (under s->lock). */
    void **stage;
    uint32_t *stage_len;
    uint32_t stage_cap, stage_n; /* slots; 1 + highest index staged */
    uint32_t stage_last;         /* index of the LAST chunk, UINT32_MAX before it */
    struct vmig_session *s;
} vmig_dev;

/* One unit of work handed to a source channel thread. */
enum { VMIG_JOB_RAM = 1, VMIG_JOB_SYNC = 2, VMIG_JOB_FIN = 3, VMIG_JOB_DEV = 4 };

typedef struct vmig_job {
    uint8_t type;
    bool last;       /* DEV: the device's last chunk */
    uint32_t dev;    /* DEV: index into s->devs */
    uint32_t chunk;  /* DEV: chunk index */
    uint32_t dlen;   /* DEV: bytes at dbuf */
    uint8_t *dbuf;   /* DEV: the chunk (pooled), given back by the channel once sent */
    bool dref;       /* DEV: dbuf is the device's memory (vmig_devstate_write_ref) */
    bool classified; /* zero pages already partitioned out (zero-detect=main) */
    uint32_t block;  /* index into s->blocks */
    uint32_t pass;
    uint32_t npages;  /* offsets in use */
    uint32_t nnormal; /* when classified */
    uint64_t seq;
    uint64_t *offsets; /* packet_pages entries, owned by the queue slot */
} vmig_job;

#define VMIG_QUEUE_DEPTH 4

/* An armed fault (fault.c): site, channel (or any), the packet that fires
 * it, a stall's length, the allocation that fails; fired once (atomic). */
#define VMIG_MAX_FAULTS        8
#define VMIG_FAULT_ANY_CHANNEL UINT32_MAX
typedef struct vmig_fault {
    uint8_t site; /* enum vmig_fault_site */
    uint32_t ch;
    uint64_t pkt;
    uint32_t ms, n;
    int fired;
} vmig_fault;

typedef struct vmig_channel {
    struct vmig_session *s;
    uint32_t id;
    pthread_t thread;
    bool thread_started;
    vmig_conn *conn;
    /* Source: a ring of jobs, filled by the producer, drained by the thread. */
    vmig_job jobs[VMIG_QUEUE_DEPTH];
    uint32_t head, count; /* under s->lock */
    pthread_cond_t work;  /* signalled when a job is queued */
    /* Per-thread scratch: packet header + offset array, iovecs. */
    uint8_t *hdr;
    struct iovec *iov;
    uint64_t *offsets; /* destination: decoded offsets; source: zero-page scratch */
    /* Compression: a context per codec (encoder on the source, decoder on
     * the destination), made at the first packet that needs it; the payload
     * buffer; the page pointers of the packet at hand. */
    void *codec_ctx[VMIG_CODEC_COUNT];
    uint8_t *cbuf;
    size_t cbuf_cap;
    uint8_t **pages;
    /* Source, zero-page-detection=channel: this channel's engine (accel.h),
     * the page addresses of the packet being started ahead and of the one
     * at hand, and the latter's answers. */
    vmig_accel_chan *accel;
    const void **zbufs_next, **zbufs;
    uint8_t *zres;
    /* Statistics (atomics, readable from any thread). */
    uint64_t st_bytes, st_packets, st_busy_ns, st_cpu_ns;
    /* Packets this channel's thread has counted for fault sites (fault.c). */
    uint64_t fault_pkts;
    /* Source: the last pass whose SYNC this channel wrote (under s->lock). */
    uint32_t sent_pass;
    /* Destination: sequence and pass checks. */
    uint64_t last_seq;
    uint32_t synced_pass;
    bool fin;
    /* resume=on (resume.c). Source, this channel's thread only: the packets
     * written but not acknowledged (a ring of p.resume_window), the
     * highest sequence acknowledged and written. Destination: the last
     * packet landed whole, packets since the last acknowledgement, and a
     * reconnected connection handed over by the accept thread (under
     * s->lock). */
    struct vmig_sent *win;
    uint32_t win_head, win_count;
    uint64_t acked, sent_seq;
    uint64_t landed;
    uint32_t since_ack;
    vmig_conn *pending;
    bool exited;      /* destination: the thread is done (under s->lock) */
    bool resending;   /* source: the packet being written is a re-send */
    bool peer_spoke;  /* source: the destination wrote on the control channel (gave up) */
    uint32_t last_nn; /* source: normal pages of the last RAM packet written */
} vmig_channel;

struct vmig_session {
    enum vmig_role role;
    vmig_params p;

    vmig_block *blocks;
    uint32_t nblocks, blocks_cap;

    const vmig_zero_impl *zero;
    uint8_t uuid[16];

    pthread_mutex_t lock;
    pthread_cond_t space; /* source: a queue slot freed */
    vmig_error err;       /* first error of the run (under lock) */
    int abort;            /* set once on error or cancel (atomic) */
    int canceled;         /* vmig_cancel() was called (atomic) */
    uint32_t state;       /* enum vmig_state (atomic) */

    vmig_conn *control;
    vmig_listener *listener; /* destination */
    vmig_block_cb block_cb;
    void *block_cb_opaque;

    vmig_channel ch[VMIG_MAX_CHANNELS];
    uint32_t nch;

    /* The embedder's VM hooks and progress callback. */
    vmig_vm_ops ops;
    void *ops_opaque;
    vmig_event_cb event_cb;
    void *event_opaque;
    /* Source, live: the built-in tracker (dirty-track wp*), NULL otherwise. */
    struct vmig_tracker *tracker;
    uint32_t dirty_mode; /* resolved enum vmig_dirty_track (atomic) */

    /* Destination: the per-pass barrier of the channel threads. */
    pthread_cond_t barrier_cv;
    uint32_t barrier_count;
    uint64_t barrier_gen;
    uint32_t barrier_pass; /* the last pass every channel has finished (under lock) */

    /* Continuous checkpoints (colo.c). colo: this run is one (the primary
     * or the secondary side); ctl_wlock: every control write of such a run
     * (the heartbeat thread writes too); colo_base_pass (secondary,
     * atomic): pages of later passes go to the RAM cache, 0 before
     * checkpoint 0 is committed; colo_request (primary, atomic): take a
     * checkpoint now. */
    bool colo;
    pthread_mutex_t ctl_wlock;
    uint32_t colo_base_pass;
    int colo_request;
    struct vmig_flusher *flusher;
    uint64_t colo_stage_bytes; /* secondary: device bytes staged (under lock) */
    pthread_t hb_thread;
    bool hb_started;
    int hb_stop; /* atomic */
    /* primary, atomic: 1 + the checkpoint whose pages are being sent (the
     * VM paused), 0 between checkpoints; the heartbeat thread watches it */
    uint64_t colo_sending;
    bool colo_protected; /* primary: checkpoint 0 was acknowledged */
    /* Fault sites (fault.c): set before a run, read by the channel threads. */
    vmig_fault faults[VMIG_MAX_FAULTS];
    uint32_t nfaults;
    uint64_t alloc_calls, st_faults; /* atomics */
    uint64_t st_ckpts, st_ckpt_bytes, st_ckpt_pause_ns, st_ckpt_pause_max_ns,
        st_ckpt_pause_total_ns;
    uint64_t st_ckpt_commit_ns, st_ckpt_commit_max_ns, st_ckpt_flush_ns;
    uint32_t st_ckpt_discarded, st_flush_threads;

    /* Pacing (max-bandwidth): the virtual time at which the next byte may go. */
    pthread_mutex_t rate_lock;
    uint64_t rate_next_ns;

    /* Compression. Source: the codecs the destination decodes (READY) and
     * the ones auto may pick and its controller (observe() under
     * auto_lock); 1 while the VM may still write the pages being sent
     * (atomic). */
    uint32_t dest_codecs, auto_mask;
    vmig_auto autoc;
    pthread_mutex_t auto_lock;
    int pages_volatile;
    vmig_codec_stats st_codec[VMIG_CODEC_COUNT]; /* atomics */
    char deflate_desc[64];                       /* under lock; first context's describe() */
    vmig_tls *tls;         /* the run's TLS credentials (tls != off), from vmig_session_tls_begin */
    char tls_desc[64];     /* under lock: what the first protected connection negotiated */
    uint32_t st_tls_conns; /* under lock: connections protected so far */
    uint32_t st_tls_ktls;  /* under lock: of them, with kernel TLS */
    char tls_ktls_why[192]; /* under lock: why one had none */

    /* Zero-page detection offload (source): the engine of this run
     * (pointer under lock; NULL outside a run), the statistics it left at
     * its end, and whether the caller was told of a device failure. */
    vmig_accel *accel;
    vmig_accel_stats st_accel; /* under lock */
    bool accel_noticed;

    /* Devices (vmig_device_register), in registration order; the run's
     * path and chunk size (source: from the parameters; destination: from
     * HELLO) and, on the destination, the devices in HELLO's order. */
    vmig_dev *devs;
    uint32_t ndevs, devs_cap;
    uint32_t dev_path, dev_chunk; /* dev_path: atomic (statistics read it) */
    vmig_dev **dev_hello;
    /* Chunk buffers (dev_chunk bytes each) kept warm for reuse: fresh
     * memory costs a page fault per page, inside the downtime. */
    pthread_mutex_t dev_pool_lock;
    void **dev_pool;
    uint32_t dev_pool_n, dev_pool_cap;
    uint64_t st_dev_chunks, st_dev_bytes, st_dev_iter_bytes, st_dev_save_ns, st_dev_load_ns;
    uint64_t st_dev_held_max;
    uint64_t st_dev_cpu_ns; /* destination: CPU time of the load threads */

    /* resume=on (resume.c): the source's URI for reconnecting; the
     * destination's thread that accepts reconnected channels, and its
     * stop flag (atomic) and wake-up for channels waiting (s->lock). */
    bool resume;
    char uri[512];
    pthread_t acc_thread;
    bool acc_started;
    int acc_stop;
    pthread_cond_t resume_cv;
    uint64_t st_reconnects;
    uint64_t st_resent_packets, st_resent_bytes;
    uint64_t st_window_waits;

    /* Statistics (atomics). */
    uint64_t start_ns, end_ns, total_bytes;
    uint64_t st_wire_bytes, st_ram_bytes, st_normal, st_zero, st_packets, st_verify_ns;
    uint64_t st_caller_cpu_ns; /* frozen at the end of a run */
    /* Live pre-copy statistics (atomics). */
    uint32_t st_pass, st_throttle, st_throttle_max, st_forced;
    uint64_t st_dirty_pages, st_remaining, st_dirty_rate, st_bandwidth, st_expected_ns;
    uint64_t st_downtime_ns, st_sync_ns;
    uint64_t caller_cpu_start;
    clockid_t caller_clock; /* CPU clock of the thread running the migration */
};

/* Record the first error, set abort and wake every blocked thread. */
void vmig_session_fail(vmig_session *s, const vmig_error *e);
/* Convenience: format and fail; returns the code. */
int vmig_session_failf(vmig_session *s, int code, const char *fmt, ...) VMIG_PRINTF(3, 4);
static inline bool vmig_session_aborted(vmig_session *s)
{
    return __atomic_load_n(&s->abort, __ATOMIC_ACQUIRE) != 0;
}
/* Shut down the data connections (and the control one too when `control`)
 * so that blocked I/O returns. A failing channel leaves the control channel
 * open, so that each side can still tell the other why. Takes s->lock. */
void vmig_session_shutdown_conns(vmig_session *s, bool control);
/* Release connections and per-run resources (keeps blocks). */
void vmig_session_reset_run(vmig_session *s);
/* TLS: load the run's credentials (nothing when tls=off), before any
 * connection; then protect each new connection. wrap replaces *c on
 * success and leaves it to the caller on failure. hostname: the source's
 * name for the destination (x509), NULL on the destination. */
int vmig_session_tls_begin(vmig_session *s, vmig_error *err);
int vmig_session_tls_wrap(vmig_session *s, vmig_conn **c, const char *hostname, vmig_error *err);
/* Allocate per-block verify/receive arrays for a run. */
int vmig_session_alloc_block_state(vmig_session *s, bool dest, vmig_error *err);
/* Final result of a run into *err; updates the state. */
int vmig_session_finish(vmig_session *s, int rc, vmig_error *err);

/* Pace `bytes` against max-bandwidth: sleeps until they may be sent. */
void vmig_rate_wait(vmig_session *s, uint64_t bytes);

/* Compression helpers shared by both sides (session.c). */
/* The codec context of channel c for `codec`, created on first use. */
int vmig_channel_codec_ctx(vmig_channel *c, uint32_t codec, bool dest, void **ctx, vmig_error *err);
/* Free every codec context of channel c (a new connection starts the
 * streams over; the end of a run). */
void vmig_channel_codec_reset(vmig_channel *c);
/* Make c->cbuf hold at least `len` bytes. */
int vmig_channel_cbuf(vmig_channel *c, size_t len, vmig_error *err);
/* Account one packet of `codec` in s->st_codec. */
void vmig_codec_stat(vmig_session *s, uint32_t codec, uint32_t pages, uint64_t in, uint64_t out,
                     uint64_t ns);

/* Source: fill *o with the zero-page offload's statistics (live or final).
 * Takes s->lock. */
void vmig_source_accel_stats(vmig_session *s, vmig_accel_stats *o);
/* Source: free the channels' engines and close the device (after the
 * channel threads are joined), keeping the statistics. */
void vmig_source_accel_end(vmig_session *s);
/* Source: a NOTICE event for a device failure not reported yet (caller's
 * thread). */
void vmig_source_accel_notice(vmig_session *s);

/* Channel statistics. */
static inline void vmig_stat_add(uint64_t *ctr, uint64_t v)
{
    __atomic_fetch_add(ctr, v, __ATOMIC_RELAXED);
}

/* Find a block by name, or NULL. `hint` caches the last index found. */
vmig_block *vmig_block_find(vmig_session *s, const char *name, uint32_t *hint);

/* Message to send as an ERROR frame on the control channel, best effort. */
void vmig_control_send_error(vmig_session *s, int code, const char *msg);

/* Digest of a block's memory, read on up to `nthreads` threads (verify=full). */
struct vmig_digest vmig_block_digest_memory(const vmig_block *b, uint32_t nthreads);
/* Digest of a block from its page hashes (verify=on). Destination pages of a
 * block without VMIG_RAM_ZEROED that never arrived are read from memory. */
struct vmig_digest vmig_block_digest_hashes(const vmig_block *b, bool dest);

/* Control frames (control.c). read: *payload is malloc'd (free it), NULL
 * when empty. An ERROR frame from the peer is returned as VMIG_EPEER with
 * the peer's message; `expect` is the type the caller waits for. */
int vmig_ctl_write(vmig_conn *c, unsigned type, const uint8_t *payload, uint32_t len,
                   vmig_error *err);
int vmig_ctl_read(vmig_conn *c, unsigned expect, uint8_t **payload, uint32_t *len, vmig_error *err);
/* vmig_ctl_read() of any type in `mask` (1 << type; an ERROR frame is
 * returned as such when ERROR is in it), no DEVCHUNK. */
int vmig_ctl_read_mask(vmig_conn *c, uint32_t mask, unsigned expect, unsigned *type,
                       uint8_t **payload, uint32_t *len, vmig_error *err);
/* vmig_ctl_read() that gives up with the session's error when it aborts, and
 * with VMIG_ETIMEDOUT after `timeout_ms` (-1: no limit). */
int vmig_ctl_read_session(vmig_session *s, unsigned expect, uint8_t **payload, uint32_t *len,
                          int timeout_ms, vmig_error *err);
/* After a failure: if the peer sent an ERROR frame within `timeout_ms`,
 * make its reason the session's error (it explains our broken channels). */
void vmig_session_take_peer_error(vmig_session *s, int timeout_ms);

/* Source producer slots (source.c), for devstate.c: a free job slot on
 * the least loaded channel (NULL on abort), and handing it over. */
vmig_job *vmig_source_slot_get(vmig_session *s, uint32_t *rr, vmig_channel **out);
void vmig_source_slot_push(vmig_session *s, vmig_channel *c);

/* Device state (devstate.c). */
/* Source: the bytes the devices will still write at switchover. */
uint64_t vmig_dev_pending(vmig_session *s);
/* Source: every device's save_iterate (final == false) or save_final,
 * their chunks queued as DEV jobs of `pass` (devstate-path=channels) or
 * written as DEVCHUNK frames (control). `seq` is the producer's. */
int vmig_dev_save(vmig_session *s, bool final, uint32_t pass, uint64_t *seq, vmig_error *err);
/* Source, channel thread: send a DEV job. */
int vmig_dev_send_job(vmig_channel *c, vmig_job *job, vmig_error *err);
/* Source: free the chunks of jobs never sent (after the channels joined). */
void vmig_dev_drop_jobs(vmig_session *s);
/* Both: a chunk buffer of dev_chunk bytes (warm when one was given back),
 * NULL when out of memory; give it back (or free() it, either is fine). */
void *vmig_dev_buf_get(vmig_session *s);
void vmig_dev_buf_put(vmig_session *s, void *buf);
/* Both: fill the pool with `n` populated buffers (before the VM stops). */
int vmig_dev_pool_fill(vmig_session *s, uint32_t n, vmig_error *err);
/* Destination: match HELLO's devices with the registered ones, make the
 * queues and start the load threads. */
int vmig_dev_dest_start(vmig_session *s, const vmig_wire_hello *h, vmig_error *err);
/* Destination, channel thread: a DEV packet whose header was decoded. */
int vmig_dev_recv_packet(vmig_channel *c, const vmig_pkt_hdr *h, vmig_error *err);
/* Destination, control thread: a DEVCHUNK frame (data malloc'd, owned from here). */
int vmig_dev_recv_frame(vmig_session *s, const vmig_wire_devchunk *dc, uint8_t *data,
                        vmig_error *err);
/* Destination: no chunk comes any more; wait for every load to finish. */
int vmig_dev_dest_finish(vmig_session *s, vmig_error *err);
/* Both: join load threads and free queues (failure paths, reset). */
void vmig_dev_end_run(vmig_session *s);
/* vmig_session_fail: wake every queue's waiters with the error. */
void vmig_dev_fail_all(vmig_session *s, const vmig_error *e);

/* Control frames that need more than vmig_ctl_read/write (control.c). */
/* A DEVCHUNK frame: its header, then `data` straight from the caller. */
int vmig_ctl_write_devchunk(vmig_conn *c, const vmig_wire_devchunk *dc, vmig_error *err);
/* The next frame, of any type in `mask` (1 << type); an ERROR frame is the
 * peer's failure, another type a protocol error naming `expect`. DEVCHUNK
 * frames are checked against (ndevices, chunk_max) and read without a
 * copy: *payload holds only the chunk's data, *dc its header. */
int vmig_ctl_read_any(vmig_session *s, uint32_t mask, unsigned expect, unsigned *type,
                      uint8_t **payload, uint32_t *len, vmig_wire_devchunk *dc, vmig_error *err);

/* Continuous checkpoints (colo.c). */
/* A control frame written under ctl_wlock. */
int vmig_colo_ctl_write(vmig_session *s, unsigned type, const uint8_t *payload, uint32_t len,
                        vmig_error *err);
/* Both: start and stop the heartbeat thread (a HEARTBEAT every quarter of
 * heartbeat-timeout). */
int vmig_colo_hb_start(vmig_session *s, vmig_error *err);
void vmig_colo_hb_stop(vmig_session *s);

/* Fault sites (fault.c). Before each packet a channel sends (source) or
 * after each header it reads (destination): may shut the connection down,
 * sleep, flip a header bit or kill the process. */
void vmig_fault_from_env(vmig_session *s);
int vmig_fault_packet_slow(vmig_channel *c, uint8_t *hdr, size_t hdr_len, vmig_error *err);
static inline int vmig_fault_packet(vmig_channel *c, uint8_t *hdr, size_t hdr_len, vmig_error *err)
{
    return c->s->nfaults ? vmig_fault_packet_slow(c, hdr, hdr_len, err) : 0;
}
/* Should this allocation fail (the fault "alloc" with n = its number)? */
bool vmig_fault_alloc(vmig_session *s);
/* Digest of the pages set in each block's `map` from their page hashes
 * (zeros with verify=off), into dg[nblocks]. */
void vmig_colo_digests(vmig_session *s, bool dest, uint8_t (*dg)[16]);
/* Secondary: the RAM caches, their bitmaps and the flusher. */
int vmig_colo_dest_alloc(vmig_session *s, vmig_error *err);
/* Both: free what a run of continuous checkpoints allocated. */
void vmig_colo_end_run(vmig_session *s);
/* Secondary, channel thread: stage a checkpoint's DEV chunk (buf owned from here). */
int vmig_colo_stage(vmig_session *s, vmig_dev *d, uint32_t chunk, bool last, void *buf,
                    uint32_t len, vmig_error *err);
/* Both: the next frame of a type in `mask` other than HEARTBEAT (each
 * frame read sets *heard). VMIG_EAGAIN once `until` (ns, 0: never) has
 * passed; VMIG_ETIMEDOUT when heard is not NULL and nothing came for
 * heartbeat-timeout; the session's error on abort when `on_abort`. */
int vmig_colo_read(vmig_session *s, uint32_t mask, unsigned expect, uint64_t until, uint64_t *heard,
                   bool on_abort, unsigned *type, uint8_t **payload, uint32_t *len,
                   vmig_error *err);
/* Secondary: after the data channels are up, checkpoints until the end
 * (0: failover). Joins the channel threads. */
int vmig_colo_dest_loop(vmig_session *s, vmig_error *err);
/* Secondary channel thread: the memory a page of pass `pass` lands in. */
static inline uint8_t *vmig_colo_base(vmig_session *s, vmig_block *b, uint32_t pass, bool *cached)
{
    uint32_t base = __atomic_load_n(&s->colo_base_pass, __ATOMIC_ACQUIRE);
    *cached = base && pass > base;
    return *cached ? b->cache : b->host;
}

/* resume=on (source.c, dest.c): packets a channel keeps until they are
 * acknowledged; errors that end a connection rather than the migration
 * (closed, reset, timed out, I/O); freeing a channel's window and pending
 * connection. */
bool vmig_resume_retryable(int code);
void vmig_resume_free(vmig_channel *c);
/* Destination: start and stop the thread that accepts reconnected channels. */
int vmig_resume_accept_start(vmig_session *s, vmig_error *err);
void vmig_resume_accept_stop(vmig_session *s);

/* Range checks of every parameter (params.c). */
int vmig_params_check(const vmig_params *p, vmig_error *err);

/* The runs record their errors in the session (s->err). */
int vmig_source_run(vmig_session *s, const char *uri);
int vmig_dest_run(vmig_session *s);

#endif /* VMIG_SESSION_H */
