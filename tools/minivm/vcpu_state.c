/*
 * The device state that vmig carries from save_state to load_state: every
 * vCPU's registers, serialized field by field (little-endian).
 *
 *   header   u64 magic "MVMSTAT1"  u32 version (1)  u32 nvcpus (1..4)  u64 tsc_khz
 *   per vCPU sections  { u32 tag, u32 len, len bytes } ..., then { u32 0, u32 0 }
 *            REGS   18 x u64 (rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags)
 *            SREGS  8 segments, gdt, idt, cr0 cr2 cr3 cr4 cr8 efer apic_base, 4 x u64
 *                   segment: u64 base, u32 limit, u16 selector, 8 x u8 (type present
 *                   dpl db s l g avl) and u8 unusable; dtable: u64 base, u16 limit
 *            XSAVE  1024 x u32 (the legacy 4 KiB KVM_GET_XSAVE area)
 *            XCRS   u32 n (0..16), u32 flags, n x { u32 xcr, u64 value }
 *            MSRS   u32 n (0..32), n x { u32 index, u64 value } (known indexes only)
 *            EVENTS exception (u8 injected nr has_error_code pending, u32 error_code),
 *                   interrupt (u8 injected nr soft shadow), nmi (u8 injected pending
 *                   masked), u32 sipi_vector
 *
 * The destination trusts nothing: every length, count and index is checked.
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

#define STATE_MAGIC   0x315441545300564dull /* "MV\0STAT1" */
#define STATE_VERSION 1u
#define STATE_MAX     (1u << 20)

enum {
    SEC_END = 0,
    SEC_REGS = 1,
    SEC_SREGS = 2,
    SEC_XSAVE = 3,
    SEC_XCRS = 4,
    SEC_MSRS = 5,
    SEC_EVENTS = 6,
    SEC_COUNT
};

#define MSR_IA32_TSC 0x10u
static const uint32_t state_msrs[] = {
    MSR_IA32_TSC, 0x174,      0x175,      0x176,      /* TSC, SYSENTER_CS/ESP/EIP */
    0x1a0,        0x277,                              /* MISC_ENABLE, PAT */
    0xc0000081,   0xc0000082, 0xc0000083, 0xc0000084, /* STAR LSTAR CSTAR SFMASK */
    0xc0000102,   0xc0000103,                         /* KERNEL_GS_BASE, TSC_AUX */
};
#define NSTATE_MSRS (sizeof(state_msrs) / sizeof(state_msrs[0]))

/* ---- writer ---- */
struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool fail;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
    if (w->fail)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16384;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *np = realloc(w->p, cap);
        if (!np) {
            w->fail = true;
            return;
        }
        w->p = np;
        w->cap = cap;
    }
    memcpy(w->p + w->len, src, n); /* x86-64: host order is little-endian */
    w->len += n;
}
static void put8(struct wbuf *w, uint8_t v)
{
    put(w, &v, 1);
}
static void put16(struct wbuf *w, uint16_t v)
{
    put(w, &v, 2);
}
static void put32(struct wbuf *w, uint32_t v)
{
    put(w, &v, 4);
}
static void put64(struct wbuf *w, uint64_t v)
{
    put(w, &v, 8);
}

/* ---- reader ---- */
struct rbuf {
    const uint8_t *p;
    size_t len, off;
    bool fail;
};

static void get(struct rbuf *r, void *dst, size_t n)
{
    if (r->fail || n > r->len - r->off) {
        r->fail = true;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p + r->off, n);
    r->off += n;
}
static uint8_t get8(struct rbuf *r)
{
    uint8_t v;
    get(r, &v, 1);
    return v;
}
static uint16_t get16(struct rbuf *r)
{
    uint16_t v;
    get(r, &v, 2);
    return v;
}
static uint32_t get32(struct rbuf *r)
{
    uint32_t v;
    get(r, &v, 4);
    return v;
}
static uint64_t get64(struct rbuf *r)
{
    uint64_t v;
    get(r, &v, 8);
    return v;
}

/* ---- sections ---- */
static size_t sec_begin(struct wbuf *w, uint32_t tag)
{
    put32(w, tag);
    put32(w, 0);
    return w->len;
}
static void sec_end(struct wbuf *w, size_t start)
{
    if (!w->fail) {
        uint32_t len = (uint32_t)(w->len - start);
        memcpy(w->p + start - 4, &len, 4);
    }
}

static void put_seg(struct wbuf *w, const struct kvm_segment *s)
{
    put64(w, s->base);
    put32(w, s->limit);
    put16(w, s->selector);
    put8(w, s->type);
    put8(w, s->present);
    put8(w, s->dpl);
    put8(w, s->db);
    put8(w, s->s);
    put8(w, s->l);
    put8(w, s->g);
    put8(w, s->avl);
    put8(w, s->unusable);
}
static void get_seg(struct rbuf *r, struct kvm_segment *s)
{
    s->base = get64(r);
    s->limit = get32(r);
    s->selector = get16(r);
    s->type = get8(r);
    s->present = get8(r);
    s->dpl = get8(r);
    s->db = get8(r);
    s->s = get8(r);
    s->l = get8(r);
    s->g = get8(r);
    s->avl = get8(r);
    s->unusable = get8(r);
}

#define REGS_N 18
static void regs_to_array(const struct kvm_regs *g, uint64_t a[REGS_N])
{
    const uint64_t v[REGS_N] = {g->rax, g->rbx, g->rcx, g->rdx, g->rsi, g->rdi,
                                g->rsp, g->rbp, g->r8,  g->r9,  g->r10, g->r11,
                                g->r12, g->r13, g->r14, g->r15, g->rip, g->rflags};
    memcpy(a, v, sizeof(v));
}
static void array_to_regs(const uint64_t a[REGS_N], struct kvm_regs *g)
{
    __u64 *f[REGS_N] = {&g->rax, &g->rbx, &g->rcx, &g->rdx, &g->rsi, &g->rdi,
                        &g->rsp, &g->rbp, &g->r8,  &g->r9,  &g->r10, &g->r11,
                        &g->r12, &g->r13, &g->r14, &g->r15, &g->rip, &g->rflags};
    for (int i = 0; i < REGS_N; i++)
        *f[i] = a[i];
}

static int save_vcpu(struct minivm_vcpu *v, struct wbuf *w)
{
    struct kvm_regs regs;
    struct kvm_sregs sr;
    struct kvm_xsave *xs = calloc(1, sizeof(*xs));
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events ev;
    if (!xs)
        return -1;
    if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sr) < 0 ||
        ioctl(v->fd, KVM_GET_XSAVE, xs) < 0 || ioctl(v->fd, KVM_GET_XCRS, &xcrs) < 0 ||
        ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0) {
        fprintf(stderr, "minivm: vCPU %u: reading state: %s\n", v->index, strerror(errno));
        free(xs);
        return -1;
    }
    uint64_t a[REGS_N];
    regs_to_array(&regs, a);
    size_t s = sec_begin(w, SEC_REGS);
    for (int i = 0; i < REGS_N; i++)
        put64(w, a[i]);
    sec_end(w, s);

    s = sec_begin(w, SEC_SREGS);
    const struct kvm_segment *segs[8] = {&sr.cs, &sr.ds, &sr.es, &sr.fs,
                                         &sr.gs, &sr.ss, &sr.tr, &sr.ldt};
    for (int i = 0; i < 8; i++)
        put_seg(w, segs[i]);
    put64(w, sr.gdt.base);
    put16(w, sr.gdt.limit);
    put64(w, sr.idt.base);
    put16(w, sr.idt.limit);
    put64(w, sr.cr0);
    put64(w, sr.cr2);
    put64(w, sr.cr3);
    put64(w, sr.cr4);
    put64(w, sr.cr8);
    put64(w, sr.efer);
    put64(w, sr.apic_base);
    for (int i = 0; i < 4; i++)
        put64(w, sr.interrupt_bitmap[i]);
    sec_end(w, s);

    s = sec_begin(w, SEC_XSAVE);
    for (int i = 0; i < 1024; i++)
        put32(w, xs->region[i]);
    sec_end(w, s);
    free(xs);

    s = sec_begin(w, SEC_XCRS);
    uint32_t nx = xcrs.nr_xcrs > KVM_MAX_XCRS ? KVM_MAX_XCRS : xcrs.nr_xcrs;
    put32(w, nx);
    put32(w, xcrs.flags);
    for (uint32_t i = 0; i < nx; i++) {
        put32(w, xcrs.xcrs[i].xcr);
        put64(w, xcrs.xcrs[i].value);
    }
    sec_end(w, s);

    /* One MSR per call: KVM_GET_MSRS stops at the first one the CPU lacks. */
    uint32_t idx[NSTATE_MSRS];
    uint64_t val[NSTATE_MSRS];
    uint32_t n = 0;
    for (size_t i = 0; i < NSTATE_MSRS; i++) {
        struct one_msr m = {.nmsrs = 1, .e.index = state_msrs[i]};
        if (ioctl(v->fd, KVM_GET_MSRS, &m) == 1) {
            idx[n] = state_msrs[i];
            val[n++] = m.e.data;
        }
    }
    s = sec_begin(w, SEC_MSRS);
    put32(w, n);
    for (uint32_t i = 0; i < n; i++) {
        put32(w, idx[i]);
        put64(w, val[i]);
    }
    sec_end(w, s);

    s = sec_begin(w, SEC_EVENTS);
    put8(w, ev.exception.injected);
    put8(w, ev.exception.nr);
    put8(w, ev.exception.has_error_code);
    put8(w, ev.exception.pending);
    put32(w, ev.exception.error_code);
    put8(w, ev.interrupt.injected);
    put8(w, ev.interrupt.nr);
    put8(w, ev.interrupt.soft);
    put8(w, ev.interrupt.shadow);
    put8(w, ev.nmi.injected);
    put8(w, ev.nmi.pending);
    put8(w, ev.nmi.masked);
    put32(w, ev.sipi_vector);
    sec_end(w, s);

    put32(w, SEC_END);
    put32(w, 0);
    return 0;
}

int minivm_state_save(struct minivm *vm, void **buf, size_t *len)
{
    struct wbuf w = {0};
    put64(&w, STATE_MAGIC);
    put32(&w, STATE_VERSION);
    put32(&w, vm->nvcpus);
    put64(&w, vm->tsc_khz);
    for (unsigned i = 0; i < vm->nvcpus; i++)
        if (save_vcpu(&vm->vcpu[i], &w)) {
            free(w.p);
            return -1;
        }
    if (w.fail || w.len > STATE_MAX) {
        free(w.p);
        return -1;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

static bool msr_known(uint32_t index)
{
    for (size_t i = 0; i < NSTATE_MSRS; i++)
        if (state_msrs[i] == index)
            return true;
    return false;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(msg, msglen, __VA_ARGS__);                                                        \
        goto out;                                                                                  \
    } while (0)

static int load_vcpu(struct minivm *vm, struct minivm_vcpu *v, struct rbuf *r, char *msg,
                     size_t msglen)
{
    int rc = -1;
    bool seen[SEC_COUNT] = {0};
    struct kvm_xsave *xs = calloc(1, sizeof(*xs));
    if (!xs)
        FAIL("out of memory");
    for (;;) {
        uint32_t tag = get32(r), len = get32(r);
        if (r->fail)
            FAIL("vCPU %u: state truncated", v->index);
        if (tag == SEC_END) {
            if (len != 0)
                FAIL("vCPU %u: end section of length %u", v->index, len);
            break;
        }
        if (tag >= SEC_COUNT)
            FAIL("vCPU %u: unknown section %u", v->index, tag);
        if (seen[tag])
            FAIL("vCPU %u: section %u twice", v->index, tag);
        seen[tag] = true;
        if (len > r->len - r->off)
            FAIL("vCPU %u: section %u of %u bytes beyond the end of the state", v->index, tag, len);
        struct rbuf s = {.p = r->p + r->off, .len = len};
        r->off += len;
        int err = 0;
        switch (tag) {
        case SEC_REGS: {
            if (len != REGS_N * 8)
                FAIL("vCPU %u: registers of %u bytes, want %u", v->index, len, REGS_N * 8);
            uint64_t a[REGS_N];
            for (int i = 0; i < REGS_N; i++)
                a[i] = get64(&s);
            struct kvm_regs regs = {0};
            array_to_regs(a, &regs);
            err = ioctl(v->fd, KVM_SET_REGS, &regs);
            break;
        }
        case SEC_SREGS: {
            const uint32_t want = 8 * 23 + 2 * 10 + 7 * 8 + 4 * 8;
            if (len != want)
                FAIL("vCPU %u: system registers of %u bytes, want %u", v->index, len, want);
            struct kvm_sregs sr = {0};
            struct kvm_segment *segs[8] = {&sr.cs, &sr.ds, &sr.es, &sr.fs,
                                           &sr.gs, &sr.ss, &sr.tr, &sr.ldt};
            for (int i = 0; i < 8; i++)
                get_seg(&s, segs[i]);
            sr.gdt.base = get64(&s);
            sr.gdt.limit = get16(&s);
            sr.idt.base = get64(&s);
            sr.idt.limit = get16(&s);
            sr.cr0 = get64(&s);
            sr.cr2 = get64(&s);
            sr.cr3 = get64(&s);
            sr.cr4 = get64(&s);
            sr.cr8 = get64(&s);
            sr.efer = get64(&s);
            sr.apic_base = get64(&s);
            for (int i = 0; i < 4; i++)
                sr.interrupt_bitmap[i] = get64(&s);
            err = ioctl(v->fd, KVM_SET_SREGS, &sr);
            break;
        }
        case SEC_XSAVE:
            if (len != 4096)
                FAIL("vCPU %u: xsave area of %u bytes, want 4096", v->index, len);
            for (int i = 0; i < 1024; i++)
                xs->region[i] = get32(&s);
            err = ioctl(v->fd, KVM_SET_XSAVE, xs);
            break;
        case SEC_XCRS: {
            struct kvm_xcrs x = {0};
            x.nr_xcrs = get32(&s);
            x.flags = get32(&s);
            if (s.fail || x.nr_xcrs > KVM_MAX_XCRS || len != 8 + x.nr_xcrs * 12)
                FAIL("vCPU %u: bad XCR section (%u bytes)", v->index, len);
            for (uint32_t i = 0; i < x.nr_xcrs; i++) {
                x.xcrs[i].xcr = get32(&s);
                x.xcrs[i].value = get64(&s);
            }
            err = ioctl(v->fd, KVM_SET_XCRS, &x);
            break;
        }
        case SEC_MSRS: {
            uint32_t n = get32(&s);
            if (s.fail || n > NSTATE_MSRS || len != 4 + n * 12)
                FAIL("vCPU %u: bad MSR section (%u bytes)", v->index, len);
            for (uint32_t i = 0; i < n; i++) {
                struct one_msr m = {.nmsrs = 1};
                m.e.index = get32(&s);
                m.e.data = get64(&s);
                if (!msr_known(m.e.index))
                    FAIL("vCPU %u: MSR 0x%x is not part of the state", v->index, m.e.index);
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
        }
        case SEC_EVENTS: {
            if (len != 19)
                FAIL("vCPU %u: events of %u bytes, want 19", v->index, len);
            struct kvm_vcpu_events ev = {0};
            ev.exception.injected = get8(&s);
            ev.exception.nr = get8(&s);
            ev.exception.has_error_code = get8(&s);
            ev.exception.pending = get8(&s);
            ev.exception.error_code = get32(&s);
            ev.interrupt.injected = get8(&s);
            ev.interrupt.nr = get8(&s);
            ev.interrupt.soft = get8(&s);
            ev.interrupt.shadow = get8(&s);
            ev.nmi.injected = get8(&s);
            ev.nmi.pending = get8(&s);
            ev.nmi.masked = get8(&s);
            ev.sipi_vector = get32(&s);
            ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
            err = ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev);
            break;
        }
        }
        if (err < 0)
            FAIL("vCPU %u: KVM rejected section %u: %s", v->index, tag, strerror(errno));
    }
    if (!seen[SEC_REGS] || !seen[SEC_SREGS])
        FAIL("vCPU %u: state lacks registers", v->index);
    rc = 0;
out:
    free(xs);
    return rc;
}

int minivm_state_load(struct minivm *vm, const void *buf, size_t len, char *msg, size_t msglen)
{
    struct rbuf r = {.p = buf, .len = len};
    if (len > STATE_MAX) {
        snprintf(msg, msglen, "device state of %zu bytes (limit %u)", len, STATE_MAX);
        return -1;
    }
    uint64_t magic = get64(&r);
    uint32_t version = get32(&r), n = get32(&r);
    uint64_t khz = get64(&r);
    if (r.fail || magic != STATE_MAGIC) {
        snprintf(msg, msglen, "device state is not a minivm state");
        return -1;
    }
    if (version != STATE_VERSION) {
        snprintf(msg, msglen, "device state version %u, this minivm reads %u", version,
                 STATE_VERSION);
        return -1;
    }
    if (n == 0 || n > MINIVM_MAX_VCPUS) {
        snprintf(msg, msglen, "device state has %u vCPUs (1..%u)", n, MINIVM_MAX_VCPUS);
        return -1;
    }
    if (vm->nvcpus == 0 && minivm_vcpus_create(vm, n)) {
        snprintf(msg, msglen, "cannot create %u vCPUs", n);
        return -1;
    }
    if (vm->nvcpus != n) {
        snprintf(msg, msglen, "device state has %u vCPUs, the VM %u", n, vm->nvcpus);
        return -1;
    }
    if (khz && vm->tsc_khz && khz != vm->tsc_khz) {
        for (unsigned i = 0; i < n; i++)
            if (ioctl(vm->vcpu[i].fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0) {
                snprintf(msg, msglen,
                         "source TSC runs at %llu kHz, here %llu kHz, and KVM "
                         "cannot scale it",
                         (unsigned long long)khz, (unsigned long long)vm->tsc_khz);
                return -1;
            }
        vm->tsc_khz = khz;
    }
    for (unsigned i = 0; i < n; i++)
        if (load_vcpu(vm, &vm->vcpu[i], &r, msg, msglen))
            return -1;
    if (r.off != r.len) {
        snprintf(msg, msglen, "%zu bytes after the last vCPU's state", r.len - r.off);
        return -1;
    }
    return 0;
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
    /* MINIVM_DEBUG_TSC=1: show what each vCPU's TSC reads after the restore. */
    if (getenv("MINIVM_DEBUG_TSC")) {
        struct minivm_config *c = minivm_config_page(vm);
        for (unsigned i = 0; i < vm->nvcpus; i++) {
            struct one_msr m = {.nmsrs = 1, .e.index = MSR_IA32_TSC};
            ioctl(vm->vcpu[i].fd, KVM_GET_MSRS, &m);
            fprintf(stderr, "minivm: vCPU %u TSC saved %llu now %llu (guest last_tsc %llu)\n", i,
                    (unsigned long long)vm->tsc_value[i], (unsigned long long)m.e.data,
                    (unsigned long long)c->last_tsc);
        }
    }
    return 0;
}
