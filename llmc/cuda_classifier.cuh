/*
cuda_classifier.cuh: the fused classifier (softmax + cross-entropy + its gradient in one kernel, the
logits read twice and written once), and a deterministic sum of the per-row losses.

For each row i of logits (BT, Vp), with target y = targets[i]:
  y >= 0 : p = softmax(logits[i, 0..V-1])            (the padded columns V..Vp-1 never take part)
           losses[i] = -log p[y]
           dlogits[i, c] = p[c] - (c == y)    for c < V,    0 for V <= c < Vp
  y == -1: losses[i] = 0, dlogits[i, :] = 0  (a masked target adds nothing)
dlogits is written IN PLACE over the logits (floatX). The loss gradient is seeded with dloss = 1 per
valid target and no 1/N here: the window's 1/N is applied at the update (see doc/formats.md).

Memory traffic: one block per row reads the row twice (the (max, sum exp) statistics, then the
gradient) and writes it once, in 128-bit packs of x128::size columns when Vp % x128::size == 0 and
logits is 16-byte aligned (the presets' Vp = 50304 is; a checkpoint may bring any Vp), else one
column at a time; one kernel body serves both (fused_classifier_kernel<VEC>). In a pack that
straddles V, the columns >= V take no part in the statistics and get gradient 0, as in the scalar path.

The activation gradient dlogits OVERWRITES the logits. There are no parameters here.
Deterministic: every reduction uses a fixed order.
Precondition: -1 <= targets[i] < V (a target >= V gives a NaN loss and a zero gradient row).
*/
#ifndef LLMC_CUDA_CLASSIFIER_CUH
#define LLMC_CUDA_CLASSIFIER_CUH

#include <math.h>
#include "cuda_common.cuh"

// combine two (max, sum of exp(x - max)) pairs
__device__ inline void softmax_stats_combine(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// One block per row, one kernel body for both paths: each thread takes VEC consecutive columns at a
// time, VEC = x128::size (128-bit loads and stores; Vp % VEC == 0 and logits 16-byte aligned, so every
// row starts aligned and a pack that begins before V ends inside the row) or VEC = 1 (any Vp, any
// alignment). The row is read twice, once for the statistics and once for the gradient, and written
// once. blockDim.x a multiple of 32, at most 1024.
template<int VEC>
static __global__ void __launch_bounds__(1024) fused_classifier_kernel(floatX* logits, float* losses, const int* targets, int V, int Vp) {
    __shared__ float shared_m[32];
    __shared__ float shared_s[32];
    const int row = blockIdx.x;
    const int target = targets[row];
    floatX* x = logits + (size_t)row * Vp;
    const int first = threadIdx.x * VEC, step = blockDim.x * VEC;   // this thread's packs: first, first + step, ...

    if (target < 0 || target >= V) {   // masked row: no loss, no gradient (uniform across the block)
        const float zeros[VEC] = {};
        for (int c = first; c < Vp; c += step) { store_floats<VEC>(x + c, zeros); }
        // a target >= V is a bug upstream: make it visible as a NaN loss instead of reading out of the row
        if (threadIdx.x == 0) { losses[row] = (target < 0) ? 0.0f : __int_as_float(0x7fffffff); }
        return;
    }

    // 1. per-thread running (max, sum exp) over its packs, -FLT_MAX (not -inf) so that combining two
    //    empty states gives 0 and not NaN. Columns >= V of a pack that straddles V take no part.
    float m = -FLT_MAX, s = 0.0f;
    for (int c = first; c < V; c += step) {
        float v[VEC];
        load_as_floats<VEC>(v, x + c);
        // the trip counts are the constant VEC, so v[] stays in registers (a run-time bound would index
        // it dynamically, i.e. in local memory); the columns >= V are skipped by a predicate
        float pack_max = -INFINITY;
        for (int k = 0; k < VEC; k++) { if (c + k < V) { pack_max = fmaxf(pack_max, v[k]); } }
        if (pack_max > m) { s *= expf(m - pack_max); m = pack_max; }   // rescale once per pack
        for (int k = 0; k < VEC; k++) { if (c + k < V) { s += expf(v[k] - m); } }
    }
    // 2. combine across the warp (butterfly: every lane ends with the same values)...
    for (int offset = 16; offset > 0; offset >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        softmax_stats_combine(m, s, m2, s2);
    }
    // ... then across warps, in warp order
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, num_warps = blockDim.x / 32;
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    __syncthreads();
    m = shared_m[0];
    s = shared_s[0];
    for (int w = 1; w < num_warps; w++) { softmax_stats_combine(m, s, shared_m[w], shared_s[w]); }
    const float inv_sum = 1.0f / s;

    // 3. loss (read the target's logit before anyone overwrites it)
    const float target_logit = to_float(x[target]);
    __syncthreads();
    if (threadIdx.x == 0) { losses[row] = logf(s) + m - target_logit; }

    // 4. gradient, in place; the padded columns (>= V) get 0
    for (int c = first; c < Vp; c += step) {
        float v[VEC], d[VEC];
        load_as_floats<VEC>(v, x + c);
        for (int k = 0; k < VEC; k++) {
            const int col = c + k;
            d[k] = (col < V) ? expf(v[k] - m) * inv_sum - (col == target ? 1.0f : 0.0f) : 0.0f;
        }
        store_floats<VEC>(x + c, d);
    }
}

// one block: sum of losses[0..n-1] in double, fixed order
static __global__ void sum_losses_kernel(double* out, const float* losses, int n, int accumulate) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { sum += (double)losses[i]; }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) { *out = (accumulate ? *out : 0.0) + sum; }
}

// ----------------------------------------------------------------------------
// launchers

// The columns each thread moves at a time: x128::size when every row of logits starts 16-byte aligned
// (Vp % x128::size == 0 and logits aligned), else 1.
inline int fused_classifier_vec(const floatX* logits, int Vp) {
    return (Vp % x128::size == 0 && is_aligned16(logits)) ? x128::size : 1;
}

// logits (BT,Vp) floatX: in, the logits; out, dlogits (see the top of the file). losses (BT) fp32: out.
// targets (BT) int: -1 or a token id < V. block_size: multiple of 32, <= 1024.
inline void fused_classifier(floatX* logits, float* losses, const int* targets, int BT, int V, int Vp,
                             cudaStream_t stream, int block_size = 1024) {
    hostCheckBlockSize(block_size, "fused_classifier");
    hostCheck(V <= Vp, "fused_classifier: V must be <= Vp");
    if (fused_classifier_vec(logits, Vp) == x128::size) {
        fused_classifier_kernel<x128::size><<<BT, block_size, 0, stream>>>(logits, losses, targets, V, Vp);
    } else {
        fused_classifier_kernel<1><<<BT, block_size, 0, stream>>>(logits, losses, targets, V, Vp);
    }
    cudaCheck(cudaGetLastError());
}

// *out (one device double) = sum of losses[0..n-1]   (accumulate == 0)
// *out += sum of losses[0..n-1]                       (accumulate != 0, e.g. over the micro-steps)
// Deterministic. With targets -1 giving loss 0 this is the micro-step's summed loss over valid targets.
inline void sum_losses(double* out, const float* losses, int n, int accumulate, cudaStream_t stream) {
    sum_losses_kernel<<<1, 1024, 0, stream>>>(out, losses, n, accumulate);
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_CLASSIFIER_CUH
