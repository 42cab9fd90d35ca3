/* The VM: /dev/kvm, the two RAM slots, the page tables and GDT of long
 * mode, the guest binary, the initial content, and the dirty log. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mix.h"
#include "minivm.h"

/* Outside low RAM (which ends at 3 GiB at most): the hole below 4 GiB. */
#define MINIVM_TSS_ADDR    0xfffbd000ull
#define MINIVM_IDENT_MAP   0xfffbc000ull
#define MINIVM_CLEAR_CHUNK (256u * 1024) /* pages per KVM_CLEAR_DIRTY_LOG: 1 GiB */
/* 12 page directories: the config page follows them. */
#define MINIVM_MAX_PDS ((MINIVM_CONFIG - MINIVM_PD) / MINIVM_PAGE)

int minivm_vm_open(struct minivm *vm)
{
    minivm_console_init(&vm->console);
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        fprintf(stderr, "minivm: /dev/kvm: %s\n", strerror(errno));
        return -1;
    }
    if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        fprintf(stderr, "minivm: /dev/kvm: unexpected API version\n");
        return -1;
    }
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        fprintf(stderr, "minivm: KVM_CREATE_VM: %s\n", strerror(errno));
        return -1;
    }
    /* The in-kernel irqchip (PIC, IOAPIC, a LAPIC per vCPU): KVM then
     * handles HLT itself and the LAPIC and MP state are part of the vCPU
     * state. Must come before the first KVM_CREATE_VCPU. */
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        fprintf(stderr, "minivm: KVM_CREATE_IRQCHIP (in-kernel LAPIC): %s\n", strerror(errno));
        return -1;
    }
    int rs = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (rs <= 0) {
        fprintf(stderr, "minivm: KVM_GET_VCPU_MMAP_SIZE: %s\n", strerror(errno));
        return -1;
    }
    vm->run_size = (size_t)rs;
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)MINIVM_TSS_ADDR) < 0) {
        fprintf(stderr, "minivm: KVM_SET_TSS_ADDR: %s\n", strerror(errno));
        return -1;
    }
    uint64_t ident = MINIVM_IDENT_MAP;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0) {
        fprintf(stderr, "minivm: KVM_SET_IDENTITY_MAP_ADDR: %s\n", strerror(errno));
        return -1;
    }
    /* Manual dirty-log protection: GET only reads the log, CLEAR re-arms
     * it in chunks, and with INITIALLY_SET turning logging on does not
     * write-protect the whole slot at once. */
    int caps = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (caps > 0) {
        struct kvm_enable_cap ec = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
        ec.args[0] =
            (uint64_t)caps & (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
        if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec) == 0)
            vm->manual_protect = true;
    }
    int nent = 256;
    vm->cpuid = calloc(1, sizeof(*vm->cpuid) + (size_t)nent * sizeof(struct kvm_cpuid_entry2));
    if (!vm->cpuid)
        return -1;
    vm->cpuid->nent = (uint32_t)nent;
    if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0) {
        fprintf(stderr, "minivm: KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
        return -1;
    }
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cond, NULL);
    return 0;
}

void minivm_vm_close(struct minivm *vm)
{
    minivm_dirty_ring_close(vm);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        struct minivm_vcpu *v = &vm->vcpu[i];
        if (v->run)
            munmap(v->run, vm->run_size);
        if (v->fd >= 0)
            close(v->fd);
    }
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++)
        if (vm->slot[n].host)
            munmap(vm->slot[n].host, vm->slot[n].size);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    free(vm->cpuid);
    vm->cpuid = NULL;
    minivm_console_free(&vm->console);
    free(vm->cpus_kept);
    vm->cpus_kept = NULL;
}

static int slot_register(struct minivm *vm, unsigned n)
{
    struct minivm_slot *s = &vm->slot[n];
    struct kvm_userspace_memory_region r = {
        .slot = n,
        .flags = s->flags,
        .guest_phys_addr = s->gpa,
        .memory_size = s->size,
        .userspace_addr = (uint64_t)(uintptr_t)s->host,
    };
    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        fprintf(stderr, "minivm: KVM_SET_USER_MEMORY_REGION slot %u: %s\n", n, strerror(errno));
        return -1;
    }
    return 0;
}

int minivm_slot_create(struct minivm *vm, unsigned n, uint64_t size)
{
    if (n >= MINIVM_NSLOTS || vm->slot[n].host || size == 0 || size % MINIVM_PAGE)
        return -1;
    if (n == 0 && size > MINIVM_LOW_MAX)
        return -1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "minivm: mmap %llu bytes: %s\n", (unsigned long long)size, strerror(errno));
        return -1;
    }
    madvise(p, size, MADV_HUGEPAGE);
    vm->slot[n] = (struct minivm_slot){
        .host = p, .gpa = n == 0 ? 0 : MINIVM_HIGH_BASE, .size = size, .flags = 0};
    return slot_register(vm, n);
}

int minivm_prefault(struct minivm *vm)
{
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        struct minivm_slot *s = &vm->slot[n];
        if (s->host && madvise(s->host, s->size, MADV_POPULATE_WRITE) < 0) {
            fprintf(stderr, "minivm: MADV_POPULATE_WRITE slot %u: %s\n", n, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int minivm_layout_mem(struct minivm *vm, uint64_t mem)
{
    uint64_t low = mem < MINIVM_LOW_MAX ? mem : MINIVM_LOW_MAX;
    if (minivm_slot_create(vm, 0, low))
        return -1;
    if (mem > low && minivm_slot_create(vm, 1, mem - low))
        return -1;
    return 0;
}

void *minivm_gpa(struct minivm *vm, uint64_t gpa, uint64_t len)
{
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        struct minivm_slot *s = &vm->slot[n];
        if (s->host && gpa >= s->gpa && gpa - s->gpa <= s->size && len <= s->size - (gpa - s->gpa))
            return s->host + (gpa - s->gpa);
    }
    return NULL;
}

struct minivm_config *minivm_config_page(struct minivm *vm)
{
    return minivm_gpa(vm, MINIVM_CONFIG, MINIVM_PAGE);
}

uint64_t *minivm_page_ptr(struct minivm *vm, uint64_t index)
{
    uint64_t low_pages = vm->slot[0].size / MINIVM_PAGE;
    if (index < low_pages)
        return (uint64_t *)(void *)(vm->slot[0].host + index * MINIVM_PAGE);
    index -= low_pages;
    if (index < vm->slot[1].size / MINIVM_PAGE)
        return (uint64_t *)(void *)(vm->slot[1].host + index * MINIVM_PAGE);
    return NULL;
}

/*
 * Identity map with 2 MiB pages of everything up to the end of the high
 * slot. The page directories sit from MINIVM_PD up to the config page:
 * 16 of them, 16 GiB of guest-physical space (so --mem up to 15 GiB).
 *
 *   PML4[0] -> PDPT;  PDPT[g] -> PD g (g = GiB);  PD g [j] -> g GiB + j * 2 MiB
 */
int minivm_setup_long_mode_tables(struct minivm *vm)
{
    uint64_t top = vm->slot[1].size ? vm->slot[1].gpa + vm->slot[1].size : vm->slot[0].size;
    uint64_t npd = (top + (1ull << 30) - 1) >> 30;
    if (npd > MINIVM_MAX_PDS) {
        fprintf(stderr,
                "minivm: memory up to 0x%llx needs %llu page directories, the layout "
                "has room for %u\n",
                (unsigned long long)top, (unsigned long long)npd, (unsigned)MINIVM_MAX_PDS);
        return -1;
    }
    uint64_t *pml4 = minivm_gpa(vm, MINIVM_PML4, MINIVM_PAGE);
    uint64_t *pdpt = minivm_gpa(vm, MINIVM_PDPT, MINIVM_PAGE);
    if (!pml4 || !pdpt)
        return -1;
    memset(pml4, 0, MINIVM_PAGE);
    memset(pdpt, 0, MINIVM_PAGE);
    pml4[0] = MINIVM_PDPT | 0x3; /* present, writable */
    for (uint64_t g = 0; g < npd; g++) {
        uint64_t *pd = minivm_gpa(vm, MINIVM_PD + g * MINIVM_PAGE, MINIVM_PAGE);
        pdpt[g] = (MINIVM_PD + g * MINIVM_PAGE) | 0x3;
        for (uint64_t j = 0; j < 512; j++)
            pd[j] = (g << 30) | (j << 21) | 0x83; /* present, writable, 2 MiB */
    }
    /* GDT: null, 0x08 64-bit code, 0x10 data. */
    uint64_t *gdt = minivm_gpa(vm, MINIVM_GDT, MINIVM_PAGE);
    memset(gdt, 0, MINIVM_PAGE);
    gdt[1] = 0x00af9a000000ffffull;
    gdt[2] = 0x00cf92000000ffffull;
    return 0;
}

int minivm_load_guest(struct minivm *vm, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "minivm: guest binary %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    uint64_t room = MINIVM_GEN_TABLE - MINIVM_CODE;
    if (fstat(fd, &st) || st.st_size <= 0 || (uint64_t)st.st_size > room) {
        fprintf(stderr, "minivm: guest binary %s: size must be 1..%llu bytes\n", path,
                (unsigned long long)room);
        close(fd);
        return -1;
    }
    uint8_t *dst = minivm_gpa(vm, MINIVM_CODE, (uint64_t)st.st_size);
    size_t done = 0;
    while (dst && done < (size_t)st.st_size) {
        ssize_t r = read(fd, dst + done, (size_t)st.st_size - done);
        if (r <= 0) {
            fprintf(stderr, "minivm: guest binary %s: short read\n", path);
            close(fd);
            return -1;
        }
        done += (size_t)r;
    }
    close(fd);
    return dst ? 0 : -1;
}

/* Workload pages get the standard mix of `seed`: plan page j is page index
 * data_first + j, which may be in either slot. */
int minivm_fill_mix(struct minivm *vm, uint64_t seed)
{
    struct minivm_config *c = minivm_config_page(vm);
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    mp.seed = seed;
    struct vmig_mix_plan *plan;
    if (vmig_mix_plan_create(&mp, c->data_pages, &plan))
        return -1;
    uint64_t low_n = c->slot0_pages - c->data_first;
    int rc = vmig_mix_plan_fill(plan, minivm_page_ptr(vm, c->data_first), 0, low_n, 0, 0);
    if (!rc && c->slot1_pages)
        rc = vmig_mix_plan_fill(plan, vm->slot[1].host, low_n, c->slot1_pages, 0, 0);
    vmig_mix_plan_free(plan);
    return rc ? -1 : 0;
}

static int clear_log(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages)
{
    for (uint64_t first = 0; first < npages; first += MINIVM_CLEAR_CHUNK) {
        uint64_t cnt = npages - first < MINIVM_CLEAR_CHUNK ? npages - first : MINIVM_CLEAR_CHUNK;
        struct kvm_clear_dirty_log cl = {
            .slot = n,
            .num_pages = (uint32_t)cnt,
            .first_page = first,
            .dirty_bitmap = bitmap + first / 64,
        };
        if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &cl) < 0) {
            fprintf(stderr, "minivm: KVM_CLEAR_DIRTY_LOG slot %u: %s\n", n, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int minivm_dirty_log_set(struct minivm *vm, bool on)
{
    /* Ring mode: drop stale entries before logging starts (pass 1 sends
     * every page anyway); after it stops, drop what the rings hold. */
    if (on && minivm_dirty_ring_log_set(vm, true))
        return -1;
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        struct minivm_slot *s = &vm->slot[n];
        if (!s->host)
            continue;
        s->flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;
        if (slot_register(vm, n))
            return -1;
        if (on && vm->manual_protect) {
            /* INITIALLY_SET reports every page dirty once; vmig's pass 1
             * sends them all anyway, so re-arm the whole slot now instead
             * of letting pass 2 send everything again. */
            uint64_t npages = s->size / MINIVM_PAGE;
            uint64_t *ones = malloc((npages + 63) / 64 * 8);
            if (!ones)
                return -1;
            memset(ones, 0xff, (npages + 63) / 64 * 8);
            int rc = clear_log(vm, n, ones, npages);
            free(ones);
            if (rc)
                return -1;
        }
    }
    if (!on)
        return minivm_dirty_ring_log_set(vm, false);
    return 0;
}

int minivm_dirty_log_rearm(struct minivm *vm)
{
    for (unsigned n = 0; n < MINIVM_NSLOTS; n++) {
        struct minivm_slot *s = &vm->slot[n];
        if (!s->host || !(s->flags & KVM_MEM_LOG_DIRTY_PAGES))
            continue;
        s->flags = 0;
        int rc = slot_register(vm, n);
        s->flags = KVM_MEM_LOG_DIRTY_PAGES;
        if (rc || slot_register(vm, n))
            return -1;
    }
    return 0;
}

int minivm_dirty_sync_slot(struct minivm *vm, unsigned n, uint64_t *bitmap, uint64_t npages)
{
    if (n >= MINIVM_NSLOTS || !vm->slot[n].host || npages != vm->slot[n].size / MINIVM_PAGE)
        return -1;
    /* With the ring KVM keeps no bitmap and refuses KVM_GET_DIRTY_LOG. */
    if (vm->dirty_mode == MINIVM_DIRTY_RING)
        return minivm_dirty_ring_sync_slot(vm, n, bitmap, npages);
    /* KVM's log has vmig's layout: one bit per 4 KiB page, LSB first in
     * 64-bit words, ceil(npages / 64) words. */
    struct kvm_dirty_log dl = {.slot = n, .dirty_bitmap = bitmap};
    if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &dl) < 0) {
        fprintf(stderr, "minivm: KVM_GET_DIRTY_LOG slot %u: %s\n", n, strerror(errno));
        return -1;
    }
    if (vm->manual_protect)
        return clear_log(vm, n, bitmap, npages);
    return 0;
}
