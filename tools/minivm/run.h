/*
 * `minivm run`: what its modes share. main.c has the options, the monitor,
 * the guest's run loop, the source (migrate) and destination (incoming)
 * paths; colo.c the continuous checkpoints (--colo-primary,
 * --colo-secondary), built from the same pieces.
 */
#ifndef MINIVM_RUN_H
#define MINIVM_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"
#include "minivm.h"

struct run_opts {
    cli_opts o;
    uint64_t mem;
    unsigned vcpus;
    uint64_t rate, check_rate, hot_set, hot_share_pct, seed, run_pages;
    const char *migrate_to, *incoming, *guest;
    uint64_t migrate_after_ms, run_for_ms;
    bool run_for_set, migrate_after_set, verify, verify_dest, mem_set, prefault, monitor;
    int ready_fd;
    bool dirty_ring;
    uint32_t ring_entries;
    uint64_t device_state, device_rate;
    /* Continuous checkpoints: the secondary's URI (primary), or true with
     * `incoming` as the URI to listen on (secondary). */
    const char *colo_primary;
    bool colo_secondary;
    const char *checkpoint_log; /* one line per checkpoint, both sides */
};

enum run_end {
    RUN_TIMEOUT, /* the requested time is over */
    RUN_FAILED,  /* the guest or a vCPU failed */
    RUN_SIGNAL,  /* SIGINT/SIGTERM */
    RUN_QUIT,    /* `quit`, or the end of the monitor's input */
    RUN_MIGRATE, /* `migrate URI` */
};

struct colo_primary;

/* The monitor: commands from the terminal (or a pipe). */
struct monitor {
    bool on;
    bool eof;
    char buf[512];
    size_t len;
    char uri[256];             /* of the last `migrate` */
    struct colo_primary *colo; /* while the guest is protected: `checkpoint`, `info` */
};

/* What minivm measures of its own side of a migration. */
struct mig_stats {
    unsigned syncs;         /* dirty_sync calls (one per slot per pass) */
    uint64_t sync_ns_max;   /* the longest one */
    uint64_t sync_ns_total; /* all of them */
    uint64_t precopy_gap;   /* the guest's longest counter gap while pre-copy ran (TSC) */
    bool precopy_gap_valid;
};

/* The opaque of the vm_ops hooks (run_vm_ops). */
struct hook_ctx {
    struct minivm *vm;
    struct mig_stats st;
    /* COLO primary: the console whose held lines each stop (a checkpoint's
     * pause, the vCPUs stopped) covers; NULL otherwise. */
    struct minivm_console *seal_on_stop;
};

uint64_t now_ms(void);
uint64_t now_ns(void);
/* SIGINT or SIGTERM arrived (minivm's handler). */
bool run_interrupted(void);
/* Let the guest run up to `ms` (UINT64_MAX: until something happens),
 * serving the monitor; returns why it stopped waiting. */
enum run_end run_guest(struct minivm *vm, struct monitor *m, uint64_t ms);
void print_guest(struct minivm *vm, const char *when);
/* The guest's and the vCPUs' verdict so far: MINIVM_EXIT_OK, _GUEST or _VM. */
int vm_verdict(struct minivm *vm);
/* The running guest on this host until `run_ms`, with migrations from the
 * monitor; stops it and returns the exit code. */
int run_vm(struct run_opts *ro, struct minivm *vm, struct monitor *m, const char *uri,
           uint64_t migrate_after_ms, uint64_t run_ms);
/* Dirty log, throttle, stop and resume of the VM (opaque: struct hook_ctx). */
void run_vm_ops(vmig_vm_ops *ops);
/* Register the VM's devices (the vCPUs, the synthetic device). */
int register_devices(vmig_session *s, struct minivm *vm, vmig_error *err);
/* Pass, switchover and notice lines (opaque: const struct run_opts). */
void run_event_cb(void *opaque, vmig_session *s, const vmig_event *ev);

/* Destination: map the device and RAM given on the command line. */
int dest_setup(struct run_opts *ro, struct minivm *vm);
/* Destination: a session that creates the announced RAM and listens on
 * ro->incoming (telling --ready-fd). */
int dest_listen(struct run_opts *ro, struct minivm *vm, vmig_session **out, vmig_error *err);
/* Destination, the VM received (RAM, vCPUs): --verify, resume the guest,
 * run it for --run-for and check that it went on; the exit code. */
int dest_resume(struct run_opts *ro, struct minivm *vm, const char *what);

/* colo.c */
/* The guest runs (vCPUs started): protect it until --run-for or quit. */
int colo_primary_run(struct run_opts *ro, struct minivm *vm, struct monitor *m);
/* Listening (session `s`, freed here): hold the standby copy, take over on
 * failover. */
int colo_secondary_run(struct run_opts *ro, struct minivm *vm, vmig_session *s);
/* The monitor's `info` and `checkpoint` while protected. */
void colo_monitor_info(struct colo_primary *cp);
void colo_monitor_checkpoint(struct colo_primary *cp);

#endif
