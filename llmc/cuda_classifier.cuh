/*
cuda_classifier.cuh: the fused classifier (softmax + cross-entropy + its gradient in one pass over the
logits), and a deterministic sum of the per-row losses.

For each row i of logits (BT, Vp), with target y = targets[i]:
  y >= 0 : p = softmax(logits[i, 0..V-1])            (the padded columns V..Vp-1 never take part)
           losses[i] = -log p[y]
           dlogits[i, c] = p[c] - (c == y)    for c < V,    0 for V <= c < Vp
  y == -1: losses[i] = 0, dlogits[i, :] = 0  (a masked target adds nothing)
dlogits is written IN PLACE over the logits (bf16). The loss gradient is seeded with dloss = 1 per
valid target and no 1/N here: the window's 1/N is applied at the update (see doc/formats.md).

The activation gradient dlogits OVERWRITES the logits. There are no parameters here.
Deterministic: every reduction uses a fixed order.
Precondition: -1 <= targets[i] < V (a target >= V gives a NaN loss and a zero gradient row).
*/
#ifndef LLMC_CUDA_CLASSIFIER_CUH
#define LLMC_CUDA_CLASSIFIER_CUH

#include "cuda_common.cuh"

// combine two (max, sum of exp(x - max)) pairs
__device__ inline void softmax_stats_combine(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// One block per row. blockDim.x a multiple of 32, at most 1024.
static __global__ void fused_classifier_kernel(floatX* logits, float* losses, const int* targets, int V, int Vp) {
    __shared__ float shared_m[32];
    __shared__ float shared_s[32];
    const int row = blockIdx.x;
    const int target = targets[row];
    floatX* x = logits + (size_t)row * Vp;

    if (target < 0 || target >= V) {   // masked row: no loss, no gradient (uniform across the block)
        for (int c = threadIdx.x; c < Vp; c += blockDim.x) { x[c] = from_float<floatX>(0.0f); }
        // a target >= V is a bug upstream: make it visible as a NaN loss instead of reading out of the row
        if (threadIdx.x == 0) { losses[row] = (target < 0) ? 0.0f : __int_as_float(0x7fffffff); }
        return;
    }

    // 1. per-thread running (max, sum exp) over its strided columns, -FLT_MAX (not -inf) so that
    //    combining two empty states gives 0 and not NaN
    float m = -FLT_MAX, s = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
        float v = to_float(x[c]);
        if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }
        else       { s += expf(v - m); }
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

    // 4. gradient, in place
    for (int c = threadIdx.x; c < Vp; c += blockDim.x) {
        float d = 0.0f;
        if (c < V) {
            d = expf(to_float(x[c]) - m) * inv_sum - (c == target ? 1.0f : 0.0f);
        }
        x[c] = from_float<floatX>(d);
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

// logits (BT,Vp) bf16: in, the logits; out, dlogits (see the top of the file). losses (BT) fp32: out.
// targets (BT) int: -1 or a token id < V. block_size: multiple of 32, <= 1024.
inline void fused_classifier(floatX* logits, float* losses, const int* targets, int BT, int V, int Vp,
                             cudaStream_t stream, int block_size = 1024) {
    hostCheckBlockSize(block_size, "fused_classifier");
    hostCheck(V <= Vp, "fused_classifier: V must be <= Vp");
    fused_classifier_kernel<<<BT, block_size, 0, stream>>>(logits, losses, targets, V, Vp);
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
