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

Memory traffic of the non-GEMM kernels, each templated on its vector width VEC (one body, two paths):
  - head split / merge: 128-bit packs of x128::size elements when hs, the row stride and the column
    offset are multiples of x128::size and both pointers are 16-byte aligned (true for GPT-2's hs = 64
    on cudaMalloc'd buffers); otherwise one element per thread.
  - causal softmax forward / backward: each row in 128-bit packs when T % x128::size == 0 and the
    matrices are 16-byte aligned; otherwise one column at a time. Packs above the diagonal are written
    (zeros), not read.
*/
#ifndef LLMC_CUDA_ATTENTION_CUH
#define LLMC_CUDA_ATTENTION_CUH

#include <math.h>
#include "cuda_common.cuh"
#include "cuda_matmul.cuh"

// ----------------------------------------------------------------------------
// head split / merge. One kernel body per direction for both paths: each thread copies VEC consecutive
// elements of one head row, VEC = x128::size (one 128-bit load and store) or 1.

template<int VEC>
__device__ inline void copy_pack(floatX* dst, const floatX* src) {
    if constexpr (VEC == 1) { dst[0] = src[0]; } else { store128(dst, load128(src)); }
}

// dst (B,NH,T,hs)[b,h,t,d] = src[(b*T + t) * src_stride + src_offset + h*hs + d], d = d0 .. d0+VEC-1
template<int VEC>
static __global__ void attention_split_heads_kernel(floatX* dst, const floatX* src, int src_stride, int src_offset,
                                                    int B, int T, int NH, int hs) {
    size_t idx = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (idx >= (size_t)B * NH * T * hs) { return; }
    int d = (int)(idx % hs);
    int t = (int)((idx / hs) % T);
    int h = (int)((idx / ((size_t)hs * T)) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    copy_pack<VEC>(dst + idx, src + ((size_t)b * T + t) * src_stride + src_offset + h * hs + d);
}

// dst[(b*T + t) * dst_stride + dst_offset + h*hs + d] = src (B,NH,T,hs)[b,h,t,d], d = d0 .. d0+VEC-1
template<int VEC>
static __global__ void attention_merge_heads_kernel(floatX* dst, int dst_stride, int dst_offset, const floatX* src,
                                                    int B, int T, int NH, int hs) {
    size_t idx = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (idx >= (size_t)B * NH * T * hs) { return; }
    int d = (int)(idx % hs);
    int t = (int)((idx / hs) % T);
    int h = (int)((idx / ((size_t)hs * T)) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    copy_pack<VEC>(dst + ((size_t)b * T + t) * dst_stride + dst_offset + h * hs + d, src + idx);
}

// ----------------------------------------------------------------------------
// causal softmax, in place. One warp per row of the (B*NH*T, T) matrix; the row's query position is
// t = row % T, and only columns s <= t take part. Each lane takes VEC consecutive columns at a time
// (VEC = x128::size: T % VEC == 0 and att 16-byte aligned, so every row starts aligned; or VEC = 1);
// a pack that lies wholly above the diagonal is not read, only written (zeros).

template<int VEC>
static __global__ void attention_softmax_forward_kernel(floatX* att, float scale, int num_rows, int T) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= num_rows) { return; }
    const int t = row % T;
    floatX* x = att + (size_t)row * T;
    float v[VEC];
    float maxval = -FLT_MAX;
    for (int s0 = lane * VEC; s0 <= t; s0 += 32 * VEC) {
        load_as_floats<VEC>(v, x + s0);
        for (int k = 0; k < VEC; k++) { if (s0 + k <= t) { maxval = fmaxf(maxval, v[k]); } }
    }
    maxval = warp_reduce_max(maxval);
    float sum = 0.0f;
    for (int s0 = lane * VEC; s0 <= t; s0 += 32 * VEC) {
        load_as_floats<VEC>(v, x + s0);
        for (int k = 0; k < VEC; k++) { if (s0 + k <= t) { sum += expf(scale * (v[k] - maxval)); } }
    }
    const float inv_sum = 1.0f / warp_reduce_sum(sum);
    for (int s0 = lane * VEC; s0 < T; s0 += 32 * VEC) {
        float p[VEC] = {};
        if (s0 <= t) {
            load_as_floats<VEC>(v, x + s0);
            for (int k = 0; k < VEC; k++) { p[k] = (s0 + k <= t) ? expf(scale * (v[k] - maxval)) * inv_sum : 0.0f; }
        }
        store_floats<VEC>(x + s0, p);
    }
}

// datt (in) -> dpreatt (out), in place: dpreatt[s] = scale * att[s] * (datt[s] - sum_k att[k] datt[k])
// for s <= t, 0 above the diagonal. The same row layout and packs as the forward.
template<int VEC>
static __global__ void attention_softmax_backward_kernel(floatX* datt, const floatX* att, float scale, int num_rows, int T) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= num_rows) { return; }
    const int t = row % T;
    floatX* g = datt + (size_t)row * T;
    const floatX* p = att + (size_t)row * T;
    float pv[VEC], gv[VEC];
    float dot = 0.0f;
    for (int s0 = lane * VEC; s0 <= t; s0 += 32 * VEC) {
        load_as_floats<VEC>(pv, p + s0);
        load_as_floats<VEC>(gv, g + s0);
        for (int k = 0; k < VEC; k++) { if (s0 + k <= t) { dot += pv[k] * gv[k]; } }
    }
    dot = warp_reduce_sum(dot);
    for (int s0 = lane * VEC; s0 < T; s0 += 32 * VEC) {
        float d[VEC] = {};
        if (s0 <= t) {
            load_as_floats<VEC>(pv, p + s0);
            load_as_floats<VEC>(gv, g + s0);
            for (int k = 0; k < VEC; k++) { d[k] = (s0 + k <= t) ? scale * pv[k] * (gv[k] - dot) : 0.0f; }
        }
        store_floats<VEC>(g + s0, d);
    }
}

// ----------------------------------------------------------------------------
// launchers of the kernels above; each picks its path at run time

// elements per access of a split or merge between a (B,NH,T,hs) tensor at `heads` and rows of `stride`
// elements at `rows` (+ offset): x128::size when every pack is 16-byte aligned, else 1
inline int attention_heads_vec(const floatX* heads, const floatX* rows, int stride, int offset, int hs) {
    const int P = x128::size;
    const bool ok = hs % P == 0 && stride % P == 0 && offset % P == 0 && is_aligned16(heads) && is_aligned16(rows);
    return ok ? P : 1;
}

// columns per access of the causal softmax kernels on (rows, T) matrices at a and b
inline int attention_softmax_vec(const floatX* a, const floatX* b, int T) {
    return (T % x128::size == 0 && is_aligned16(a) && is_aligned16(b)) ? x128::size : 1;
}

inline void attention_split_heads(floatX* dst, const floatX* src, int src_stride, int src_offset,
                                  int B, int T, int NH, int hs, cudaStream_t stream, int block_size) {
    const size_t total = (size_t)B * NH * T * hs;
    if (attention_heads_vec(dst, src, src_stride, src_offset, hs) == x128::size) {
        const unsigned int grid = (unsigned int)CEIL_DIV(total / x128::size, (size_t)block_size);
        attention_split_heads_kernel<x128::size><<<grid, block_size, 0, stream>>>(dst, src, src_stride, src_offset, B, T, NH, hs);
    } else {
        const unsigned int grid = (unsigned int)CEIL_DIV(total, (size_t)block_size);
        attention_split_heads_kernel<1><<<grid, block_size, 0, stream>>>(dst, src, src_stride, src_offset, B, T, NH, hs);
    }
    cudaCheck(cudaGetLastError());
}

inline void attention_merge_heads(floatX* dst, int dst_stride, int dst_offset, const floatX* src,
                                  int B, int T, int NH, int hs, cudaStream_t stream, int block_size) {
    const size_t total = (size_t)B * NH * T * hs;
    if (attention_heads_vec(src, dst, dst_stride, dst_offset, hs) == x128::size) {
        const unsigned int grid = (unsigned int)CEIL_DIV(total / x128::size, (size_t)block_size);
        attention_merge_heads_kernel<x128::size><<<grid, block_size, 0, stream>>>(dst, dst_stride, dst_offset, src, B, T, NH, hs);
    } else {
        const unsigned int grid = (unsigned int)CEIL_DIV(total, (size_t)block_size);
        attention_merge_heads_kernel<1><<<grid, block_size, 0, stream>>>(dst, dst_stride, dst_offset, src, B, T, NH, hs);
    }
    cudaCheck(cudaGetLastError());
}

// att (num_rows, T): preatt in, probabilities out (see the kernel); block_size / 32 rows per block
inline void attention_softmax_forward(floatX* att, float scale, int num_rows, int T, cudaStream_t stream, int block_size) {
    const int grid = CEIL_DIV(num_rows, block_size / 32);
    if (attention_softmax_vec(att, att, T) == x128::size) {
        attention_softmax_forward_kernel<x128::size><<<grid, block_size, 0, stream>>>(att, scale, num_rows, T);
    } else {
        attention_softmax_forward_kernel<1><<<grid, block_size, 0, stream>>>(att, scale, num_rows, T);
    }
    cudaCheck(cudaGetLastError());
}

// datt (num_rows, T): datt in, dpreatt out; att: the forward's probabilities
inline void attention_softmax_backward(floatX* datt, const floatX* att, float scale, int num_rows, int T,
                                       cudaStream_t stream, int block_size) {
    const int grid = CEIL_DIV(num_rows, block_size / 32);
    if (attention_softmax_vec(datt, att, T) == x128::size) {
        attention_softmax_backward_kernel<x128::size><<<grid, block_size, 0, stream>>>(datt, att, scale, num_rows, T);
    } else {
        attention_softmax_backward_kernel<1><<<grid, block_size, 0, stream>>>(datt, att, scale, num_rows, T);
    }
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
    attention_softmax_forward(att, scale, BNH * T, T, stream, block_size);

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
    attention_softmax_backward(datt, att, scale, BNH * T, T, stream, block_size);
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
