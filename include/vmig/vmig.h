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

enum vmig_verify {
    VMIG_VERIFY_OFF = 0, /* no end-of-migration digest check */
    VMIG_VERIFY_ON = 1,  /* digest built page by page as pages land (default) */
    VMIG_VERIFY_FULL = 2 /* both sides re-read all their memory at the end */
};

enum vmig_prefault {
    VMIG_PREFAULT_NONE = 0,  /* destination pages fault in on first write */
    VMIG_PREFAULT_AHEAD = 1, /* populate each packet's pages just before reading (default) */
};

typedef struct vmig_params {
    uint32_t channels;           /* data channels, 1..64; default 4 */
    uint32_t packet_pages;       /* pages per packet, 1..1024; default 128 */
    uint32_t zero_detect;        /* enum vmig_zero_detect; default channel */
    uint32_t verify;             /* enum vmig_verify; default on */
    uint32_t prefault;           /* enum vmig_prefault; destination only */
    uint64_t max_bandwidth;      /* bytes/s on the wire over all channels; 0 = unlimited */
    uint32_t connect_timeout_ms; /* source connect and destination accept; default 10000 */
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
/* Running a migration                                                 */

/*
 * URIs:   tcp:HOST:PORT     IPv4 address, [IPv6] address or host name
 *         unix:PATH         a unix stream socket
 * A destination may listen on port 0; vmig_incoming_uri() then tells the
 * port the kernel chose.
 */

/*
 * Source: connect to `uri`, send every registered block, and wait for the
 * destination's verdict. Returns 0 only after the destination confirmed
 * that it holds all the memory (digest checked, unless verify=off).
 * Blocks the calling thread; use vmig_cancel() from another thread.
 */
int vmig_migrate(vmig_session *s, const char *uri, vmig_error *err);

/* Destination: bind and listen. Returns at once. */
int vmig_incoming_listen(vmig_session *s, const char *uri, vmig_error *err);
/* Destination: the URI actually bound (with the real port). */
int vmig_incoming_uri(vmig_session *s, char *buf, size_t len);
/*
 * Destination: accept the source's channels and receive until the source
 * says the migration is complete and the digests match. On failure the
 * memory may hold a partial image; the caller discards it.
 */
int vmig_incoming_run(vmig_session *s, vmig_error *err);

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
};

typedef struct vmig_channel_stats {
    uint64_t bytes;   /* bytes on the wire (headers included) */
    uint64_t packets; /* RAM packets */
    uint64_t busy_ns; /* time spent preparing, sending or receiving packets */
} vmig_channel_stats;

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
    uint64_t cpu_ns;       /* CPU time of the session's threads (caller included) */
    uint64_t verify_ns;    /* time of the end-of-migration digest check */
    double mbps;           /* wire throughput, megabytes (1e6) per second */
    vmig_channel_stats ch[VMIG_MAX_CHANNELS];
} vmig_stats;

int vmig_stats_get(vmig_session *s, vmig_stats *out);

/* Name of a state ("active"). */
const char *vmig_state_name(uint32_t state);

#ifdef __cplusplus
}
#endif
#endif /* VMIG_VMIG_H */
