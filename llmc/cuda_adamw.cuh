/*
cuda_adamw.cuh: the AdamW update (PyTorch's AdamW, as written in doc/formats.md) over a range of
parameters, with fp32 master weights and bf16 working weights.

For each element i < count:
  g = grads[i] * grad_scale                  (grad_scale = clip / N: the window's 1/N and the clip)
  m = beta1 * m + (1 - beta1) * g
  v = beta2 * v + (1 - beta2) * g^2
  m_hat = m / beta1_correction               (beta1_correction = 1 - beta1^t, t = 1 at the first step)
  v_hat = v / beta2_correction               (beta2_correction = 1 - beta2^t)
  p = p - lr * (weight_decay * p + m_hat / (sqrt(v_hat) + eps))
  master[i] = p (fp32); params[i] = p rounded to bf16 STOCHASTICALLY with random_u32(seed, index0 + i)

The trainer calls it once per contiguous range of tensors that share a weight decay (0 for the
tensors formats.md marks "no"), with pointers already offset to the range's start (so several ranges
of one ZeRO shard are several calls). The rounding noise is keyed by (seed, index0 + i): pass a seed
that changes with the step and index0 = the range's first element in the whole parameter buffer. Then
the noise of a parameter does not depend on how the buffer is cut into ranges and shards, and P GPUs
write the same bf16 weights as one.
In the fp32 build (ENABLE_FP32, floatX = float) params[i] = p exactly, the same value as master[i]:
no rounding, so no noise (seed and index0 are unused), and the update is the same fp32 formula as
train_gpt2.c's AdamW.

One kernel, templated on the chunk width VEC. AdamW reads 16 bytes per element (master, m, v, an fp32
gradient) and writes 14 (master, m, v, bf16 param): pure bandwidth. So when every pointer is 16-byte
aligned, each thread moves a chunk of VEC = x128::size consecutive elements (8 in the bf16 build, 4 in
fp32) with 128-bit loads and stores (f128 packs for the fp32 arrays, x128 for the floatX ones); when
count is not a multiple of VEC, the last chunk's thread does it element by element. When any pointer is
misaligned (a range that starts at an element that is not a multiple of x128::size), VEC = 1: one
element per thread, plain loads and stores. The arithmetic of an element and its rounding key do not
depend on the path, so both paths give the same bits.
The trainer's ranges for GPT-2 124M (tensor boundaries, and shard starts at P = 1, 2, 4, 8) all start
at multiples of 8 elements: they all take the 128-bit path.
This file reads gradients and writes no gradients.
*/
#ifndef LLMC_CUDA_ADAMW_CUH
#define LLMC_CUDA_ADAMW_CUH

#include "cuda_common.cuh"

// The step's constants, one struct so the kernels' argument lists stay short.
struct AdamWHyper {
    float lr, beta1, beta2, eps, weight_decay, grad_scale, beta1_correction, beta2_correction;
    unsigned int seed;   // stochastic rounding: element i uses random_u32(seed, index0 + i)
    size_t index0;
};

// N consecutive elements at p, as 128-bit packs when N is a whole number of packs (the launcher has
// checked that p is 16-byte aligned), else one element at a time (N = 1).
template<int N, typename T>
__device__ inline void adamw_load(T (&r)[N], const T* p) {
    constexpr int PACK = Packed128<T>::size;
    static_assert(N == 1 || N % PACK == 0, "N: one element or whole 128-bit packs");
    if constexpr (N % PACK == 0) {
        for (int k = 0; k < N; k += PACK) {
            Packed128<T> pack = load128(p + k);
            for (int j = 0; j < PACK; j++) { r[k + j] = pack.v[j]; }
        }
    } else {
        for (int k = 0; k < N; k++) { r[k] = p[k]; }
    }
}
template<int N, typename T>
__device__ inline void adamw_store(T* p, const T (&r)[N]) {
    constexpr int PACK = Packed128<T>::size;
    static_assert(N == 1 || N % PACK == 0, "N: one element or whole 128-bit packs");
    if constexpr (N % PACK == 0) {
        for (int k = 0; k < N; k += PACK) {
            Packed128<T> pack;
            for (int j = 0; j < PACK; j++) { pack.v[j] = r[k + j]; }
            store128(p + k, pack);
        }
    } else {
        for (int k = 0; k < N; k++) { p[k] = r[k]; }
    }
}

// One element: m and v updated in place, the new parameter returned. Both paths of the kernel call
// this same function, so they compute the same bits.
__device__ inline float adamw_element(float grad, float& m, float& v, float p, const AdamWHyper& h) {
    float g = grad * h.grad_scale;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    float m_hat = m / h.beta1_correction;
    float v_hat = v / h.beta2_correction;
    return p - h.lr * (h.weight_decay * p + m_hat / (sqrtf(v_hat) + h.eps));
}

// The working copy of the parameter at global index `index`: stochastic rounding to bf16, keyed by the
// index alone (not by the thread or the chunk), so every path and every cut of the buffer agree.
__device__ inline floatX adamw_to_param(float p, unsigned int seed, size_t index) {
#ifdef ENABLE_FP32
    return p;
#else
    return stochastic_round_bf16(p, random_u32(seed, index));
#endif
}

// Elements [i, i + N): load everything, update, store everything.
template<int N, typename GradT>
__device__ inline void adamw_chunk(float* master, floatX* params, float* m_state, float* v_state, const GradT* grads,
                                   size_t i, const AdamWHyper& h) {
    GradT g[N];
    float m[N], v[N], p[N];
    floatX out[N];
    adamw_load(g, grads + i);
    adamw_load(m, m_state + i);
    adamw_load(v, v_state + i);
    if (master != NULL) {
        adamw_load(p, master + i);
    } else {   // no master weights: the working copy is the master copy
        floatX w[N];
        adamw_load(w, params + i);
        for (int k = 0; k < N; k++) { p[k] = to_float(w[k]); }
    }
    for (int k = 0; k < N; k++) {
        p[k] = adamw_element(to_float(g[k]), m[k], v[k], p[k], h);
        out[k] = adamw_to_param(p[k], h.seed, h.index0 + i + k);
    }
    adamw_store(m_state + i, m);
    adamw_store(v_state + i, v);
    if (master != NULL) { adamw_store(master + i, p); }
    adamw_store(params + i, out);
}

// One thread per chunk of VEC consecutive elements (grid-stride loop). VEC = x128::size: 128-bit loads
// and stores (every pointer 16-byte aligned); the last chunk, when count is not a multiple of VEC, is
// done element by element by its thread. VEC = 1: the scalar path, one element per thread.
template<int VEC, typename GradT>
__global__ void __launch_bounds__(1024) adamw_kernel(float* master, floatX* params, float* m_state, float* v_state, const GradT* grads,
                             size_t count, AdamWHyper h) {
    const size_t chunks = CEIL_DIV(count, (size_t)VEC);
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < chunks; c += (size_t)gridDim.x * blockDim.x) {
        const size_t i = c * VEC;
        if (i + VEC <= count) {
            adamw_chunk<VEC>(master, params, m_state, v_state, grads, i, h);
        } else {
            for (size_t j = i; j < count; j++) { adamw_chunk<1>(master, params, m_state, v_state, grads, j, h); }
        }
    }
}

// Whether adamw_update takes the 128-bit path for these pointers: all of them 16-byte aligned (master
// may be NULL). x128::size elements of any of the types start at a multiple of 16 bytes from there.
template<typename GradT>
inline bool adamw_is_vectorized(const float* master, const floatX* params, const float* m, const float* v,
                                const GradT* grads) {
    return (master == NULL || is_aligned16(master)) && is_aligned16(params) && is_aligned16(m) &&
           is_aligned16(v) && is_aligned16(grads);
}

template<int VEC, typename GradT>
inline void adamw_launch(float* master, floatX* params, float* m, float* v, const GradT* grads, size_t count,
                         const AdamWHyper& h, cudaStream_t stream, int block_size) {
    size_t blocks = CEIL_DIV(CEIL_DIV(count, (size_t)VEC), (size_t)block_size);
    unsigned int grid = (unsigned int)(blocks < 65536 ? blocks : 65536);   // grid-stride beyond that
    adamw_kernel<VEC, GradT><<<grid, block_size, 0, stream>>>(master, params, m, v, grads, count, h);
    cudaCheck(cudaGetLastError());
}

// master (count) fp32: master weights, updated (may be NULL: then the bf16 params are the master copy).
// params (count) floatX: written from the updated master with stochastic rounding (bf16), or as is (fp32).
// m, v (count) fp32: AdamW moments, updated (start at zero).
// grads (count): float (default) or floatX, read only; multiplied by grad_scale first.
// lr, beta1, beta2, eps, weight_decay: as PyTorch AdamW. beta{1,2}_correction = 1 - beta{1,2}^t.
// seed, index0: the stochastic rounding of element i uses random_u32(seed, index0 + i).
// block_size: any multiple of 32 up to 1024.
// Paths: every pointer 16-byte aligned -> chunks of x128::size elements with 128-bit loads/stores
// (any count: the partial last chunk goes element by element); otherwise one element per thread.
// Both give the same bits (adamw_element and the rounding key do not depend on the path).
template<typename GradT>
inline void adamw_update(float* master, floatX* params, float* m, float* v, const GradT* grads, size_t count,
                         float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                         float beta1_correction, float beta2_correction, unsigned int seed, size_t index0,
                         cudaStream_t stream, int block_size = 512) {
    hostCheckBlockSize(block_size, "adamw_update");
    if (count == 0) { return; }
    AdamWHyper h = { lr, beta1, beta2, eps, weight_decay, grad_scale, beta1_correction, beta2_correction, seed, index0 };
    if (adamw_is_vectorized(master, params, m, v, grads)) {
        adamw_launch<x128::size>(master, params, m, v, grads, count, h, stream, block_size);
    } else {
        adamw_launch<1>(master, params, m, v, grads, count, h, stream, block_size);
    }
}

#endif // LLMC_CUDA_ADAMW_CUH
