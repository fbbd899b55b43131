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

The weight / bias gradients are deterministic: each of LN_BWD_PARTS fixed slices of the rows writes
its own per-channel partial sums into `scratch`, then one kernel adds the partials in a fixed order.
No float atomics anywhere.

Statistics are computed in fp32 from the bf16 inputs; mean and rstd are stored in fp32 for backward.
*/
#ifndef LLMC_CUDA_LAYERNORM_CUH
#define LLMC_CUDA_LAYERNORM_CUH

#include "cuda_common.cuh"

#define LAYERNORM_EPS 1e-5f

// number of row slices for the deterministic dweight/dbias reduction; scratch holds 2*LN_BWD_PARTS*C floats
#define LN_BWD_PARTS 32

// bytes of scratch that layernorm_backward needs for C channels
inline size_t layernorm_backward_scratch_bytes(int C) { return (size_t)2 * LN_BWD_PARTS * C * sizeof(float); }

// ----------------------------------------------------------------------------
// forward

// shared body: one warp normalizes one row x (C), already in memory as bf16
__device__ inline void layernorm_row(floatX* out, float* mean, float* rstd, const floatX* x,
                                     const floatX* weight, const floatX* bias, int row, int C, int lane) {
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32) { sum += to_float(x[c]); }
    const float m = warp_reduce_sum(sum) / C;
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = to_float(x[c]) - m; sq += d * d; }
    const float s = rsqrtf(warp_reduce_sum(sq) / C + LAYERNORM_EPS);
    for (int c = lane; c < C; c += 32) {
        float n = (to_float(x[c]) - m) * s;
        out[c] = from_float<floatX>(n * to_float(weight[c]) + to_float(bias[c]));
    }
    if (lane == 0) {
        if (mean != NULL) { mean[row] = m; }
        if (rstd != NULL) { rstd[row] = s; }
    }
}

// one warp per row; blockDim.x a multiple of 32
static __global__ void layernorm_forward_kernel(floatX* out, float* mean, float* rstd, const floatX* inp,
                                                const floatX* weight, const floatX* bias, int N, int C) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) { return; }
    layernorm_row(out + (size_t)row * C, mean, rstd, inp + (size_t)row * C, weight, bias, row, C, lane);
}

// residual = inp1 + inp2 (rounded to bf16 and stored), then layernorm of the stored residual, so the
// statistics match exactly what backward will read back. One warp per row.
static __global__ void fused_residual_layernorm_forward_kernel(floatX* residual, floatX* out, float* mean,
                                                               float* rstd, const floatX* inp1,
                                                               const floatX* inp2, const floatX* weight,
                                                               const floatX* bias, int N, int C) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) { return; }
    const size_t off = (size_t)row * C;
    // each lane writes residual[c] for its own c and is the only one to read it back below, so this is
    // safe even when residual aliases inp1 or inp2
    for (int c = lane; c < C; c += 32) {
        residual[off + c] = from_float<floatX>(to_float(inp1[off + c]) + to_float(inp2[off + c]));
    }
    layernorm_row(out + off, mean, rstd, residual + off, weight, bias, row, C, lane);
}

// ----------------------------------------------------------------------------
// backward

// dinp += ..., one warp per row
static __global__ void layernorm_backward_dinp_kernel(floatX* dinp, const floatX* dout, const floatX* inp,
                                                      const floatX* weight, const float* mean,
                                                      const float* rstd, int N, int C) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) { return; }
    const size_t off = (size_t)row * C;
    const float m = mean[row];
    const float s = rstd[row];
    float sum_dnorm = 0.0f, sum_dnorm_xhat = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_float(inp[off + c]) - m) * s;
        float dnorm = to_float(dout[off + c]) * to_float(weight[c]);
        sum_dnorm += dnorm;
        sum_dnorm_xhat += dnorm * xhat;
    }
    const float mean_dnorm = warp_reduce_sum(sum_dnorm) / C;
    const float mean_dnorm_xhat = warp_reduce_sum(sum_dnorm_xhat) / C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_float(inp[off + c]) - m) * s;
        float dnorm = to_float(dout[off + c]) * to_float(weight[c]);
        float d = s * (dnorm - mean_dnorm - xhat * mean_dnorm_xhat);
        dinp[off + c] = from_float<floatX>(to_float(dinp[off + c]) + d);
    }
}

// Per-slice partial sums of dweight and dbias.
// grid = (CEIL_DIV(C, 32), LN_BWD_PARTS), block = (32, blockDim.y).
// Block (cx, p) handles channels cx*32 + threadIdx.x and rows of slice p: [p*rows_per_part, ...).
// Thread row ty sums rows ty, ty + blockDim.y, ...; the blockDim.y sums are then added in a fixed tree.
// partials layout: scratch[p * C + c] for dweight, scratch[(LN_BWD_PARTS + p) * C + c] for dbias.
static __global__ void layernorm_backward_partials_kernel(float* scratch, const floatX* dout, const floatX* inp,
                                                          const float* mean, const float* rstd, int N, int C) {
    extern __shared__ float smem[];   // 2 * blockDim.y * 32 floats
    float* sw = smem;
    float* sb = smem + blockDim.y * 32;
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int p = blockIdx.y;
    const int rows_per_part = CEIL_DIV(N, LN_BWD_PARTS);
    const int r_begin = p * rows_per_part;
    const int r_end = min(N, r_begin + rows_per_part);
    float dw = 0.0f, db = 0.0f;
    if (c < C) {
        for (int r = r_begin + threadIdx.y; r < r_end; r += blockDim.y) {
            size_t i = (size_t)r * C + c;
            float g = to_float(dout[i]);
            float xhat = (to_float(inp[i]) - mean[r]) * rstd[r];
            dw += g * xhat;
            db += g;
        }
    }
    const int t = threadIdx.y * 32 + threadIdx.x;
    sw[t] = dw;
    sb[t] = db;
    __syncthreads();
    // tree over threadIdx.y; blockDim.y is a power of two
    for (int stride = blockDim.y / 2; stride > 0; stride >>= 1) {
        if (threadIdx.y < stride) {
            sw[t] += sw[t + stride * 32];
            sb[t] += sb[t + stride * 32];
        }
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < C) {
        scratch[(size_t)p * C + c] = sw[threadIdx.x];
        scratch[(size_t)(LN_BWD_PARTS + p) * C + c] = sb[threadIdx.x];
    }
}

// dweight[c] += sum_p partial_w[p][c], dbias likewise, p in increasing order
template<typename GradT>
__global__ void layernorm_backward_finish_kernel(GradT* dweight, GradT* dbias, const float* scratch, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) { return; }
    float dw = 0.0f, db = 0.0f;
    for (int p = 0; p < LN_BWD_PARTS; p++) {
        dw += scratch[(size_t)p * C + c];
        db += scratch[(size_t)(LN_BWD_PARTS + p) * C + c];
    }
    dweight[c] = from_float<GradT>(to_float(dweight[c]) + dw);
    dbias[c] = from_float<GradT>(to_float(dbias[c]) + db);
}

// ----------------------------------------------------------------------------
// launchers

// out (N,C) bf16 = layernorm(inp (N,C) bf16) * weight (C) + bias (C); N = B*T rows.
// mean, rstd (N) fp32 are written for backward (either may be NULL, e.g. for inference).
// block_size: multiple of 32 (one warp per row), at most 1024.
inline void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp, const floatX* weight,
                              const floatX* bias, int N, int C, cudaStream_t stream, int block_size = 256) {
    hostCheckBlockSize(block_size, "layernorm_forward");
    const int rows_per_block = block_size / 32;
    layernorm_forward_kernel<<<CEIL_DIV(N, rows_per_block), block_size, 0, stream>>>(
        out, mean, rstd, inp, weight, bias, N, C);
    cudaCheck(cudaGetLastError());
}

// residual (N,C) bf16 = inp1 + inp2 (rounded to bf16), then out/mean/rstd = layernorm_forward(residual).
// residual may alias inp1 or inp2 (an in-place residual add). block_size as layernorm_forward.
inline void fused_residual_layernorm_forward(floatX* residual, floatX* out, float* mean, float* rstd,
                                             const floatX* inp1, const floatX* inp2, const floatX* weight,
                                             const floatX* bias, int N, int C, cudaStream_t stream,
                                             int block_size = 256) {
    hostCheckBlockSize(block_size, "fused_residual_layernorm_forward");
    const int rows_per_block = block_size / 32;
    fused_residual_layernorm_forward_kernel<<<CEIL_DIV(N, rows_per_block), block_size, 0, stream>>>(
        residual, out, mean, rstd, inp1, inp2, weight, bias, N, C);
    cudaCheck(cudaGetLastError());
}

// dinp (N,C) bf16 += dLoss/dinp; dweight (C), dbias (C) += (GradT: float by default, or floatX).
// dout (N,C) bf16; inp (N,C) bf16 is the layernorm's input; weight (C); mean, rstd (N) from forward.
// scratch: device memory of layernorm_backward_scratch_bytes(C) bytes (fp32 partial sums), contents
// not needed before or after. dinp must not alias dout or inp. Deterministic.
// block_size: multiple of 32, a power of two, 32..1024.
template<typename GradT>
inline void layernorm_backward(floatX* dinp, GradT* dweight, GradT* dbias, const floatX* dout, const floatX* inp,
                               const floatX* weight, const float* mean, const float* rstd, int N, int C,
                               float* scratch, cudaStream_t stream, int block_size = 256) {
    hostCheck(block_size >= 32 && block_size <= 1024 && (block_size & (block_size - 1)) == 0,
              "layernorm_backward: block_size must be a power of two in [32, 1024]");
    const int rows_per_block = block_size / 32;
    layernorm_backward_dinp_kernel<<<CEIL_DIV(N, rows_per_block), block_size, 0, stream>>>(
        dinp, dout, inp, weight, mean, rstd, N, C);
    cudaCheck(cudaGetLastError());

    dim3 block(32, block_size / 32);
    dim3 grid(CEIL_DIV(C, 32), LN_BWD_PARTS);
    size_t smem = 2 * (size_t)block_size * sizeof(float);
    layernorm_backward_partials_kernel<<<grid, block, smem, stream>>>(scratch, dout, inp, mean, rstd, N, C);
    cudaCheck(cudaGetLastError());

    layernorm_backward_finish_kernel<<<CEIL_DIV(C, 256), 256, 0, stream>>>(dweight, dbias, scratch, C);
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_LAYERNORM_CUH
