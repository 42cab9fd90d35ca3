/*
 * The contract between minivm (the VMM) and its guest: guest-physical
 * layout, the config page, the I/O ports. Plain C types only: included by
 * the VMM (hosted) and by the guest (freestanding).
 *
 * Guest-physical memory (identity-mapped by the VMM's page tables):
 *
 *   0x0000_1000  GDT (VMM)                      0x0001_4000  config page (struct minivm_config)
 *   0x0000_2000  PML4, 0x3000 PDPT (VMM)        0x0002_0000  per-vCPU stacks, 16 KiB each, 4 vCPUs
 *   0x0000_4000  page directories, 2 MiB pages  0x0010_0000  guest code and data (guest.bin)
 *                (16, to 0x13fff: 16 GiB)       0x0020_0000  generation table (u32 per page)
 *   MINIVM_DATA_START (16 MiB) .. end of slot 0, and all of slot 1 (from 4 GiB): workload pages
 *
 * Guest RAM is at most 8 GiB (the generation table must end below
 * MINIVM_DATA_START). Slot 0 is low RAM [0, min(mem, 3 GiB)); slot 1, when mem is larger, is
 * [4 GiB, 4 GiB + mem - 3 GiB). A page index (the unit of the workload) is
 * a guest page number counted over the two slots as if they were one array:
 * index i < slot0_pages is at i * 4096, the rest at 4 GiB + (i - slot0_pages) * 4096.
 */
#ifndef MINIVM_GUEST_ABI_H
#define MINIVM_GUEST_ABI_H

#include <stdint.h>

#define MINIVM_PAGE         4096u
#define MINIVM_GDT          0x1000u
#define MINIVM_PML4         0x2000u
#define MINIVM_PDPT         0x3000u
#define MINIVM_PD           0x4000u  /* 16 page directories follow */
#define MINIVM_CONFIG       0x14000u /* after the 16 page directories */
#define MINIVM_STACKS       0x20000u /* vCPU n's stack top: MINIVM_STACKS + (n + 1) * 16 KiB */
#define MINIVM_STACK_SIZE   0x4000u
#define MINIVM_CODE         0x100000u /* guest.bin is loaded and entered here */
#define MINIVM_GEN_TABLE    0x200000u
#define MINIVM_DATA_START   0x1000000u /* 16 MiB */
#define MINIVM_HIGH_BASE    0x100000000ull
#define MINIVM_LOW_MAX      0xC0000000ull /* 3 GiB */
#define MINIVM_MAX_VCPUS    4
#define MINIVM_CONFIG_MAGIC 0x4D494E49564D3031ull /* "MINIVM01" */
#define MINIVM_RATE_MAX     (~0ull)               /* config rates: as fast as the vCPU can */

/* I/O ports (OUT from the guest; the VMM handles the exit). */
#define MINIVM_PORT_DEBUG 0xE9  /* one character of text (QEMU's debugcon too) */
#define MINIVM_PORT_EVENT 0x500 /* 32-bit: enum minivm_event; details in the config page */
/* 32-bit: sleep up to this many microseconds (at most 10 ms; less when the
 * VMM pauses the vCPU). A paravirtual idle: without interrupts the guest
 * cannot HLT and be woken, and spinning would take a host core from the
 * migration's threads. Other hypervisors ignore the port: the guest spins. */
#define MINIVM_PORT_SLEEP   0x504
#define MINIVM_SLEEP_MAX_US 10000u

/*
 * The synthetic device (minivm run --device-state SIZE): a buffer of SIZE
 * bytes, like a GPU's memory, in MINIVM_DEV_REGIONS equal regions. Region
 * r rewritten with seed S holds the u64 words minivm_dev_word(r, S, k);
 * every region starts with seed 0. Its state is saved only while the VM is
 * stopped, and migrates as device state (not as guest RAM).
 *   OUT32 MINIVM_PORT_DEV_REWRITE  value = region << 24 | seed (24 bits): rewrite
 *                                  the region with that seed
 *   OUT32 MINIVM_PORT_DEV_SELECT   value = region << 22 | word: select a word for
 *                                  the reads below (one selection per vCPU)
 *   IN32  MINIVM_PORT_DEV_LO, _HI  the selected word's low and high halves
 * Replaying an access (a vCPU stopped between the exit and its completion
 * repeats it where it resumes) gives the same result: every command is
 * idempotent.
 */
#define MINIVM_PORT_DEV_REWRITE 0x510
#define MINIVM_PORT_DEV_SELECT  0x514
#define MINIVM_PORT_DEV_LO      0x518
#define MINIVM_PORT_DEV_HI      0x51C
#define MINIVM_DEV_REGIONS      256u
#define MINIVM_DEV_SEED_MASK    0xFFFFFFu
#define MINIVM_DEV_WORD_BITS    22 /* a region holds at most 2^22 words (32 MiB) */

static inline uint64_t minivm_dev_word(uint32_t region, uint32_t seed, uint64_t k)
{
    uint64_t z =
        ((uint64_t)seed << 32 | region) * 0x9E3779B97F4A7C15ull + k * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

enum minivm_event {
    MINIVM_EV_READY = 1,        /* vCPU's config read, loop starts (value | vcpu << 16) */
    MINIVM_EV_CHECK_FAIL = 2,   /* the checker found a bad page: config.fail_* say which */
    MINIVM_EV_COUNTER_JUMP = 3, /* the counter did not continue: config.fail_* */
    MINIVM_EV_DONE = 4,         /* the guest finished its configured run (run_pages reached) */
    MINIVM_EV_DEV_FAIL = 5,     /* a device word differed: fail_index region, fail_word word */
};

/* Roles of the vCPUs. */
enum minivm_role {
    MINIVM_ROLE_WRITER = 1,  /* dirties pages at the configured rate */
    MINIVM_ROLE_CHECKER = 2, /* checks random pages against the generation table */
    MINIVM_ROLE_IDLE = 3,    /* hlt loop */
};

/*
 * Page content. A workload page starts with the standard mix content the
 * VMM loaded (from `seed`). A write of generation g >= 1 to page i sets the
 * first MINIVM_STAMP_BYTES of the page: a 16-byte stamp {u64 index, u64 g}
 * followed by u64 words k = 2.. = minivm_pattern(i, g, k); the rest of the
 * page keeps its mix content. The generation table (u32 per page index,
 * from MINIVM_GEN_TABLE) is a per-page seqlock: the writer stores 2g - 1
 * (odd: writing), then the page, then 2g. So entry e even means the page
 * holds generation e / 2 (0: never written, mix content); e odd means a
 * write of generation (e + 1) / 2 was in progress (possible when the vCPUs
 * were stopped in the middle): each word is then of generation g or g - 1.
 * The checker reads e1, the page, e2; it checks only when e1 == e2 is even.
 */
#define MINIVM_STAMP_BYTES 256u

/* Every pattern word of a (page, generation) is the same value, so that a
 * guest writes it with one `rep stosq` and checks it with one `repe scasq`:
 * under nested KVM every guest instruction costs about 0.5 us, and a loop
 * over 30 words would cap the writer at a few thousand pages/s. `k` is
 * kept in the signature for the checkers (it does not change the value). */
static inline uint64_t minivm_pattern(uint64_t index, uint64_t gen, uint64_t k)
{
    (void)k;
    return index * 0x9E3779B97F4A7C15ull ^ gen * 0xD1B54A32D192ED03ull ^ 0x5A5A5A5A5A5A5A5Aull;
}

/* The config page: written by the VMM before the vCPUs start; the guest
 * writes only the fields marked (guest). All u64 unless said. */
struct minivm_config {
    uint64_t magic;       /* MINIVM_CONFIG_MAGIC */
    uint64_t seed;        /* of the initial mix content (VMM-only knowledge) */
    uint64_t slot0_pages; /* pages of low RAM (slot 0) */
    uint64_t slot1_pages; /* pages of high RAM (slot 1, at 4 GiB), may be 0 */
    uint64_t data_first;  /* first workload page index (MINIVM_DATA_START / 4096) */
    uint64_t data_pages;  /* workload pages from data_first */
    uint64_t hot_first;   /* hot set: page indexes [hot_first, hot_first + hot_pages) */
    uint64_t hot_pages;
    uint64_t hot_share; /* writes that go to the hot set, per 1024 (the rest: cold set) */
    uint64_t rate;      /* pages/s the writer dirties; 0 = none, MINIVM_RATE_MAX = unpaced */
    uint64_t tsc_khz;   /* TSC frequency, kHz (pacing) */
    uint64_t run_pages; /* writes after which the writer reports DONE; 0 = forever */
    uint32_t nvcpus;
    uint32_t role[MINIVM_MAX_VCPUS]; /* enum minivm_role per vCPU */
    uint32_t pad0;
    /* (guest) progress, read by the VMM at any time */
    uint64_t writes;      /* pages written so far */
    uint64_t checks;      /* pages checked so far */
    uint64_t counter;     /* the writer's loop counter: +1 per iteration, never jumps */
    uint64_t last_tsc;    /* TSC at the last counter step */
    uint64_t max_gap_tsc; /* longest TSC gap between two counter steps (guest-visible stall) */
    uint64_t rng[MINIVM_MAX_VCPUS]; /* PRNG state per vCPU (in memory, so it migrates) */
    /* (guest) the first failure: page index, what was expected and found */
    uint64_t fail_index, fail_want, fail_got, fail_word;
    uint64_t check_rate; /* pages/s the checker checks; 0 = none, MINIVM_RATE_MAX = unpaced */
    /* The synthetic device (0 regions: none). The writer rewrites a random
     * region dev_cmd_rate times per second; the checker reads one random
     * word through the device per batch and compares it with its own
     * record of the seeds. */
    uint64_t dev_regions;      /* MINIVM_DEV_REGIONS, or 0 */
    uint64_t dev_region_words; /* u64 words per region */
    uint64_t dev_cmd_rate;     /* rewrites per second */
    uint64_t dev_cmds;         /* (guest) rewrites issued; bumped before each one */
    uint64_t dev_checks;       /* (guest) words checked */
    uint64_t dev_busy;         /* (guest) region + 1 of the rewrite in flight, 0: none */
    uint32_t dev_seed[MINIVM_DEV_REGIONS]; /* (guest) the seed it last gave each region */
};

#endif
