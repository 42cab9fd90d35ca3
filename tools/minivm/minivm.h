/*
 * minivm: the KVM reference VMM of libvmig. One VM per process: guest RAM in
 * two memory slots (one vmig RAM block each), 1..4 vCPUs on their own
 * threads, a KVM dirty log behind vmig's dirty hooks, and the vCPU state
 * behind save_state/load_state. The guest contract is guest_abi.h.
 */
#ifndef MINIVM_MINIVM_H
#define MINIVM_MINIVM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <linux/kvm.h>

#include <vmig/vmig.h>

#include "guest_abi.h"

#define MINIVM_NSLOTS 2

/* Exit codes of the minivm command (documented in --help). */
enum {
    MINIVM_EXIT_OK = 0,
    MINIVM_EXIT_MIGRATE = 1, /* the migration failed */
    MINIVM_EXIT_USAGE = 2,   /* bad command line */
    MINIVM_EXIT_VERIFY = 3,  /* destination memory does not match the workload's invariant */
    MINIVM_EXIT_GUEST = 5,   /* the guest reported a failure, or its counter did not continue */
    MINIVM_EXIT_VM = 6,      /* KVM setup failed or a vCPU stopped unexpectedly */
};

struct minivm_slot {
    uint8_t *host;  /* mmap'd, MAP_SHARED | MAP_ANONYMOUS */
    uint64_t gpa;   /* guest-physical base */
    uint64_t size;  /* bytes, 0 = slot absent */
    uint32_t flags; /* current KVM_MEM_* flags */
};

struct minivm;

struct minivm_vcpu {
    struct minivm *vm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    /* Throttle slice bookkeeping (vCPU thread only). */
    void *timer; /* timer_t, armed while a throttled slice runs */
    bool timer_ok;
    /* Debug-port line buffer. */
    char line[256];
    size_t line_len;
    /* Dirty ring (ring mode only): KVM's mmap'd entries and the free-running
     * index of the next one to harvest (masked by ring_entries - 1). Both
     * under minivm.ring_lock. */
    struct kvm_dirty_gfn *ring;
    uint32_t ring_next;
};

/* How minivm reads the guest's dirty pages (chosen before the vCPUs exist). */
enum minivm_dirty_mode {
    MINIVM_DIRTY_BITMAP = 0, /* KVM_GET_DIRTY_LOG (+ KVM_CLEAR_DIRTY_LOG with manual protect) */
    MINIVM_DIRTY_RING = 1,   /* KVM_CAP_DIRTY_LOG_RING: per-vCPU rings of dirty GFNs */
};

/* Dirty-ring counters since minivm_dirty_ring_enable (all under ring_lock). */
struct minivm_ring_stats {
    uint64_t harvests;       /* harvests (dirty_sync, ring-full exits, log start/stop) */
    uint64_t entries;        /* ring entries harvested */
    uint64_t discarded;      /* of them, dropped because logging was (being) off */
    uint64_t bad_entries;    /* of them, naming no page of slot 0 or 1 (dropped, reported) */
    uint64_t full_exits;     /* KVM_EXIT_DIRTY_RING_FULL, all vCPUs */
    uint64_t resets;         /* KVM_RESET_DIRTY_RINGS calls */
    uint64_t harvest_ns;     /* time in harvests, KVM_RESET_DIRTY_RINGS included */
    uint64_t harvest_max_ns; /* the longest harvest */
    uint64_t full_ns;        /* of harvest_ns, spent on ring-full exits (the vCPU waits) */
    uint64_t reaps;          /* harvests by the reaper thread */
    uint64_t overflows;      /* rings KVM overran (lost entries), see dirty_ring.c */
    uint64_t resyncs;        /* whole-RAM re-protects after an overflow */
};

/* The guest's console lines, held back under continuous checkpoints until
 * a checkpoint that covers them is acknowledged (console.c). */
struct minivm_console {
    pthread_mutex_t lock;
    bool hold;           /* protected: lines go to buf, not out */
    char *buf;           /* "guest: TEXT\n" lines, oldest first */
    size_t len, cap;     /* bytes held, allocated */
    size_t sealed;       /* of len, covered by the last checkpoint's pause */
    uint64_t held_lines; /* lines in buf, and of them in the sealed part */
    uint64_t sealed_lines;
    uint64_t released_lines; /* lines printed after their checkpoint's ack */
    uint64_t dropped;        /* lines lost: the buffer was full (never released early) */
    FILE *out;               /* where lines go; NULL: stderr */
};
/* At most this much text is held (a guest that writes faster than it is
 * checkpointed loses lines, counted in `dropped`). */
#define MINIVM_CONSOLE_MAX (16u << 20)

struct minivm {
    int kvm_fd, vm_fd;
    size_t run_size;
    struct minivm_slot slot[MINIVM_NSLOTS];
    unsigned nvcpus;
    struct minivm_vcpu vcpu[MINIVM_MAX_VCPUS];
    struct kvm_cpuid2 *cpuid;
    uint64_t tsc_khz;
    bool manual_protect; /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled */
    enum minivm_dirty_mode dirty_mode;

    /* Ring mode (dirty_ring.c). ring_lock guards every vCPU's ring_next, the
     * pending bitmaps, the flags below and ring_stats; it is taken by
     * dirty_sync on vmig's thread, by a vCPU thread on
     * KVM_EXIT_DIRTY_RING_FULL and by the reaper thread. */
    uint32_t ring_entries; /* per vCPU, a power of two */
    bool ring_acq_rel;     /* enabled as KVM_CAP_DIRTY_LOG_RING_ACQ_REL */
    pthread_mutex_t ring_lock;
    pthread_cond_t ring_cond;              /* wakes the reaper to stop */
    uint64_t *ring_pending[MINIVM_NSLOTS]; /* harvested, not yet given to vmig */
    bool ring_resync; /* a ring overflowed: re-protect all, all pages dirty at next sync */
    bool ring_failed; /* KVM_RESET_DIRTY_RINGS failed: the log is unreliable */
    bool reaper_on;   /* the reaper thread runs (logging on) */
    bool reaper_stop;
    pthread_t reaper;
    struct minivm_ring_stats ring_stats;
    bool quiet;

    /* Pause protocol: pause_req and quit are set before a kick; each vCPU
     * thread counts itself in `paused` while it waits outside KVM_RUN. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pause_req; /* atomic */
    int quit;      /* atomic */
    unsigned paused;
    unsigned running;      /* threads still in their loop */
    unsigned throttle_pct; /* atomic */

    /* What the guest or KVM reported (atomic). */
    int guest_failed; /* CHECK_FAIL or COUNTER_JUMP seen */
    int vm_error;     /* unexpected exit: HLT of a busy vCPU, shutdown, internal error */
    int guest_done;
    unsigned ready_mask;

    /* The synthetic device (--device-state), NULL without one. */
    struct minivm_sdev *sdev;
    /* Destination: the vCPU state as its chunks arrive (minivm_cpus_ops). */
    uint8_t *cpus_in;
    size_t cpus_in_len, cpus_in_cap;
    /* COLO secondary (cpus_keep): every checkpoint loads the whole vCPU
     * state again; load_done checks it and keeps it here, replacing the
     * previous one, instead of writing it into KVM. Failover applies the
     * last one (minivm_cpus_apply_kept). */
    bool cpus_keep;
    uint8_t *cpus_kept;
    size_t cpus_kept_len;
    uint32_t cpus_kept_nvcpus;
    uint64_t cpus_loads; /* load_done calls that succeeded */

    /* The debug port's complete lines (console.c). */
    struct minivm_console console;

    /* TSC values to restore right before the vCPUs start (destination). */
    bool tsc_pending;
    uint64_t tsc_value[MINIVM_MAX_VCPUS];
};

/* kvm_vm.c */
int minivm_vm_open(struct minivm *vm);
void minivm_vm_close(struct minivm *vm);
/* Map slot `n` (0: low at 0, 1: high at 4 GiB) of `size` bytes and register it. */
int minivm_slot_create(struct minivm *vm, unsigned n, uint64_t size);
int minivm_layout_mem(struct minivm *vm, uint64_t mem);
/* Populate every slot's memory (a prefaulted destination). */
int minivm_prefault(struct minivm *vm);
void *minivm_gpa(struct minivm *vm, uint64_t gpa, uint64_t len);
struct minivm_config *minivm_config_page(struct minivm *vm);
uint64_t *minivm_page_ptr(struct minivm *vm, uint64_t index);
int minivm_setup_long_mode_tables(struct minivm *vm);
int minivm_load_guest(struct minivm *vm, const char *path);
int minivm_fill_mix(struct minivm *vm, uint64_t seed);
int minivm_dirty_log_set(struct minivm *vm, bool on);
int minivm_dirty_sync_slot(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages);

/* dirty_ring.c */
/* Switch the dirty log to KVM's dirty ring, `entries` (a power of two, 0 =
 * the default) per vCPU. Call after minivm_vm_open and before the vCPUs are
 * created (KVM refuses it later); turns manual protect off. -1 with a
 * message when the kernel lacks the ring or refuses the size; the VM then
 * stays in bitmap mode. */
int minivm_dirty_ring_enable(struct minivm *vm, uint32_t entries);
/* vcpu.c's minivm_vcpus_create: map vCPU v's ring (ring mode only). */
int minivm_dirty_ring_map(struct minivm *vm, struct minivm_vcpu *v);
/* vCPU thread, on KVM_EXIT_DIRTY_RING_FULL: harvest, count the exit. */
int minivm_dirty_ring_full(struct minivm_vcpu *v);
/* minivm_dirty_log_set: `on` allocates the pending bitmaps; both drop what
 * the rings hold (pass 1 sends every page; nothing is logged after off). */
int minivm_dirty_ring_log_set(struct minivm *vm, bool on);
/* minivm_dirty_sync_slot in ring mode: harvest, OR slot n's pending pages
 * into `bitmap`, clear them. */
int minivm_dirty_ring_sync_slot(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages);
/* A consistent copy of the counters (zeros in bitmap mode). */
void minivm_dirty_ring_stats(struct minivm *vm, struct minivm_ring_stats *out);
/* kvm_vm.c, for the ring's overflow recovery: take dirty logging off every
 * slot and put it back, which write-protects all their pages again. */
int minivm_dirty_log_rearm(struct minivm *vm);
/* minivm_vm_close: unmap the rings, free the pending bitmaps. */
void minivm_dirty_ring_close(struct minivm *vm);

/* vcpu.c */
int minivm_vcpus_create(struct minivm *vm, unsigned n);
int minivm_vcpu_boot_state(struct minivm_vcpu *v);
int minivm_vcpus_start(struct minivm *vm);
void minivm_vcpus_pause(struct minivm *vm);
void minivm_vcpus_resume(struct minivm *vm);
void minivm_vcpus_stop(struct minivm *vm);
void minivm_vcpus_throttle(struct minivm *vm, unsigned pct);

/* vcpu_state_format.c: the device-state blob (format at the top of the
 * file). Pure: no ioctls, no I/O; the fuzz target links it alone. */
enum minivm_state_sec {
    MINIVM_SEC_END = 0,
    MINIVM_SEC_REGS = 1,
    MINIVM_SEC_SREGS = 2,
    MINIVM_SEC_XSAVE = 3,
    MINIVM_SEC_XCRS = 4,
    MINIVM_SEC_MSRS = 5,
    MINIVM_SEC_EVENTS = 6,
    MINIVM_SEC_LAPIC = 7,
    MINIVM_SEC_MP_STATE = 8,
    MINIVM_SEC_COUNT
};

#define MINIVM_MSR_IA32_TSC 0x10u
#define MINIVM_STATE_NMSRS  12
/* The MSRs the state carries (those the CPU has), TSC first. */
extern const uint32_t minivm_state_msrs[MINIVM_STATE_NMSRS];

/* One vCPU's state as in the blob. Fields of sections not `seen` are zero;
 * of events only the fields of the format are used. */
struct minivm_vcpu_state {
    uint32_t seen; /* 1u << MINIVM_SEC_* for each section present */
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    uint32_t xsave[1024]; /* the legacy 4 KiB region of struct kvm_xsave */
    struct kvm_xcrs xcrs; /* nr_xcrs <= KVM_MAX_XCRS */
    uint32_t nmsrs;       /* <= MINIVM_STATE_NMSRS, indexes known and distinct */
    struct kvm_msr_entry msrs[MINIVM_STATE_NMSRS];
    struct kvm_vcpu_events events;
    struct kvm_lapic_state lapic;
    uint32_t mp_state; /* KVM_MP_STATE_* */
};

/* The whole device state (about 25 KiB: allocate it). */
struct minivm_state {
    uint32_t nvcpus; /* 1..MINIVM_MAX_VCPUS */
    uint64_t tsc_khz;
    struct minivm_vcpu_state vcpu[MINIVM_MAX_VCPUS];
};

/* Checks every length, count, tag and index of `buf` and fills `st`; 0, or
 * -1 with a sentence in msg. A blob that parses is canonical: serializing
 * `st` gives the same bytes. */
int minivm_state_parse(const void *buf, size_t len, struct minivm_state *st, char *msg,
                       size_t msglen);
/* Encodes the sections in `seen` of each vCPU into a malloc'd buffer; -1
 * when out of memory or `st` breaks a limit of the format. */
int minivm_state_serialize(const struct minivm_state *st, void **buf, size_t *len);
/* "registers", "LAPIC", ... for messages. */
const char *minivm_state_section_name(unsigned tag);

/* vcpu_state.c: the state between KVM and the blob. */
int minivm_state_save(struct minivm *vm, void **buf, size_t *len);
/* Parses the whole blob first, then creates the vCPUs (if there are none)
 * and loads them; the TSC waits for minivm_state_apply_tsc(). */
int minivm_state_load(struct minivm *vm, const void *buf, size_t len, char *msg, size_t msglen);
int minivm_state_apply_tsc(struct minivm *vm);
/* The vCPU state as a vmig device ("cpus", opaque: the VM): saved at
 * switchover (and at every checkpoint), collected on the destination and
 * loaded at its last chunk; each load starts again from its first byte,
 * so a secondary may load it once per checkpoint. With vm->cpus_keep the
 * load only checks and keeps it. */
extern const vmig_device_ops minivm_cpus_ops;
#define MINIVM_CPUS_STATE_MAX (1u << 20)
/* Failover: write the kept vCPU state into KVM (creating the vCPUs); 0, or
 * -1 with a sentence in msg (none kept, or KVM refused it). */
int minivm_cpus_apply_kept(struct minivm *vm, char *msg, size_t msglen);

/* console.c: the debug port's lines and their output commit. */
void minivm_console_init(struct minivm_console *c);
void minivm_console_free(struct minivm_console *c);
/* A vCPU thread: one complete line (without its newline). */
void minivm_console_line(struct minivm_console *c, const char *line);
/* Start holding lines back, or stop: then everything held is printed. */
void minivm_console_hold(struct minivm_console *c, bool on);
/* At a checkpoint's pause (vCPUs stopped): what is held now is covered by it. */
void minivm_console_seal(struct minivm_console *c);
/* That checkpoint is acknowledged: print what its pause covered. */
void minivm_console_release(struct minivm_console *c);
void minivm_console_counts(struct minivm_console *c, uint64_t *held, uint64_t *released,
                           uint64_t *dropped);

/* sdev.c: the synthetic device with large state (guest_abi.h). */
struct minivm_sdev;
/* `size`: a multiple of 256 pages, at most 8 GiB; `fill`: give every
 * region its seed-0 content (a source; a destination receives it). -1 on
 * a bad size or no memory. */
int minivm_sdev_create(uint64_t size, bool fill, struct minivm_sdev **out);
void minivm_sdev_free(struct minivm_sdev *d);
uint64_t minivm_sdev_size(const struct minivm_sdev *d);
uint64_t minivm_sdev_region_words(const struct minivm_sdev *d);
/* Populate the buffer (a prefaulted destination). */
int minivm_sdev_prefault(struct minivm_sdev *d);
/* A vCPU's port access; false when `port` is not the device's. */
bool minivm_sdev_io(struct minivm_sdev *d, unsigned vcpu, uint16_t port, bool out, uint32_t *val);
/* The header its saved state starts with (the layout is in sdev.c). */
#define MINIVM_SDEV_HDR_LEN 1072u
void minivm_sdev_header(const struct minivm_sdev *d, uint8_t h[MINIVM_SDEV_HDR_LEN]);
/* Its migration hooks (opaque: the device). */
extern const vmig_device_ops minivm_sdev_ops;
/* Forget a partial load (before another incoming attempt). */
void minivm_sdev_reset_load(struct minivm_sdev *d);
/* Loads completed (load_done without a refusal). */
uint64_t minivm_sdev_loads(const struct minivm_sdev *d);
/* Why the last load was refused ("" when it was not). */
const char *minivm_sdev_refusal(const struct minivm_sdev *d);
/* The whole buffer against the device's seeds, and the seeds against the
 * guest's record in `c` (NULL: not checked); 0, or -1 with the first
 * difference in msg. *cmds: rewrites the device has seen. */
int minivm_sdev_verify(struct minivm_sdev *d, const struct minivm_config *c, uint64_t *cmds,
                       char *msg, size_t msglen);

/* verify.c */
/* Checks every workload page; 0, or -1 with the first bad page in msg. */
int minivm_verify(struct minivm *vm, uint64_t *checked, char *msg, size_t msglen);

#endif
