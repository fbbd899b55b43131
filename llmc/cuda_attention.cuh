/*
cuda_attention.cuh: causal multi-head self-attention from the fused qkv projection, forward and
backward, with batched cuBLASLt GEMMs for Q.K^T and A.V and a causal softmax kernel. Not fused (no
flash attention): the (B,NH,T,T) attention matrix is materialized and kept for the backward.

Shapes: C = NH * hs. qkv input (B,T,3C): for token (b,t) the row holds [q | k | v], each C wide, and
head h uses columns h*hs .. h*hs+hs-1 of each. qkvr is the same data regrouped by head:
  q = qkvr, k = qkvr + B*T*C, v = qkvr + 2*B*T*C, each (B,NH,T,hs).

  forward : preatt = q . k^T                                  (B,NH,T,T)
            att[t,s] = softmax_{s<=t}(preatt[t,s] / sqrt(hs)), 0 for s > t  (causal)
            y = att . v                                        (B,NH,T,hs)
            out (B,T,C) = y with the heads merged back, out[b,t,h*hs+d] = y[b,h,t,d]
  backward: the same in reverse; dinp (B,T,3C) = [dq | dk | dv] merged like qkv.

There are no parameters here. The activation gradient dinp is OVERWRITTEN (it feeds the qkv matmul's
backward, which reads it as its dout).

Precision: every intermediate (preatt, att, y and their gradients) is stored in floatX (bf16, as in
llm.c; fp32 in the ENABLE_FP32 build); softmax statistics are fp32.
*/
#ifndef LLMC_CUDA_ATTENTION_CUH
#define LLMC_CUDA_ATTENTION_CUH

#include <math.h>
#include "cuda_common.cuh"
#include "cuda_matmul.cuh"

// ----------------------------------------------------------------------------
// head split / merge

// dst (B,NH,T,hs)[b,h,t,d] = src[(b*T + t) * src_stride + src_offset + h*hs + d]
static __global__ void attention_split_heads_kernel(floatX* dst, const floatX* src, int src_stride, int src_offset,
                                                    int B, int T, int NH, int hs) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * hs) { return; }
    int d = (int)(idx % hs);
    int t = (int)((idx / hs) % T);
    int h = (int)((idx / ((size_t)hs * T)) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    dst[idx] = src[((size_t)b * T + t) * src_stride + src_offset + h * hs + d];
}

// dst[(b*T + t) * dst_stride + dst_offset + h*hs + d] = src (B,NH,T,hs)[b,h,t,d]
static __global__ void attention_merge_heads_kernel(floatX* dst, int dst_stride, int dst_offset, const floatX* src,
                                                    int B, int T, int NH, int hs) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * hs) { return; }
    int d = (int)(idx % hs);
    int t = (int)((idx / hs) % T);
    int h = (int)((idx / ((size_t)hs * T)) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    dst[((size_t)b * T + t) * dst_stride + dst_offset + h * hs + d] = src[idx];
}

// ----------------------------------------------------------------------------
// causal softmax, in place. One warp per row of the (B*NH*T, T) matrix; the row's query position is
// t = row % T, and only columns s <= t take part.

static __global__ void attention_softmax_forward_kernel(floatX* att, float scale, int num_rows, int T) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= num_rows) { return; }
    const int t = row % T;
    floatX* x = att + (size_t)row * T;
    float maxval = -FLT_MAX;
    for (int s = lane; s <= t; s += 32) { maxval = fmaxf(maxval, to_float(x[s])); }
    maxval = warp_reduce_max(maxval);
    float sum = 0.0f;
    for (int s = lane; s <= t; s += 32) { sum += expf(scale * (to_float(x[s]) - maxval)); }
    const float inv_sum = 1.0f / warp_reduce_sum(sum);
    for (int s = lane; s < T; s += 32) {
        float p = (s <= t) ? expf(scale * (to_float(x[s]) - maxval)) * inv_sum : 0.0f;
        x[s] = from_float<floatX>(p);
    }
}

// datt (in) -> dpreatt (out), in place: dpreatt[s] = scale * att[s] * (datt[s] - sum_k att[k] datt[k])
// for s <= t, 0 above the diagonal.
static __global__ void attention_softmax_backward_kernel(floatX* datt, const floatX* att, float scale, int num_rows, int T) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= num_rows) { return; }
    const int t = row % T;
    floatX* g = datt + (size_t)row * T;
    const floatX* p = att + (size_t)row * T;
    float dot = 0.0f;
    for (int s = lane; s <= t; s += 32) { dot += to_float(p[s]) * to_float(g[s]); }
    dot = warp_reduce_sum(dot);
    for (int s = lane; s < T; s += 32) {
        float d = (s <= t) ? scale * to_float(p[s]) * (to_float(g[s]) - dot) : 0.0f;
        g[s] = from_float<floatX>(d);
    }
}

// ----------------------------------------------------------------------------
// launchers

inline void attention_split_heads(floatX* dst, const floatX* src, int src_stride, int src_offset,
                                  int B, int T, int NH, int hs, cudaStream_t stream, int block_size) {
    size_t total = (size_t)B * NH * T * hs;
    attention_split_heads_kernel<<<(unsigned int)CEIL_DIV(total, (size_t)block_size), block_size, 0, stream>>>(
        dst, src, src_stride, src_offset, B, T, NH, hs);
    cudaCheck(cudaGetLastError());
}

inline void attention_merge_heads(floatX* dst, int dst_stride, int dst_offset, const floatX* src,
                                  int B, int T, int NH, int hs, cudaStream_t stream, int block_size) {
    size_t total = (size_t)B * NH * T * hs;
    attention_merge_heads_kernel<<<(unsigned int)CEIL_DIV(total, (size_t)block_size), block_size, 0, stream>>>(
        dst, dst_stride, dst_offset, src, B, T, NH, hs);
    cudaCheck(cudaGetLastError());
}

// out (B,T,C) bf16 = causal self-attention of inp = qkv (B,T,3C) bf16, NH heads of size hs = C/NH.
// Writes, for the backward: qkvr (3,B,NH,T,hs) = q, k, v split by head; att (B,NH,T,T) = the softmax
// probabilities (zeros above the diagonal).
// NOTE: inp is CLOBBERED: its first B*T*C elements are used as scratch for y (B,NH,T,hs). The backward
// needs only qkvr and att. out must not alias inp, qkvr or att.
// block_size (multiple of 32, <= 1024) is for the non-GEMM kernels.
inline void attention_forward(floatX* out, floatX* qkvr, floatX* att, floatX* inp, int B, int T, int C, int NH,
                              const MatmulContext* ctx, int block_size = 256) {
    hostCheck(C % NH == 0, "attention_forward: C must be a multiple of NH");
    hostCheckBlockSize(block_size, "attention_forward");
    const int hs = C / NH;
    const size_t BTC = (size_t)B * T * C;
    const int BNH = B * NH;
    floatX* q = qkvr;
    floatX* k = qkvr + BTC;
    floatX* v = qkvr + 2 * BTC;
    cudaStream_t stream = ctx->stream;

    attention_split_heads(q, inp, 3 * C, 0, B, T, NH, hs, stream, block_size);
    attention_split_heads(k, inp, 3 * C, C, B, T, NH, hs, stream, block_size);
    attention_split_heads(v, inp, 3 * C, 2 * C, B, T, NH, hs, stream, block_size);

    // preatt[t][s] = sum_d q[t][d] k[s][d]. Column-major: preatt^T (s,t) = k (s,d) . q^T (d,t)
    matmul_cublaslt(ctx, att, cuda_dtype<floatX>(), T, (long long)T * T,
                    k, true, hs, (long long)T * hs,
                    q, false, hs, (long long)T * hs,
                    T, T, hs, BNH, 1.0f, 0.0f, NULL, NULL, 0);

    const float scale = 1.0f / sqrtf((float)hs);
    const int rows_per_block = block_size / 32;
    attention_softmax_forward_kernel<<<CEIL_DIV(BNH * T, rows_per_block), block_size, 0, stream>>>(att, scale, BNH * T, T);
    cudaCheck(cudaGetLastError());

    // y[t][d] = sum_s att[t][s] v[s][d]. Column-major: y^T (d,t) = v^T (d,s) . att^T (s,t)
    floatX* y = inp;   // scratch
    matmul_cublaslt(ctx, y, cuda_dtype<floatX>(), hs, (long long)T * hs,
                    v, false, hs, (long long)T * hs,
                    att, false, T, (long long)T * T,
                    hs, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);

    attention_merge_heads(out, C, 0, y, B, T, NH, hs, stream, block_size);
}

// Backward of attention_forward.
// dinp (B,T,3C) bf16 = d loss / d qkv, OVERWRITTEN. (Before that, its first B*T*C elements are used as
//   scratch for dy (B,NH,T,hs).)
// dqkvr (3,B,NH,T,hs) and datt (B,NH,T,T): scratch, contents not needed before or after.
// dout (B,T,C): gradient of out; qkvr, att: as written by attention_forward.
// dinp must not alias dout, qkvr or att.
inline void attention_backward(floatX* dinp, floatX* dqkvr, floatX* datt, const floatX* dout, const floatX* qkvr,
                               const floatX* att, int B, int T, int C, int NH, const MatmulContext* ctx,
                               int block_size = 256) {
    hostCheck(C % NH == 0, "attention_backward: C must be a multiple of NH");
    hostCheckBlockSize(block_size, "attention_backward");
    const int hs = C / NH;
    const size_t BTC = (size_t)B * T * C;
    const int BNH = B * NH;
    const floatX* q = qkvr;
    const floatX* k = qkvr + BTC;
    const floatX* v = qkvr + 2 * BTC;
    floatX* dq = dqkvr;
    floatX* dk = dqkvr + BTC;
    floatX* dv = dqkvr + 2 * BTC;
    cudaStream_t stream = ctx->stream;
    const long long sTT = (long long)T * T, sTh = (long long)T * hs;

    floatX* dy = dinp;   // scratch (B,NH,T,hs)
    attention_split_heads(dy, dout, C, 0, B, T, NH, hs, stream, block_size);

    // datt[t][s] = sum_d dy[t][d] v[s][d]. Column-major: datt^T (s,t) = v (s,d) . dy^T (d,t)
    matmul_cublaslt(ctx, datt, cuda_dtype<floatX>(), T, sTT, v, true, hs, sTh, dy, false, hs, sTh,
                    T, T, hs, BNH, 1.0f, 0.0f, NULL, NULL, 0);
    // dv[s][d] = sum_t att[t][s] dy[t][d]. Column-major: dv^T (d,s) = dy^T (d,t) . att (t,s)
    matmul_cublaslt(ctx, dv, cuda_dtype<floatX>(), hs, sTh, dy, false, hs, sTh, att, true, T, sTT,
                    hs, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);

    const float scale = 1.0f / sqrtf((float)hs);
    const int rows_per_block = block_size / 32;
    attention_softmax_backward_kernel<<<CEIL_DIV(BNH * T, rows_per_block), block_size, 0, stream>>>(datt, att, scale, BNH * T, T);
    cudaCheck(cudaGetLastError());
    // datt now holds dpreatt

    // dq[t][d] = sum_s dpreatt[t][s] k[s][d]. Column-major: dq^T (d,t) = k^T (d,s) . dpreatt^T (s,t)
    matmul_cublaslt(ctx, dq, cuda_dtype<floatX>(), hs, sTh, k, false, hs, sTh, datt, false, T, sTT,
                    hs, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);
    // dk[s][d] = sum_t dpreatt[t][s] q[t][d]. Column-major: dk^T (d,s) = q^T (d,t) . dpreatt (t,s)
    matmul_cublaslt(ctx, dk, cuda_dtype<floatX>(), hs, sTh, q, false, hs, sTh, datt, true, T, sTT,
                    hs, T, T, BNH, 1.0f, 0.0f, NULL, NULL, 0);

    attention_merge_heads(dinp, 3 * C, 0, dq, B, T, NH, hs, stream, block_size);
    attention_merge_heads(dinp, 3 * C, C, dk, B, T, NH, hs, stream, block_size);
    attention_merge_heads(dinp, 3 * C, 2 * C, dv, B, T, NH, hs, stream, block_size);
}

#endif // LLMC_CUDA_ATTENTION_CUH
