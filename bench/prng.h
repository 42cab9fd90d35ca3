/* The generators' shared PRNG pieces (mix.c, live.c): splitmix64. */
#ifndef VMIG_BENCH_PRNG_H
#define VMIG_BENCH_PRNG_H

#include <stdint.h>

/* splitmix64 finaliser: a bijective 64-bit mixer. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t splitmix64(uint64_t *state)
{
    return mix64(*state += 0x9E3779B97F4A7C15ull);
}

#endif
