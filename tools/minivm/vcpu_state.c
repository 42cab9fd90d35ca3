/*
 * The vCPU state between KVM and the device-state blob: save reads every
 * vCPU through the KVM ioctls into a struct minivm_state and serializes it;
 * load parses the whole blob first (vcpu_state_format.c, which defines the
 * format) and only then touches KVM. The TSC is restored last, right before
 * the vCPUs run (minivm_state_apply_tsc).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "minivm.h"

/* struct kvm_msrs with one entry, spelled out: the kernel's header ends in a
 * flexible array member, which ISO C does not allow inside another struct. */
struct one_msr {
    __u32 nmsrs, pad;
    struct kvm_msr_entry e;
};
_Static_assert(offsetof(struct one_msr, e) == offsetof(struct kvm_msrs, entries),
               "one_msr must have the layout of struct kvm_msrs");

#define MSR_IA32_TSC MINIVM_MSR_IA32_TSC

static int save_vcpu(struct minivm_vcpu *v, struct minivm_vcpu_state *s)
{
    struct kvm_xsave *xs = calloc(1, sizeof(*xs));
    struct kvm_mp_state mp;
    if (!xs)
        return -1;
    if (ioctl(v->fd, KVM_GET_REGS, &s->regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s->sregs) < 0 ||
        ioctl(v->fd, KVM_GET_XSAVE, xs) < 0 || ioctl(v->fd, KVM_GET_XCRS, &s->xcrs) < 0 ||
        ioctl(v->fd, KVM_GET_VCPU_EVENTS, &s->events) < 0 ||
        ioctl(v->fd, KVM_GET_LAPIC, &s->lapic) < 0 || ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0) {
        fprintf(stderr, "minivm: vCPU %u: reading state: %s\n", v->index, strerror(errno));
        free(xs);
        return -1;
    }
    memcpy(s->xsave, xs->region, sizeof(s->xsave));
    free(xs);
    if (s->xcrs.nr_xcrs > KVM_MAX_XCRS)
        s->xcrs.nr_xcrs = KVM_MAX_XCRS;
    s->mp_state = mp.mp_state;

    /* One MSR per call: KVM_GET_MSRS stops at the first one the CPU lacks. */
    s->nmsrs = 0;
    for (size_t i = 0; i < MINIVM_STATE_NMSRS; i++) {
        struct one_msr m = {.nmsrs = 1, .e.index = minivm_state_msrs[i]};
        if (ioctl(v->fd, KVM_GET_MSRS, &m) == 1)
            s->msrs[s->nmsrs++] = m.e;
    }
    s->seen = ((1u << MINIVM_SEC_COUNT) - 1) & ~(1u << MINIVM_SEC_END);
    return 0;
}

int minivm_state_save(struct minivm *vm, void **buf, size_t *len)
{
    struct minivm_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -1;
    st->nvcpus = vm->nvcpus;
    st->tsc_khz = vm->tsc_khz;
    int rc = 0;
    for (unsigned i = 0; i < vm->nvcpus && !rc; i++)
        rc = save_vcpu(&vm->vcpu[i], &st->vcpu[i]);
    if (!rc && minivm_state_serialize(st, buf, len)) {
        fprintf(stderr, "minivm: cannot serialize the vCPU state\n");
        rc = -1;
    }
    free(st);
    return rc;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(msg, msglen, __VA_ARGS__);                                                        \
        goto out;                                                                                  \
    } while (0)

/* Writes the sections of `s` into the vCPU, in tag order: SREGS before the
 * LAPIC (apic_base can reset the LAPIC, cr8 writes its TPR), the MP state
 * last. */
static int apply_vcpu(struct minivm *vm, struct minivm_vcpu *v, const struct minivm_vcpu_state *s,
                      char *msg, size_t msglen)
{
    int rc = -1;
    struct kvm_xsave *xs = calloc(1, sizeof(*xs));
    if (!xs)
        FAIL("out of memory");
    for (unsigned tag = MINIVM_SEC_END + 1; tag < MINIVM_SEC_COUNT; tag++) {
        if (!(s->seen & (1u << tag)))
            continue;
        int err = 0;
        switch (tag) {
        case MINIVM_SEC_REGS: {
            struct kvm_regs regs = s->regs;
            err = ioctl(v->fd, KVM_SET_REGS, &regs);
            break;
        }
        case MINIVM_SEC_SREGS: {
            struct kvm_sregs sr = s->sregs;
            err = ioctl(v->fd, KVM_SET_SREGS, &sr);
            break;
        }
        case MINIVM_SEC_XSAVE:
            memcpy(xs->region, s->xsave, sizeof(s->xsave));
            err = ioctl(v->fd, KVM_SET_XSAVE, xs);
            break;
        case MINIVM_SEC_XCRS: {
            struct kvm_xcrs x = s->xcrs;
            err = ioctl(v->fd, KVM_SET_XCRS, &x);
            break;
        }
        case MINIVM_SEC_MSRS:
            for (uint32_t i = 0; i < s->nmsrs; i++) {
                struct one_msr m = {.nmsrs = 1, .e = s->msrs[i]};
                if (m.e.index == MSR_IA32_TSC) {
                    /* Written only right before the vCPUs run, so that the
                     * guest's TSC skips only the downtime. Not now as well:
                     * KVM treats a host write within a second of the
                     * previous one, and within a second of its value, as a
                     * vCPU sync and keeps the old offset, so the verify
                     * time would show in the guest. */
                    vm->tsc_value[v->index] = m.e.data;
                    vm->tsc_pending = true;
                    continue;
                }
                if (ioctl(v->fd, KVM_SET_MSRS, &m) != 1)
                    FAIL("vCPU %u: MSR 0x%x rejected by KVM", v->index, m.e.index);
            }
            break;
        case MINIVM_SEC_EVENTS: {
            struct kvm_vcpu_events ev = s->events;
            ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
            err = ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev);
            break;
        }
        case MINIVM_SEC_LAPIC: {
            struct kvm_lapic_state lapic = s->lapic;
            err = ioctl(v->fd, KVM_SET_LAPIC, &lapic);
            break;
        }
        case MINIVM_SEC_MP_STATE: {
            struct kvm_mp_state mp = {.mp_state = s->mp_state};
            err = ioctl(v->fd, KVM_SET_MP_STATE, &mp);
            break;
        }
        }
        if (err < 0)
            FAIL("vCPU %u: KVM rejected the %s (section %u): %s", v->index,
                 minivm_state_section_name(tag), tag, strerror(errno));
    }
    rc = 0;
out:
    free(xs);
    return rc;
}

int minivm_state_load(struct minivm *vm, const void *buf, size_t len, char *msg, size_t msglen)
{
    int rc = -1;
    struct minivm_state *st = malloc(sizeof(*st));
    if (!st)
        FAIL("out of memory for the device state");
    if (minivm_state_parse(buf, len, st, msg, msglen))
        goto out;
    unsigned n = st->nvcpus;
    if (vm->nvcpus == 0 && minivm_vcpus_create(vm, n))
        FAIL("cannot create %u vCPUs", n);
    if (vm->nvcpus != n)
        FAIL("device state has %u vCPUs, the VM %u", n, vm->nvcpus);
    uint64_t khz = st->tsc_khz;
    if (khz && vm->tsc_khz && khz != vm->tsc_khz) {
        for (unsigned i = 0; i < n; i++)
            if (ioctl(vm->vcpu[i].fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0)
                FAIL("source TSC runs at %llu kHz, here %llu kHz, and KVM cannot scale it",
                     (unsigned long long)khz, (unsigned long long)vm->tsc_khz);
        vm->tsc_khz = khz;
    }
    for (unsigned i = 0; i < n; i++)
        if (apply_vcpu(vm, &vm->vcpu[i], &st->vcpu[i], msg, msglen))
            goto out;
    rc = 0;
out:
    free(st);
    return rc;
}

static int read_tsc(struct minivm_vcpu *v, uint64_t *tsc)
{
    struct one_msr m = {.nmsrs = 1, .e.index = MSR_IA32_TSC};
    if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
        return -1;
    *tsc = m.e.data;
    return 0;
}

/*
 * Make each vCPU's TSC read the value saved on the source. A host write of
 * MSR_IA32_TSC is not reliable for that: KVM takes a write within a second
 * of the TSC it expects (same host, or close clocks) as a vCPU sync and
 * keeps the old offset. So move the offset itself (KVM_VCPU_TSC_OFFSET,
 * Linux 5.16+) by what the TSC is off; fall back to the MSR write.
 */
int minivm_state_apply_tsc(struct minivm *vm)
{
    if (!vm->tsc_pending)
        return 0;
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        struct minivm_vcpu *v = &vm->vcpu[i];
        uint64_t offset, now;
        struct kvm_device_attr a = {.group = KVM_VCPU_TSC_CTRL,
                                    .attr = KVM_VCPU_TSC_OFFSET,
                                    .addr = (uint64_t)(uintptr_t)&offset};
        if (ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &a) == 0 &&
            ioctl(v->fd, KVM_GET_DEVICE_ATTR, &a) == 0 && read_tsc(v, &now) == 0) {
            offset += vm->tsc_value[i] - now;
            if (ioctl(v->fd, KVM_SET_DEVICE_ATTR, &a) == 0)
                continue;
        }
        struct one_msr m = {.nmsrs = 1, .e.index = MSR_IA32_TSC, .e.data = vm->tsc_value[i]};
        if (ioctl(v->fd, KVM_SET_MSRS, &m) != 1)
            return -1;
    }
    vm->tsc_pending = false;
    uint64_t now;
    if (read_tsc(&vm->vcpu[0], &now) == 0 &&
        (now < vm->tsc_value[0] || now - vm->tsc_value[0] > vm->tsc_khz * 100))
        fprintf(stderr,
                "minivm: KVM ignored the TSC restore (vCPU 0 reads %.1f ms past the "
                "saved value): the guest sees the time since the source stopped as a "
                "stall\n",
                vm->tsc_khz ? (double)(int64_t)(now - vm->tsc_value[0]) / (double)vm->tsc_khz
                            : 0.0);
    return 0;
}

/* ---- the vCPU state as a vmig device ---- */

static int cpus_save(void *opaque, vmig_devstate_out *out)
{
    void *buf;
    size_t len;
    if (minivm_state_save(opaque, &buf, &len))
        return VMIG_EIO;
    int rc = vmig_devstate_write(out, buf, len);
    free(buf);
    return rc;
}

/* Forget the chunks collected so far: the next load starts from its first byte. */
static void cpus_in_reset(struct minivm *vm)
{
    free(vm->cpus_in);
    vm->cpus_in = NULL;
    vm->cpus_in_len = vm->cpus_in_cap = 0;
}

static int cpus_load(void *opaque, const void *buf, size_t len)
{
    struct minivm *vm = opaque;
    if (len > MINIVM_CPUS_STATE_MAX - vm->cpus_in_len) {
        fprintf(stderr, "minivm: vCPU state beyond %u bytes refused\n", MINIVM_CPUS_STATE_MAX);
        cpus_in_reset(vm);
        return VMIG_EPROTO;
    }
    if (vm->cpus_in_len + len > vm->cpus_in_cap) {
        size_t cap = vm->cpus_in_len + len;
        uint8_t *n = realloc(vm->cpus_in, cap);
        if (!n) {
            cpus_in_reset(vm);
            return VMIG_ENOMEM;
        }
        vm->cpus_in = n;
        vm->cpus_in_cap = cap;
    }
    memcpy(vm->cpus_in + vm->cpus_in_len, buf, len);
    vm->cpus_in_len += len;
    return 0;
}

/* cpus_keep: check the whole blob as minivm_state_load would (format,
 * limits, the same vCPU count as the checkpoints before), then let it
 * replace the kept one. KVM sees only the one that failover applies. */
static int cpus_keep(struct minivm *vm, char *msg, size_t msglen)
{
    struct minivm_state *st = malloc(sizeof(*st));
    if (!st) {
        snprintf(msg, msglen, "out of memory for the device state");
        return -1;
    }
    int rc = minivm_state_parse(vm->cpus_in, vm->cpus_in_len, st, msg, msglen);
    if (!rc && vm->cpus_kept && st->nvcpus != vm->cpus_kept_nvcpus) {
        snprintf(msg, msglen, "device state has %u vCPUs, the checkpoints before it %u", st->nvcpus,
                 vm->cpus_kept_nvcpus);
        rc = -1;
    }
    if (!rc) {
        free(vm->cpus_kept);
        vm->cpus_kept = vm->cpus_in;
        vm->cpus_kept_len = vm->cpus_in_len;
        vm->cpus_kept_nvcpus = st->nvcpus;
        vm->cpus_in = NULL; /* now the kept one's */
    }
    free(st);
    return rc;
}

static int cpus_load_done(void *opaque)
{
    struct minivm *vm = opaque;
    char msg[256];
    int rc = vm->cpus_keep ? cpus_keep(vm, msg, sizeof(msg))
                           : minivm_state_load(vm, vm->cpus_in, vm->cpus_in_len, msg, sizeof(msg));
    if (rc)
        fprintf(stderr, "minivm: vCPU state refused: %s\n", msg);
    else
        vm->cpus_loads++;
    cpus_in_reset(vm);
    return rc ? VMIG_EPROTO : 0;
}

int minivm_cpus_apply_kept(struct minivm *vm, char *msg, size_t msglen)
{
    if (!vm->cpus_kept) {
        snprintf(msg, msglen, "no vCPU state was committed");
        return -1;
    }
    return minivm_state_load(vm, vm->cpus_kept, vm->cpus_kept_len, msg, msglen);
}

const vmig_device_ops minivm_cpus_ops = {
    .save_final = cpus_save,
    .load_chunk = cpus_load,
    .load_done = cpus_load_done,
};
