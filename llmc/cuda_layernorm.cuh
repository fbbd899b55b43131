/*
cuda_layernorm.cuh: LayerNorm over the last dimension (eps = 1e-5, as PyTorch / GPT-2), forward and
backward, and the fused "residual add + LayerNorm" forward.

  forward : mean = sum_c x[c] / C, var = sum_c (x[c] - mean)^2 / C, rstd = 1 / sqrt(var + 1e-5)
            out[c] = (x[c] - mean) * rstd * weight[c] + bias[c]
  backward: xhat = (x - mean) * rstd, dnorm = dout * weight
            dinp    += rstd * (dnorm - mean_c(dnorm) - xhat * mean_c(dnorm * xhat))
            dweight += sum over rows of dout * xhat
            dbias   += sum over rows of dout

Gradients ACCUMULATE (+=): dinp (an activation gradient, the residual stream's), dweight and dbias.
Statistics are computed in fp32 from the floatX inputs; mean and rstd are stored in fp32 for backward.

These kernels are bandwidth-bound (a few flops per byte), so they are written to move each byte as
few times as possible:
  - 128-bit loads and stores (x128: 8 bf16, or 4 floats in the fp32 build) when C is a multiple of
    x128::size and every row pointer is 16-byte aligned; element-wise accesses otherwise. One kernel
    body, templated on VEC = x128::size or 1, serves both; the launcher picks at run time.
  - forward: one warp per row. The three passes (mean, variance, normalize) need the row three times;
    it is read from global memory once into a per-warp row cache in dynamic shared memory. Rows per
    block shrink so the caches fit in 48 KiB; a row larger than 48 KiB (C > 24576 in bf16) is
    re-read from global memory instead.
  - backward: ONE kernel. Each block owns a fixed slice of rows; its warps compute dinp row by row
    and add dout * xhat and dout into per-warp accumulators (C floats each, shared memory), which
    the block sums in warp order into its own partial in `scratch`. The last block to finish (an
    integer counter in `scratch`) adds all partials in block order into dweight / dbias and resets
    the counter. Every sum has a fixed order, so the gradients are the same bits on every run. No
    float atomics.
*/
#ifndef LLMC_CUDA_LAYERNORM_CUH
#define LLMC_CUDA_LAYERNORM_CUH

#include <initializer_list>
#include "cuda_common.cuh"

#define LAYERNORM_EPS 1e-5f

// dynamic shared memory a launch may use without opting in (cudaFuncSetAttribute): 48 KiB on every
// GPU. The kernels here use no static shared memory, so all of it is theirs.
#define LN_SMEM_BUDGET (48 * 1024)

// layernorm_backward's grid has at most this many blocks. It bounds the scratch (one partial of 2*C
// floats per block) and the work of the last block, which reads every partial; 128 is about one
// block per SM on an A100 / H100.
#define LN_BWD_MAX_BLOCKS 128

// Every kernel here runs at most this many warps a block (its launch bound): 512 threads leave the
// compiler 128 registers a thread for the values a lane keeps live over a row (48 floats in the
// backward's second pass) and for the unrolled loads of the backward's final sum; at 1024 threads, 64
// registers, ptxas spills (sm_80 and sm_90, dev/test/test_cuda.py checks). Few rows fit more warps'
// shared memory anyway: 16 cached rows of C = 1536 (forward), 16 warps' sums of C = 384 (backward).
#define LN_MAX_WARPS 16

// layernorm_backward's scratch: a 16-byte header whose first word is the blocks-done counter, then
// LN_BWD_MAX_BLOCKS partials of (dweight C, dbias C) floats. The memory plan sizes it with this.
#define LN_BWD_HEADER_FLOATS 4
inline size_t layernorm_backward_scratch_bytes(int C) {
    return (LN_BWD_HEADER_FLOATS + (size_t)2 * LN_BWD_MAX_BLOCKS * C) * sizeof(float);
}

// In every loop over a row below, lane `lane` of a warp handles elements [c, c + VEC) for
// c = lane*VEC, lane*VEC + 32*VEC, ...: consecutive lanes touch consecutive packs, so with VEC = 8 a
// warp reads 512 contiguous bytes per step.

// ----------------------------------------------------------------------------
// forward

// One warp normalizes one row x (C), whose values it reads three times: x is the warp's row cache in
// shared memory, or the row in global memory when it did not fit. Every lane reads only the elements
// it wrote into the cache itself, so the warp needs no synchronization.
template<int VEC>
__device__ inline void layernorm_row(floatX* out, float* mean, float* rstd, const floatX* x,
                                     const floatX* weight, const floatX* bias, int row, int C, int lane) {
    float sum = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float v[VEC];
        load_as_floats<VEC>(v, x + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) { sum += v[k]; }
    }
    const float m = warp_reduce_sum(sum) / C;
    float sq = 0.0f;   // two passes: the variance of values with a large mean stays exact
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float v[VEC];
        load_as_floats<VEC>(v, x + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) { float d = v[k] - m; sq += d * d; }
    }
    const float s = rsqrtf(warp_reduce_sum(sq) / C + LAYERNORM_EPS);
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float v[VEC], w[VEC], b[VEC], o[VEC];
        load_as_floats<VEC>(v, x + c);
        load_as_floats<VEC>(w, weight + c);
        load_as_floats<VEC>(b, bias + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) { o[k] = (v[k] - m) * s * w[k] + b[k]; }
        store_floats<VEC>(out + c, o);
    }
    if (lane == 0) {
        if (mean != NULL) { mean[row] = m; }
        if (rstd != NULL) { rstd[row] = s; }
    }
}

// One warp per row. cache_rows: dynamic shared memory holds (blockDim.x / 32, C) floatX, one row per
// warp; otherwise there is none and the row is read from global memory each pass.
template<int VEC>
__global__ void __launch_bounds__(LN_MAX_WARPS * 32) layernorm_forward_kernel(floatX* out, float* mean, float* rstd, const floatX* inp,
                                         const floatX* weight, const floatX* bias, int N, int C, bool cache_rows) {
    extern __shared__ __align__(16) floatX ln_row_cache[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + warp;
    if (row >= N) { return; }
    const floatX* x = inp + (size_t)row * C;
    if (cache_rows) {
        floatX* cache = ln_row_cache + (size_t)warp * C;
        for (int c = lane * VEC; c < C; c += 32 * VEC) {
            float v[VEC];
            load_as_floats<VEC>(v, x + c);
            store_floats<VEC>(cache + c, v);   // floatX -> float -> floatX is exact
        }
        x = cache;
    }
    layernorm_row<VEC>(out + (size_t)row * C, mean, rstd, x, weight, bias, row, C, lane);
}

// residual = inp1 + inp2, rounded to floatX and stored; then the LayerNorm of the ROUNDED residual, so
// the statistics are those of exactly what backward will read back. One warp per row, cache_rows as
// above (without a cache the normalization reads the stored residual back).
// residual may alias inp1 or inp2: each element is read and then written by the same lane, and no
// other lane touches it, so the pointers are deliberately not __restrict__.
template<int VEC>
__global__ void __launch_bounds__(LN_MAX_WARPS * 32) fused_residual_layernorm_forward_kernel(floatX* residual, floatX* out, float* mean, float* rstd,
                                                        const floatX* inp1, const floatX* inp2,
                                                        const floatX* weight, const floatX* bias, int N, int C,
                                                        bool cache_rows) {
    extern __shared__ __align__(16) floatX ln_row_cache[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + warp;
    if (row >= N) { return; }
    const size_t off = (size_t)row * C;
    floatX* cache = cache_rows ? ln_row_cache + (size_t)warp * C : NULL;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float a[VEC], b[VEC];
        load_as_floats<VEC>(a, inp1 + off + c);
        load_as_floats<VEC>(b, inp2 + off + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) { a[k] += b[k]; }
        store_floats<VEC>(residual + off + c, a);            // rounds to floatX
        if (cache != NULL) { store_floats<VEC>(cache + c, a); }   // the same rounding
    }
    layernorm_row<VEC>(out + off, mean, rstd, cache != NULL ? cache : residual + off, weight, bias, row, C, lane);
}

// ----------------------------------------------------------------------------
// backward

// One warp, one row: dinp += ..., and the row's dout * xhat and dout added into the warp's
// accumulators acc_w, acc_b (C floats each). Pass 1 computes the row's two means; pass 2 reads dout and
// inp again (normally still in L1: a warp's row is a few KiB) to write dinp. Each lane reads and writes
// only its own channels of acc_w / acc_b, so the warp needs no synchronization.
template<int VEC>
__device__ inline void layernorm_backward_row(floatX* dinp, float* acc_w, float* acc_b, const floatX* dout,
                                              const floatX* inp, const floatX* weight, float m, float s,
                                              int C, int lane) {
    float sum_dnorm = 0.0f, sum_dnorm_xhat = 0.0f;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float g[VEC], x[VEC], w[VEC];
        load_as_floats<VEC>(g, dout + c);
        load_as_floats<VEC>(x, inp + c);
        load_as_floats<VEC>(w, weight + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float xhat = (x[k] - m) * s;
            float dnorm = g[k] * w[k];
            sum_dnorm += dnorm;
            sum_dnorm_xhat += dnorm * xhat;
        }
    }
    const float mean_dnorm = warp_reduce_sum(sum_dnorm) / C;
    const float mean_dnorm_xhat = warp_reduce_sum(sum_dnorm_xhat) / C;
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float g[VEC], x[VEC], w[VEC], d[VEC], aw[VEC], ab[VEC];
        load_as_floats<VEC>(g, dout + c);
        load_as_floats<VEC>(x, inp + c);
        load_as_floats<VEC>(w, weight + c);
        load_as_floats<VEC>(d, dinp + c);
        load_as_floats<VEC>(aw, acc_w + c);
        load_as_floats<VEC>(ab, acc_b + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float xhat = (x[k] - m) * s;
            float dnorm = g[k] * w[k];
            d[k] += s * (dnorm - mean_dnorm - xhat * mean_dnorm_xhat);
            aw[k] += g[k] * xhat;
            ab[k] += g[k];
        }
        store_floats<VEC>(dinp + c, d);
        store_floats<VEC>(acc_w + c, aw);
        store_floats<VEC>(acc_b + c, ab);
    }
}

// grid: G blocks; block b owns rows [b * rows_per_block, (b + 1) * rows_per_block) (clipped to N), its
// warp w the rows b * rows_per_block + w, + warps, ... in increasing order.
// scratch: see layernorm_backward_scratch_bytes; the counter must be zero on entry and is zero on exit.
// acc_in_smem: dynamic shared memory holds (warps, 2, C) floats, each warp's (dweight, dbias) sums.
// Otherwise (2*C floats exceed the budget) the block has one warp, which accumulates straight into
// the block's partial in scratch.
template<int VEC, typename GradT>
__global__ void __launch_bounds__(LN_MAX_WARPS * 32) layernorm_backward_kernel(floatX* dinp, GradT* dweight, GradT* dbias, const floatX* dout,
                                          const floatX* inp, const floatX* weight, const float* mean,
                                          const float* rstd, float* scratch, int N, int C, int rows_per_block,
                                          bool acc_in_smem) {
    extern __shared__ __align__(16) float ln_warp_acc[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    unsigned int* blocks_done = (unsigned int*)scratch;
    float* partials = scratch + LN_BWD_HEADER_FLOATS;               // (gridDim.x, 2, C)
    float* block_partial = partials + (size_t)blockIdx.x * 2 * C;  // this block's (dweight, dbias) sums
    float* acc = acc_in_smem ? ln_warp_acc + (size_t)warp * 2 * C : block_partial;

    for (int c = lane * VEC; c < C; c += 32 * VEC) {
        float zero[VEC] = {};
        store_floats<VEC>(acc + c, zero);
        store_floats<VEC>(acc + C + c, zero);
    }
    const int r_begin = (int)blockIdx.x * rows_per_block;
    const int r_end = min(N, r_begin + rows_per_block);
    for (int r = r_begin + warp; r < r_end; r += warps) {
        const size_t off = (size_t)r * C;
        layernorm_backward_row<VEC>(dinp + off, acc, acc + C, dout + off, inp + off, weight, mean[r], rstd[r], C, lane);
    }

    // the block's partial: the warps' sums added in warp order
    if (acc_in_smem) {
        __syncthreads();
        for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
            float sum = 0.0f;
            for (int w = 0; w < warps; w++) { sum += ln_warp_acc[(size_t)w * 2 * C + i]; }
            block_partial[i] = sum;
        }
    }

    // Publish it, then count this block as done. The block that brings the count to gridDim.x knows
    // every other partial is visible (each thread fenced its writes, and the block synchronized,
    // before counting) and finishes the job.
    __threadfence();
    __syncthreads();
    unsigned int done_before = 0;
    if (threadIdx.x == 0) { done_before = atomicAdd(blocks_done, 1u); }
    const bool last = __syncthreads_or(threadIdx.x == 0 && done_before == gridDim.x - 1);
    if (!last) { return; }
    __threadfence();   // order this block's reads after the count that said every partial is written

    // dweight[c] += sum_b partial_b[c], dbias likewise, b in increasing order. A partial is 2C floats
    // (dweight's C, then dbias's); thread t sums columns [W t, W t + W) of every partial, W = 4 (one
    // 128-bit load; C is then a multiple of 4, so a group never straddles dweight and dbias) or 1.
    // The loads go through L2 (ld.cg), where the other SMs' fenced writes are, never a stale L1 line;
    // they do not depend on one another, so unrolling keeps several in flight while the sums stay in
    // order. This single block reads gridDim.x * 2C floats: LN_BWD_MAX_BLOCKS bounds that work.
    constexpr int W = (VEC % 4 == 0) ? 4 : 1;
    for (int i = threadIdx.x * W; i < 2 * C; i += blockDim.x * W) {
        float sum[W] = {};
#pragma unroll 8
        for (int b = 0; b < (int)gridDim.x; b++) {
            float v[W];
            load_floats_cg<W>(v, partials + (size_t)b * 2 * C + i);
            for (int k = 0; k < W; k++) { sum[k] += v[k]; }
        }
        GradT* grad = (i < C) ? dweight + i : dbias + (i - C);
        for (int k = 0; k < W; k++) { grad[k] = from_float<GradT>(to_float(grad[k]) + sum[k]); }
    }
    if (threadIdx.x == 0) { *blocks_done = 0; }   // ready for the next call
}

// ----------------------------------------------------------------------------
// launchers

// the 128-bit path: C a multiple of the pack width and every pointer 16-byte aligned (then every row
// start, at a multiple of C elements, is aligned too)
inline bool layernorm_can_vectorize(int C, std::initializer_list<const void*> ptrs) {
    if (C % x128::size != 0) { return false; }
    for (const void* p : ptrs) {
        if (!is_aligned16(p)) { return false; }
    }
    return true;
}

// The forward's launch shape: rows (= warps) per block and the bytes of the row caches. As many warps
// as block_size allows whose rows fit in LN_SMEM_BUDGET; if not even one row fits, block_size / 32
// warps without caches (smem 0).
struct LayerNormForwardShape { int rows_per_block; size_t smem; };
inline LayerNormForwardShape layernorm_forward_shape(int C, int block_size) {
    const size_t row_bytes = (size_t)C * sizeof(floatX);
    const int fit = (int)(LN_SMEM_BUDGET / row_bytes);
    LayerNormForwardShape sh;
    const int warps = min(block_size / 32, LN_MAX_WARPS);
    sh.rows_per_block = fit == 0 ? warps : min(warps, fit);
    sh.smem = fit == 0 ? 0 : sh.rows_per_block * row_bytes;
    return sh;
}

// out (N,C) = layernorm(inp (N,C)) * weight (C) + bias (C), all floatX; N = B*T rows.
// mean, rstd (N) fp32 are written for backward (either may be NULL, e.g. for inference).
// block_size: multiple of 32, at most 1024 (an upper bound: at most LN_MAX_WARPS warps, fewer when C is large).
inline void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp, const floatX* weight,
                              const floatX* bias, int N, int C, cudaStream_t stream, int block_size = 256) {
    hostCheckBlockSize(block_size, "layernorm_forward");
    const LayerNormForwardShape sh = layernorm_forward_shape(C, block_size);
    const int grid = CEIL_DIV(N, sh.rows_per_block), block = sh.rows_per_block * 32;
    if (layernorm_can_vectorize(C, {out, inp, weight, bias})) {
        layernorm_forward_kernel<x128::size><<<grid, block, sh.smem, stream>>>(out, mean, rstd, inp, weight, bias, N, C, sh.smem > 0);
    } else {
        layernorm_forward_kernel<1><<<grid, block, sh.smem, stream>>>(out, mean, rstd, inp, weight, bias, N, C, sh.smem > 0);
    }
    cudaCheck(cudaGetLastError());
}

// residual (N,C) = inp1 + inp2 (rounded to floatX), then out/mean/rstd = layernorm_forward(residual).
// residual may alias inp1 or inp2 (an in-place residual add). block_size as layernorm_forward.
inline void fused_residual_layernorm_forward(floatX* residual, floatX* out, float* mean, float* rstd,
                                             const floatX* inp1, const floatX* inp2, const floatX* weight,
                                             const floatX* bias, int N, int C, cudaStream_t stream,
                                             int block_size = 256) {
    hostCheckBlockSize(block_size, "fused_residual_layernorm_forward");
    const LayerNormForwardShape sh = layernorm_forward_shape(C, block_size);
    const int grid = CEIL_DIV(N, sh.rows_per_block), block = sh.rows_per_block * 32;
    if (layernorm_can_vectorize(C, {residual, out, inp1, inp2, weight, bias})) {
        fused_residual_layernorm_forward_kernel<x128::size><<<grid, block, sh.smem, stream>>>(
            residual, out, mean, rstd, inp1, inp2, weight, bias, N, C, sh.smem > 0);
    } else {
        fused_residual_layernorm_forward_kernel<1><<<grid, block, sh.smem, stream>>>(
            residual, out, mean, rstd, inp1, inp2, weight, bias, N, C, sh.smem > 0);
    }
    cudaCheck(cudaGetLastError());
}

// The backward's launch shape, a function of N, C and block_size only (never of the GPU), so the
// summation order, and with it every bit of dweight / dbias, is the same on any GPU.
//   warps: as many as block_size (and LN_MAX_WARPS) allows whose accumulators (2*C floats each)
//          fit in LN_SMEM_BUDGET;
//          one, accumulating in scratch (smem 0), if not even one fits (C > 6144)
//   blocks: at most LN_BWD_MAX_BLOCKS, each with at least `warps` rows
struct LayerNormBackwardShape { int warps, blocks, rows_per_block; size_t smem; };
inline LayerNormBackwardShape layernorm_backward_shape(int N, int C, int block_size) {
    const size_t acc_bytes = (size_t)2 * C * sizeof(float);
    const int fit = (int)(LN_SMEM_BUDGET / acc_bytes);
    LayerNormBackwardShape sh;
    sh.warps = fit == 0 ? 1 : min(min(block_size / 32, LN_MAX_WARPS), fit);
    sh.smem = fit == 0 ? 0 : sh.warps * acc_bytes;
    const int blocks = min(LN_BWD_MAX_BLOCKS, CEIL_DIV(N, sh.warps));
    sh.rows_per_block = CEIL_DIV(N, blocks);
    sh.blocks = CEIL_DIV(N, sh.rows_per_block);   // no block without rows
    return sh;
}

// dinp (N,C) floatX += dLoss/dinp; dweight (C), dbias (C) += (GradT: float by default, or floatX).
// dout (N,C) floatX; inp (N,C) floatX is the layernorm's input; weight (C); mean, rstd (N) from forward.
// scratch: device memory of layernorm_backward_scratch_bytes(C) bytes, ZEROED once after allocation
// (cudaMemset): its first word counts finished blocks and must be 0 when a call starts; every call
// leaves it 0 again. The rest is per-block partial sums, not needed before or after. One scratch
// serves any number of calls in sequence (not concurrently on two streams).
// dinp must not alias dout or inp. Deterministic. block_size: multiple of 32, at most 1024.
template<typename GradT>
inline void layernorm_backward(floatX* dinp, GradT* dweight, GradT* dbias, const floatX* dout, const floatX* inp,
                               const floatX* weight, const float* mean, const float* rstd, int N, int C,
                               float* scratch, cudaStream_t stream, int block_size = 256) {
    hostCheckBlockSize(block_size, "layernorm_backward");
    hostCheck(N > 0 && C > 0, "layernorm_backward: N and C must be positive");
    const LayerNormBackwardShape sh = layernorm_backward_shape(N, C, block_size);
    if (layernorm_can_vectorize(C, {dinp, dout, inp, weight, scratch})) {
        layernorm_backward_kernel<x128::size, GradT><<<sh.blocks, sh.warps * 32, sh.smem, stream>>>(
            dinp, dweight, dbias, dout, inp, weight, mean, rstd, scratch, N, C, sh.rows_per_block, sh.smem > 0);
    } else {
        layernorm_backward_kernel<1, GradT><<<sh.blocks, sh.warps * 32, sh.smem, stream>>>(
            dinp, dweight, dbias, dout, inp, weight, mean, rstd, scratch, N, C, sh.rows_per_block, sh.smem > 0);
    }
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_LAYERNORM_CUH
