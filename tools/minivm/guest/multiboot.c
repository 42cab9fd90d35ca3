/*
 * The multiboot path (QEMU: -kernel guest.elf -append "key=value ..."):
 * entry.S's mb_entry has switched to long mode with its own page tables;
 * here the guest fills the config page that minivm would have filled, from
 * defaults and the command line, measures the TSC against the PIT, and
 * runs guest_main(0) as writer and checker interleaved (one vCPU).
 *
 * Keys (decimal, or 0x hex): pages (workload pages, default 4096), hot (hot
 * pages, default pages / 8), share (percent of writes to the hot set,
 * default 90), rate (pages/s, default 1000, 0 = no writes, max = unpaced), seed (PRNG seed),
 * run (writes before DONE, default 0 = forever), tsc_khz (skip the PIT
 * measurement), vcpus (only 1). Unknown words are ignored (QEMU puts the
 * kernel's file name first).
 *
 * No mix content is loaded, so only pages the guest wrote are checked; with
 * QEMU's -device isa-debug-exit,iobase=0xf4 the guest ends QEMU on DONE
 * (status 1) or on a failure (5: bad page, 7: counter jump, 9: bad config).
 */
#include <stddef.h>
#include <stdint.h>

#include "../guest_abi.h"

#include "guest.h"

#define MB_BOOT_MAGIC   0x2BADB002u
#define MB_INFO_MEM     (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)

static int key_is(const char *s, const char *key, const char **val)
{
    while (*key && *s == *key)
        s++, key++;
    if (*key || *s != '=')
        return 0;
    *val = s + 1;
    return 1;
}

static uint64_t parse_num(const char *s)
{
    uint64_t v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (s += 2;; s++) {
            unsigned d;
            if (*s >= '0' && *s <= '9')
                d = (unsigned)(*s - '0');
            else if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
                d = (unsigned)((*s | 0x20) - 'a' + 10);
            else
                return v;
            v = v * 16 + d;
        }
    }
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

/* TSC ticks in 50 ms of PIT channel 2 (mode 0, gate on, speaker off). */
static uint64_t pit_tsc_khz(void)
{
    const uint16_t latch = 1193182 / 20;
    guest_outb(0x61, (uint8_t)((guest_inb(0x61) & ~0x02) | 0x01));
    guest_outb(0x43, 0xb0);
    guest_outb(0x42, latch & 0xff);
    guest_outb(0x42, latch >> 8);
    uint64_t t0 = guest_rdtsc();
    uint64_t spins = 0;
    while (!(guest_inb(0x61) & 0x20))
        if (++spins > 100000000ull)
            return 0; /* no PIT */
    return (guest_rdtsc() - t0) / 50;
}

void guest_multiboot_main(uint32_t mbi_pa, uint32_t magic)
{
    guest_under_qemu = 1;
    volatile struct minivm_config *c = (volatile struct minivm_config *)(uintptr_t)MINIVM_CONFIG;
    const volatile uint32_t *mbi = (const volatile uint32_t *)(uintptr_t)mbi_pa;
    guest_puts("minivm guest: multiboot entry\n");
    if (magic != MB_BOOT_MAGIC || !(mbi[0] & MB_INFO_MEM)) {
        guest_puts("minivm guest: not started by a multiboot loader with memory info\n");
        guest_outb(0xf4, 4);
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    uint64_t pages = 4096, hot = ~0ull, share = 90, rate = 1000, seed = 1, run = 0, khz = 0,
             vcpus = 1;
    if (mbi[0] & MB_INFO_CMDLINE) {
        const char *s = (const char *)(uintptr_t)mbi[4];
        /* Parsed in place: it sits after the kernel image, and it is read
         * before anything (config page, generation table) is written. */
        while (*s) {
            while (*s == ' ')
                s++;
            const char *v;
            if (key_is(s, "pages", &v))
                pages = parse_num(v);
            else if (key_is(s, "hot", &v))
                hot = parse_num(v);
            else if (key_is(s, "share", &v))
                share = parse_num(v);
            else if (key_is(s, "rate", &v))
                rate = v[0] == 'm' ? MINIVM_RATE_MAX : parse_num(v);
            else if (key_is(s, "seed", &v))
                seed = parse_num(v);
            else if (key_is(s, "run", &v))
                run = parse_num(v);
            else if (key_is(s, "tsc_khz", &v))
                khz = parse_num(v);
            else if (key_is(s, "vcpus", &v))
                vcpus = parse_num(v);
            while (*s && *s != ' ')
                s++;
        }
    }
    if (vcpus != 1)
        guest_puts("minivm guest: only vcpus=1 under multiboot, running one\n");
    /* Low RAM: 1 MiB + mem_upper KiB, no more than slot 0 can be. */
    uint64_t slot0 = ((uint64_t)mbi[2] + 1024) / 4;
    if (slot0 > MINIVM_LOW_MAX / MINIVM_PAGE)
        slot0 = MINIVM_LOW_MAX / MINIVM_PAGE;
    uint64_t first = MINIVM_DATA_START / MINIVM_PAGE;
    if (slot0 <= first + 1) {
        guest_puts("minivm guest: needs more than 16 MiB of RAM\n");
        guest_outb(0xf4, 4);
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    if (pages == 0 || pages > slot0 - first)
        pages = slot0 - first;
    if (hot == ~0ull)
        hot = pages / 8;
    if (hot > pages)
        hot = pages;
    if (share > 100)
        share = 100;
    if (!khz)
        khz = pit_tsc_khz();

    /* The config page and the generation table may hold firmware leftovers. */
    uint64_t *p = (uint64_t *)(uintptr_t)MINIVM_CONFIG;
    uint64_t n = sizeof(struct minivm_config) / 8;
    __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0ull) : "memory");
    p = (uint64_t *)(uintptr_t)MINIVM_GEN_TABLE;
    n = (first + pages) * 4 / 8 + 1;
    __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0ull) : "memory");

    c->seed = seed;
    c->slot0_pages = slot0;
    c->slot1_pages = 0;
    c->data_first = first;
    c->data_pages = pages;
    c->hot_first = first;
    c->hot_pages = hot;
    c->hot_share = share * 1024 / 100;
    c->rate = rate;
    c->tsc_khz = khz;
    c->run_pages = run;
    c->nvcpus = 1;
    c->role[0] = MINIVM_ROLE_WRITER;
    c->magic = MINIVM_CONFIG_MAGIC;

    guest_puts("minivm guest: pages ");
    guest_put_dec(pages);
    guest_puts(" hot ");
    guest_put_dec(hot);
    guest_puts(" share ");
    guest_put_dec(share);
    guest_puts("% rate ");
    guest_put_dec(rate);
    guest_puts(" tsc_khz ");
    guest_put_dec(khz);
    guest_puts(" run ");
    guest_put_dec(run);
    guest_puts("\n");
    guest_main(0);
}
