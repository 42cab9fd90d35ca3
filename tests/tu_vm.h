/*
 * A pretend VM for the live tests: a memory image dirtied by the writer
 * threads of bench/live.h, behind the vmig_vm_ops hooks (stop = pause the
 * writers, throttle = their duty cycle, a small device-state blob), with a
 * count of every hook call. Include after <vmig/vmig.h>, testutil.h, live.h.
 */
#ifndef VMIG_TU_VM_H
#define VMIG_TU_VM_H

#include <stdlib.h>
#include <unistd.h>

#define TU_STATE_LEN 4096

typedef struct tu_vm {
    uint8_t *mem, *orig; /* the image and its content at creation */
    uint64_t len;
    vmig_live *live;
    /* hook calls (atomics: a test may read them from another thread) */
    int stops, resumes, throttles, saves, loads;
    unsigned last_throttle, max_throttle;
    /* what the hooks do besides */
    vmig_session *cancel_on_stop; /* stop calls vmig_cancel() on it */
    int fail_stop;                /* stop returns this */
    uint8_t state[TU_STATE_LEN];  /* device state (source) / what arrived (destination) */
    size_t state_len;
} tu_vm;

static int tu_vm_stop(void *o)
{
    tu_vm *vm = o;
    __atomic_add_fetch(&vm->stops, 1, __ATOMIC_RELAXED);
    if (vm->cancel_on_stop)
        vmig_cancel(vm->cancel_on_stop);
    vmig_live_pause(vm->live);
    return vm->fail_stop;
}

static void tu_vm_resume(void *o)
{
    tu_vm *vm = o;
    __atomic_add_fetch(&vm->resumes, 1, __ATOMIC_RELAXED);
    vmig_live_resume(vm->live);
}

static void tu_vm_throttle(void *o, unsigned pct)
{
    tu_vm *vm = o;
    __atomic_add_fetch(&vm->throttles, 1, __ATOMIC_RELAXED);
    vm->last_throttle = pct;
    if (pct > vm->max_throttle)
        vm->max_throttle = pct;
    vmig_live_throttle(vm->live, pct);
}

static int tu_vm_save(void *o, void **buf, size_t *len)
{
    tu_vm *vm = o;
    __atomic_add_fetch(&vm->saves, 1, __ATOMIC_RELAXED);
    *buf = malloc(vm->state_len ? vm->state_len : 1);
    if (!*buf)
        return VMIG_ENOMEM;
    memcpy(*buf, vm->state, vm->state_len);
    *len = vm->state_len;
    return 0;
}

static int tu_vm_load(void *o, const void *buf, size_t len)
{
    tu_vm *vm = o;
    __atomic_add_fetch(&vm->loads, 1, __ATOMIC_RELAXED);
    if (len > sizeof(vm->state))
        return VMIG_EINVAL;
    memcpy(vm->state, buf, len);
    vm->state_len = len;
    return 0;
}

static const vmig_vm_ops tu_vm_src_ops = {
    .throttle = tu_vm_throttle,
    .stop = tu_vm_stop,
    .resume = tu_vm_resume,
    .save_state = tu_vm_save,
};
static const vmig_vm_ops tu_vm_dst_ops = {.load_state = tu_vm_load};

/* An image of `len` bytes: a page-index pattern with zero pages between
 * (so both page kinds travel), a copy of it, and writers dirtying `rate`
 * bytes/s over the first `hot` bytes. */
static inline void tu_vm_init(tu_vm *vm, uint64_t len, uint64_t rate, uint64_t hot,
                              unsigned writers, uint64_t seed)
{
    memset(vm, 0, sizeof(*vm));
    vm->len = len;
    vm->mem = tu_map(len);
    vm->orig = malloc(len);
    REQUIRE(vm->orig, "malloc");
    uint64_t st = seed;
    for (uint64_t p = 0; p < len / 4096; p++) {
        uint64_t *w = (uint64_t *)(vm->mem + p * 4096);
        if (p % 3 == 2)
            continue; /* a zero page, never touched */
        for (int k = 0; k < 512; k += 8)
            w[k] = tu_rand(&st);
    }
    memcpy(vm->orig, vm->mem, len);
    for (size_t i = 0; i < 64; i++)
        vm->state[i] = (uint8_t)(seed + i);
    vm->state_len = 64;
    struct vmig_live_params lp;
    vmig_live_params_default(&lp);
    lp.writers = writers;
    lp.rate = rate;
    lp.hot_len = hot;
    lp.redirty_pct = 30;
    lp.seed = seed;
    REQUIRE(vmig_live_create(&vm->live, vm->mem, len, &lp, false) == 0, "live workload");
}

static inline void tu_vm_free(tu_vm *vm)
{
    vmig_live_free(vm->live);
    munmap(vm->mem, vm->len);
    free(vm->orig);
}

static inline uint64_t tu_vm_writes(tu_vm *vm)
{
    struct vmig_live_stats st;
    vmig_live_stats(vm->live, &st);
    return st.writes;
}

/* The source's memory is what the writers made of the original image: vmig
 * changed nothing. Pauses the writers for the check and resumes them if
 * they were running. */
static inline bool tu_vm_intact(tu_vm *vm, char *msg, size_t len)
{
    struct vmig_live_stats st;
    vmig_live_stats(vm->live, &st);
    vmig_live_pause(vm->live);
    int rc = vmig_live_check(vm->live, vm->orig, msg, len);
    if (!st.paused)
        vmig_live_resume(vm->live);
    return rc == 0;
}

/*
 * The destination role of a test's child process: one "ram" block of
 * `size` bytes, listening on `uri`; writes "ready" on fd once it listens,
 * then receives. Exit status 0 (received) or 1.
 */
static inline int tu_child_dest(const char *uri, uint64_t size, const vmig_params *p, int fd)
{
    uint8_t *mem = tu_map(size);
    vmig_session *s;
    vmig_error e = {0};
    static tu_vm dvm;
    if (vmig_session_create(&s, VMIG_ROLE_DEST, p, &e) ||
        vmig_ram_add(s, "ram", mem, size, 4096, VMIG_RAM_ZEROED, &e) ||
        vmig_set_vm_ops(s, &tu_vm_dst_ops, &dvm) || vmig_incoming_listen(s, uri, &e)) {
        fprintf(stderr, "child dest: %s\n", e.msg);
        return 1;
    }
    if (write(fd, "ready\n", 6) != 6)
        return 1;
    close(fd);
    int rc = vmig_incoming_run(s, &e);
    vmig_session_free(s);
    return rc ? 1 : 0;
}

#endif
