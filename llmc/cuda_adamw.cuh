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
This file reads gradients and writes no gradients.
*/
#ifndef LLMC_CUDA_ADAMW_CUH
#define LLMC_CUDA_ADAMW_CUH

#include "cuda_common.cuh"

// one thread per element (grid-stride loop)
template<typename GradT>
__global__ void adamw_kernel(float* master, floatX* params, float* m_state, float* v_state, const GradT* grads,
                             size_t count, float lr, float beta1, float beta2, float eps, float weight_decay,
                             float grad_scale, float beta1_correction, float beta2_correction, unsigned int seed,
                             size_t index0) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float g = to_float(grads[i]) * grad_scale;
        float m = beta1 * m_state[i] + (1.0f - beta1) * g;
        float v = beta2 * v_state[i] + (1.0f - beta2) * g * g;
        m_state[i] = m;
        v_state[i] = v;
        float m_hat = m / beta1_correction;
        float v_hat = v / beta2_correction;
        float p = (master != NULL) ? master[i] : to_float(params[i]);
        p = p - lr * (weight_decay * p + m_hat / (sqrtf(v_hat) + eps));
        if (master != NULL) { master[i] = p; }
#ifdef ENABLE_FP32
        params[i] = p;
#else
        params[i] = stochastic_round_bf16(p, random_u32(seed, index0 + i));
#endif
    }
}

// master (count) fp32: master weights, updated (may be NULL: then the bf16 params are the master copy).
// params (count) floatX: written from the updated master with stochastic rounding (bf16), or as is (fp32).
// m, v (count) fp32: AdamW moments, updated (start at zero).
// grads (count): float (default) or floatX, read only; multiplied by grad_scale first.
// lr, beta1, beta2, eps, weight_decay: as PyTorch AdamW. beta{1,2}_correction = 1 - beta{1,2}^t.
// seed, index0: the stochastic rounding of element i uses random_u32(seed, index0 + i).
// block_size: any multiple of 32 up to 1024.
template<typename GradT>
inline void adamw_update(float* master, floatX* params, float* m, float* v, const GradT* grads, size_t count,
                         float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                         float beta1_correction, float beta2_correction, unsigned int seed, size_t index0,
                         cudaStream_t stream, int block_size = 512) {
    if (count == 0) { return; }
    size_t blocks = CEIL_DIV(count, (size_t)block_size);
    unsigned int grid = (unsigned int)(blocks < 65536 ? blocks : 65536);   // grid-stride beyond that
    adamw_kernel<<<grid, block_size, 0, stream>>>(master, params, m, v, grads, count, lr, beta1, beta2, eps,
                                                  weight_decay, grad_scale, beta1_correction, beta2_correction, seed, index0);
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_ADAMW_CUH
