// rand.h: a small explicit random number generator (xorshift64*), for initialization, dropout-free
// sampling and stochastic choices. Its whole state is one integer, so checkpoints can save it.
#ifndef LLMC_RAND_H
#define LLMC_RAND_H

#include <math.h>
#include <stdint.h>

typedef struct { uint64_t state; } Rng;

static void rng_seed(Rng* r, uint64_t seed) {
    // splitmix64 spreads a small seed over all bits; the state must never be 0.
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    r->state = (z ^ (z >> 31)) | 1ULL;
}

static uint32_t rng_u32(Rng* r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1DULL) >> 32);
}

// Uniform in [0, 1).
static float rng_uniform(Rng* r) { return (rng_u32(r) >> 8) / 16777216.0f; }

// Standard normal, Box-Muller.
static float rng_normal(Rng* r) {
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

// Samples an index from probabilities (summing to 1) with a coin in [0, 1).
static int sample_from_probs(const float* probs, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return i;
    }
    return n - 1;  // rounding left the cdf a hair below 1
}

#endif // LLMC_RAND_H
