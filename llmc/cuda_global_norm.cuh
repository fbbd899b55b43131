/*
cuda_global_norm.cuh: the squared L2 norm of a buffer range (for gradient clipping), deterministic.

  *out (= or +=) sum_i values[i]^2          (out: a device float, or a device double with _f64)

Two kernels: (1) a fixed grid of at most GLOBAL_NORM_MAX_BLOCKS blocks, each thread summing its
grid-strided elements in fp32 and each block reducing in a fixed tree order into scratch[block];
(2) one block adding the block partials in a fixed order, in double. The grid depends only on count
and block_size, so the result is bitwise reproducible run to run. The norm is sqrt of the result
(taken by the caller, after summing over ranges / ranks).
This file reads gradients and writes no gradients.
*/
#ifndef LLMC_CUDA_GLOBAL_NORM_CUH
#define LLMC_CUDA_GLOBAL_NORM_CUH

#include "cuda_common.cuh"

#define GLOBAL_NORM_MAX_BLOCKS 1024   // scratch must hold this many floats

template<typename T>
__global__ void global_norm_partials_kernel(float* partials, const T* values, size_t count) {
    float sum = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float x = to_float(values[i]);
        sum += x * x;
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) { partials[blockIdx.x] = sum; }
}

// OutT: float, or double (global_norm_squared_f64)
template<typename OutT>
__global__ void global_norm_finish_kernel(OutT* out, const float* partials, int num_partials, int accumulate) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < num_partials; i += blockDim.x) { sum += (double)partials[i]; }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) { *out = (OutT)((accumulate ? (double)*out : 0.0) + sum); }
}

// *out = sum of squares of values[0..count-1]   (accumulate == 0)
// *out += sum of squares                        (accumulate != 0: several ranges into one total)
// values: float (default) or floatX. out: one device float. scratch: GLOBAL_NORM_MAX_BLOCKS device
// floats, contents not needed before or after. block_size: multiple of 32, <= 1024.
template<typename T, typename OutT>
inline void global_norm_squared_impl(OutT* out, const T* values, size_t count, float* scratch, int accumulate,
                                     cudaStream_t stream, int block_size) {
    hostCheckBlockSize(block_size, "global_norm_squared");
    size_t blocks = CEIL_DIV(count, (size_t)block_size);
    int grid = (int)(blocks < GLOBAL_NORM_MAX_BLOCKS ? blocks : GLOBAL_NORM_MAX_BLOCKS);
    if (grid == 0) { grid = 1; }   // count == 0: one block writes a zero partial
    global_norm_partials_kernel<<<grid, block_size, 0, stream>>>(scratch, values, count);
    cudaCheck(cudaGetLastError());
    global_norm_finish_kernel<OutT><<<1, 1024, 0, stream>>>(out, scratch, grid, accumulate);
    cudaCheck(cudaGetLastError());
}
template<typename T>
inline void global_norm_squared(float* out, const T* values, size_t count, float* scratch, int accumulate,
                                cudaStream_t stream, int block_size = 512) {
    global_norm_squared_impl<T, float>(out, values, count, scratch, accumulate, stream, block_size);
}

// The same with the total in a device double (the trainer's sumsq): the block partials are fp32,
// their sum is formed and kept in double.
template<typename T>
inline void global_norm_squared_f64(double* out, const T* values, size_t count, float* scratch, int accumulate,
                                    cudaStream_t stream, int block_size = 512) {
    global_norm_squared_impl<T, double>(out, values, count, scratch, accumulate, stream, block_size);
}

#endif // LLMC_CUDA_GLOBAL_NORM_CUH
