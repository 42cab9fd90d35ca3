/* CPU feature detection and clocks. */
#include <cpuid.h>
#include <time.h>

#include "base.h"

static unsigned detect(void)
{
    unsigned f = 0, a, b, c, d;
#if defined(__x86_64__) || defined(__i386__)
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (d & bit_SSE2)
        f |= VMIG_CPU_SSE2;
    if (c & bit_SSE4_2)
        f |= VMIG_CPU_SSE42;
    bool osxsave = c & bit_OSXSAVE;
    bool aesni = (c & bit_AES) && (c & bit_PCLMUL);
    uint64_t xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        /* YMM state (bits 1,2) must be enabled by the OS for AVX2. */
        if ((b & bit_AVX2) && (xcr0 & 0x6) == 0x6)
            f |= VMIG_CPU_AVX2;
        if ((f & VMIG_CPU_AVX2) && aesni && (c & (1u << 9)) && (c & (1u << 10)))
            f |= VMIG_CPU_VAES; /* leaf 7 ECX: VAES (9), VPCLMULQDQ (10) */
        /* ZMM state: opmask, ZMM_Hi256, Hi16_ZMM (bits 5,6,7). */
        if ((b & bit_AVX512F) && (b & bit_AVX512BW) && (xcr0 & 0xe6) == 0xe6)
            f |= VMIG_CPU_AVX512BW;
    }
#endif
    return f;
}

unsigned vmig_cpu_features(void)
{
    /* Racing first calls compute the same value; relaxed atomics keep it defined. */
    static unsigned cached; /* 0 = not computed; bit 31 marks "computed" */
    unsigned v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!v) {
        v = detect() | 0x80000000u;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v & 0x7fffffffu;
}

uint64_t vmig_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t vmig_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
