/*
 * libvmig: live migration of large memory images over parallel channels.
 *
 * Everything hangs off one opaque vmig_session. A source session registers
 * RAM blocks and calls vmig_migrate(); a destination session listens with
 * vmig_incoming_listen() and receives with vmig_incoming_run(). Two sessions
 * in one process are independent: the library keeps no mutable global state.
 *
 * Error model: every function that can fail returns 0 or a negative VMIG_E*
 * code. The optional last parameter `err` (may be NULL) receives the code and
 * a sentence that names what was wrong. The library never prints, never exits
 * and never aborts on peer input.
 */
#ifndef VMIG_VMIG_H
#define VMIG_VMIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VMIG_VERSION_MAJOR 0
#define VMIG_VERSION_MINOR 1

/* Error codes. Numbers are part of the ABI: never renumber, only append. */
enum vmig_errcode {
    VMIG_OK = 0,
    VMIG_EINVAL = -1,     /* bad argument, parameter or URI */
    VMIG_ENOMEM = -2,     /* allocation or mapping failed */
    VMIG_EIO = -3,        /* local I/O error (socket, file) */
    VMIG_ECONN = -4,      /* connection refused, reset or closed early */
    VMIG_EPROTO = -5,     /* malformed or unexpected message from the peer */
    VMIG_EVERIFY = -6,    /* digest of the received memory does not match */
    VMIG_ECANCELED = -7,  /* vmig_cancel() was called */
    VMIG_ENOTSUP = -8,    /* feature not built or not supported here */
    VMIG_ESTATE = -9,     /* call not valid in the session's current state */
    VMIG_ETIMEDOUT = -10, /* a peer did not answer in time */
    VMIG_EPEER = -11,     /* the peer reported a failure (message carries its reason) */
    VMIG_EEXIST = -12,    /* duplicate name or id */
    VMIG_ENOENT = -13,    /* unknown name or id */
    VMIG_EAGAIN = -14,    /* a queue is full for now (an accelerator's): retry or do it here */
    VMIG_EAUTH = -15,     /* TLS: the peer failed authentication, or refused ours */
};

#define VMIG_ERROR_MSG_MAX 512

typedef struct vmig_error {
    int code;                     /* 0 until the first error is recorded */
    char msg[VMIG_ERROR_MSG_MAX]; /* NUL-terminated sentence */
} vmig_error;

/* Static English name of a code ("protocol error"); never NULL. */
const char *vmig_strerror(int code);

/* ------------------------------------------------------------------ */
/* Parameters                                                          */

#define VMIG_MAX_CHANNELS   64
#define VMIG_BLOCK_NAME_MAX 255 /* bytes, excluding the NUL */

enum vmig_zero_detect {
    VMIG_ZERO_NONE = 0,    /* zero pages are sent as normal pages */
    VMIG_ZERO_MAIN = 1,    /* checked by the producer thread before queueing */
    VMIG_ZERO_CHANNEL = 2, /* checked by each channel thread (default) */
};

/* What checks zero pages with zero-page-detection=channel. */
enum vmig_accel_kind {
    VMIG_ACCEL_CPU = 0,       /* SIMD on the channel threads */
    VMIG_ACCEL_DSA = 1,       /* Intel DSA work queues (accel-path), in async batches */
    VMIG_ACCEL_DSA_MODEL = 2, /* a software model of a DSA work queue (tests, benchmarks) */
    VMIG_ACCEL_AUTO = 3,      /* dsa when a usable work queue exists, else cpu (default) */
};
#define VMIG_ACCEL_PATH_MAX 256

enum vmig_tls_mode {
    VMIG_TLS_MODE_OFF = 0,  /* plain connections */
    VMIG_TLS_MODE_X509 = 1, /* certificates, mutual authentication */
    VMIG_TLS_MODE_PSK = 2,  /* a pre-shared key */
};
enum vmig_tls_ktls_mode {
    VMIG_TLS_KTLS_MODE_AUTO = 0,    /* kernel TLS when GnuTLS and the kernel offer it */
    VMIG_TLS_KTLS_MODE_REQUIRE = 1, /* refuse connections without it */
};
/* Who protects the records after the TLS handshake (without kernel TLS). */
enum vmig_tls_records {
    VMIG_TLS_RECORDS_VMIG = 0,   /* vmig's own (AES-GCM; GnuTLS's for other ciphers) */
    VMIG_TLS_RECORDS_GNUTLS = 1, /* GnuTLS's record functions */
};
#define VMIG_TLS_STR_MAX 256
/* Where device state travels (vmig_device_register). */
enum vmig_devstate_path {
    VMIG_DEVSTATE_CHANNELS = 0, /* over the data channels, with RAM, loaded as it arrives */
    VMIG_DEVSTATE_CONTROL = 1,  /* one chunk after the other on the control channel, after RAM */
};

/* "cpu", "dsa", "dsa-model", "auto"; "unknown" otherwise. */
const char *vmig_accel_kind_name(uint32_t kind);

enum vmig_verify {
    VMIG_VERIFY_OFF = 0, /* no end-of-migration digest check */
    VMIG_VERIFY_ON = 1,  /* digest built page by page as pages land (default) */
    VMIG_VERIFY_FULL = 2 /* both sides re-read all their memory at the end */
};

enum vmig_prefault {
    VMIG_PREFAULT_NONE = 0,  /* destination pages fault in on first write */
    VMIG_PREFAULT_AHEAD = 1, /* populate each packet's pages just before reading (default) */
};

/* How the source learns which pages changed while it sends (live pre-copy). */
enum vmig_dirty_track {
    VMIG_DIRTY_AUTO = 0,     /* the dirty_sync hook when set (vmig_set_vm_ops), else none */
    VMIG_DIRTY_NONE = 1,     /* one pass of a stopped image (the VM is stopped first) */
    VMIG_DIRTY_CALLBACK = 2, /* the embedder's dirty_sync hook (a KVM dirty log) */
    VMIG_DIRTY_WP = 3,       /* built in: userfaultfd write-protect, async if the kernel can */
    VMIG_DIRTY_WP_ASYNC = 4, /* built in: UFFD_FEATURE_WP_ASYNC + PAGEMAP_SCAN (Linux 6.7+) */
    VMIG_DIRTY_WP_SYNC = 5,  /* built in: write-protect faults served by a handler thread */
};

/* What to do when max-passes or max-time is reached, or the dirty rate
 * stalls the migration, before the expected downtime fits the limit. */
enum vmig_on_limit {
    VMIG_ON_LIMIT_FAIL = 0,   /* fail with VMIG_ETIMEDOUT; the VM runs on (default) */
    VMIG_ON_LIMIT_SWITCH = 1, /* switch over anyway, with a longer downtime */
};

/* How the source slows the VM down when it dirties memory faster than the link drains it. */
enum vmig_throttle {
    VMIG_THROTTLE_OFF = 0,
    VMIG_THROTTLE_LADDER = 1,   /* QEMU's auto-converge: initial %, then +step % per stalled pass */
    VMIG_THROTTLE_ADAPTIVE = 2, /* just enough for the dirty rate to fall to half the bandwidth
                                 * (default), the ladder on top when passes still stall */
};

/*
 * Page codecs. The id is the one a RAM packet carries on the wire
 * (docs/wire-format.md), so a codec can change from packet to packet.
 *   none          the pages as they are
 *   zlib, zstd    one stream per channel, flushed at the end of each packet
 *   deflate-page  each page its own raw deflate (4 KiB window), the format
 *                 of Intel IAA (QPL); a page that does not shrink goes raw
 *   lz4           one LZ4 block per packet (the cheapest)
 */
enum vmig_codec {
    VMIG_CODEC_NONE = 0,
    VMIG_CODEC_ZLIB = 1,
    VMIG_CODEC_ZSTD = 2,
    VMIG_CODEC_DEFLATE_PAGE = 3,
    VMIG_CODEC_LZ4 = 4,
};
#define VMIG_CODEC_COUNT 5
/* params.compression: measure the link and the codecs and choose per packet. */
#define VMIG_COMPRESSION_AUTO 255u

/* Where deflate-page compresses: the IAA hardware path through Intel QPL when
 * it was built and a device opens, else the software path (ISA-L). */
enum vmig_deflate_path {
    VMIG_DEFLATE_PATH_AUTO = 0,
    VMIG_DEFLATE_PATH_SOFTWARE = 1,
    VMIG_DEFLATE_PATH_HARDWARE = 2, /* asked for; falls back to software, saying why */
};

/* "zstd", "deflate-page", ...; "auto" for VMIG_COMPRESSION_AUTO; "?" otherwise. */
const char *vmig_codec_name(uint32_t codec);
/* 0 when this build can encode and decode `codec`; VMIG_ENOTSUP with the
 * reason ("zstd: not built (libzstd was not found at build time)"). */
int vmig_codec_available(uint32_t codec, vmig_error *err);

typedef struct vmig_params {
    uint32_t channels;           /* data channels, 1..64; default 4 */
    uint32_t packet_pages;       /* pages per packet, 1..1024; default 128 */
    uint32_t zero_detect;        /* enum vmig_zero_detect; default channel */
    uint32_t verify;             /* enum vmig_verify; default on */
    uint32_t prefault;           /* enum vmig_prefault; destination only */
    uint64_t max_bandwidth;      /* bytes/s on the wire over all channels; 0 = unlimited */
    uint32_t connect_timeout_ms; /* source connect and destination accept; default 10000 */
    /* Live pre-copy (source only). */
    uint32_t dirty_track;       /* enum vmig_dirty_track; default auto */
    uint32_t downtime_limit_ms; /* switch over when the expected downtime fits; default 300 */
    uint32_t max_passes;        /* passes before on-limit applies; 0 = no limit (default) */
    uint32_t max_time_ms;       /* time before on-limit applies; 0 = no limit (default) */
    uint32_t on_limit;          /* enum vmig_on_limit; default fail */
    uint32_t throttle;          /* enum vmig_throttle; default adaptive */
    uint32_t throttle_initial;  /* first throttle step, percent; default 20 */
    uint32_t throttle_step;     /* later steps, percent; default 10 */
    uint32_t throttle_max;      /* ceiling, percent, 1..99; default 99 */
    uint32_t stall_passes;      /* passes without progress that count as a stall; default 3 */
    /* Compression (source only; the destination decodes whatever arrives). */
    uint32_t compression;  /* enum vmig_codec, or VMIG_COMPRESSION_AUTO (default) */
    uint32_t zlib_level;   /* 1..9; default 1 */
    uint32_t zstd_level;   /* 1..19; default 1 */
    uint32_t deflate_path; /* enum vmig_deflate_path; default auto */
    /* Zero-page detection offload (source only). */
    uint32_t accel;                       /* enum vmig_accel_kind; default auto */
    char accel_path[VMIG_ACCEL_PATH_MAX]; /* work queues: "dsa:/dev/dsa/wq0.0 ..."; "" any */
    /* Device state (vmig_device_register). */
    uint32_t devstate_path;   /* enum vmig_devstate_path (source); default channels */
    uint32_t devstate_chunk;  /* bytes per chunk, 4K..16M (source); default 1M */
    uint64_t devstate_buffer; /* bytes a device may hold out of order (destination); 64M */
    /* Continuous checkpoints (vmig_colo_primary / vmig_colo_secondary). */
    uint32_t checkpoint_period_ms; /* primary: 0 (on demand only) or 100..3600000; 1000 */
    uint32_t heartbeat_timeout_ms; /* both: silence that means the peer is gone; 2000 */
    uint32_t flush_threads;        /* secondary: RAM-cache flush threads, 0 = CPUs (default) */
    /* TLS 1.3 on every connection (docs/tls.md); both sides must agree. */
    uint32_t tls;                            /* enum vmig_tls_mode; default off */
    char tls_creds[VMIG_TLS_STR_MAX];        /* directory of certificates or keys.psk */
    char tls_hostname[VMIG_TLS_STR_MAX];     /* source: name expected in the destination's
                                                certificate; "" = the URI's host */
    char tls_authz[VMIG_TLS_STR_MAX];        /* destination: name the source's certificate
                                                must carry; "" = any the CA signed */
    char tls_psk_identity[VMIG_TLS_STR_MAX]; /* source, psk: identity; "" = the first */
    char tls_priority[VMIG_TLS_STR_MAX];     /* GnuTLS priority string; "" = built-in */
    uint32_t tls_ktls;                       /* enum vmig_tls_ktls_mode; default auto */
    /* Resumable channels (source; the destination follows HELLO). */
    uint32_t resume; /* 0 off (default), 1 on: a cut data channel reconnects (docs/faults.md) */
    uint32_t resume_window; /* packets a channel keeps until acknowledged, 16..1024; 1024 */
    uint32_t tls_records;   /* enum vmig_tls_records; default vmig's */
} vmig_params;

/* Fill `p` with the defaults. */
void vmig_params_init(vmig_params *p);

/*
 * Set one parameter from text, as given on a command line: "channels", "4".
 * Sizes accept K/M/G suffixes (powers of 1024); bandwidths accept
 * "100M" (bytes/s). Unknown names and out-of-range values fail with
 * VMIG_EINVAL and a sentence giving the accepted range.
 */
int vmig_params_set(vmig_params *p, const char *name, const char *value, vmig_error *err);

/*
 * Parse a size as parameters take it: decimal digits and an optional K, M,
 * G or T suffix (powers of 1024), optionally followed by "B" or "iB":
 * "4096", "512M", "4GiB". No sign, blank or fraction. Returns 0, or
 * VMIG_EINVAL when the text is not such a size or overflows 64 bits.
 */
int vmig_parse_size(const char *s, uint64_t *out);

/* Description of one parameter, for help output. */
typedef struct vmig_param_info {
    const char *name;
    const char *values; /* "1..64", "none|main|channel" */
    const char *def;    /* default, as text */
    const char *help;   /* one sentence */
} vmig_param_info;

/* The table of parameters, terminated by an entry with name == NULL. */
const vmig_param_info *vmig_params_table(void);

/* ------------------------------------------------------------------ */
/* Sessions                                                            */

typedef struct vmig_session vmig_session;

enum vmig_role { VMIG_ROLE_SOURCE = 0, VMIG_ROLE_DEST = 1 };

/* Create a session; `params` may be NULL for the defaults. */
int vmig_session_create(vmig_session **out, enum vmig_role role, const vmig_params *params,
                        vmig_error *err);
/* Free a session that is not running. vmig_session_free(NULL) is a no-op. */
void vmig_session_free(vmig_session *s);

/* ------------------------------------------------------------------ */
/* RAM blocks                                                          */

/* Flags for vmig_ram_add(). */
#define VMIG_RAM_ZEROED                                                                            \
    0x1u /* destination: memory is known to read as zero                                           \
          * (fresh anonymous memory, a new file): a zero page                                      \
          * that was never written is left untouched. Without                                      \
          * it a zero page is read and cleared only when it is                                     \
          * not zero already. Ignored on the source. */

/*
 * Register a block of RAM. `name`: 1..255 bytes, unique in the session.
 * `length` must be a multiple of `page_size` (a power of two,
 * 4096..2 MiB; 0 means 4096) and `host` 4096-byte aligned. The memory
 * stays owned by the caller and must stay mapped until the session is
 * freed. On the destination the
 * source's blocks must all be registered, with the same names, lengths and
 * page sizes, before the transfer starts (see vmig_incoming_set_block_cb).
 */
int vmig_ram_add(vmig_session *s, const char *name, void *host, uint64_t length, uint32_t page_size,
                 unsigned flags, vmig_error *err);

/*
 * Destination: called on the thread that runs vmig_incoming_run() when the
 * source announces a block that is not registered yet. The callback may map
 * memory and call vmig_ram_add() for it, then return 0; any other return
 * refuses the migration with that code.
 */
typedef int (*vmig_block_cb)(void *opaque, vmig_session *s, const char *name, uint64_t length,
                             uint32_t page_size);
int vmig_incoming_set_block_cb(vmig_session *s, vmig_block_cb cb, void *opaque);

/* ------------------------------------------------------------------ */
/* The VM: hooks of the embedding VMM                                  */

/*
 * Every hook is optional (NULL), is called on the thread that runs
 * vmig_migrate() (source) or vmig_incoming_run() (destination), never
 * concurrently with another hook of the same session, and returns 0 or a
 * negative VMIG_E* code (which fails the migration, naming the hook).
 *
 * Source, in the order they are called:
 *   log_start   before pass 1 reads any page: start dirty logging (KVM:
 *               KVM_MEM_LOG_DIRTY_PAGES on every slot, or dirty-ring on).
 *               Every write from the return on must show in a later
 *               dirty_sync. Only with dirty-track callback (or auto).
 *   dirty_sync  after each pass, 200 ms into each pass that lasts longer
 *               (a probe of the dirty rate; its pages go to the next pass),
 *               and once more after stop: set in `bitmap`
 *               the pages of block `block` (index in vmig_ram_add() order,
 *               `name` its name) written since the previous call (or since
 *               log_start), and re-arm them (KVM_GET_DIRTY_LOG does both).
 *               `bitmap` has one bit per page of the block's page size,
 *               LSB-first in 64-bit words, ceil(npages / 64) words, zeroed
 *               by vmig; setting bits of unwritten pages is allowed (they
 *               are sent again), missing a written page loses data. The
 *               VM runs meanwhile, except for the call after stop.
 *   throttle    set the vCPU throttle: the VM should run only (100 - pct) %
 *               of the time. 0 ends throttling. Called when the policy
 *               changes it, and with 0 when a migration ends (failed, or
 *               completed with the VM stopped), if it was throttled.
 *   stop        pause the vCPUs: on return no guest write happens until
 *               resume. Called once, at switchover (with dirty-track none:
 *               before pass 1).
 *   save_state  after the last page is sent: fill *buf (malloc'd, freed by
 *               vmig) and *len (at most 1 MiB) with the device state, which
 *               the destination's load_state receives.
 *   resume      the migration failed or was canceled after stop: run the
 *               vCPUs again. The VM's memory is as it was (vmig only reads
 *               it), so the VM goes on and a new migration may start later.
 *   log_stop    the migration ended (success or not): stop dirty logging.
 * Destination:
 *   load_state  after every block's digest matched, before the
 *               destination acknowledges: load the source's device state.
 *               A failure refuses the migration (the source resumes).
 * With dirty-track none and no stop hook the caller guarantees that the
 * memory does not change during the migration.
 */
typedef struct vmig_vm_ops {
    int (*log_start)(void *opaque);
    int (*dirty_sync)(void *opaque, uint32_t block, const char *name, uint64_t *bitmap,
                      uint64_t npages);
    void (*log_stop)(void *opaque);
    void (*throttle)(void *opaque, unsigned pct);
    int (*stop)(void *opaque);
    void (*resume)(void *opaque);
    int (*save_state)(void *opaque, void **buf, size_t *len);
    int (*load_state)(void *opaque, const void *buf, size_t len);
} vmig_vm_ops;

/* Set the hooks (copied) before a migration starts; `ops` NULL removes them. */
int vmig_set_vm_ops(vmig_session *s, const vmig_vm_ops *ops, void *opaque);

/* ------------------------------------------------------------------ */
/* Devices: large device state over the data channels                  */

/*
 * A device (a GPU, a VFIO device, the vCPUs) whose state is a stream of
 * bytes, possibly hundreds of MiB, readable only once the VM is stopped.
 * Its state travels in chunks (devstate-chunk bytes) over the same
 * parallel channels as RAM (devstate-path=channels, the default), each
 * with the device's id, instance and chunk index; the destination puts
 * each device's chunks back in order and loads them on a thread of the
 * device's own while RAM and other devices still arrive. devstate-path=
 * control sends the same chunks one after the other on the control
 * channel after RAM instead (the serial path, kept for comparison).
 *
 * Hooks, called with the `opaque` given at registration:
 *   save_iterate  source, optional: after each pre-copy pass, on the
 *                 migrating thread, while the VM runs: write what is worth
 *                 sending early (vmig_devstate_write) and set *remaining
 *                 to the bytes save_final will still write. What it wrote
 *                 reaches load_chunk before save_final's bytes.
 *   pending       source, optional: the bytes save_final will write, for
 *                 the expected downtime before save_iterate has said
 *                 (or for a device without it). 0 if absent.
 *   save_final    source, required there: at switchover, VM stopped, on
 *                 the migrating thread: write the device's state, in
 *                 writes of any size. Its bytes go out while the last
 *                 RAM pass is still being sent.
 *   load_chunk    destination, required there: the device's bytes, in the
 *                 order they were written (cut at chunk boundaries, not at
 *                 the source's write boundaries), on the device's load
 *                 thread, concurrently with other devices' load_chunk.
 *   load_done     destination, optional: the last byte was loaded; check
 *                 the whole. Called on the load thread.
 * Each returns 0 or a negative VMIG_E* code, which fails the migration
 * (the source resumes its VM) naming the device. The switchover completes
 * only after every device's load_done (or last load_chunk) returned 0.
 */
typedef struct vmig_devstate_out vmig_devstate_out;

typedef struct vmig_device_ops {
    int (*save_iterate)(void *opaque, vmig_devstate_out *out, uint64_t *remaining);
    uint64_t (*pending)(void *opaque);
    int (*save_final)(void *opaque, vmig_devstate_out *out);
    int (*load_chunk)(void *opaque, const void *buf, size_t len);
    int (*load_done)(void *opaque);
} vmig_device_ops;

#define VMIG_DEVICE_ID_MAX 255 /* bytes of an id, excluding the NUL */
#define VMIG_MAX_DEVICES   256
/*
 * Register a device before a migration starts (ops copied). `id` 1..255
 * bytes; (id, instance) unique in the session (VMIG_EEXIST otherwise).
 * Source and destination register the same set: a device on one side only
 * refuses the migration.
 */
int vmig_device_register(vmig_session *s, const char *id, uint32_t instance,
                         const vmig_device_ops *ops, void *opaque, vmig_error *err);

/* In save_iterate or save_final: append len bytes to the device's stream
 * (copied; buf may be reused on return). Blocks while the channels' queues
 * are full. 0, or the migration's error (stop writing and return it). */
int vmig_devstate_write(vmig_devstate_out *out, const void *buf, size_t len);
/* The same without the copy: vmig sends straight from buf, which must stay
 * mapped and unchanged until the migration ends (vmig_migrate returns): for
 * state already in host memory that nothing changes while the VM is
 * stopped (a device's memory the VMM maps). Chunks never mix the two. */
int vmig_devstate_write_ref(vmig_devstate_out *out, const void *buf, size_t len);

/* Name of a dirty-track value ("wp-async"). */
const char *vmig_dirty_track_name(uint32_t mode);

/*
 * Source: can this process use the built-in tracker `mode` (VMIG_DIRTY_WP,
 * _WP_ASYNC or _WP_SYNC)? 0, or VMIG_ENOTSUP with a sentence saying what the
 * kernel lacks. VMIG_DIRTY_WP answers for the best available one.
 */
int vmig_dirty_track_probe(uint32_t mode, vmig_error *err);

/* ------------------------------------------------------------------ */
/* Progress events                                                     */

enum vmig_event_type {
    VMIG_EVENT_PASS = 1,       /* a pass ended and the dirty log was synced */
    VMIG_EVENT_THROTTLE = 2,   /* the throttle changed */
    VMIG_EVENT_SWITCHOVER = 3, /* the VM is stopped; the last pass starts */
    VMIG_EVENT_DONE = 4,       /* the migration ended (stats hold the outcome) */
    VMIG_EVENT_NOTICE = 5,     /* something the user should know (message), once */
    /* Continuous checkpoints. */
    VMIG_EVENT_CHECKPOINT = 6, /* checkpoint `checkpoint` committed (primary: acknowledged) */
    VMIG_EVENT_CKPT_FLUSH = 7, /* secondary: checkpoint complete, its pages are flushed now */
    VMIG_EVENT_CKPT_LOAD = 8,  /* secondary: RAM flushed, its device state is loaded now */
    VMIG_EVENT_FAILOVER = 9,   /* secondary: the primary is gone; `checkpoint` is activated */
};

typedef struct vmig_event {
    uint32_t type;                 /* enum vmig_event_type */
    uint32_t pass;                 /* the pass that ended (PASS) or the last one */
    uint64_t remaining_bytes;      /* dirty bytes still to send */
    uint64_t dirty_rate;           /* bytes/s of newly dirtied pages, last pass */
    uint64_t bandwidth;            /* bytes/s on the wire, estimated */
    uint64_t expected_downtime_ns; /* remaining_bytes / bandwidth + dirty-sync time */
    uint32_t throttle_pct;         /* current throttle */
    int32_t result;                /* DONE: 0 or the VMIG_E* code */
    const char *message;           /* NOTICE, FAILOVER: one sentence, valid during the call */
    /* Continuous checkpoints (CHECKPOINT, CKPT_*, FAILOVER). */
    uint64_t checkpoint; /* its number: 0 is the initial copy, then 1, 2, ... */
    uint64_t pause_ns;   /* primary: how long the VM was paused for it */
    uint64_t commit_ns;  /* CHECKPOINT: secondary: from its last byte to the commit;
                          * primary: from the resume to the acknowledgement */
    uint64_t ckpt_bytes; /* RAM bytes (dirty pages) in it */
} vmig_event;

/* Called on the migrating thread; it may call vmig_stats_get() and
 * vmig_cancel(), and must return quickly. */
typedef void (*vmig_event_cb)(void *opaque, vmig_session *s, const vmig_event *ev);
int vmig_set_event_cb(vmig_session *s, vmig_event_cb cb, void *opaque);

/* ------------------------------------------------------------------ */
/* Running a migration                                                 */

/*
 * URIs:   tcp:HOST:PORT     IPv4 address, [IPv6] address or host name
 *         unix:PATH         a unix stream socket
 * A destination may listen on port 0; vmig_incoming_uri() then tells the
 * port the kernel chose.
 */

/*
 * Source: connect to `uri`, send every registered block (live: pass after
 * pass while the VM runs, then stop it and send the rest and the device
 * state), and wait for the destination's verdict. Returns 0 only after the
 * destination confirmed that it holds all the memory (digest checked,
 * unless verify=off): the VM is then stopped and the source may discard
 * it. Any failure before that resumes the VM (if it was stopped) with its
 * memory intact. Blocks the calling thread; use vmig_cancel() from another.
 */
int vmig_migrate(vmig_session *s, const char *uri, vmig_error *err);

/* Destination: bind and listen. Returns at once. */
int vmig_incoming_listen(vmig_session *s, const char *uri, vmig_error *err);
/* Destination: the URI actually bound (with the real port). */
int vmig_incoming_uri(vmig_session *s, char *buf, size_t len);
/*
 * Destination: accept the source's channels and receive until the source
 * says the migration is complete, the digests match, the device state is
 * loaded and the source committed. Returns 0 when the VM may run here. On
 * failure the memory may hold a partial image; the caller discards it.
 */
int vmig_incoming_run(vmig_session *s, vmig_error *err);

/*
 * Continuous checkpoints to a standby (COLO-style), docs/colo.md.
 *
 * Primary: a live migration brings the secondary up to date (checkpoint
 * 0), then every checkpoint-period, or at vmig_colo_checkpoint_request(),
 * the VM is paused, its dirty pages and device state go over the channels,
 * and it resumes; the secondary acknowledges each checkpoint once it has
 * committed it (VMIG_EVENT_CHECKPOINT). Output the VM produced before a
 * checkpoint's pause may leave the host once that checkpoint is
 * acknowledged. Returns only when the protection ends: vmig_cancel()
 * (VMIG_ECANCELED; the secondary is told and does not take over) or the
 * secondary is lost (its error). The VM runs on in every case.
 * Needs dirty tracking (dirty-track) and the stop/resume hooks.
 */
int vmig_colo_primary(vmig_session *s, const char *uri, vmig_error *err);
/* Primary: take a checkpoint now (any thread). VMIG_ESTATE when none runs. */
int vmig_colo_checkpoint_request(vmig_session *s);
/*
 * Secondary (after vmig_incoming_listen): receive checkpoint 0 into RAM,
 * then each later checkpoint into a RAM cache; once a checkpoint is whole
 * (every channel past its barrier, the digests of its pages checked) its
 * pages are flushed into RAM on flush-threads threads and the devices'
 * state is loaded, then it is acknowledged. A checkpoint cut short is
 * discarded, never half applied. Returns 0 when the primary is gone (the
 * connection lost, or silent for heartbeat-timeout) after at least one
 * committed checkpoint: RAM and devices hold the last one and the VM
 * should run here now (failover). VMIG_ECANCELED when the primary ended
 * the protection or vmig_cancel() was called; another error when the
 * stream was bad: the VM must not run here (the primary runs on).
 */
int vmig_colo_secondary(vmig_session *s, vmig_error *err);

/*
 * Fault sites, for tests (docs/faults.md). `spec` is a comma-separated
 * list of faults, each SITE[:KEY=VALUE]..., SITE a name or its number:
 *   close   (1) shut the channel's connection down (both ways), as a cut link
 *   stall   (2) the channel sleeps ms=N milliseconds (default 1000)
 *   corrupt (3) flip a bit of the packet header (its CRC then fails)
 *   alloc   (4) the n=N-th allocation of channel buffers fails (default 1)
 *   kill    (5) the process kills itself (SIGKILL), as a crashed peer
 * Keys: ch=N|any (default any) the channel; pkt=N (default 1) the N-th
 * packet that channel sends (source: RAM packets) or receives
 * (destination: any packet), counted from each migration's start;
 * role=src|dst the fault only for a session of that role. Each fault
 * fires once. Replaces the session's faults; "" clears them; VMIG_ESTATE
 * while a migration runs. The environment variable VMIG_FAULTS, when set,
 * is applied this way to every session at creation (a bad one is
 * reported on stderr and ignored), so that tests can inject into tools.
 */
enum vmig_fault_site {
    VMIG_FAULT_CLOSE = 1,
    VMIG_FAULT_STALL = 2,
    VMIG_FAULT_CORRUPT = 3,
    VMIG_FAULT_ALLOC = 4,
    VMIG_FAULT_KILL = 5,
};
int vmig_fault_set(vmig_session *s, const char *spec, vmig_error *err);
/* "close", ..., "unknown". */
const char *vmig_fault_site_name(uint32_t site);

/*
 * Ask a running vmig_migrate() or vmig_incoming_run() to stop. Safe from
 * any thread, including a signal handler-free monitor thread. The running
 * call returns VMIG_ECANCELED.
 */
void vmig_cancel(vmig_session *s);

/* ------------------------------------------------------------------ */
/* Statistics, readable at any time from any thread                    */

enum vmig_state {
    VMIG_STATE_NEW = 0,
    VMIG_STATE_SETUP = 1,
    VMIG_STATE_ACTIVE = 2,
    VMIG_STATE_VERIFYING = 3,
    VMIG_STATE_COMPLETED = 4,
    VMIG_STATE_FAILED = 5,
    VMIG_STATE_CANCELED = 6,
    VMIG_STATE_CHECKPOINTING = 7, /* continuous checkpoints: checkpoint 0 committed */
};

typedef struct vmig_channel_stats {
    uint64_t bytes;   /* bytes on the wire (headers included) */
    uint64_t packets; /* RAM packets */
    uint64_t busy_ns; /* time spent preparing, sending or receiving packets */
    uint64_t cpu_ns;  /* CPU time of the channel's thread */
} vmig_channel_stats;

/* Zero-page detection on the channels (source). Every page the channels
 * classified is counted once in dev_pages, cpu_pages or untouched. */
typedef struct vmig_accel_stats {
    char engine[160];       /* "cpu (...)", "DSA wq0.0 (dedicated, 128 entries)"; "" unused */
    uint64_t batches;       /* batches the device accepted */
    uint64_t dev_pages;     /* pages the device answered */
    uint64_t cpu_pages;     /* pages the channel threads checked themselves */
    uint64_t tail_pages;    /* of those, taken from the tail of a batch the device was behind on */
    uint64_t faults;        /* pages the device stopped at a page fault */
    uint64_t untouched;     /* never touched (pagemap, before submission or at a fault):
                             * zero without reading them */
    uint64_t retries;       /* submissions a full queue refused */
    uint64_t fallbacks;     /* packets checked whole on the CPU (queue full, device failed) */
    uint64_t late;          /* batches the CPU finished before the device did */
    uint64_t device_cpu_ns; /* host CPU the device itself used (dsa-model's thread) */
    uint32_t failed;        /* 1: the device failed; the CPU checked the rest */
    char note[256];         /* why auto chose the CPU, or how the device failed */
} vmig_accel_stats;

typedef struct vmig_codec_stats {
    uint64_t packets;   /* RAM packets with this codec */
    uint64_t pages;     /* normal pages in them */
    uint64_t in_bytes;  /* page bytes before compression */
    uint64_t out_bytes; /* payload bytes on the wire */
    uint64_t ns;        /* time spent compressing (source) or decompressing */
} vmig_codec_stats;

typedef struct vmig_stats {
    uint32_t state;        /* enum vmig_state */
    uint32_t channels;     /* data channels in use */
    uint64_t elapsed_ns;   /* since the transfer started (frozen at the end) */
    uint64_t total_bytes;  /* RAM registered, bytes */
    uint64_t ram_bytes;    /* RAM covered so far (normal + zero pages), bytes */
    uint64_t wire_bytes;   /* bytes on the wire, sum over the data channels */
    uint64_t normal_pages; /* pages whose data was sent */
    uint64_t zero_pages;   /* pages sent as "zero" without data */
    uint64_t packets;      /* RAM packets */
    uint64_t cpu_ns;       /* CPU time of the session's threads (caller, channels, load threads) */
    uint64_t verify_ns;    /* time of the end-of-migration digest check */
    double mbps;           /* wire throughput, megabytes (1e6) per second */
    /* Live pre-copy (source; the destination fills pass only). */
    uint32_t dirty_track;          /* enum vmig_dirty_track in use (auto resolved) */
    uint32_t pass;                 /* current pass, from 1 */
    uint64_t dirty_pages;          /* pages found dirty over all syncs */
    uint64_t remaining_bytes;      /* dirty bytes at the last sync */
    uint64_t dirty_rate;           /* bytes/s, last pass */
    uint64_t bandwidth;            /* bytes/s, estimated */
    uint64_t expected_downtime_ns; /* at the last sync */
    uint32_t throttle_pct;         /* current vCPU throttle */
    uint32_t throttle_max_pct;     /* highest throttle of the run */
    uint64_t downtime_ns;          /* stop to the destination's commit; 0 until then */
    uint64_t sync_ns;              /* time spent in dirty-log syncs */
    uint32_t forced;               /* 1 when on-limit=switch forced the switchover */
    /* Compression, per codec (index enum vmig_codec). Source: what it encoded;
     * destination: what it decoded. Zero-page-only packets count as none. */
    vmig_codec_stats codec[VMIG_CODEC_COUNT];
    char deflate_path[64]; /* "software (hardware path not built)"; "" when unused */
    vmig_accel_stats accel;
    /* Device state (vmig_device_register). */
    uint32_t devices;        /* devices in the run */
    uint32_t dev_path;       /* enum vmig_devstate_path of the run */
    uint32_t dev_chunks;     /* chunks sent (source) or loaded (destination) */
    uint64_t dev_bytes;      /* device-state bytes sent or loaded */
    uint64_t dev_iter_bytes; /* of them, written by save_iterate during pre-copy */
    uint64_t dev_save_ns;    /* source: time in save_final (VM stopped) */
    uint64_t dev_load_ns;    /* destination: time in load_chunk and load_done, all devices */
    uint64_t dev_held_max;   /* destination: most bytes one device held out of order */
    /* Continuous checkpoints (vmig_colo_*). */
    uint64_t checkpoints;     /* committed after checkpoint 0 (primary: acknowledged) */
    uint64_t ckpt_last_bytes; /* RAM bytes of the last committed checkpoint */
    uint64_t ckpt_pause_ns;   /* primary: pause of the last checkpoint */
    uint64_t ckpt_pause_max_ns;
    uint64_t ckpt_pause_total_ns;
    uint64_t ckpt_commit_ns; /* secondary: last commit (flush + device load); primary: ack */
    uint64_t ckpt_commit_max_ns;
    uint64_t ckpt_flush_ns;  /* secondary: flush of the last checkpoint */
    uint32_t flush_threads;  /* secondary: threads of the RAM-cache flush */
    uint32_t ckpt_discarded; /* secondary: 1 when an incomplete checkpoint was thrown away */
    uint32_t faults_fired;   /* faults of vmig_fault_set / VMIG_FAULTS that fired */
    /* TLS (params tls, tls-*): what was negotiated, "TLS1.3 x509 AES-128-GCM", "" when off. */
    char tls[64];
    uint32_t tls_conns;      /* connections protected (control + data) */
    uint32_t tls_ktls_conns; /* of them, with the kernel doing the record layer */
    char tls_ktls_why[192];  /* when some had no kernel TLS: why ("the kernel has no ...") */
    /* resume=on: data channels that broke and connected again (counted on
     * both sides once the destination's acknowledgement of what landed is
     * through, so the two agree), and the packets and wire bytes
     * the source sent again because no acknowledgement covered them. */
    uint32_t reconnects;
    uint64_t resent_packets, resent_bytes;
    /* Source, resume=on: times a channel had resume-window packets not
     * acknowledged and waited for an acknowledgement before writing on. */
    uint64_t window_waits;
    vmig_channel_stats ch[VMIG_MAX_CHANNELS];
} vmig_stats;

int vmig_stats_get(vmig_session *s, vmig_stats *out);

/* Name of a state ("active"). */
const char *vmig_state_name(uint32_t state);

#ifdef __cplusplus
}
#endif
#endif /* VMIG_VMIG_H */
