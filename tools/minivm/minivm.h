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

#include <linux/kvm.h>

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
};

struct minivm {
    int kvm_fd, vm_fd;
    size_t run_size;
    struct minivm_slot slot[MINIVM_NSLOTS];
    unsigned nvcpus;
    struct minivm_vcpu vcpu[MINIVM_MAX_VCPUS];
    struct kvm_cpuid2 *cpuid;
    uint64_t tsc_khz;
    bool manual_protect; /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled */
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
void *minivm_gpa(struct minivm *vm, uint64_t gpa, uint64_t len);
struct minivm_config *minivm_config_page(struct minivm *vm);
uint64_t *minivm_page_ptr(struct minivm *vm, uint64_t index);
int minivm_setup_long_mode_tables(struct minivm *vm);
int minivm_load_guest(struct minivm *vm, const char *path);
int minivm_fill_mix(struct minivm *vm, uint64_t seed);
int minivm_dirty_log_set(struct minivm *vm, bool on);
int minivm_dirty_sync_slot(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages);

/* vcpu.c */
int minivm_vcpus_create(struct minivm *vm, unsigned n);
int minivm_vcpu_boot_state(struct minivm_vcpu *v);
int minivm_vcpus_start(struct minivm *vm);
void minivm_vcpus_pause(struct minivm *vm);
void minivm_vcpus_resume(struct minivm *vm);
void minivm_vcpus_stop(struct minivm *vm);
void minivm_vcpus_throttle(struct minivm *vm, unsigned pct);

/* vcpu_state.c */
int minivm_state_save(struct minivm *vm, void **buf, size_t *len);
/* Validates every length and count, creates the vCPUs and loads them. */
int minivm_state_load(struct minivm *vm, const void *buf, size_t len, char *msg, size_t msglen);
int minivm_state_apply_tsc(struct minivm *vm);

/* verify.c */
/* Checks every workload page; 0, or -1 with the first bad page in msg. */
int minivm_verify(struct minivm *vm, uint64_t *checked, char *msg, size_t msglen);

#endif
