/*
 * vCPU threads: the KVM_RUN loop, the guest's ports, pause/resume for
 * vmig's stop/resume hooks and the throttle.
 *
 * Kicking a vCPU out of KVM_RUN: the requester sets pause_req, quit or the
 * throttle first, then sends MINIVM_SIG_KICK to the thread; the handler
 * sets kvm_run->immediate_exit, so a signal that lands just before
 * KVM_RUN still makes it return at once (EINTR). The loop clears
 * immediate_exit after each KVM_RUN and then looks at the flags.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "minivm.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define MINIVM_SIG_KICK (SIGRTMIN + 1)
#define MINIVM_SLICE_NS 10000000ull /* throttle slice: 10 ms */

static __thread struct kvm_run *tls_run;

static void kick_handler(int sig)
{
    (void)sig;
    if (tls_run)
        tls_run->immediate_exit = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int minivm_vcpus_create(struct minivm *vm, unsigned n)
{
    struct sigaction sa = {.sa_handler = kick_handler};
    sigemptyset(&sa.sa_mask);
    sigaction(MINIVM_SIG_KICK, &sa, NULL);
    for (unsigned i = 0; i < n; i++) {
        struct minivm_vcpu *v = &vm->vcpu[i];
        v->vm = vm;
        v->index = i;
        v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
        if (v->fd < 0) {
            fprintf(stderr, "minivm: KVM_CREATE_VCPU %u: %s\n", i, strerror(errno));
            return -1;
        }
        vm->nvcpus = i + 1;
        v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED) {
            v->run = NULL;
            fprintf(stderr, "minivm: mmap kvm_run: %s\n", strerror(errno));
            return -1;
        }
        if (minivm_dirty_ring_map(vm, v))
            return -1;
        /* Leaf 1 EBX[31:24] and leaf 0xb EDX carry the APIC ID. */
        for (uint32_t e = 0; e < vm->cpuid->nent; e++) {
            struct kvm_cpuid_entry2 *c = &vm->cpuid->entries[e];
            if (c->function == 1)
                c->ebx = (c->ebx & 0x00ffffffu) | (i << 24);
            if (c->function == 0xb || c->function == 0x1f)
                c->edx = i;
        }
        if (ioctl(v->fd, KVM_SET_CPUID2, vm->cpuid) < 0) {
            fprintf(stderr, "minivm: KVM_SET_CPUID2: %s\n", strerror(errno));
            return -1;
        }
        if (i == 0) {
            int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
            vm->tsc_khz = khz > 0 ? (uint64_t)khz : 0;
        }
    }
    return 0;
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int code)
{
    *s = (struct kvm_segment){.base = 0,
                              .limit = 0xffffffff,
                              .selector = sel,
                              .type = type,
                              .present = 1,
                              .dpl = 0,
                              .db = code ? 0 : 1,
                              .s = 1,
                              .l = code ? 1 : 0,
                              .g = 1};
}

int minivm_vcpu_boot_state(struct minivm_vcpu *v)
{
    struct kvm_sregs sr;
    if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0)
        return -1;
    set_seg(&sr.cs, 0x08, 0xb, 1);
    set_seg(&sr.ds, 0x10, 0x3, 0);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    sr.tr = (struct kvm_segment){
        .base = 0, .limit = 0x67, .selector = 0, .type = 0xb, .present = 1, .s = 0};
    sr.ldt = (struct kvm_segment){.type = 0x2, .present = 1, .unusable = 1};
    sr.gdt.base = MINIVM_GDT;
    sr.gdt.limit = 3 * 8 - 1;
    sr.idt.base = 0;
    sr.idt.limit = 0;
    sr.cr3 = MINIVM_PML4;
    sr.cr4 = (1u << 5) | (1u << 9) | (1u << 10); /* PAE | OSFXSR | OSXMMEXCPT */
    sr.cr0 = (1u << 0) | (1u << 1) | (1u << 4) | (1u << 5) | (1u << 16) | (1u << 31);
    sr.efer = (1u << 8) | (1u << 10); /* LME | LMA */
    if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0) {
        fprintf(stderr, "minivm: KVM_SET_SREGS: %s\n", strerror(errno));
        return -1;
    }
    struct kvm_regs r = {0};
    r.rip = MINIVM_CODE;
    r.rdi = v->index;
    r.rsp = MINIVM_STACKS + (uint64_t)(v->index + 1) * MINIVM_STACK_SIZE;
    r.rflags = 2;
    if (ioctl(v->fd, KVM_SET_REGS, &r) < 0) {
        fprintf(stderr, "minivm: KVM_SET_REGS: %s\n", strerror(errno));
        return -1;
    }
    /* With the in-kernel LAPIC, every vCPU but the first would wait for
     * INIT/SIPI; the VMM starts them all in long mode at once instead. */
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0) {
        fprintf(stderr, "minivm: KVM_SET_MP_STATE: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static void debug_char(struct minivm_vcpu *v, char ch)
{
    if (ch == '\n' || v->line_len == sizeof(v->line) - 1) {
        v->line[v->line_len] = 0;
        if (!v->vm->quiet)
            minivm_console_line(&v->vm->console, v->line);
        v->line_len = 0;
        if (ch == '\n')
            return;
    }
    v->line[v->line_len++] = ch;
}

static void report_failure(struct minivm *vm, const char *what)
{
    struct minivm_config *c = minivm_config_page(vm);
    fprintf(stderr,
            "minivm: guest reports %s: page index %llu, expected 0x%llx, found 0x%llx, "
            "word %llu\n",
            what, (unsigned long long)c->fail_index, (unsigned long long)c->fail_want,
            (unsigned long long)c->fail_got, (unsigned long long)c->fail_word);
    __atomic_store_n(&vm->guest_failed, 1, __ATOMIC_SEQ_CST);
}

static void deadline_after(struct timespec *ts, uint64_t ns)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ns += (uint64_t)ts->tv_nsec;
    ts->tv_sec += (time_t)(ns / 1000000000ull);
    ts->tv_nsec = (long)(ns % 1000000000ull);
}

/* The sleep port: wait up to `us`, or less when a pause or quit comes
 * (minivm_vcpus_pause broadcasts the condition). */
static void guest_sleep(struct minivm *vm, uint32_t us)
{
    struct timespec ts;
    deadline_after(&ts, (uint64_t)us * 1000);
    pthread_mutex_lock(&vm->lock);
    while (!__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&vm->quit, __ATOMIC_SEQ_CST))
        if (pthread_cond_timedwait(&vm->cond, &vm->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&vm->lock);
}

/* Returns 0 to go on, -1 when the vCPU cannot continue. */
static int handle_io(struct minivm_vcpu *v)
{
    struct kvm_run *run = v->run;
    struct minivm *vm = v->vm;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    if (vm->sdev && run->io.size == 4 && run->io.count == 1) {
        uint32_t val;
        memcpy(&val, data, 4);
        if (minivm_sdev_io(vm->sdev, v->index, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
                           &val)) {
            memcpy(data, &val, 4);
            return 0;
        }
    }
    if (run->io.direction != KVM_EXIT_IO_OUT) {
        /* Reads of unknown ports see all ones, like an empty bus. */
        memset(data, 0xff, (size_t)run->io.size * run->io.count);
        return 0;
    }
    if (run->io.port == MINIVM_PORT_DEBUG) {
        for (uint32_t i = 0; i < run->io.count; i++)
            debug_char(v, (char)data[i * run->io.size]);
        return 0;
    }
    if (run->io.port == MINIVM_PORT_SLEEP && run->io.size == 4) {
        uint32_t us;
        memcpy(&us, data, 4);
        guest_sleep(vm, us < MINIVM_SLEEP_MAX_US ? us : MINIVM_SLEEP_MAX_US);
        return 0;
    }
    if (run->io.port == MINIVM_PORT_EVENT && run->io.size == 4) {
        uint32_t val;
        memcpy(&val, data, 4);
        switch (val & 0xffff) {
        case MINIVM_EV_READY:
            __atomic_fetch_or(&vm->ready_mask, 1u << v->index, __ATOMIC_SEQ_CST);
            break;
        case MINIVM_EV_CHECK_FAIL:
            report_failure(vm, "a bad page (CHECK_FAIL)");
            break;
        case MINIVM_EV_COUNTER_JUMP:
            report_failure(vm, "a counter jump (COUNTER_JUMP)");
            break;
        case MINIVM_EV_DONE:
            __atomic_store_n(&vm->guest_done, 1, __ATOMIC_SEQ_CST);
            break;
        case MINIVM_EV_DEV_FAIL:
            report_failure(vm, "a bad word of the device's state (DEV_FAIL)");
            break;
        default:
            fprintf(stderr, "minivm: vCPU %u: unknown guest event 0x%x\n", v->index, val);
        }
        return 0;
    }
    fprintf(stderr, "minivm: vCPU %u: OUT to unknown port 0x%x ignored\n", v->index, run->io.port);
    return 0;
}

/* Wait while paused; the idle vCPU parked after HLT waits here too.
 * Returns false when the thread must end. */
static bool wait_paused(struct minivm *vm, bool parked)
{
    pthread_mutex_lock(&vm->lock);
    vm->paused++;
    pthread_cond_broadcast(&vm->cond);
    while (!__atomic_load_n(&vm->quit, __ATOMIC_SEQ_CST) &&
           (__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) || parked)) {
        if (parked && !__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST)) {
            /* An idle vCPU after HLT: nothing can wake it but quit, pause
             * or a resume; poll so that it re-enters KVM_RUN now and then. */
            struct timespec ts;
            deadline_after(&ts, 50000000);
            pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
            parked = false;
            continue;
        }
        pthread_cond_wait(&vm->cond, &vm->lock);
    }
    vm->paused--;
    pthread_mutex_unlock(&vm->lock);
    return !__atomic_load_n(&vm->quit, __ATOMIC_SEQ_CST);
}

static void throttle_arm(struct minivm_vcpu *v, uint64_t ns)
{
    if (!v->timer_ok)
        return;
    struct itimerspec it = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ull),
                                         .tv_nsec = (long)(ns % 1000000000ull)}};
    timer_settime(*(timer_t *)v->timer, 0, &it, NULL);
}

static void *vcpu_thread(void *arg)
{
    struct minivm_vcpu *v = arg;
    struct minivm *vm = v->vm;
    struct kvm_run *run = v->run;
    tls_run = run;
    timer_t timer;
    struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = MINIVM_SIG_KICK};
    sev.sigev_notify_thread_id = gettid();
    v->timer = &timer;
    v->timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &timer) == 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, MINIVM_SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    uint64_t slice_end = 0; /* 0: no throttled slice running */
    unsigned slice_pct = 0;
    bool parked = false, io_pending = false;
    for (;;) {
        if (__atomic_load_n(&vm->quit, __ATOMIC_SEQ_CST))
            break;
        if (__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) || parked) {
            /* An I/O exit is complete (RIP past the instruction, an IN's
             * value in RAX) only once KVM_RUN is entered again: enter with
             * immediate_exit so that the state a migration saves now is
             * consistent, and no instruction runs. */
            if (io_pending) {
                run->immediate_exit = 1;
                ioctl(v->fd, KVM_RUN, 0);
                run->immediate_exit = 0;
                io_pending = false;
            }
            if (!wait_paused(vm, parked))
                break;
            parked = false;
            continue;
        }
        unsigned pct = __atomic_load_n(&vm->throttle_pct, __ATOMIC_SEQ_CST);
        if (pct && !slice_end) {
            uint64_t run_ns = MINIVM_SLICE_NS * (100 - pct) / 100;
            slice_end = now_ns() + run_ns;
            slice_pct = pct;
            throttle_arm(v, run_ns);
        } else if (!pct && slice_end) {
            slice_end = 0;
            throttle_arm(v, 0);
        }
        int r = ioctl(v->fd, KVM_RUN, 0);
        int e = errno;
        run->immediate_exit = 0;
        io_pending = false;
        if (r < 0) {
            if (e == EINTR || e == EAGAIN) {
                if (slice_end && now_ns() >= slice_end) {
                    /* The slice's run time is over: sleep the rest of it. */
                    uint64_t ns = MINIVM_SLICE_NS * slice_pct / 100;
                    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
                    nanosleep(&ts, NULL);
                    slice_end = 0;
                }
                continue;
            }
            fprintf(stderr, "minivm: vCPU %u: KVM_RUN: %s\n", v->index, strerror(e));
            __atomic_store_n(&vm->vm_error, 1, __ATOMIC_SEQ_CST);
            break;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            if (handle_io(v) == 0) {
                io_pending = true;
                continue;
            }
            break;
        case KVM_EXIT_INTR:
            continue;
        case KVM_EXIT_DIRTY_RING_FULL:
            /* Also on a soft-full ring: KVM_RUN does not enter again
             * before the ring is harvested and reset. */
            if (minivm_dirty_ring_full(v) == 0)
                continue;
            fprintf(stderr, "minivm: vCPU %u: dirty ring full and not reset\n", v->index);
            break;
        case KVM_EXIT_HLT: {
            struct minivm_config *c = minivm_config_page(vm);
            if (c && c->role[v->index] == MINIVM_ROLE_IDLE) {
                parked = true;
                continue;
            }
            fprintf(stderr, "minivm: vCPU %u halted\n", v->index);
            break;
        }
        case KVM_EXIT_SHUTDOWN:
            fprintf(stderr, "minivm: vCPU %u: shutdown (triple fault)\n", v->index);
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            fprintf(stderr, "minivm: vCPU %u: KVM internal error, suberror %u\n", v->index,
                    run->internal.suberror);
            break;
        case KVM_EXIT_FAIL_ENTRY:
            fprintf(stderr, "minivm: vCPU %u: entry failed, reason 0x%llx\n", v->index,
                    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            break;
        case KVM_EXIT_MMIO:
            fprintf(stderr, "minivm: vCPU %u: access to unmapped address 0x%llx\n", v->index,
                    (unsigned long long)run->mmio.phys_addr);
            break;
        default:
            fprintf(stderr, "minivm: vCPU %u: unexpected exit %u\n", v->index, run->exit_reason);
            break;
        }
        if (run->exit_reason != KVM_EXIT_IO) {
            struct kvm_regs regs;
            if (ioctl(v->fd, KVM_GET_REGS, &regs) == 0)
                fprintf(stderr, "minivm: vCPU %u: rip 0x%llx rsp 0x%llx\n", v->index,
                        (unsigned long long)regs.rip, (unsigned long long)regs.rsp);
        }
        __atomic_store_n(&vm->vm_error, 1, __ATOMIC_SEQ_CST);
        break;
    }
    if (v->timer_ok)
        timer_delete(timer);
    v->timer_ok = false;
    /* A stopped thread counts as paused for good, so pause never waits on it. */
    pthread_mutex_lock(&vm->lock);
    vm->running--;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return NULL;
}

int minivm_vcpus_start(struct minivm *vm)
{
    /* The kick signal is blocked everywhere but in the vCPU threads. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, MINIVM_SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        struct minivm_vcpu *v = &vm->vcpu[i];
        pthread_mutex_lock(&vm->lock);
        vm->running++;
        pthread_mutex_unlock(&vm->lock);
        if (pthread_create(&v->thread, NULL, vcpu_thread, v)) {
            pthread_mutex_lock(&vm->lock);
            vm->running--;
            pthread_mutex_unlock(&vm->lock);
            fprintf(stderr, "minivm: cannot start a vCPU thread\n");
            return -1;
        }
        v->started = true;
    }
    return 0;
}

static void kick_all(struct minivm *vm)
{
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if (vm->vcpu[i].started)
            pthread_kill(vm->vcpu[i].thread, MINIVM_SIG_KICK);
}

void minivm_vcpus_pause(struct minivm *vm)
{
    __atomic_store_n(&vm->pause_req, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&vm->lock);
    pthread_cond_broadcast(&vm->cond); /* wakes vCPUs in the sleep port */
    while (vm->paused < vm->running) {
        pthread_mutex_unlock(&vm->lock);
        kick_all(vm);
        pthread_mutex_lock(&vm->lock);
        struct timespec ts;
        deadline_after(&ts, 1000000);
        if (vm->paused < vm->running)
            pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
    }
    pthread_mutex_unlock(&vm->lock);
}

void minivm_vcpus_resume(struct minivm *vm)
{
    pthread_mutex_lock(&vm->lock);
    __atomic_store_n(&vm->pause_req, 0, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
}

void minivm_vcpus_stop(struct minivm *vm)
{
    pthread_mutex_lock(&vm->lock);
    __atomic_store_n(&vm->quit, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    kick_all(vm);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        if (vm->vcpu[i].started) {
            pthread_join(vm->vcpu[i].thread, NULL);
            vm->vcpu[i].started = false;
        }
    }
}

void minivm_vcpus_throttle(struct minivm *vm, unsigned pct)
{
    if (pct > 99)
        pct = 99;
    __atomic_store_n(&vm->throttle_pct, pct, __ATOMIC_SEQ_CST);
    kick_all(vm);
}
