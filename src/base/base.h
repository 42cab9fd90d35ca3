/*
 * Internal base utilities shared by every module: error recording,
 * big-endian access, CRC32C, CPU feature detection and clocks.
 * Nothing here knows about sessions, sockets or threads.
 */
#ifndef VMIG_BASE_H
#define VMIG_BASE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vmig/vmig.h>

#define VMIG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VMIG_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define VMIG_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define VMIG_LIKELY(x)     __builtin_expect(!!(x), 1)
#define VMIG_UNLIKELY(x)   __builtin_expect(!!(x), 0)

#if defined(__GNUC__)
#define VMIG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VMIG_PRINTF(f, a)
#endif

/*
 * Record an error: the first error wins (later calls keep the first
 * sentence). Returns `code` so that callers can write
 *     return vmig_error_set(err, VMIG_EPROTO, "...", ...);
 * `err` may be NULL.
 */
int vmig_error_set(vmig_error *err, int code, const char *fmt, ...) VMIG_PRINTF(3, 4);
/* Copy `src` into `dst` if `dst` has no error yet; returns src->code. */
int vmig_error_copy(vmig_error *dst, const vmig_error *src);

/* ---- big-endian loads and stores (unaligned) ---- */
static inline void vmig_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void vmig_put_be32(uint8_t *p, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}
static inline void vmig_put_be64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}
static inline uint16_t vmig_get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t vmig_get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
static inline uint64_t vmig_get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

/* ---- CRC32C (Castagnoli), hardware-accelerated when the CPU has SSE4.2 ---- */
/* Continue a CRC: start with crc = 0; the result is the standard CRC32C. */
uint32_t vmig_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table-driven path, exposed for tests. */
uint32_t vmig_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* The CRC of A followed by B from the CRCs of A and B and B's length. */
uint32_t vmig_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* ---- CPU features (cpuid + xgetbv), computed once, read-only after ---- */
enum {
    VMIG_CPU_SSE2 = 1u << 0,
    VMIG_CPU_SSE42 = 1u << 1,
    VMIG_CPU_AVX2 = 1u << 2,
    VMIG_CPU_AVX512BW = 1u << 3, /* AVX-512 F+BW with OS support for ZMM state */
    VMIG_CPU_VAES = 1u << 4,     /* AES-NI, PCLMULQDQ and their 256-bit VAES/VPCLMULQDQ, AVX2 */
};
unsigned vmig_cpu_features(void);

/* ---- clocks ---- */
uint64_t vmig_now_ns(void);        /* CLOCK_MONOTONIC */
uint64_t vmig_thread_cpu_ns(void); /* CPU time of the calling thread */

/* pthread_create() with every signal blocked in the new thread, named
 * `name` (cut to 15 bytes; NULL: unnamed). Returns pthread_create()'s result. */
int vmig_thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg);
/* pthread_cond_timedwait() for at most `ms` milliseconds from now (the
 * caller holds `m` and re-checks its condition). */
void vmig_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *m, uint32_t ms);

/* Power-of-two test. */
static inline bool vmig_is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

#endif /* VMIG_BASE_H */
