/*
 * The device state that vmig carries from save_state to load_state: every
 * vCPU's registers, serialized field by field (little-endian). This file is
 * the one definition of the format: a pure parser and serializer (no
 * ioctls, no I/O), shared by vcpu_state.c and the fuzz target.
 *
 *   header   u64 magic "MVMSTAT1"  u32 version (2)  u32 nvcpus (1..4)  u64 tsc_khz
 *   per vCPU sections  { u32 tag, u32 len, len bytes } ..., then { u32 0, u32 0 }
 *            in ascending tag order, each at most once; REGS and SREGS required
 *          1 REGS     18 x u64 (rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags)
 *          2 SREGS    8 segments, gdt, idt, cr0 cr2 cr3 cr4 cr8 efer apic_base, 4 x u64
 *                     segment: u64 base, u32 limit, u16 selector, 8 x u8 (type present
 *                     dpl db s l g avl) and u8 unusable; dtable: u64 base, u16 limit
 *          3 XSAVE    1024 x u32 (the legacy 4 KiB KVM_GET_XSAVE area)
 *          4 XCRS     u32 n (0..16), u32 flags, n x { u32 xcr, u64 value }
 *          5 MSRS     u32 n (0..12), n x { u32 index, u64 value } (known indexes, each
 *                     at most once)
 *          6 EVENTS   exception (u8 injected nr has_error_code pending, u32 error_code),
 *                     interrupt (u8 injected nr soft shadow), nmi (u8 injected pending
 *                     masked), u32 sipi_vector
 *          7 LAPIC    1024 bytes: struct kvm_lapic_state (the APIC register page)
 *          8 MP_STATE u32: KVM_MP_STATE_RUNNABLE, UNINITIALIZED, INIT_RECEIVED,
 *                     HALTED or SIPI_RECEIVED (0..4)
 *
 * Version 2 added LAPIC and MP_STATE (minivm runs an in-kernel irqchip) and
 * fixed the section order, which makes the format canonical: a blob that
 * parses re-serializes to the same bytes. The whole blob is at most 1 MiB.
 *
 * The destination trusts nothing: every length, count and index is checked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minivm.h"

#define STATE_MAGIC   0x315441545300564dull /* "MV\0STAT1" */
#define STATE_VERSION 2u
#define STATE_MAX     (1u << 20)

const uint32_t minivm_state_msrs[MINIVM_STATE_NMSRS] = {
    MINIVM_MSR_IA32_TSC,
    0x174,
    0x175,
    0x176, /* TSC, SYSENTER_CS/ESP/EIP */
    0x1a0,
    0x277, /* MISC_ENABLE, PAT */
    0xc0000081,
    0xc0000082,
    0xc0000083,
    0xc0000084, /* STAR LSTAR CSTAR SFMASK */
    0xc0000102,
    0xc0000103, /* KERNEL_GS_BASE, TSC_AUX */
};

#define REGS_N    18
#define SREGS_LEN (8 * 23 + 2 * 10 + 7 * 8 + 4 * 8)

/* Each section's name in messages, and its length (0: variable). */
static const struct {
    const char *name;
    uint32_t len;
} sec_info[MINIVM_SEC_COUNT] = {
    [MINIVM_SEC_REGS] = {"registers", REGS_N * 8},
    [MINIVM_SEC_SREGS] = {"system registers", SREGS_LEN},
    [MINIVM_SEC_XSAVE] = {"xsave area", 4096},
    [MINIVM_SEC_XCRS] = {"XCR section", 0},
    [MINIVM_SEC_MSRS] = {"MSR section", 0},
    [MINIVM_SEC_EVENTS] = {"events", 19},
    [MINIVM_SEC_LAPIC] = {"LAPIC", KVM_APIC_REG_SIZE},
    [MINIVM_SEC_MP_STATE] = {"MP state", 4},
};
_Static_assert(sizeof(struct kvm_lapic_state) == KVM_APIC_REG_SIZE && KVM_APIC_REG_SIZE == 1024,
               "the LAPIC section is the 1 KiB register page");

const char *minivm_state_section_name(unsigned tag)
{
    return tag > MINIVM_SEC_END && tag < MINIVM_SEC_COUNT ? sec_info[tag].name : "end";
}

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

/* ---- fields ---- */
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

/* The register fields in the order of the format. */
static void regs_fields(struct kvm_regs *g, __u64 *f[REGS_N])
{
    __u64 *v[REGS_N] = {&g->rax, &g->rbx, &g->rcx, &g->rdx, &g->rsi, &g->rdi,
                        &g->rsp, &g->rbp, &g->r8,  &g->r9,  &g->r10, &g->r11,
                        &g->r12, &g->r13, &g->r14, &g->r15, &g->rip, &g->rflags};
    memcpy(f, v, sizeof(v));
}

static void sregs_segs(struct kvm_sregs *sr, struct kvm_segment *s[8])
{
    struct kvm_segment *v[8] = {&sr->cs, &sr->ds, &sr->es, &sr->fs,
                                &sr->gs, &sr->ss, &sr->tr, &sr->ldt};
    memcpy(s, v, sizeof(v));
}

static bool msr_known(uint32_t index)
{
    for (size_t i = 0; i < MINIVM_STATE_NMSRS; i++)
        if (minivm_state_msrs[i] == index)
            return true;
    return false;
}

/* The MP states of x86 that a migrated vCPU can be in (not s390's, not
 * SEV-ES's AP_RESET_HOLD, not arm64's SUSPENDED). */
static bool mp_state_known(uint32_t mp)
{
    switch (mp) {
    case KVM_MP_STATE_RUNNABLE:
    case KVM_MP_STATE_UNINITIALIZED:
    case KVM_MP_STATE_INIT_RECEIVED:
    case KVM_MP_STATE_HALTED:
    case KVM_MP_STATE_SIPI_RECEIVED:
        return true;
    default:
        return false;
    }
}

/* ---- serializer ---- */
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

static void put_section(struct wbuf *w, unsigned tag, const struct minivm_vcpu_state *v)
{
    switch (tag) {
    case MINIVM_SEC_REGS: {
        struct kvm_regs regs = v->regs;
        __u64 *f[REGS_N];
        regs_fields(&regs, f);
        for (int i = 0; i < REGS_N; i++)
            put64(w, *f[i]);
        break;
    }
    case MINIVM_SEC_SREGS: {
        struct kvm_sregs sr = v->sregs;
        struct kvm_segment *segs[8];
        sregs_segs(&sr, segs);
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
        break;
    }
    case MINIVM_SEC_XSAVE:
        for (int i = 0; i < 1024; i++)
            put32(w, v->xsave[i]);
        break;
    case MINIVM_SEC_XCRS:
        put32(w, v->xcrs.nr_xcrs);
        put32(w, v->xcrs.flags);
        for (uint32_t i = 0; i < v->xcrs.nr_xcrs; i++) {
            put32(w, v->xcrs.xcrs[i].xcr);
            put64(w, v->xcrs.xcrs[i].value);
        }
        break;
    case MINIVM_SEC_MSRS:
        put32(w, v->nmsrs);
        for (uint32_t i = 0; i < v->nmsrs; i++) {
            put32(w, v->msrs[i].index);
            put64(w, v->msrs[i].data);
        }
        break;
    case MINIVM_SEC_EVENTS: {
        const struct kvm_vcpu_events *ev = &v->events;
        put8(w, ev->exception.injected);
        put8(w, ev->exception.nr);
        put8(w, ev->exception.has_error_code);
        put8(w, ev->exception.pending);
        put32(w, ev->exception.error_code);
        put8(w, ev->interrupt.injected);
        put8(w, ev->interrupt.nr);
        put8(w, ev->interrupt.soft);
        put8(w, ev->interrupt.shadow);
        put8(w, ev->nmi.injected);
        put8(w, ev->nmi.pending);
        put8(w, ev->nmi.masked);
        put32(w, ev->sipi_vector);
        break;
    }
    case MINIVM_SEC_LAPIC:
        put(w, v->lapic.regs, KVM_APIC_REG_SIZE);
        break;
    case MINIVM_SEC_MP_STATE:
        put32(w, v->mp_state);
        break;
    }
}

int minivm_state_serialize(const struct minivm_state *st, void **buf, size_t *len)
{
    if (st->nvcpus == 0 || st->nvcpus > MINIVM_MAX_VCPUS)
        return -1;
    struct wbuf w = {0};
    put64(&w, STATE_MAGIC);
    put32(&w, STATE_VERSION);
    put32(&w, st->nvcpus);
    put64(&w, st->tsc_khz);
    for (unsigned i = 0; i < st->nvcpus; i++) {
        const struct minivm_vcpu_state *v = &st->vcpu[i];
        if (v->xcrs.nr_xcrs > KVM_MAX_XCRS || v->nmsrs > MINIVM_STATE_NMSRS) {
            free(w.p);
            return -1;
        }
        for (unsigned tag = MINIVM_SEC_END + 1; tag < MINIVM_SEC_COUNT; tag++) {
            if (!(v->seen & (1u << tag)))
                continue;
            size_t s = sec_begin(&w, tag);
            put_section(&w, tag, v);
            sec_end(&w, s);
        }
        put32(&w, MINIVM_SEC_END);
        put32(&w, 0);
    }
    if (w.fail || w.len > STATE_MAX) {
        free(w.p);
        return -1;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

/* ---- parser ---- */
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(msg, msglen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

/* One section's payload `s` (its length already checked against the state
 * left, and against sec_info[tag].len when that is fixed). */
static int parse_section(struct rbuf *s, unsigned tag, unsigned i, struct minivm_vcpu_state *v,
                         char *msg, size_t msglen)
{
    uint32_t len = (uint32_t)s->len;
    switch (tag) {
    case MINIVM_SEC_REGS: {
        __u64 *f[REGS_N];
        regs_fields(&v->regs, f);
        for (int k = 0; k < REGS_N; k++)
            *f[k] = get64(s);
        break;
    }
    case MINIVM_SEC_SREGS: {
        struct kvm_sregs *sr = &v->sregs;
        struct kvm_segment *segs[8];
        sregs_segs(sr, segs);
        for (int k = 0; k < 8; k++)
            get_seg(s, segs[k]);
        sr->gdt.base = get64(s);
        sr->gdt.limit = get16(s);
        sr->idt.base = get64(s);
        sr->idt.limit = get16(s);
        sr->cr0 = get64(s);
        sr->cr2 = get64(s);
        sr->cr3 = get64(s);
        sr->cr4 = get64(s);
        sr->cr8 = get64(s);
        sr->efer = get64(s);
        sr->apic_base = get64(s);
        for (int k = 0; k < 4; k++)
            sr->interrupt_bitmap[k] = get64(s);
        break;
    }
    case MINIVM_SEC_XSAVE:
        for (int k = 0; k < 1024; k++)
            v->xsave[k] = get32(s);
        break;
    case MINIVM_SEC_XCRS: {
        uint32_t n = get32(s);
        v->xcrs.flags = get32(s);
        if (s->fail || n > KVM_MAX_XCRS || len != 8 + n * 12)
            FAIL("vCPU %u: bad XCR section (%u bytes, %u XCRs; at most %u)", i, len, n,
                 KVM_MAX_XCRS);
        v->xcrs.nr_xcrs = n;
        for (uint32_t k = 0; k < n; k++) {
            v->xcrs.xcrs[k].xcr = get32(s);
            v->xcrs.xcrs[k].value = get64(s);
        }
        break;
    }
    case MINIVM_SEC_MSRS: {
        uint32_t n = get32(s);
        if (s->fail || n > MINIVM_STATE_NMSRS || len != 4 + n * 12)
            FAIL("vCPU %u: bad MSR section (%u bytes, %u MSRs; at most %u)", i, len, n,
                 (unsigned)MINIVM_STATE_NMSRS);
        for (uint32_t k = 0; k < n; k++) {
            uint32_t index = get32(s);
            uint64_t data = get64(s);
            if (!msr_known(index))
                FAIL("vCPU %u: MSR 0x%x is not part of the state", i, index);
            for (uint32_t j = 0; j < k; j++)
                if (v->msrs[j].index == index)
                    FAIL("vCPU %u: MSR 0x%x twice", i, index);
            v->msrs[k].index = index;
            v->msrs[k].data = data;
        }
        v->nmsrs = n;
        break;
    }
    case MINIVM_SEC_EVENTS: {
        struct kvm_vcpu_events *ev = &v->events;
        ev->exception.injected = get8(s);
        ev->exception.nr = get8(s);
        ev->exception.has_error_code = get8(s);
        ev->exception.pending = get8(s);
        ev->exception.error_code = get32(s);
        ev->interrupt.injected = get8(s);
        ev->interrupt.nr = get8(s);
        ev->interrupt.soft = get8(s);
        ev->interrupt.shadow = get8(s);
        ev->nmi.injected = get8(s);
        ev->nmi.pending = get8(s);
        ev->nmi.masked = get8(s);
        ev->sipi_vector = get32(s);
        break;
    }
    case MINIVM_SEC_LAPIC:
        get(s, v->lapic.regs, KVM_APIC_REG_SIZE);
        break;
    case MINIVM_SEC_MP_STATE:
        v->mp_state = get32(s);
        if (!mp_state_known(v->mp_state))
            FAIL("vCPU %u: MP state %u is none of x86's (0..4: runnable, uninitialized, "
                 "INIT received, halted, SIPI received)",
                 i, v->mp_state);
        break;
    }
    if (s->fail || s->off != s->len) /* every fixed length matches its fields */
        FAIL("vCPU %u: %s of %u bytes does not match its fields", i, sec_info[tag].name, len);
    return 0;
}

static int parse_vcpu(struct rbuf *r, unsigned i, struct minivm_vcpu_state *v, char *msg,
                      size_t msglen)
{
    unsigned last = MINIVM_SEC_END;
    for (;;) {
        uint32_t tag = get32(r), len = get32(r);
        if (r->fail)
            FAIL("vCPU %u: state truncated", i);
        if (tag == MINIVM_SEC_END) {
            if (len != 0)
                FAIL("vCPU %u: end section of length %u", i, len);
            break;
        }
        if (tag >= MINIVM_SEC_COUNT)
            FAIL("vCPU %u: unknown section %u", i, tag);
        if (v->seen & (1u << tag))
            FAIL("vCPU %u: section %u twice", i, tag);
        if (tag < last)
            FAIL("vCPU %u: section %u after section %u (sections come in ascending order)", i, tag,
                 last);
        v->seen |= 1u << tag;
        last = tag;
        if (len > r->len - r->off)
            FAIL("vCPU %u: section %u of %u bytes beyond the end of the state", i, tag, len);
        if (sec_info[tag].len && len != sec_info[tag].len)
            FAIL("vCPU %u: %s of %u bytes, want %u", i, sec_info[tag].name, len, sec_info[tag].len);
        struct rbuf s = {.p = r->p + r->off, .len = len};
        r->off += len;
        if (parse_section(&s, tag, i, v, msg, msglen))
            return -1;
    }
    for (unsigned tag = MINIVM_SEC_REGS; tag <= MINIVM_SEC_SREGS; tag++)
        if (!(v->seen & (1u << tag)))
            FAIL("vCPU %u: state lacks the %s (section %u)", i, sec_info[tag].name, tag);
    return 0;
}

int minivm_state_parse(const void *buf, size_t len, struct minivm_state *st, char *msg,
                       size_t msglen)
{
    memset(st, 0, sizeof(*st));
    if (len > STATE_MAX)
        FAIL("device state of %zu bytes (limit %u)", len, STATE_MAX);
    struct rbuf r = {.p = buf, .len = len};
    uint64_t magic = get64(&r);
    uint32_t version = get32(&r), n = get32(&r);
    uint64_t khz = get64(&r);
    if (r.fail || magic != STATE_MAGIC)
        FAIL("device state is not a minivm state");
    if (version != STATE_VERSION)
        FAIL("device state version %u, this minivm reads %u", version, STATE_VERSION);
    if (n == 0 || n > MINIVM_MAX_VCPUS)
        FAIL("device state has %u vCPUs (1..%u)", n, MINIVM_MAX_VCPUS);
    st->nvcpus = n;
    st->tsc_khz = khz;
    for (unsigned i = 0; i < n; i++)
        if (parse_vcpu(&r, i, &st->vcpu[i], msg, msglen))
            return -1;
    if (r.off != r.len)
        FAIL("%zu bytes after the last vCPU's state", r.len - r.off);
    return 0;
}
