/*
 * The invariant guest of minivm: freestanding, no libc, no interrupts, no
 * IDT (so it must never fault). One vCPU writes stamped pages under the
 * per-page seqlock of the generation table, another checks random pages
 * against that table; the layout, the config page and the ports are those
 * of ../guest_abi.h.
 *
 * Under nested KVM every guest instruction costs about 0.5 us, so the
 * loops do as little per page as they can: the 30 pattern words are one
 * `rep stosq` on the writer's side and one `repe scasq` on the checker's.
 *
 * All loop state that must survive a live migration is in guest memory:
 * the config page (counter, PRNG states, progress) or the vCPU's stack
 * (pacing, the checker's last look), never in the VMM.
 */
#include <stddef.h>
#include <stdint.h>

#include "../guest_abi.h"

#include "guest.h"

#define CFG ((volatile struct minivm_config *)(uintptr_t)MINIVM_CONFIG)
#define GEN ((volatile uint32_t *)(uintptr_t)MINIVM_GEN_TABLE)

#define PATTERN_WORDS (MINIVM_STAMP_BYTES / 8u - 2u) /* 30 */

/* Combined loop (one vCPU): checks done after every COMBINED_WRITES writes. */
#define COMBINED_WRITES 64u
#define COMBINED_CHECKS 16u

/* Set by the multiboot path (QEMU): progress lines and isa-debug-exit. */
int guest_under_qemu;

#define barrier() __asm__ volatile("" ::: "memory")

void guest_outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

uint8_t guest_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

static uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

uint64_t guest_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static void cpu_pause(void)
{
    __asm__ volatile("pause");
}

__attribute__((noreturn)) static void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* Text to the debug port: one `rep outsb` per string, one exit under KVM. */
void guest_puts(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    __asm__ volatile("rep outsb" : "+S"(s), "+c"(n) : "d"((uint16_t)MINIVM_PORT_DEBUG) : "memory");
}

void guest_put_hex(uint64_t v)
{
    char b[19];
    b[0] = '0';
    b[1] = 'x';
    for (int i = 0; i < 16; i++)
        b[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
    b[18] = 0;
    guest_puts(b);
}

void guest_put_dec(uint64_t v)
{
    char b[21];
    int i = 20;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    guest_puts(b + i);
}

/* isa-debug-exit (QEMU -device isa-debug-exit,iobase=0xf4): QEMU exits
 * with status (code << 1) | 1. Only under the multiboot path. */
static void qemu_exit(uint8_t code)
{
    if (guest_under_qemu)
        guest_outb(0xf4, code);
}

static void event(uint32_t ev, uint32_t vcpu)
{
    outl(MINIVM_PORT_EVENT, ev | vcpu << 16);
}

/* splitmix64; the state lives in config->rng[vcpu] so that it migrates. */
static uint64_t rng_next(unsigned vcpu)
{
    uint64_t z = CFG->rng[vcpu] + 0x9E3779B97F4A7C15ull;
    CFG->rng[vcpu] = z;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Page index -> guest-physical address (= virtual: identity map). */
static volatile uint64_t *page_ptr(uint64_t index)
{
    uint64_t s0 = CFG->slot0_pages;
    uint64_t gpa = index < s0 ? index * MINIVM_PAGE : MINIVM_HIGH_BASE + (index - s0) * MINIVM_PAGE;
    return (volatile uint64_t *)(uintptr_t)gpa;
}

__attribute__((noreturn)) static void fail(uint32_t ev, unsigned vcpu, uint64_t index,
                                           uint64_t want, uint64_t got, uint64_t word)
{
    CFG->fail_index = index;
    CFG->fail_want = want;
    CFG->fail_got = got;
    CFG->fail_word = word;
    barrier();
    event(ev, vcpu);
    guest_puts(ev == MINIVM_EV_CHECK_FAIL ? "FAIL: bad page "
               : ev == MINIVM_EV_DEV_FAIL ? "FAIL: device region "
                                          : "FAIL: counter jump ");
    guest_put_dec(index);
    guest_puts(" want ");
    guest_put_hex(want);
    guest_puts(" got ");
    guest_put_hex(got);
    guest_puts(" word ");
    guest_put_dec(word);
    guest_puts("\n");
    qemu_exit(ev == MINIVM_EV_COUNTER_JUMP ? 3 : 2);
    halt_forever();
}

/* ---- writer ------------------------------------------------------------ */

/* Pages written per counter step: the loop reads the TSC, steps the
 * counter and asks the pacing once per batch, so that a page costs only
 * its own few instructions (the stall resolution stays well below 1 ms). */
#define WRITE_BATCH 16u

/* Pages allowed = base_count + rate * (tsc - base_tsc) / hz. */
struct pacer {
    uint64_t base_tsc, base_count;
    uint64_t hz; /* TSC ticks per second, 0: no pacing */
};

struct writer {
    unsigned vcpu;
    int stepped; /* a counter step happened before (skip the first gap) */
    int done;    /* DONE reported */
    struct pacer pace;
    uint64_t next_print;
    uint64_t dev_next; /* TSC of the next device rewrite */
};

/* ---- the synthetic device --------------------------------------------- */

/* A random region and word index below n (multiply-shift, no division). */
static uint64_t below(uint64_t r32, uint64_t n)
{
    return ((r32 & 0xffffffffu) * n) >> 32;
}

/* The writer's command: rewrite a random region with a random seed. The
 * guest's record (dev_seed) changes under dev_busy and a bumped dev_cmds,
 * so that a checker on another vCPU, and the VMM after a migration, know
 * which region may be in flight. */
static void dev_rewrite(unsigned vcpu)
{
    uint64_t r = rng_next(vcpu);
    uint32_t region = (uint32_t)below(r >> 32, CFG->dev_regions);
    uint32_t seed = (uint32_t)r & MINIVM_DEV_SEED_MASK;
    CFG->dev_busy = region + 1;
    CFG->dev_cmds = CFG->dev_cmds + 1;
    barrier();
    CFG->dev_seed[region] = seed;
    barrier();
    outl(MINIVM_PORT_DEV_REWRITE, region << 24 | seed);
    barrier();
    CFG->dev_busy = 0;
}

/* The checker's look at the device: one random word read through the
 * ports against the guest's own record; skipped when a rewrite overlaps. */
static void dev_check(unsigned vcpu)
{
    uint64_t r = rng_next(vcpu);
    uint32_t region = (uint32_t)below(r >> 32, CFG->dev_regions);
    uint64_t k = below(r, CFG->dev_region_words);
    uint64_t c1 = CFG->dev_cmds, b1 = CFG->dev_busy;
    barrier();
    uint32_t seed = CFG->dev_seed[region];
    outl(MINIVM_PORT_DEV_SELECT, region << MINIVM_DEV_WORD_BITS | (uint32_t)k);
    uint64_t got = inl(MINIVM_PORT_DEV_LO);
    got |= (uint64_t)inl(MINIVM_PORT_DEV_HI) << 32;
    barrier();
    if (b1 || c1 != CFG->dev_cmds || CFG->dev_busy)
        return;
    uint64_t want = minivm_dev_word(region, seed, k);
    if (got != want)
        fail(MINIVM_EV_DEV_FAIL, vcpu, region, want, got, k);
    CFG->dev_checks = CFG->dev_checks + 1;
}

/* `n` writes under the seqlock, to pages drawn from the PRNG (xorshift64;
 * its state is in config->rng between batches and in a register during
 * one, which migrates with the vCPU state). x86 is TSO (stores are not
 * reordered with stores, `rep stosq` included on write-back memory), so
 * compiler barriers are enough. A page is picked with a multiply-shift
 * instead of a division: under nested KVM every instruction counts. */
static void write_batch(unsigned vcpu, unsigned n)
{
    uint64_t s = CFG->rng[vcpu];
    const uint64_t s0 = CFG->slot0_pages, hot_first = CFG->hot_first, hot = CFG->hot_pages;
    const uint64_t share = hot ? CFG->hot_share : 0, first = CFG->data_first;
    const uint64_t pages = CFG->data_pages;
    volatile uint32_t *gen = GEN;
    for (; n; n--) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint64_t i = (s & 1023) < share ? hot_first + (((s >> 32) * hot) >> 32)
                                        : first + (((s >> 32) * pages) >> 32);
        uint64_t gpa = i < s0 ? i * MINIVM_PAGE : MINIVM_HIGH_BASE + (i - s0) * MINIVM_PAGE;
        volatile uint64_t *pg = (volatile uint64_t *)(uintptr_t)gpa;
        uint32_t e = gen[i] | 1; /* odd: writing generation (e + 1) / 2 */
        uint64_t g = (e + 1) / 2;
        gen[i] = e;
        barrier();
        pg[0] = i;
        pg[1] = g;
        uint64_t *d = (uint64_t *)(uintptr_t)&pg[2];
        uint64_t k = PATTERN_WORDS;
        __asm__ volatile("rep stosq" : "+D"(d), "+c"(k) : "a"(minivm_pattern(i, g, 2)) : "memory");
        barrier();
        gen[i] = e + 1;
    }
    CFG->rng[vcpu] = s;
}

/* Pacing: how many pages may a loop do now (at most `max`), given `rate`
 * pages/s and `done` pages so far? The reference (base_tsc, base_count)
 * moves by whole seconds so that rate * elapsed never overflows; when the
 * loop is more than 1/20 s behind (it was stopped: a migration's downtime),
 * the debt is forgiven instead of paid back in a burst. */
static unsigned pace_budget(struct pacer *p, uint64_t rate, uint64_t done, uint64_t tsc,
                            unsigned max)
{
    if (!rate)
        return 0;
    if (rate == MINIVM_RATE_MAX || !p->hz)
        return max;
    if (tsc < p->base_tsc) { /* TSC went back (new host): start over */
        p->base_tsc = tsc;
        p->base_count = done;
    }
    while (tsc - p->base_tsc >= p->hz) {
        p->base_tsc += p->hz;
        p->base_count += rate;
    }
    uint64_t allowed = p->base_count + rate * (tsc - p->base_tsc) / p->hz;
    if (allowed > done + rate / 20 + max) {
        p->base_tsc = tsc;
        p->base_count = done;
        return max;
    }
    if (allowed <= done)
        return 0;
    return allowed - done < max ? (unsigned)(allowed - done) : max;
}

static void pacer_init(struct pacer *p, uint64_t done)
{
    p->hz = CFG->tsc_khz * 1000;
    p->base_tsc = guest_rdtsc();
    p->base_count = done;
}

/* Nothing to do for a while: about `max` pages' time at `rate` (rate 0:
 * nothing to do at all), at most 1 ms, through the VMM's sleep port (a
 * spin elsewhere). */
static void idle(uint64_t rate, unsigned max)
{
    uint64_t us = rate ? (uint64_t)max * 1000000 / rate : 1000;
    if (us > 1000)
        us = 1000;
    if (us)
        outl(MINIVM_PORT_SLEEP, (uint32_t)us);
    cpu_pause();
}

static void counter_step(struct writer *w, uint64_t tsc)
{
    CFG->counter = CFG->counter + 1;
    uint64_t last = CFG->last_tsc;
    if (w->stepped && tsc > last && tsc - last > CFG->max_gap_tsc)
        CFG->max_gap_tsc = tsc - last;
    w->stepped = 1;
    CFG->last_tsc = tsc;
}

static void progress(struct writer *w, uint64_t tsc)
{
    if (!guest_under_qemu || !w->pace.hz || tsc < w->next_print)
        return;
    w->next_print = tsc + w->pace.hz;
    guest_puts("counter ");
    guest_put_dec(CFG->counter);
    guest_puts(" writes ");
    guest_put_dec(CFG->writes);
    guest_puts(" checks ");
    guest_put_dec(CFG->checks);
    guest_puts("\n");
}

/* One loop iteration: a counter step, then a batch of writes when the
 * pacing allows. Returns the pages written. */
static unsigned writer_iteration(struct writer *w)
{
    uint64_t tsc = guest_rdtsc();
    counter_step(w, tsc);
    progress(w, tsc);
    if (CFG->dev_regions && CFG->dev_cmd_rate && tsc >= w->dev_next) {
        dev_rewrite(w->vcpu);
        w->dev_next = tsc + (w->pace.hz ? w->pace.hz / CFG->dev_cmd_rate : 0);
    }
    unsigned n = pace_budget(&w->pace, CFG->rate, CFG->writes, tsc, WRITE_BATCH);
    if (CFG->run_pages && CFG->writes + n > CFG->run_pages)
        n = (unsigned)(CFG->run_pages - CFG->writes);
    if (!n) {
        idle(CFG->rate, WRITE_BATCH);
        return 0;
    }
    write_batch(w->vcpu, n);
    CFG->writes = CFG->writes + n;
    if (!w->done && CFG->run_pages && CFG->writes >= CFG->run_pages) {
        w->done = 1;
        event(MINIVM_EV_DONE, w->vcpu);
        guest_puts("done: ");
        guest_put_dec(CFG->writes);
        guest_puts(" writes, ");
        guest_put_dec(CFG->checks);
        guest_puts(" checks\n");
        qemu_exit(0);
    }
    return n;
}

static void writer_init(struct writer *w, unsigned vcpu)
{
    *w = (struct writer){.vcpu = vcpu};
    pacer_init(&w->pace, CFG->writes);
    w->next_print = w->pace.base_tsc + w->pace.hz;
    if (CFG->rate && CFG->rate != MINIVM_RATE_MAX && !w->pace.hz)
        guest_puts("warning: tsc_khz is 0, the writer is not paced\n");
}

/* ---- checker ----------------------------------------------------------- */

struct checker {
    unsigned vcpu;
    uint64_t last_counter; /* the writer's counter at the previous look */
    uint64_t last_tsc;     /* its last_tsc then (kept for debugging from the VMM) */
    uint64_t looks;        /* pages picked (checked or skipped): what the pacing counts */
    struct pacer pace;
};

/* Checks one page; a page being written or changed under the read is
 * skipped, one never written by the guest (entry 0) holds the VMM's mix
 * content, which only the VMM can check. */
static void check_page(struct checker *c, uint64_t i)
{
    volatile uint64_t *pg = page_ptr(i);
    uint32_t e1 = GEN[i];
    if (e1 & 1 || e1 == 0)
        return;
    barrier();
    uint64_t s_index = pg[0], s_gen = pg[1];
    uint64_t want = minivm_pattern(i, e1 / 2, 2);
    const uint64_t *d = (const uint64_t *)(uintptr_t)&pg[2];
    uint64_t n = PATTERN_WORDS;
    uint8_t ne;
    __asm__ volatile("repe scasq" : "+D"(d), "+c"(n), "=@ccnz"(ne) : "a"(want) : "memory");
    barrier();
    uint32_t e2 = GEN[i];
    if (e1 != e2)
        return;
    if (s_index != i)
        fail(MINIVM_EV_CHECK_FAIL, c->vcpu, i, i, s_index, 0);
    if (s_gen != e1 / 2)
        fail(MINIVM_EV_CHECK_FAIL, c->vcpu, i, e1 / 2, s_gen, 1);
    if (ne) {
        uint64_t k = (uint64_t)(d - (const uint64_t *)(uintptr_t)pg) - 1;
        fail(MINIVM_EV_CHECK_FAIL, c->vcpu, i, want, d[-1], k);
    }
    CFG->checks = CFG->checks + 1;
}

static uint64_t pick_check_page(unsigned vcpu)
{
    uint64_t r = rng_next(vcpu);
    uint64_t hot = CFG->hot_pages;
    if (hot && (r & 1))
        return CFG->hot_first + (r >> 1) % hot;
    return CFG->data_first + (r >> 1) % CFG->data_pages;
}

/* The writer's counter never goes down (the VMM checks continuity across
 * a migration too). fail_index is ~0: no page. */
static void check_counter(struct checker *c)
{
    uint64_t now = CFG->counter;
    if (now < c->last_counter)
        fail(MINIVM_EV_COUNTER_JUMP, c->vcpu, ~0ull, c->last_counter, now, 0);
    c->last_counter = now;
    c->last_tsc = CFG->last_tsc;
}

/* A device word every DEV_CHECK_EVERY looks. */
#define DEV_CHECK_EVERY 16u

static void checker_iteration(struct checker *c)
{
    check_counter(c);
    check_page(c, pick_check_page(c->vcpu));
    if (CFG->dev_regions && c->looks % DEV_CHECK_EVERY == 0)
        dev_check(c->vcpu);
    c->looks++;
}

#define CHECK_BATCH 16u

/* The checker on its own vCPU: paced by config.check_rate, idle between. */
__attribute__((noreturn)) static void checker_loop(struct checker *c)
{
    pacer_init(&c->pace, 0);
    for (;;) {
        uint64_t rate = CFG->check_rate;
        unsigned n = pace_budget(&c->pace, rate, c->looks, guest_rdtsc(), CHECK_BATCH);
        if (!n)
            idle(rate, CHECK_BATCH);
        while (n--)
            checker_iteration(c);
    }
}

/* ---- entry ------------------------------------------------------------- */

void guest_main(uint64_t vcpu)
{
    if (CFG->magic != MINIVM_CONFIG_MAGIC) {
        guest_puts("minivm guest: bad config magic ");
        guest_put_hex(CFG->magic);
        guest_puts("\n");
        qemu_exit(4);
        halt_forever();
    }
    if (vcpu >= MINIVM_MAX_VCPUS || vcpu >= CFG->nvcpus || CFG->data_pages == 0) {
        guest_puts("minivm guest: bad vcpu index or empty data range\n");
        qemu_exit(4);
        halt_forever();
    }
    unsigned v = (unsigned)vcpu;
    if (CFG->rng[v] == 0) /* first boot (not a migrated guest): seed it */
        CFG->rng[v] = (CFG->seed * 0x2545F4914F6CDD1Dull + vcpu + 1) | 1; /* never 0 */
    uint32_t role = CFG->role[v];
    event(MINIVM_EV_READY, v);

    struct writer w;
    struct checker c = {.vcpu = v, .last_counter = CFG->counter};
    if (role == MINIVM_ROLE_WRITER && CFG->nvcpus == 1) {
        /* One vCPU: writer and checker interleaved. */
        guest_puts("minivm guest: vcpu 0 writer+checker\n");
        writer_init(&w, v);
        for (;;) {
            for (unsigned k = 0; k < COMBINED_WRITES && !w.done;)
                k += (unsigned)writer_iteration(&w);
            for (unsigned k = 0; k < COMBINED_CHECKS; k++)
                checker_iteration(&c);
            if (w.done)
                halt_forever();
        }
    }
    if (role == MINIVM_ROLE_WRITER) {
        writer_init(&w, v);
        while (!w.done)
            writer_iteration(&w);
        halt_forever();
    }
    if (role == MINIVM_ROLE_CHECKER)
        checker_loop(&c);
    halt_forever();
}
