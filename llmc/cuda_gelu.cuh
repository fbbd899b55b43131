/*
cuda_gelu.cuh: GELU with the tanh approximation (as GPT-2 / PyTorch approximate='tanh'), forward and
backward, elementwise over N values. Used when the matmul's cuBLASLt GELU epilogue is not.

  gelu(x)  = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
  gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

Activation gradients here OVERWRITE: dinp = gelu'(inp) * dout (dinp may be the same buffer as dout,
an in-place backward). There are no parameter gradients in this file.
*/
#ifndef LLMC_CUDA_GELU_CUH
#define LLMC_CUDA_GELU_CUH

#include "cuda_common.cuh"

#define GELU_SCALING_FACTOR 0.7978845608028654f   // sqrt(2 / pi)

__device__ inline float gelu_tanh(float x) {
    float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

__device__ inline float gelu_tanh_grad(float x) {
    float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float du_dx = GELU_SCALING_FACTOR * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du_dx;
}

// ----------------------------------------------------------------------------
// kernels: a scalar version (any N, any alignment) and a 128-bit version (N % x128::size == 0, 16-byte
// aligned; x128::size is 8 bf16, or 4 floats in the fp32 build)

static __global__ void gelu_forward_kernel_scalar(floatX* out, const floatX* inp, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) { out[i] = from_float<floatX>(gelu_tanh(to_float(inp[i]))); }
}

static __global__ void gelu_forward_kernel_x128(floatX* out, const floatX* inp, size_t N) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) { return; }
    x128 x = load128(inp + i);
    x128 y;
    for (int k = 0; k < x128::size; k++) { y.v[k] = from_float<floatX>(gelu_tanh(to_float(x.v[k]))); }
    store128(out + i, y);
}

static __global__ void gelu_backward_kernel_scalar(floatX* dinp, const floatX* inp, const floatX* dout, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) { dinp[i] = from_float<floatX>(gelu_tanh_grad(to_float(inp[i])) * to_float(dout[i])); }
}

static __global__ void gelu_backward_kernel_x128(floatX* dinp, const floatX* inp, const floatX* dout, size_t N) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) { return; }
    x128 x = load128(inp + i);
    x128 g = load128(dout + i);
    x128 d;
    for (int k = 0; k < x128::size; k++) {
        d.v[k] = from_float<floatX>(gelu_tanh_grad(to_float(x.v[k])) * to_float(g.v[k]));
    }
    store128(dinp + i, d);
}

// ----------------------------------------------------------------------------
// launchers

// out (N) bf16 = gelu(inp (N) bf16). out may equal inp.
inline void gelu_forward(floatX* out, const floatX* inp, size_t N, cudaStream_t stream, int block_size = 256) {
    if (N % x128::size == 0 && is_aligned16(out) && is_aligned16(inp)) {
        size_t threads = N / x128::size;
        gelu_forward_kernel_x128<<<(unsigned int)CEIL_DIV(threads, (size_t)block_size), block_size, 0, stream>>>(out, inp, N);
    } else {
        gelu_forward_kernel_scalar<<<(unsigned int)CEIL_DIV(N, (size_t)block_size), block_size, 0, stream>>>(out, inp, N);
    }
    cudaCheck(cudaGetLastError());
}

// dinp (N) bf16 = gelu'(inp) * dout (OVERWRITES dinp; dinp may equal dout for an in-place backward).
// inp is the GELU's input (the pre-activation).
inline void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t N, cudaStream_t stream,
                          int block_size = 256) {
    if (N % x128::size == 0 && is_aligned16(dinp) && is_aligned16(inp) && is_aligned16(dout)) {
        size_t threads = N / x128::size;
        gelu_backward_kernel_x128<<<(unsigned int)CEIL_DIV(threads, (size_t)block_size), block_size, 0, stream>>>(dinp, inp, dout, N);
    } else {
        gelu_backward_kernel_scalar<<<(unsigned int)CEIL_DIV(N, (size_t)block_size), block_size, 0, stream>>>(dinp, inp, dout, N);
    }
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_GELU_CUH
