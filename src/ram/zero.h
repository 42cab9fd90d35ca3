/*
 * Zero-page detection: is every byte of a buffer zero?
 *
 * Implementations for AVX-512BW, AVX2, SSE2 and portable C, chosen at run
 * time from the CPU's features. All of them exit early at the first
 * non-zero block, and read nothing outside [buf, buf + len).
 */
#ifndef VMIG_ZERO_H
#define VMIG_ZERO_H

#include "../base/base.h"

typedef bool (*vmig_zero_fn)(const void *buf, size_t len);

typedef struct vmig_zero_impl {
    const char *name; /* "avx512", "avx2", "sse2", "scalar" */
    vmig_zero_fn fn;
    unsigned need; /* VMIG_CPU_* bits the CPU must have */
} vmig_zero_impl;

/* Every implementation, best first, terminated by {NULL}. */
extern const vmig_zero_impl vmig_zero_impls[];

/* The best implementation this CPU runs. Never NULL. */
const vmig_zero_impl *vmig_zero_best(void);

/* Convenience: the best implementation, dispatched through a cached pointer. */
bool vmig_is_zero(const void *buf, size_t len);

#endif /* VMIG_ZERO_H */
